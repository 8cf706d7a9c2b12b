//! Per-stage resource limits and quotas, and the memory limiter that enforces the cap.

use std::time::Duration;

use serde::Deserialize;

/// What one stage's plugin instances may use, and what they may make the host do on
/// their behalf. Every call has a deadline; memory is capped per instance; fuel
/// (deterministic CPU accounting) is optional because it costs throughput (about +28%
/// here versus +13% for the epoch deadline alone).
///
/// The memory cap bounds the guest, not the host: a plugin could otherwise make the host
/// store gigabytes of state, log gigabytes, register millions of metric series or emit
/// millions of events from a handful. The `state_*`, `log_*`, `metric_series` and
/// `output*` quotas bound that; the defaults suit every first-party plugin.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Linear memory cap per instance, in bytes.
    #[serde(default = "default_memory")]
    pub memory_bytes: u64,
    /// Deadline of one call (init, process or collect).
    #[serde(
        default = "default_timeout",
        rename = "timeout_ms",
        with = "serde_with::As::<serde_with::DurationMilliSeconds<u64>>"
    )]
    pub timeout: Duration,
    /// Fuel per call, if the stage uses fuel metering.
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Longest state key, in bytes.
    #[serde(default = "default_state_key_bytes")]
    pub state_key_bytes: u32,
    /// Largest state value, in bytes.
    #[serde(default = "default_state_value_bytes")]
    pub state_value_bytes: u32,
    /// Keys and values one call may have pending before its commit: the host holds
    /// them in memory until the call ends.
    #[serde(default = "default_state_write_bytes_per_call")]
    pub state_write_bytes_per_call: u64,
    /// Keys and values the stage may keep in the state store, so that a plugin fills
    /// its quota, never the disk.
    #[serde(default = "default_state_total_bytes")]
    pub state_total_bytes: u64,
    /// Longest log message (and longest rendering of its fields); more is truncated.
    #[serde(default = "default_log_message_bytes")]
    pub log_message_bytes: u32,
    /// Log lines per second for the whole stage, with bursts of as many; the excess is
    /// dropped and counted in `sluice_plugin_log_dropped_total`.
    #[serde(default = "default_log_lines_per_second")]
    pub log_lines_per_second: u32,
    /// Distinct plugin metric names per stage: each is a Prometheus series forever.
    #[serde(default = "default_metric_series")]
    pub metric_series: u32,
    /// Events one call may emit. A batch larger than this may still emit one event per
    /// input, so a map never trips it whatever the batch size.
    #[serde(default = "default_outputs_per_call")]
    pub outputs_per_call: u32,
    /// Size of the `data` buffer of one call's output.
    #[serde(default = "default_output_bytes_per_call")]
    pub output_bytes_per_call: u64,
    /// Bytes of tensors (inputs and outputs) one call may exchange with the host's
    /// models: the host holds them while the model runs.
    #[serde(default = "default_inference_bytes_per_call")]
    pub inference_bytes_per_call: u64,
    /// Model runs one call may make: each costs host CPU outside the call's fuel.
    #[serde(default = "default_inference_runs_per_call")]
    pub inference_runs_per_call: u32,
}

pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;

fn default_memory() -> u64 {
    DEFAULT_MEMORY_BYTES
}

fn default_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_state_key_bytes() -> u32 {
    1 << 10
}

fn default_state_value_bytes() -> u32 {
    1 << 20
}

fn default_state_write_bytes_per_call() -> u64 {
    16 << 20
}

fn default_state_total_bytes() -> u64 {
    256 << 20
}

fn default_log_message_bytes() -> u32 {
    4 << 10
}

fn default_log_lines_per_second() -> u32 {
    100
}

fn default_metric_series() -> u32 {
    100
}

fn default_outputs_per_call() -> u32 {
    10_000
}

fn default_output_bytes_per_call() -> u64 {
    16 << 20
}

fn default_inference_bytes_per_call() -> u64 {
    64 << 20
}

fn default_inference_runs_per_call() -> u32 {
    16
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: default_memory(),
            timeout: default_timeout(),
            fuel: None,
            state_key_bytes: default_state_key_bytes(),
            state_value_bytes: default_state_value_bytes(),
            state_write_bytes_per_call: default_state_write_bytes_per_call(),
            state_total_bytes: default_state_total_bytes(),
            log_message_bytes: default_log_message_bytes(),
            log_lines_per_second: default_log_lines_per_second(),
            metric_series: default_metric_series(),
            outputs_per_call: default_outputs_per_call(),
            output_bytes_per_call: default_output_bytes_per_call(),
            inference_bytes_per_call: default_inference_bytes_per_call(),
            inference_runs_per_call: default_inference_runs_per_call(),
        }
    }
}

/// The error a denied memory growth traps with; the runtime turns it into
/// [`CallFailure::OutOfMemory`](super::CallFailure::OutOfMemory).
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: wanted {desired} bytes, limit {limit}")]
pub struct MemoryLimitExceeded {
    pub desired: u64,
    pub limit: u64,
}

/// Enforces [`Limits::memory_bytes`] on every linear memory and table of an instance.
pub struct MemoryLimiter {
    pub limit: u64,
}

/// Tables hold one pointer per element; cap them so a table bomb is a memory bomb too.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.limit {
            // Trapping (rather than returning false) stops the guest at the growth site:
            // a guest allocator that ignores failed growth cannot limp on.
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                desired: desired as u64,
                limit: self.limit,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
