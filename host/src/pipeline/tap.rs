//! Taps: a live sample of the events leaving a stage, for `sluice tap` (`GET
//! /v1/tap/{stage}`). A tap must never slow the pipeline: each subscriber takes at most
//! its rate of events per second, copied onto a bounded channel that is never waited
//! for, and what it does not take is only counted; its reader makes the records, off the
//! pipeline's tasks. Nobody tapping, a send path pays one relaxed atomic load per batch.
//!
//! Points live in one process-wide registry keyed by stage name and route, not by
//! pipeline instance: a reload that keeps a stage's name keeps its taps.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

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
    // A second's worth of events may wait for a slow reader; beyond that they drop.
    let (sender, events) = mpsc::channel(rate as usize);
    let id = NEXT_SUBSCRIBER.fetch_add(1, Ordering::Relaxed);
    let dropped = Arc::new(AtomicU64::new(0));
    {
        let mut subscribers = point.subscribers.lock().unwrap();
        subscribers.push(Subscriber {
            id,
            bucket: TokenBucket::new(rate, Instant::now()),
            events: sender,
            dropped: dropped.clone(),
        });
        point.tapped.store(subscribers.len(), Ordering::Relaxed);
    }
    Tap {
        point,
        id,
        events,
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
    events: mpsc::Sender<Event>,
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

    /// Spend the subscribers' rates on `events` now and copy what they take, to deliver
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
                events: subscriber.events.clone(),
                dropped: subscriber.dropped.clone(),
            })
            .collect();
        // Every subscriber takes from the front: one copy serves them all.
        let most = takes.iter().map(|take| take.count).max().unwrap_or(0);
        Sample {
            events: events[..most].to_vec(),
            takes,
            offered: events.len(),
        }
    }
}

/// A batch's events for each subscriber, and how many each let go for its rate.
pub struct Sample {
    events: Vec<Event>,
    takes: Vec<Take>,
    offered: usize,
}

struct Take {
    count: usize,
    events: mpsc::Sender<Event>,
    dropped: Arc<AtomicU64>,
}

impl Sample {
    /// Queue the events without waiting; what is over a rate or finds its subscriber's
    /// queue full is counted as dropped.
    pub fn deliver(self) {
        for take in self.takes {
            let mut dropped = (self.offered - take.count) as u64;
            for event in &self.events[..take.count] {
                if take.events.try_send(event.clone()).is_err() {
                    dropped += 1;
                }
            }
            if dropped > 0 {
                take.dropped.fetch_add(dropped, Ordering::Relaxed);
            }
        }
    }
}

/// One subscriber's sample; dropping it unsubscribes.
pub struct Tap {
    point: Arc<TapPoint>,
    id: u64,
    events: mpsc::Receiver<Event>,
    dropped: Arc<AtomicU64>,
}

impl Tap {
    /// The stage tapped.
    pub fn stage(&self) -> &str {
        &self.point.stage
    }

    /// The route tapped (`None`: the default output).
    pub fn route(&self) -> Option<&str> {
        self.point.route.as_deref()
    }

    /// The next event, waiting for one (the point keeps the sender while subscribed,
    /// so this does not end on its own).
    pub async fn recv(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// An event if one is queued now.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
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

#[cfg(test)]
mod tests;
