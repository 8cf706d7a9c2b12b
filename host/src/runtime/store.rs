//! The per-instance data every wasmtime `Store` carries: the WASI context, the memory
//! limiter, and the host state of every capability. Each capability reaches its own
//! state through its view trait, so none of them sees another's.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::capabilities::{HostStates, HostStatesView, StageShared};
use super::limits::MemoryLimiter;
use super::spec::StageSpec;
use super::stderr::StderrTail;

pub struct StoreData {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) stderr: StderrTail,
    pub(crate) capabilities: HostStates,
}

impl StoreData {
    /// The host state of one instance of `spec`'s stage.
    pub fn new(spec: &StageSpec, shared: &StageShared, wasi: WasiCtx, stderr: StderrTail) -> Self {
        StoreData {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(spec.limits.memory_bytes),
            stderr,
            capabilities: HostStates::new(&spec.context(), shared),
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

impl HostStatesView for StoreData {
    fn host_states(&mut self) -> &mut HostStates {
        &mut self.capabilities
    }
}

/// The shared data model declares records only; nothing to implement.
impl super::bindings::types::Host for StoreData {}
