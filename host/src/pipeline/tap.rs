//! Taps: a live sample of the events leaving a stage, for `sluice tap` (`GET
//! /v1/tap/{stage}`). A tap must never slow the pipeline: each subscriber takes at most
//! its rate of events per second, as records on a bounded channel that is never waited
//! for, and what it does not take is only counted. Nobody tapping, a send path pays one
//! relaxed atomic load per batch.
//!
//! Points live in one process-wide registry keyed by stage name and route, not by
//! pipeline instance: a reload that keeps a stage's name keeps its taps.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::event::Event;

/// The rate a subscriber gets unless it asks for another, in events per second.
pub const DEFAULT_RATE: u32 = 100;
/// The most events per second one subscriber may take.
pub const MAX_RATE: u32 = 1000;

type PointKey = (String, Option<String>);

static POINTS: LazyLock<Mutex<HashMap<PointKey, Arc<TapPoint>>>> = LazyLock::new(Default::default);
static NEXT_SUBSCRIBER: AtomicU64 = AtomicU64::new(0);

/// The tap point of `stage`'s `route` (`None`: its default output, or what a sink stored;
/// `Some("dead_letter")`: its dead-letter records), made on first use and kept for the
/// process's life.
pub fn point(stage: &str, route: Option<&str>) -> Arc<TapPoint> {
    let key = (stage.to_owned(), route.map(str::to_owned));
    POINTS
        .lock()
        .unwrap()
        .entry(key)
        .or_insert_with(|| {
            Arc::new(TapPoint {
                stage: Arc::from(stage),
                route: route.map(Arc::from),
                tapped: AtomicUsize::new(0),
                subscribers: Mutex::new(Vec::new()),
            })
        })
        .clone()
}

/// Start taking up to `rate` events per second (at least one) of `stage`'s `route`,
/// until the returned [`Tap`] is dropped.
pub fn subscribe(stage: &str, route: Option<&str>, rate: u32) -> Tap {
    let rate = rate.max(1);
    let point = point(stage, route);
    // A second's worth of records may wait for a slow reader; beyond that they drop.
    let (sender, records) = mpsc::channel(rate as usize);
    let id = NEXT_SUBSCRIBER.fetch_add(1, Ordering::Relaxed);
    let dropped = Arc::new(AtomicU64::new(0));
    {
        let mut subscribers = point.subscribers.lock().unwrap();
        subscribers.push(Subscriber {
            id,
            bucket: TokenBucket::new(rate, Instant::now()),
            records: sender,
            dropped: dropped.clone(),
        });
        point.tapped.store(subscribers.len(), Ordering::Relaxed);
    }
    Tap {
        point,
        id,
        records,
        dropped,
    }
}

/// Where the events leaving one stage on one route can be tapped.
pub struct TapPoint {
    stage: Arc<str>,
    route: Option<Arc<str>>,
    /// How many subscribers there are: all that a send path reads when it is 0.
    tapped: AtomicUsize,
    subscribers: Mutex<Vec<Subscriber>>,
}

struct Subscriber {
    id: u64,
    bucket: TokenBucket,
    records: mpsc::Sender<Bytes>,
    dropped: Arc<AtomicU64>,
}

impl TapPoint {
    /// Hand `events` to the subscribers, if any, as far as their rates allow.
    #[inline]
    pub fn offer(&self, events: &[Event]) {
        if let Some(sample) = self.sample(events) {
            sample.deliver();
        }
    }

    /// Spend the subscribers' rates on `events` now and make their records, to deliver
    /// later (a sink's, once its write succeeded); `None` when nobody taps.
    #[inline]
    pub fn sample(&self, events: &[Event]) -> Option<Sample> {
        if self.tapped.load(Ordering::Relaxed) == 0 {
            return None;
        }
        Some(self.sample_tapped(events))
    }

    /// How many subscribers tap here now.
    pub fn subscribers(&self) -> usize {
        self.tapped.load(Ordering::Relaxed)
    }

