//! The pipeline's periodic progress line, read from its own counters.

use std::collections::BTreeMap;

use crate::counters::{self, DEAD_LETTERED, EVENTS_IN, EVENTS_OUT};

/// Log events taken in by each source and written by each sink.
pub(super) fn report(sources: &[String], sinks: &[String]) {
    let taken = counters::totals(EVENTS_IN);
    let written = counters::totals(EVENTS_OUT);
    let list = |stages: &[String], counts: &BTreeMap<String, u64>| -> String {
        stages
            .iter()
            .map(|stage| format!("{stage}={}", counts.get(stage).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let dead = counters::sum(DEAD_LETTERED);
    tracing::info!(
        "progress: in [{}] written [{}] dead-lettered {dead}",
        list(sources, &taken),
        list(sinks, &written)
    );
}
