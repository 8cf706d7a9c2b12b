//! The window engine over a [`Store`]: folding readings into open windows, judging
//! lateness, closing windows that are due, downsampling. Free of the SDK, so that the
//! native tests drive exactly what the plugin runs.

use std::collections::HashMap;

use serde_json::Value;

use crate::cache::Cache;
use crate::window::{self, Aggregate, Bucket, Key, Store, WATERMARK, WINDOWS, Windows};

/// One event, read: its time, its key and (for windows) its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub time: i64,
    pub key: Key,
    pub value: f64,
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
    /// Open windows this instance holds between calls.
    pub cache: Cache,
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

    /// Fold `readings` into their windows, in order. `now_ms` is the wall clock. Each
    /// window is read from the state at most once (not at all when cached) and written
    /// back once, at the end: the call's writes commit together, before its inputs are
    /// released.
    pub fn fold(
        &mut self,
        store: &mut impl Store,
        readings: &[Reading],
        now_ms: i64,
    ) -> Vec<Verdict> {
        self.cache.begin(store);
        let with_sketch = self.with_sketch();
        let stored_latest = latest_event(store);
        let mut latest = stored_latest;
        let mut state_key = String::new();
        let mut verdicts = Vec::with_capacity(readings.len());
        for reading in readings {
            let closed_before = self.closed_before(latest, now_ms);
            let mut folded = false;
            let mut newest_end = i64::MIN;
            for (_, end) in self.windows.containing(reading.time) {
                newest_end = newest_end.max(end);
                if end <= closed_before {
                    continue;
                }
                window::write_window_key(&mut state_key, end, reading.key.text());
                self.cache
                    .window_mut(store, &state_key, || {
                        Bucket::new(reading.key.clone(), with_sketch)
                    })
                    .add(reading.time, reading.value);
                folded = true;
            }
            if folded {
                latest = latest.max(reading.time);
                verdicts.push(Verdict::Folded);
            } else {
                verdicts.push(Verdict::Late {
                    window_end: newest_end,
                    watermark: closed_before,
                });
            }
        }
        let moved = latest != stored_latest;
        if moved {
            store.put(WATERMARK, &latest.to_le_bytes());
        }
        self.cache.end(store, moved);
        verdicts
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
        self.cache.begin(store);
        let closed_before = self.closed_before(latest_event(store), now_ms);
        let flush = stopping && self.flush_on_stop;
        let mut closed = Vec::new();
        let mut deleted = false;
        for (state_key, bytes) in store.scan(WINDOWS, max) {
            let Some(end) = window::end_of(&state_key) else {
                continue;
            };
            if end > closed_before && !flush {
                break;
            }
            store.delete(&state_key);
            self.cache.forget(&state_key);
            deleted = true;
            // A bucket the plugin cannot read back is dropped rather than kept forever.
            let Some(bucket) = Bucket::decode(&bytes) else {
                continue;
            };
            let span = (end - self.windows.size_ms, end);
            closed.push(Closed {
                payload: window::result(&bucket, self.key_field.as_deref(), span, &self.aggregates),
                key: bucket.key,
                window_end: end,
            });
        }
        self.cache.end(store, deleted);
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
            let state_key = format!("d/{}", reading.key.text());
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
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    #[derive(Default, Clone)]
    struct Memory(BTreeMap<String, Vec<u8>>);

    impl Store for Memory {
        fn get(&self, key: &str) -> Option<Vec<u8>> {
            self.0.get(key).cloned()
        }
        fn put(&mut self, key: &str, value: &[u8]) {
            self.0.insert(key.to_owned(), value.to_vec());
        }
        fn delete(&mut self, key: &str) {
            self.0.remove(key);
        }
        fn scan(&self, prefix: &str, limit: u32) -> Vec<(String, Vec<u8>)> {
            self.0
                .range(prefix.to_owned()..)
                .take_while(|(key, _)| key.starts_with(prefix))
                .take(limit as usize)
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        }
    }

    fn engine(watermark: Watermark, lateness_ms: i64) -> Engine {
        Engine {
            windows: Windows {
                size_ms: 1000,
                hop_ms: 1000,
            },
            lateness_ms,
            watermark,
            key_field: Some("device".into()),
            aggregates: ["count", "sum", "mean"]
                .iter()
                .map(|a| Aggregate::parse(a).unwrap())
                .collect(),
            flush_on_stop: false,
            cache: Cache::with_instance(1, usize::MAX),
        }
    }

    fn reading(time: i64, device: &str, value: f64) -> Reading {
        Reading {
            time,
            key: Key::from_value(&json!(device)),
            value,
        }
    }

    #[test]
    fn windows_close_on_the_wall_clock_while_no_event_arrives() {
        let mut engine = engine(Watermark::WallClock, 200);
        let mut store = Memory::default();
        let verdicts = engine.fold(
            &mut store,
            &[
                reading(10_100, "a", 1.0),
                reading(10_900, "a", 3.0),
                reading(11_050, "b", 5.0),
            ],
            10_900,
        );
        assert_eq!(verdicts, vec![Verdict::Folded; 3]);
        assert!(
            engine.close_due(&mut store, 11_100, false, 100).is_empty(),
            "within lateness"
        );
        let closed = engine.close_due(&mut store, 11_200, false, 100);
        assert_eq!(closed.len(), 1);
        assert_eq!(
            closed[0].payload,
            json!({"device": "a", "window_start": 10_000, "window_end": 11_000, "count": 2, "sum": 4.0, "mean": 2.0})
        );
        let closed = engine.close_due(&mut store, 12_500, false, 100);
        assert_eq!(closed[0].payload["device"], "b");
        assert!(
            store.scan(WINDOWS, 10).is_empty(),
            "closed windows leave the state"
        );
    }

    /// Count and sum of every window, closed at the end.
    fn totals(engine: &mut Engine, store: &mut Memory) -> Vec<(String, i64, Value, Value)> {
        engine.flush_on_stop = true;
        engine
            .close_due(store, 0, true, 1000)
            .into_iter()
            .map(|closed| {
                let payload = closed.payload;
                let count = payload["count"].clone();
                (
                    closed.key.text().to_owned(),
                    closed.window_end,
                    count,
                    payload["sum"].clone(),
                )
            })
            .collect()
    }

    #[test]
    fn a_batch_reads_each_window_once_and_writes_it_back_once() {
        /// Counts the window reads and writes that reach the store.
        #[derive(Default)]
        struct Counting {
            store: Memory,
            reads: std::cell::Cell<usize>,
            writes: usize,
        }
        impl Store for Counting {
            fn get(&self, key: &str) -> Option<Vec<u8>> {
                self.reads
                    .set(self.reads.get() + key.starts_with(WINDOWS) as usize);
                self.store.get(key)
            }
            fn put(&mut self, key: &str, value: &[u8]) {
                self.writes += key.starts_with(WINDOWS) as usize;
                self.store.put(key, value)
            }
            fn delete(&mut self, key: &str) {
                self.store.delete(key)
            }
            fn scan(&self, prefix: &str, limit: u32) -> Vec<(String, Vec<u8>)> {
                self.store.scan(prefix, limit)
            }
        }
        let mut engine = engine(Watermark::Events, 0);
        let mut store = Counting::default();
        let batch: Vec<Reading> = (0..10)
            .map(|n| reading(5_000 + n, ["a", "b"][n as usize % 2], 1.0))
            .collect();
        engine.fold(&mut store, &batch, 0);
        assert_eq!((store.reads.get(), store.writes), (2, 2));
        engine.fold(&mut store, &batch, 0);
        assert_eq!(
            (store.reads.get(), store.writes),
            (2, 4),
            "the second batch finds both windows cached, and writes each back once"
        );
    }

    #[test]
    fn windows_cached_by_a_call_whose_writes_were_discarded_are_read_again() {
        let mut engine = engine(Watermark::Events, 0);
        let mut store = Memory::default();
        engine.fold(&mut store, &[reading(5_000, "a", 1.0)], 0);
        // The host discards a call's writes (a failed call, outputs not taken): the
        // engine folded into its cache all the same.
        engine.fold(&mut store.clone(), &[reading(5_100, "a", 10.0)], 0);
        engine.fold(&mut store, &[reading(5_200, "a", 100.0)], 0);
        assert_eq!(
            totals(&mut engine, &mut store),
            [("a".to_owned(), 6_000, json!(2), json!(101.0))]
        );
    }

    #[test]
    fn windows_cached_by_one_instance_are_read_again_after_another_wrote() {
        let mut first = engine(Watermark::Events, 0);
        let mut second = Engine {
            cache: Cache::with_instance(2, usize::MAX),
            ..engine(Watermark::Events, 0)
        };
        let mut store = Memory::default();
        for (n, from_first) in [true, false, true, true].into_iter().enumerate() {
            let instance = if from_first { &mut first } else { &mut second };
            instance.fold(&mut store, &[reading(5_000 + n as i64, "a", 1.0)], 0);
        }
        assert_eq!(
            totals(&mut second, &mut store),
            [("a".to_owned(), 6_000, json!(4), json!(4.0))]
        );
    }

    #[test]
    fn a_tick_whose_deletions_were_discarded_leaves_no_stale_window_behind() {
        let mut engine = engine(Watermark::Events, 0);
        let mut store = Memory::default();
        engine.fold(
            &mut store,
            &[reading(5_000, "a", 1.0), reading(6_000, "b", 2.0)],
            0,
        );
        // The tick's results were not taken: its deletion of [5000, 6000) is dropped.
        assert_eq!(engine.close_due(&mut store.clone(), 0, false, 100).len(), 1);
        engine.fold(&mut store, &[reading(6_500, "b", 3.0)], 0);
        // The budget: a cache past it starts over, and windows come from the state.
        engine.cache = Cache::with_instance(1, 0);
        engine.fold(&mut store, &[reading(6_600, "b", 4.0)], 0);
        engine.fold(&mut store, &[reading(6_700, "b", 5.0)], 0);
        assert_eq!(
            totals(&mut engine, &mut store),
            [
                ("a".to_owned(), 6_000, json!(1), json!(1.0)),
                ("b".to_owned(), 7_000, json!(4), json!(14.0))
            ]
        );
    }

    #[test]
    fn late_events_are_judged_by_the_watermark_and_out_of_order_ones_within_lateness_count() {
        let mut engine = engine(Watermark::Events, 500);
        let mut store = Memory::default();
        engine.fold(
            &mut store,
            &[reading(5_000, "a", 1.0), reading(6_400, "a", 1.0)],
            0,
        );
        // 4_999 belongs to [4000, 5000), closed since the watermark is 6_400 - 500.
        // 5_600 is out of order but its window [5000, 6000) is still open.
        let verdicts = engine.fold(
            &mut store,
            &[reading(4_999, "a", 9.0), reading(5_600, "a", 2.0)],
            0,
        );
        assert_eq!(
            verdicts,
            vec![
                Verdict::Late {
                    window_end: 5_000,
                    watermark: 5_900
                },
                Verdict::Folded
            ]
        );
        let closed = engine.close_due(&mut store, 0, false, 100);
        assert_eq!(closed.len(), 0, "the wall clock does not count");
        engine.fold(&mut store, &[reading(6_600, "a", 1.0)], 0);
        let closed = engine.close_due(&mut store, 0, false, 100);
        assert_eq!(closed[0].payload["count"], 2);
        assert_eq!(closed[0].payload["sum"], 3.0);
    }

    #[test]
    fn stopping_keeps_open_windows_unless_asked_to_flush() {
        let mut engine = engine(Watermark::Events, 0);
        let mut store = Memory::default();
        engine.fold(&mut store, &[reading(5_000, "a", 1.0)], 0);
        assert!(engine.close_due(&mut store, 0, true, 100).is_empty());
        engine.flush_on_stop = true;
        assert_eq!(engine.close_due(&mut store, 0, true, 100).len(), 1);
    }

    #[test]
    fn a_tick_closes_at_most_its_limit_earliest_first() {
        let mut engine = engine(Watermark::Events, 0);
        let mut store = Memory::default();
        let readings: Vec<Reading> = (0..10).map(|n| reading(n * 1000, "a", 1.0)).collect();
        engine.fold(&mut store, &readings, 0);
        engine.fold(&mut store, &[reading(20_000, "a", 1.0)], 0);
        let first = engine.close_due(&mut store, 0, false, 4);
        assert_eq!(
            first.iter().map(|c| c.window_end).collect::<Vec<_>>(),
            [1000, 2000, 3000, 4000]
        );
        assert_eq!(engine.close_due(&mut store, 0, false, 100).len(), 6);
    }

    #[test]
    fn downsampling_passes_the_first_event_of_each_key_and_interval() {
        let mut store = Memory::default();
        let readings = [
            reading(1_000, "a", 0.0),
            reading(1_500, "a", 0.0),
            reading(1_600, "b", 0.0),
            reading(2_100, "a", 0.0),
        ];
        assert_eq!(
            downsample(&mut store, &readings, 1000),
            [
                Verdict::Forward,
                Verdict::Drop,
                Verdict::Forward,
                Verdict::Forward
            ]
        );
        // The state remembers across batches (and restarts).
        assert_eq!(
            downsample(&mut store, &[reading(2_900, "a", 0.0)], 1000),
            [Verdict::Drop]
        );
    }
}
