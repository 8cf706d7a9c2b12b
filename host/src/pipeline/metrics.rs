//! Per-stage metrics: the typed series of [`crate::counters`] (read back by the admin
//! page, the heartbeats and the progress line) and the batch-duration histogram.

use std::time::Duration;

use metrics::{Counter, Histogram, histogram};

use crate::counters::{
    self, CALL_NANOSECONDS, CALLS, DEAD_LETTERED, ERRORS, EVENTS_IN, EVENTS_OUT,
};

/// Handles to one stage's series (registered once, cheap to update).
#[derive(Clone)]
pub struct StageMetrics {
    pub events_in: Counter,
    pub events_out: Counter,
    pub dead_lettered: Counter,
    pub errors: Counter,
    batch_seconds: Histogram,
    calls: Counter,
    call_nanoseconds: Counter,
}

impl StageMetrics {
    pub fn new(stage: &str) -> Self {
        StageMetrics {
            events_in: counters::counter(EVENTS_IN, stage),
            events_out: counters::counter(EVENTS_OUT, stage),
            dead_lettered: counters::counter(DEAD_LETTERED, stage),
            errors: counters::counter(ERRORS, stage),
            batch_seconds: histogram!("sluice_batch_duration_seconds", "stage" => stage.to_owned()),
            calls: counters::counter(CALLS, stage),
            call_nanoseconds: counters::counter(CALL_NANOSECONDS, stage),
        }
    }

    /// One batch call (a plugin call, a sink write, a collection, a tick) took
    /// `elapsed`: into the histogram for Prometheus, and into the typed totals that the
    /// admin page reads its mean call time from.
    pub fn record_call(&self, elapsed: Duration) {
        self.batch_seconds.record(elapsed.as_secs_f64());
        self.calls.increment(1);
        self.call_nanoseconds
            .increment(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }
}
