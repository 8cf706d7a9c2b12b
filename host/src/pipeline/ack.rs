//! Acknowledgement tokens: at-least-once end to end.
//!
//! A source attaches one [`Ack`] to every event it takes in. Every event derived from
//! it (a map's output, a fan-out copy, a dead letter) carries a clone. The source's
//! callback runs once the last clone is dropped — after each sink has durably written
//! its copy, or a filter has deliberately dropped it. A holder that could *not* finish
//! (a sink giving up at shutdown) calls [`Ack::fail`], and the source then never
//! acknowledges: the broker redelivers after a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

type Callback = Box<dyn FnOnce() + Send + Sync>;

#[derive(Clone)]
pub struct Ack(Option<Arc<Inner>>);

struct Inner {
    failed: AtomicBool,
    on_done: std::sync::Mutex<Option<Callback>>,
}

impl Ack {
    /// A token whose completion runs `on_done`.
    pub fn new(on_done: impl FnOnce() + Send + Sync + 'static) -> Ack {
        Ack(Some(Arc::new(Inner {
            failed: AtomicBool::new(false),
            on_done: std::sync::Mutex::new(Some(Box::new(on_done))),
        })))
    }

    /// A token for sources with nothing to acknowledge (collectors, timers).
    pub fn none() -> Ack {
        Ack(None)
    }

    /// Give up on this event: the source will not acknowledge it.
    pub fn fail(&self) {
        if let Some(inner) = &self.0 {
            inner.failed.store(true, Ordering::Release);
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
        f.write_str(if self.0.is_some() { "Ack" } else { "Ack(none)" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn fires_once_after_the_last_clone_unless_failed() {
        let fired = Arc::new(AtomicUsize::new(0));
        let counter = fired.clone();
        let ack = Ack::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let copy = ack.clone();
        drop(ack);
        assert_eq!(fired.load(Ordering::SeqCst), 0);
        drop(copy);
        assert_eq!(fired.load(Ordering::SeqCst), 1);

        let counter = fired.clone();
        let ack = Ack::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        ack.clone().fail();
        drop(ack);
        assert_eq!(
            fired.load(Ordering::SeqCst),
            1,
            "a failed token never acknowledges"
        );
    }
}
