//! The pipeline's periodic progress line, read from its own metrics.

use std::collections::BTreeMap;

/// Log events taken in by each source and written by each sink, from the metrics.
pub(super) fn report(sources: &[String], sinks: &[String]) {
    let taken = totals("sluice_events_in_total");
    let written = totals("sluice_events_out_total");
    let list = |stages: &[String], counts: &BTreeMap<String, u64>| -> String {
        stages
            .iter()
            .map(|stage| format!("{stage}={}", counts.get(stage).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let dead: u64 = totals("sluice_events_dead_lettered_total").values().sum();
    tracing::info!(
        "progress: in [{}] written [{}] dead-lettered {dead}",
        list(sources, &taken),
        list(sinks, &written)
    );
}

/// The value of the counter `metric` for each stage that has one.
pub fn totals(metric: &str) -> BTreeMap<String, u64> {
    let rendered = crate::serve::prometheus().render();
    let prefix = format!("{metric}{{stage=\"");
    rendered
        .lines()
        .filter_map(|line| {
            let (stage, value) = line.strip_prefix(&prefix)?.split_once("\"} ")?;
            Some((stage.to_owned(), value.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}
