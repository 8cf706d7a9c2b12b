//! The `log` capability's quotas.

crate::runtime::quota::quotas! {
    /// How much a stage's plugin may make the host log.
    pub struct LogQuotas {
        /// Longest log message (and longest rendering of its fields); more is truncated.
        "log_message_bytes" => message_bytes: u32 = 4 << 10,
        /// Log lines per second for the whole stage, with bursts of as many; the excess
        /// is dropped and counted in `sluice_plugin_log_dropped_total`.
        "log_lines_per_second" => lines_per_second: u32 = 100,
    }
}
