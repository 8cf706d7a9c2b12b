//! Host-side bindings of the WIT worlds in `wit/`. Both worlds import the same
//! interfaces; the collector's bindings reuse the processor's so that one set of host
//! implementations serves both.
//!
//! Every import is trappable: a host import that a plugin drives past a quota returns
//! an error, which traps the guest and fails the call with that typed error.

pub mod processor {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "processor",
        imports: { default: trappable },
    });
}

pub mod collector {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "collector",
        imports: { default: trappable },
        with: {
            "sluice:plugin/types": super::processor::sluice::plugin::types,
            "sluice:plugin/log": super::processor::sluice::plugin::log,
            "sluice:plugin/metrics": super::processor::sluice::plugin::metrics,
            "sluice:plugin/state": super::processor::sluice::plugin::state,
            "sluice:plugin/limits": super::processor::sluice::plugin::limits,
        },
    });
}

/// The `timed-processor` world is `processor` plus the `tick` export; its interfaces
/// are the processor's.
pub mod timed {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "timed-processor",
        imports: { default: trappable },
        with: {
            "sluice:plugin/types": super::processor::sluice::plugin::types,
            "sluice:plugin/log": super::processor::sluice::plugin::log,
            "sluice:plugin/metrics": super::processor::sluice::plugin::metrics,
            "sluice:plugin/state": super::processor::sluice::plugin::state,
            "sluice:plugin/limits": super::processor::sluice::plugin::limits,
        },
    });
}

/// The `scorer` world is `processor` plus `inference`; only the `inference` interface is
/// new, so everything else reuses the processor's bindings. Its components are linked
/// as processors (the exports are the same).
pub mod scorer {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "scorer",
        imports: { default: trappable },
        with: {
            "sluice:plugin/types": super::processor::sluice::plugin::types,
            "sluice:plugin/log": super::processor::sluice::plugin::log,
            "sluice:plugin/metrics": super::processor::sluice::plugin::metrics,
            "sluice:plugin/state": super::processor::sluice::plugin::state,
            "sluice:plugin/limits": super::processor::sluice::plugin::limits,
            "sluice:plugin/inference.model": crate::runtime::capabilities::inference::ModelHandle,
        },
    });
}

pub use processor::sluice::plugin::types as wit;
pub use processor::sluice::plugin::{limits, log, metrics, state, types};
pub use scorer::sluice::plugin::inference;