    #[cold]
    fn sample_tapped(&self, events: &[Event]) -> Sample {
        let now = Instant::now();
        let takes: Vec<Take> = self
            .subscribers
            .lock()
            .unwrap()
            .iter_mut()
            .map(|subscriber| Take {
                count: subscriber.bucket.take(events.len(), now),
                records: subscriber.records.clone(),
                dropped: subscriber.dropped.clone(),
            })
            .collect();
        // Every subscriber takes from the front: the records are made once, outside the lock.
        let most = takes.iter().map(|take| take.count).max().unwrap_or(0);
        let lines = events[..most]
            .iter()
            .map(|event| record_line(&self.stage, self.route.as_deref(), event))
            .collect();
        Sample {
            lines,
            takes,
            offered: events.len(),
        }
    }
}

/// A batch's records for each subscriber, and how many each let go for its rate.
pub struct Sample {
    lines: Vec<Bytes>,
    takes: Vec<Take>,
    offered: usize,
}

struct Take {
    count: usize,
    records: mpsc::Sender<Bytes>,
    dropped: Arc<AtomicU64>,
}

impl Sample {
    /// Queue the records without waiting; what is over a rate or finds its subscriber's
    /// queue full is counted as dropped.
    pub fn deliver(self) {
        for take in self.takes {
            let mut dropped = (self.offered - take.count) as u64;
            for line in &self.lines[..take.count] {
                if take.records.try_send(line.clone()).is_err() {
                    dropped += 1;
                }
            }
            if dropped > 0 {
                take.dropped.fetch_add(dropped, Ordering::Relaxed);
            }
        }
    }
}

/// One subscriber's records (JSON lines, each ending in a newline); dropping it
/// unsubscribes.
pub struct Tap {
    point: Arc<TapPoint>,
    id: u64,
    records: mpsc::Receiver<Bytes>,
    dropped: Arc<AtomicU64>,
}

impl Tap {
    /// The next record, waiting for one (the point keeps the sender while subscribed,
    /// so this does not end on its own).
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.records.recv().await
    }

    /// A record if one is queued now.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        self.records.try_recv().ok()
    }

    /// Events let go so far: over the rate, or with the queue full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let mut subscribers = self.point.subscribers.lock().unwrap();
        subscribers.retain(|subscriber| subscriber.id != self.id);
        self.point
            .tapped
            .store(subscribers.len(), Ordering::Relaxed);
    }
}

/// `rate` events per second, in bursts of up to a second's worth.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: now,
        }
    }

    /// How many of `wanted` events fit the rate at `now`; those are spent.
    fn take(&mut self, wanted: usize, now: Instant) -> usize {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = now;
        let taken = (self.tokens as usize).min(wanted);
        self.tokens -= taken as f64;
        taken
    }
}

/// The event's record, one JSON line with its newline.
fn record_line(stage: &str, route: Option<&str>, event: &Event) -> Bytes {
    let mut line = stand_in::line(stage, route, event);
    line.push('\n');
    Bytes::from(line)
}

mod stand_in {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use serde_json::json;

    use crate::event::Event;

    pub fn line(stage: &str, route: Option<&str>, event: &Event) -> String {
        let (payload, encoding) = match serde_json::from_slice::<serde_json::Value>(&event.payload)
        {
            Ok(value) => (value, "json"),
            Err(_) => match std::str::from_utf8(&event.payload) {
                Ok(text) => (json!(text), "utf8"),
                Err(_) => (json!(BASE64.encode(&event.payload)), "base64"),
            },
        };
        let headers: serde_json::Map<String, serde_json::Value> = event
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), json!(String::from_utf8_lossy(value))))
            .collect();
        json!({
            "stage": stage, "route": route,
            "key": event.key.as_ref().map(|key| String::from_utf8_lossy(key).into_owned()),
            "timestamp_ms": event.timestamp_ms, "headers": headers,
            "payload": payload, "payload_encoding": encoding,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests;
