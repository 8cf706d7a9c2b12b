//! Acknowledgement tokens: at-least-once end to end, by explicit verdicts.
//!
//! A source attaches one [`Ack`] to every event it takes in. Every event derived from
//! it (a map's output, a fan-out copy, a dead letter) carries a clone, and every clone
//! ends with a verdict: [`Ack::delivered`] (a sink holds its copy durably),
//! [`Ack::dropped`] (a filter, a dedup or an aggregate consumed it on purpose),
//! [`Ack::handed_on`] (its holder passed the event on in copies of its own) or
//! [`Ack::fail`]. The source's callback runs once the last clone is settled, and only if
//! none failed.
//!
//! A clone released without a verdict — dropped in a channel that closed, held by a
//! task that panicked or was aborted — counts as a failure, never as a delivery: the
//! source then does not acknowledge (no PUBACK, no Kafka commit past it, no `200`), so
//! the event comes again. Such releases are counted in
//! [`UNSETTLED`](crate::counters::UNSETTLED), so that a path that forgets its verdict
//! shows in the metrics rather than as a silent redelivery.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::counters;

type Callback = Box<dyn FnOnce() + Send + Sync>;

/// One holder's share of an event's token. Cloning makes another holder, which owes
/// its own verdict.
pub struct Ack {
    inner: Option<Arc<Inner>>,
    settled: bool,
}

struct Inner {
    failed: AtomicBool,
    on_done: std::sync::Mutex<Option<Callback>>,
}

impl Ack {
    /// A token whose completion runs `on_done`.
    pub fn new(on_done: impl FnOnce() + Send + Sync + 'static) -> Ack {
        Ack {
            inner: Some(Arc::new(Inner {
                failed: AtomicBool::new(false),
                on_done: std::sync::Mutex::new(Some(Box::new(on_done))),
            })),
            settled: false,
        }
    }

    /// A token for sources with nothing to acknowledge (collectors, timers).
    pub fn none() -> Ack {
        Ack {
            inner: None,
            settled: true,
        }
    }

    /// This copy is durably held by a sink.
    pub fn delivered(mut self) {
        self.settled = true;
    }

    /// This copy was consumed on purpose: filtered out, a duplicate, folded into an
    /// aggregate.
    pub fn dropped(mut self) {
        self.settled = true;
    }

    /// This copy's holder passed the event on in copies it made (each owing a verdict).
    pub fn handed_on(mut self) {
        self.settled = true;
    }

    /// Give up on this event: the source will not acknowledge it.
    pub fn fail(mut self) {
        self.mark_failed();
        self.settled = true;
    }

    fn mark_failed(&self) {
        if let Some(inner) = &self.inner {
            inner.failed.store(true, Ordering::Release);
        }
    }
}

impl Clone for Ack {
    fn clone(&self) -> Ack {
        Ack {
            inner: self.inner.clone(),
            settled: self.inner.is_none(),
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if !self.settled {
            self.mark_failed();
            counters::counter(counters::UNSETTLED, "pipeline").increment(1);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.failed.load(Ordering::Acquire)
            && let Some(callback) = self.on_done.get_mut().ok().and_then(Option::take)
        {
            callback();
        }
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.inner.is_some() {
            "Ack"
        } else {
            "Ack(none)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn counted() -> (Ack, Arc<AtomicUsize>) {
        let fired = Arc::new(AtomicUsize::new(0));
        let counter = fired.clone();
        let ack = Ack::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        (ack, fired)
    }

    #[test]
    fn fires_once_after_every_copy_has_a_good_verdict() {
        let (ack, fired) = counted();
        let copy = ack.clone();
        let other = ack.clone();
        ack.handed_on();
        copy.delivered();
        assert_eq!(fired.load(Ordering::SeqCst), 0, "one copy is still out");
        other.dropped();
        assert_eq!(fired.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_failed_copy_fails_the_event() {
        let (ack, fired) = counted();
        ack.clone().fail();
        ack.delivered();
        assert_eq!(fired.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_copy_released_without_a_verdict_fails_the_event_and_is_counted() {
        let before = counters::sum(counters::UNSETTLED);
        let (ack, fired) = counted();
        let copy = ack.clone();
        ack.delivered();
        drop(copy);
        assert_eq!(fired.load(Ordering::SeqCst), 0, "a drop is not a delivery");
        assert_eq!(counters::sum(counters::UNSETTLED), before + 1);
        // A token with nothing behind it owes nothing.
        drop(Ack::none().clone());
        assert_eq!(counters::sum(counters::UNSETTLED), before + 1);
    }
}
