//! The per-instance data every wasmtime `Store` carries: the WASI context, the memory
//! limiter, and one host state per capability. Each capability reaches its own state
//! through its view trait, so none of them sees another's.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::capabilities::StageShared;
use super::capabilities::inference::{InferenceCtx, InferenceView};
use super::capabilities::limits::{LimitsCtx, LimitsView};
use super::capabilities::log::{LogCtx, LogView};
use super::capabilities::metrics::{MetricsCtx, MetricsView};
use super::capabilities::state::{StateCtx, StateView};
use super::instance::StageSpec;
use super::limits::MemoryLimiter;
use super::stderr::StderrTail;

pub struct StoreData {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) stderr: StderrTail,
    pub(crate) log: LogCtx,
    pub(crate) metrics: MetricsCtx,
    pub(crate) state: StateCtx,
    pub(crate) limits: LimitsCtx,
    pub(crate) inference: InferenceCtx,
}

impl StoreData {
    /// The host state of one instance of `spec`'s stage.
    pub fn new(spec: &StageSpec, shared: &StageShared, wasi: WasiCtx, stderr: StderrTail) -> Self {
        let stage: &Arc<str> = &spec.stage;
        StoreData {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: spec.limits.memory_bytes,
            },
            stderr,
            log: LogCtx::new(stage.clone(), &spec.limits, shared.log.clone()),
            metrics: MetricsCtx::new(stage.clone(), shared.metrics.clone()),
            state: StateCtx::new(spec.state.clone(), stage.clone(), &spec.limits),
            limits: LimitsCtx::new(&spec.limits),
            inference: InferenceCtx::new(stage.clone(), spec.models.clone(), &spec.limits),
        }
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl LogView for StoreData {
    fn log(&mut self) -> &mut LogCtx {
        &mut self.log
    }
}

impl MetricsView for StoreData {
    fn metrics(&mut self) -> &mut MetricsCtx {
        &mut self.metrics
    }
}

impl StateView for StoreData {
    fn state(&mut self) -> &mut StateCtx {
        &mut self.state
    }
}

impl LimitsView for StoreData {
    fn limits(&mut self) -> &mut LimitsCtx {
        &mut self.limits
    }
}

impl InferenceView for StoreData {
    fn inference(&mut self) -> &mut InferenceCtx {
        &mut self.inference
    }
}

/// The shared data model declares records only; nothing to implement.
impl super::bindings::types::Host for StoreData {}
