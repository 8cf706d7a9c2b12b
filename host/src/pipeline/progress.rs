//! The pipeline's periodic progress line, read from its own metrics.

/// Log events taken in by each source and written by each sink, from the metrics.
pub(super) fn report(sources: &[String], sinks: &[String]) {
    let rendered = crate::serve::prometheus().render();
    let count = |stage: &str, metric: &str| -> u64 {
        let prefix = format!("{metric}{{stage=\"{stage}\"}} ");
        rendered
            .lines()
            .find_map(|line| line.strip_prefix(&prefix)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    let list = |stages: &[String], metric: &str| -> String {
        stages
            .iter()
            .map(|stage| format!("{stage}={}", count(stage, metric)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let dead: u64 = rendered
        .lines()
        .filter(|line| line.starts_with("sluice_events_dead_lettered_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64;
    tracing::info!(
        "progress: in [{}] written [{}] dead-lettered {dead}",
        list(sources, "sluice_events_in_total"),
        list(sinks, "sluice_events_out_total")
    );
}
