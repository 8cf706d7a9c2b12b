//! The window engine over a [`Store`]: folding readings into open windows, judging
//! lateness, closing windows that are due, downsampling. Free of the SDK, so that the
//! native tests drive exactly what the plugin runs.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;

use crate::open::OpenWindows;
use crate::window::{self, Aggregate, Bucket, Key, Store, WATERMARK, Windows};

/// One event, read: its time, its key (its JSON as [`Key::canonical`] gives it,
/// borrowed from the payload when it can be) and (for windows) its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading<'k> {
    pub time: i64,
    pub key: Cow<'k, str>,
    pub value: f64,
}

impl Reading<'_> {
    pub fn into_owned(self) -> Reading<'static> {
        Reading {
            key: Cow::Owned(self.key.into_owned()),
            ..self
        }
    }
}

/// What became of a reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Taken into its open window(s).
    Folded,
    /// Every window it belongs to had closed.
    Late { window_end: i64, watermark: i64 },
    /// Downsampling: the first of its key in its interval, passed on.
    Forward,
    /// Downsampling: another of its key in the same interval, dropped.
    Drop,
}

/// What a closed window emits.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    pub key: Key,
    pub window_end: i64,
    pub payload: Value,
}

/// How the watermark (the time before which windows are closed) advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watermark {
    /// With the larger of the latest event time and the wall clock: windows close on
    /// time while their devices are quiet (live data).
    WallClock,
    /// With event times only: replays of old data, tests.
    Events,
}

pub struct Engine {
    pub windows: Windows,
    pub lateness_ms: i64,
    pub watermark: Watermark,
    pub key_field: Option<String>,
    pub aggregates: Vec<Aggregate>,
    /// Close every open window at the final tick, not only those due.
    pub flush_on_stop: bool,
    /// The open windows, held in the instance and logged to the state.
    pub open: OpenWindows,
}

/// A `process` call folding its readings one by one ([`Engine::folding`]).
pub struct Folding<'e> {
    engine: &'e mut Engine,
    with_sketch: bool,
    now_ms: i64,
    stored_latest: i64,
    latest: i64,
}

impl Folding<'_> {
    /// Fold one reading into its open window(s), or judge it late.
    pub fn fold(&mut self, reading: &Reading<'_>) -> Verdict {
        let closed_before = self.engine.closed_before(self.latest, self.now_ms);
        let with_sketch = self.with_sketch;
        let mut folded = false;
        let mut newest_end = i64::MIN;
        let windows = self.engine.windows;
        for (_, end) in windows.containing(reading.time) {
            newest_end = newest_end.max(end);
            if end <= closed_before {
                continue;
            }
            self.engine
                .open
                .window_mut(end, &reading.key, |key| Bucket::new(key, with_sketch))
                .add(reading.time, reading.value);
            folded = true;
        }
        if folded {
            self.latest = self.latest.max(reading.time);
            Verdict::Folded
        } else {
            Verdict::Late {
                window_end: newest_end,
                watermark: closed_before,
            }
        }
    }

    /// End the call: the changed windows and the watermark go to the state, written
    /// together so that they commit before the call's inputs are released.
    pub fn finish(self, store: &mut impl Store) {
        let moved = self.latest != self.stored_latest;
        if moved {
            store.put(WATERMARK, &self.latest.to_le_bytes());
        }
        self.engine.open.end(store, moved);
    }
}

impl Engine {
    fn with_sketch(&self) -> bool {
        self.aggregates.iter().any(Aggregate::needs_sketch)
    }

    /// Windows ending at or before this are closed.
    fn closed_before(&self, latest_event: i64, now_ms: i64) -> i64 {
        let clock = match self.watermark {
            Watermark::WallClock => latest_event.max(now_ms),
            Watermark::Events => latest_event,
        };
        clock.saturating_sub(self.lateness_ms)
    }

    /// Start folding a call's readings, in order; `now_ms` is the wall clock. Windows
    /// come from the instance (from the state when the instance's copy is not current)
    /// and go back to the state once, at [`Folding::finish`].
    pub fn folding(&mut self, store: &impl Store, now_ms: i64) -> Folding<'_> {
        self.open.begin(store);
        let stored_latest = latest_event(store);
        Folding {
            with_sketch: self.with_sketch(),
            engine: self,
            now_ms,
            stored_latest,
            latest: stored_latest,
        }
    }

    /// Close the windows due at `now_ms` (all of them when stopping with
    /// `flush_on_stop`), at most `max` of them, earliest end first, and delete them.
    pub fn close_due(
        &mut self,
        store: &mut impl Store,
        now_ms: i64,
        stopping: bool,
        max: u32,
    ) -> Vec<Closed> {
        self.open.begin(store);
        let closed_before = self.closed_before(latest_event(store), now_ms);
        let flush = stopping && self.flush_on_stop;
        let closed: Vec<Closed> = self
            .open
            .close(closed_before, flush, max)
            .into_iter()
            .map(|(end, bucket)| {
                let span = (end - self.windows.size_ms, end);
                Closed {
                    payload: window::result(
                        &bucket,
                        self.key_field.as_deref(),
                        span,
                        &self.aggregates,
                    ),
                    key: bucket.key,
                    window_end: end,
                }
            })
            .collect();
        self.open.end(store, false);
        closed
    }
}

fn latest_event(store: &impl Store) -> i64 {
    store
        .get(WATERMARK)
        .and_then(|bytes| Some(i64::from_le_bytes(bytes.try_into().ok()?)))
        .unwrap_or(i64::MIN)
}

/// One event per key per `interval_ms`: the first of each interval passes.
pub fn downsample(store: &mut impl Store, readings: &[Reading], interval_ms: i64) -> Vec<Verdict> {
    let mut last: HashMap<String, i64> = HashMap::new();
    readings
        .iter()
        .map(|reading| {
            let key = Key::parse(&reading.key).expect("a canonical key is JSON");
            let state_key = format!("d/{}", key.text());
            let interval = reading.time.div_euclid(interval_ms);
            let passed = *last.entry(state_key.clone()).or_insert_with(|| {
                store
                    .get(&state_key)
                    .and_then(|bytes| Some(i64::from_le_bytes(bytes.try_into().ok()?)))
                    .unwrap_or(i64::MIN)
            });
            if interval > passed {
                last.insert(state_key.clone(), interval);
                store.put(&state_key, &interval.to_le_bytes());
                Verdict::Forward
            } else {
                Verdict::Drop
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
