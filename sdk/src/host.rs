//! The host's imports: logging, metrics, per-stage state and the stage's limits.

/// Structured logging into the host's log, tagged with the stage.
pub mod log {
    use crate::__bindings::sluice::plugin::log::{Level, log};

    fn emit(level: Level, message: &str, fields: &[(&str, &str)]) {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        log(level, message, &fields);
    }

    pub fn trace(message: &str) {
        emit(Level::Trace, message, &[]);
    }
    pub fn debug(message: &str) {
        emit(Level::Debug, message, &[]);
    }
    pub fn info(message: &str) {
        emit(Level::Info, message, &[]);
    }
    pub fn warn(message: &str) {
        emit(Level::Warn, message, &[]);
    }
    pub fn error(message: &str) {
        emit(Level::Error, message, &[]);
    }
    /// Log with structured key/value fields.
    pub fn info_with(message: &str, fields: &[(&str, &str)]) {
        emit(Level::Info, message, fields);
    }
}

/// Plugin metrics, exported by the host as `sluice_plugin_<name>{stage="..."}`. Names
/// must match `[a-zA-Z_][a-zA-Z0-9_]*`, and a stage may use `limits().metric_series`
/// of them; the host fails the batch otherwise.
pub mod metrics {
    use crate::__bindings::sluice::plugin::metrics as wit;

    pub fn counter_add(name: &str, value: u64) {
        wit::counter_add(name, value);
    }
    pub fn gauge_set(name: &str, value: f64) {
        wit::gauge_set(name, value);
    }
}

/// Per-stage durable key-value state. Writes during one call commit together when the
/// call succeeds and vanish when it fails.
pub mod state {
    use crate::__bindings::sluice::plugin::state as wit;

    pub fn get(key: &str) -> Option<Vec<u8>> {
        wit::get(key)
    }
    pub fn put(key: &str, value: &[u8]) {
        wit::put(key, value);
    }
    pub fn delete(key: &str) {
        wit::delete(key);
    }
    /// Up to `limit` entries under `prefix`, in key order.
    pub fn scan_prefix(prefix: &str, limit: u32) -> Vec<(String, Vec<u8>)> {
        wit::scan_prefix(prefix, limit)
    }
}

/// The stage's quotas (`[plugins.X] limits` in the pipeline config), to size work to
/// fit: how many events a call may emit, how large a state value may be. Needs a host
/// with contract 0.1.1 or later.
pub mod limits {
    pub use crate::__bindings::sluice::plugin::limits::StageLimits;

    pub fn get() -> StageLimits {
        crate::__bindings::sluice::plugin::limits::get()
    }
}
