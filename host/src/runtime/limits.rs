//! Per-stage resource limits and quotas, and the memory limiter that enforces the cap.

use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

use super::capabilities::inference::quotas::InferenceQuotas;
use super::capabilities::log::quotas::LogQuotas;
use super::capabilities::metrics::quotas::MetricQuotas;
use super::capabilities::state::quotas::StateQuotas;
use super::quota::Quotas as _;

/// What one stage's plugin instances may use, and what they may make the host do on
/// their behalf. Every call has a deadline; memory is capped per instance; fuel
/// (deterministic CPU accounting) is optional because it costs throughput (about +28%
/// here versus +13% for the epoch deadline alone).
///
/// The memory cap bounds the guest, not the host: a plugin could otherwise make the host
/// store gigabytes of state, log gigabytes, register millions of metric series or emit
/// millions of events from a handful. Each capability's quotas (in its `quotas.rs`) and
/// the `output*` quotas bound that; the defaults suit every first-party plugin.
///
/// The user writes one flat table (`memory_bytes`, `state_key_bytes`, ...); each key is
/// read by the struct that declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Linear memory cap per instance, in bytes (`memory_bytes`).
    pub memory_bytes: u64,
    /// Deadline of one call: init, process or collect (`timeout_ms`).
    pub timeout: Duration,
    /// Fuel per call, if the stage uses fuel metering (`fuel`).
    pub fuel: Option<u64>,
    /// Events one call may emit (`outputs_per_call`). A batch larger than this may still
    /// emit one event per input, so a map never trips it whatever the batch size.
    pub outputs_per_call: u32,
    /// Size of the `data` buffer of one call's output (`output_bytes_per_call`).
    pub output_bytes_per_call: u64,
    /// Headers one output event may carry (`headers_per_event`).
    pub headers_per_event: u32,
    /// Header names and values of one call's output events, summed over the events
    /// (`header_bytes_per_call`): every event may name the same spans of `data`, and
    /// the host copies each event's.
    pub header_bytes_per_call: u64,
    pub state: StateQuotas,
    pub log: LogQuotas,
    pub metrics: MetricQuotas,
    pub inference: InferenceQuotas,
}

pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;

/// The keys this module reads itself; the capabilities' follow.
const CALL_KEYS: &[&str] = &[
    "memory_bytes",
    "timeout_ms",
    "fuel",
    "outputs_per_call",
    "output_bytes_per_call",
    "headers_per_event",
    "header_bytes_per_call",
];

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            timeout: Duration::from_secs(1),
            fuel: None,
            outputs_per_call: 10_000,
            output_bytes_per_call: 16 << 20,
            headers_per_event: 64,
            header_bytes_per_call: 16 << 20,
            state: StateQuotas::default(),
            log: LogQuotas::default(),
            metrics: MetricQuotas::default(),
            inference: InferenceQuotas::default(),
        }
    }
}

impl Limits {
    /// Every key of the `limits` table, in the order the docs list them.
    pub fn keys() -> impl Iterator<Item = &'static str> {
        CALL_KEYS
            .iter()
            .chain(StateQuotas::KEYS)
            .chain(LogQuotas::KEYS)
            .chain(MetricQuotas::KEYS)
            .chain(InferenceQuotas::KEYS)
            .copied()
    }

    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "memory_bytes" => self.memory_bytes = map.next_value()?,
            "timeout_ms" => self.timeout = Duration::from_millis(map.next_value()?),
            "fuel" => self.fuel = Some(map.next_value()?),
            "outputs_per_call" => self.outputs_per_call = map.next_value()?,
            "output_bytes_per_call" => self.output_bytes_per_call = map.next_value()?,
            "headers_per_event" => self.headers_per_event = map.next_value()?,
            "header_bytes_per_call" => self.header_bytes_per_call = map.next_value()?,
            _ => {
                let read = self.state.read(key, map)?
                    || self.log.read(key, map)?
                    || self.metrics.read(key, map)?
                    || self.inference.read(key, map)?;
                if !read {
                    let expected: Vec<String> =
                        Limits::keys().map(|key| format!("`{key}`")).collect();
                    return Err(de::Error::custom(format!(
                        "unknown limit `{key}`, expected one of {}",
                        expected.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Limits {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Table;

        impl<'de> Visitor<'de> for Table {
            type Value = Limits;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a table of limits")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Limits, A::Error> {
                let mut limits = Limits::default();
                while let Some(key) = map.next_key::<String>()? {
                    limits.read(&key, &mut map)?;
                }
                Ok(limits)
            }
        }

        deserializer.deserialize_map(Table)
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

/// Enforces [`Limits::memory_bytes`] on the linear memories of an instance together
/// (a component of many memories gets no more than one), bounds the core instances,
/// memories and tables a component may create, and caps tables so that a table bomb is
/// a memory bomb too.
pub struct MemoryLimiter {
    limit: u64,
    /// Bytes of every memory of the instance, as last grown.
    used: u64,
}

impl MemoryLimiter {
    pub fn new(limit: u64) -> Self {
        MemoryLimiter { limit, used: 0 }
    }
}

/// Tables hold one pointer per element.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// Core instances, memories and tables one component instance may create. The SDKs'
/// components (Rust, C, Python, JavaScript) need a handful of each; wasmtime's own
/// defaults are 10,000.
const MAX_CORE_INSTANCES: usize = 64;
const MAX_MEMORIES: usize = 16;
const MAX_TABLES: usize = 64;

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used + (desired - current) as u64;
        if total > self.limit {
            // Trapping (rather than returning false) stops the guest at the growth site:
            // a guest allocator that ignores failed growth cannot limp on.
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                desired: total,
                limit: self.limit,
            }));
        }
        self.used = total;
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

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}
