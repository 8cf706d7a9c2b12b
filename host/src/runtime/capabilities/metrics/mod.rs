//! The `metrics` capability: plugin counters and gauges, exported as
//! `sluice_plugin_<name>{stage="..."}`. Every name becomes a Prometheus series that
//! lives as long as the host, so a stage may use at most `metric_series` names, each a
//! valid Prometheus name; anything else traps the call.
//!
//! Handles are resolved once per name: the stage's registry hands them out, and each
//! instance caches them, so a call costs a hash lookup, not a recorder lookup and a
//! label allocation.

pub mod quotas;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wasmtime::component::{HasData, Linker};

use crate::runtime::bindings::metrics;
use crate::runtime::error::{LimitExceeded, Refused};
use quotas::MetricQuotas;
use super::StageContext;

/// Longest plugin metric name, in bytes (before the `sluice_plugin_` prefix).
pub const MAX_NAME_BYTES: usize = 128;

#[derive(Clone)]
enum Series {
    Counter(::metrics::Counter),
    Gauge(::metrics::Gauge),
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Counter,
    Gauge,
}

impl Series {
    fn new(kind: Kind, name: &str, stage: &str) -> Series {
        let name = format!("sluice_plugin_{name}");
        let stage = stage.to_owned();
        match kind {
            Kind::Counter => Series::Counter(::metrics::counter!(name, "stage" => stage)),
            Kind::Gauge => Series::Gauge(::metrics::gauge!(name, "stage" => stage)),
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Series::Counter(_) => Kind::Counter,
            Series::Gauge(_) => Kind::Gauge,
        }
    }
}

impl Kind {
    fn article(self) -> &'static str {
        match self {
            Kind::Counter => "a counter",
            Kind::Gauge => "a gauge",
        }
    }
}

/// The metric series of one stage, shared by its instances.
pub struct StageSeries {
    limit: u32,
    series: Mutex<HashMap<String, Series>>,
}

impl StageSeries {
    pub fn new(quotas: &MetricQuotas) -> Self {
        StageSeries {
            limit: quotas.series,
            series: Mutex::default(),
        }
    }
}

/// One instance's side of the `metrics` capability.
pub struct MetricsCtx {
    stage: Arc<str>,
    shared: Arc<StageSeries>,
    resolved: HashMap<String, Series>,
}

impl MetricsCtx {
    pub fn new(stage: Arc<str>, shared: Arc<StageSeries>) -> Self {
        MetricsCtx {
            stage,
            shared,
            resolved: HashMap::new(),
        }
    }

    /// The series named `name`; on this instance's first use of it, resolved from the
    /// stage's registry, which registers it within the stage's quota.
    fn series(&mut self, name: &str, kind: Kind) -> wasmtime::Result<&Series> {
        if !self.resolved.contains_key(name) {
            let mut registry = self.shared.series.lock().unwrap();
            let series = match registry.get(name) {
                Some(series) => series.clone(),
                None => {
                    check_name(name)?;
                    if registry.len() >= self.shared.limit as usize {
                        return Err(wasmtime::Error::new(LimitExceeded::new(
                            "metric_series",
                            format!("metric `{name}`, series #{}", registry.len() + 1),
                            self.shared.limit.into(),
                        )));
                    }
                    let series = Series::new(kind, name, &self.stage);
                    registry.insert(name.to_owned(), series.clone());
                    series
                }
            };
            self.resolved.insert(name.to_owned(), series);
        }
        Ok(&self.resolved[name])
    }
}

/// A Prometheus name: `[a-zA-Z_][a-zA-Z0-9_]*`, at most [`MAX_NAME_BYTES`].
fn check_name(name: &str) -> wasmtime::Result<()> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_NAME_BYTES;
    if valid {
        return Ok(());
    }
    let shown: String = name.chars().take(40).collect();
    Err(wasmtime::Error::new(Refused(format!(
        "metric name `{shown}{}` is not a Prometheus name ([a-zA-Z_][a-zA-Z0-9_]*, at most {MAX_NAME_BYTES} bytes)",
        if shown.len() < name.len() { "…" } else { "" }
    ))))
}

fn wrong_kind(name: &str, series: &Series) -> wasmtime::Error {
    wasmtime::Error::new(Refused(format!(
        "metric `{name}` is already {} of this stage",
        series.kind().article()
    )))
}

impl super::HostState for MetricsCtx {
    type Shared = Arc<StageSeries>;
    fn shared(spec: &StageContext<'_>) -> Self::Shared {
        Arc::new(StageSeries::new(&spec.limits.metrics))
    }
    fn new(spec: &StageContext<'_>, series: &Self::Shared) -> Self {
        MetricsCtx::new(spec.stage.clone(), series.clone())
    }
}

/// Gives the `metrics` host functions their state, as `WasiView` does for WASI.
pub trait MetricsView {
    fn metrics(&mut self) -> &mut MetricsCtx;
}

struct HasMetrics;

impl HasData for HasMetrics {
    type Data<'a> = &'a mut MetricsCtx;
}

pub fn add_to_linker<T: MetricsView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    metrics::add_to_linker::<T, HasMetrics>(linker, T::metrics)
}

impl metrics::Host for MetricsCtx {
    fn counter_add(&mut self, name: String, value: u64) -> wasmtime::Result<()> {
        match self.series(&name, Kind::Counter)? {
            Series::Counter(counter) => counter.increment(value),
            other => return Err(wrong_kind(&name, other)),
        }
        Ok(())
    }

    fn gauge_set(&mut self, name: String, value: f64) -> wasmtime::Result<()> {
        match self.series(&name, Kind::Gauge)? {
            Series::Gauge(gauge) => gauge.set(value),
            other => return Err(wrong_kind(&name, other)),
        }
        Ok(())
    }
}
