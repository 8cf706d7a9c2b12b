//! Per-stage metrics: the typed series of [`crate::counters`] (read back by the admin
//! page, the heartbeats and the progress line) and the batch-duration histogram.

use metrics::{Counter, Histogram, histogram};

use crate::counters::{self, DEAD_LETTERED, ERRORS, EVENTS_IN, EVENTS_OUT};

/// Handles to one stage's series (registered once, cheap to update).
#[derive(Clone)]
pub struct StageMetrics {
    pub events_in: Counter,
    pub events_out: Counter,
    pub dead_lettered: Counter,
    pub errors: Counter,
    pub batch_seconds: Histogram,
}

impl StageMetrics {
    pub fn new(stage: &str) -> Self {
        StageMetrics {
            events_in: counters::counter(EVENTS_IN, stage),
            events_out: counters::counter(EVENTS_OUT, stage),
            dead_lettered: counters::counter(DEAD_LETTERED, stage),
            errors: counters::counter(ERRORS, stage),
            batch_seconds: histogram!("sluice_batch_duration_seconds", "stage" => stage.to_owned()),
        }
    }
}
