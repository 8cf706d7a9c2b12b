//! The `metrics` capability's quotas.

crate::runtime::quota::quotas! {
    /// How many series a stage's plugin may register.
    pub struct MetricQuotas {
        /// Distinct plugin metric names per stage: each is a Prometheus series forever.
        "metric_series" => series: u32 = 100,
    }
}
