//! Delivery reports for the `kafka` sink, per batch rather than per record.
//!
//! Each record enqueued on the producer carries its event's acknowledgement token and its
//! place in the batch. librdkafka's polling thread hands the record back with its
//! delivery report: a delivered record settles its token right there, so that the source
//! may commit its offset as soon as the broker has it; a failed one is kept, with its
//! error, for the sink to send again. The batch counts the reports still to come and
//! wakes the sink once when the last one arrives: one shared counter per batch instead of
//! a channel and a future per record.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use tokio::sync::Notify;

use crate::pipeline::Ack;

/// The reports of one batch's records.
pub(super) struct Deliveries {
    /// Reports still to come, plus one while the batch is still being enqueued (so that
    /// early reports cannot finish a batch whose last records are not yet sent).
    outstanding: AtomicUsize,
    failed: Mutex<Vec<Failed>>,
    finished: Notify,
}

/// A record the broker did not take: its place in the batch, its token, and why.
pub(super) struct Failed {
    pub index: usize,
    pub ack: Ack,
    pub error: KafkaError,
}

/// What travels through librdkafka with a record and comes back with its report.
pub(super) struct Pending {
    index: usize,
    ack: Ack,
    batch: Arc<Deliveries>,
}

impl Deliveries {
    /// A batch about to be enqueued.
    pub fn new() -> Arc<Deliveries> {
        Arc::new(Deliveries {
            outstanding: AtomicUsize::new(1),
            failed: Mutex::new(Vec::new()),
            finished: Notify::new(),
        })
    }

    /// The report slot for the record at `index` of the batch.
    pub fn pending(self: &Arc<Self>, index: usize, ack: Ack) -> Box<Pending> {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        Box::new(Pending {
            index,
            ack,
            batch: self.clone(),
        })
    }

    /// Every record of the batch is enqueued (or failed to be).
    pub fn sealed(&self) {
        self.report_done();
    }

    /// Whether every record of the batch has its report.
    pub fn is_finished(&self) -> bool {
        self.outstanding.load(Ordering::Acquire) == 0
    }

    /// Wait until every record of the (sealed) batch has its report.
    pub async fn finished(&self) {
        // `notify_one` leaves a permit when nobody waits yet, so a report that lands
        // between the check and the wait is not missed.
        while !self.is_finished() {
            self.finished.notified().await;
        }
    }

    /// The records that failed, in batch order.
    pub fn take_failed(&self) -> Vec<Failed> {
        let mut failed = std::mem::take(&mut *self.failed.lock().unwrap());
        failed.sort_unstable_by_key(|failed| failed.index);
        failed
    }

    fn report_done(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finished.notify_one();
        }
    }
}

impl Pending {
    /// The record's outcome: delivered settles its token, a failure keeps it for a retry.
    pub fn settle(self, outcome: Result<(), KafkaError>) {
        let Pending { index, ack, batch } = self;
        match outcome {
            Ok(()) => ack.delivered(),
            Err(error) => batch
                .failed
                .lock()
                .unwrap()
                .push(Failed { index, ack, error }),
        }
        batch.report_done();
    }
}

/// The producer's context: settles each record as its delivery report comes in.
pub(super) struct ReportContext;

impl ClientContext for ReportContext {}

impl ProducerContext for ReportContext {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, report: &DeliveryResult<'_>, pending: Box<Pending>) {
        let outcome = match report {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(error.clone()),
        };
        (*pending).settle(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode;

    #[tokio::test]
    async fn a_batch_finishes_when_sealed_and_every_report_is_in() {
        let delivered = Arc::new(AtomicUsize::new(0));
        let ack = || {
            let delivered = delivered.clone();
            Ack::new(move || {
                delivered.fetch_add(1, Ordering::SeqCst);
            })
        };
        let batch = Deliveries::new();
        let first = batch.pending(0, ack());
        let second = batch.pending(1, ack());
        (*first).settle(Ok(()));
        assert_eq!(delivered.load(Ordering::SeqCst), 1, "settled on its report");
        assert!(!batch.is_finished());
        (*second).settle(Err(KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageTimedOut,
        )));
        assert!(
            !batch.is_finished(),
            "not sealed yet: more records may come"
        );
        batch.sealed();
        batch.finished().await;
        let failed = batch.take_failed();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].index, 1);
        failed.into_iter().for_each(|failed| failed.ack.fail());
        assert_eq!(delivered.load(Ordering::SeqCst), 1);
    }
}
