//! How a source gathers what it reads into batches: one goes out when it holds
//! `batch_size` events or `batch_timeout_ms` after its first, whichever comes first.
//! Written once for the MQTT and Kafka sources, which read one message at a time.

use std::time::Duration;

use tokio::time::Instant;

use super::Batch;

/// A source's `batch_size` and `batch_timeout_ms`.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    size: usize,
    timeout: Duration,
}

impl BatchLimits {
    /// At least one event and one millisecond: a zero would flush on every event or
    /// spin on an expired deadline.
    pub fn new(size: usize, timeout: Duration) -> BatchLimits {
        BatchLimits {
            size: size.max(1),
            timeout: timeout.max(Duration::from_millis(1)),
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }
}

/// What a batcher can gather: the pipeline's [`Batch`], or a source's own records.
pub trait Gather {
    fn with_capacity(capacity: usize) -> Self;
    fn len(&self) -> usize;
}

impl Gather for Batch {
    fn with_capacity(capacity: usize) -> Self {
        Batch::with_capacity(capacity)
    }
    fn len(&self) -> usize {
        Batch::len(self)
    }
}

impl<T> Gather for Vec<T> {
    fn with_capacity(capacity: usize) -> Self {
        Vec::with_capacity(capacity)
    }
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

/// The batch being gathered and its deadline.
pub struct Batcher<B> {
    limits: BatchLimits,
    pending: B,
    /// Set by the first event of a batch.
    deadline: Option<Instant>,
}

impl<B: Gather> Batcher<B> {
    pub fn new(limits: BatchLimits) -> Batcher<B> {
        Batcher {
            limits,
            pending: B::with_capacity(limits.size),
            deadline: None,
        }
    }

    /// The batch to add one event to; the first one starts its deadline.
    pub fn add(&mut self) -> &mut B {
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.limits.timeout);
        }
        &mut self.pending
    }

    /// Whether the batch reached `batch_size`.
    pub fn full(&self) -> bool {
        self.pending.len() >= self.limits.size
    }

    /// Resolves when a started batch's deadline passes; never while it is empty. Cancel
    /// safe, for a `select!` beside the source's reads.
    pub async fn due(&self) {
        match self.deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    }

    /// The gathered batch (empty when nothing was added), leaving an empty one sized
    /// like it: a steady stream fills the same size again, a trickle allocates little.
    pub fn take(&mut self) -> B {
        self.deadline = None;
        let capacity = self.pending.len();
        std::mem::replace(&mut self.pending, B::with_capacity(capacity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_goes_out_when_full_or_at_its_deadline() {
        let mut batcher = Batcher::<Vec<u32>>::new(BatchLimits::new(3, Duration::from_millis(20)));
        let empty = tokio::time::timeout(Duration::from_millis(200), batcher.due()).await;
        assert!(empty.is_err(), "an empty batch is never due");

        batcher.add().push(1);
        batcher.add().push(2);
        assert!(!batcher.full());
        batcher.add().push(3);
        assert!(batcher.full());
        assert_eq!(batcher.take(), [1, 2, 3]);
        assert!(!batcher.full());

        batcher.add().push(4);
        let due = tokio::time::timeout(Duration::from_secs(10), batcher.due()).await;
        assert!(due.is_ok(), "a started batch falls due");
        assert_eq!(batcher.take(), [4]);
        let empty = tokio::time::timeout(Duration::from_millis(200), batcher.due()).await;
        assert!(empty.is_err(), "taking the batch clears its deadline");
    }

    #[test]
    fn zero_limits_are_raised_to_one() {
        let limits = BatchLimits::new(0, Duration::ZERO);
        assert_eq!((limits.size, limits.timeout), (1, Duration::from_millis(1)));
    }
}
