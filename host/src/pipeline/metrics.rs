//! Per-stage metrics, exported on `/metrics` in Prometheus format.

use metrics::{Counter, Histogram, counter, histogram};

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
        let labels = [("stage", stage.to_owned())];
        StageMetrics {
            events_in: counter!("sluice_events_in_total", &labels),
            events_out: counter!("sluice_events_out_total", &labels),
            dead_lettered: counter!("sluice_events_dead_lettered_total", &labels),
            errors: counter!("sluice_errors_total", &labels),
            batch_seconds: histogram!("sluice_batch_duration_seconds", &labels),
        }
    }
}
