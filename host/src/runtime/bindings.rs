//! Host-side bindings of the WIT worlds in `wit/`. Both worlds import the same
//! interfaces; the collector's bindings reuse the processor's so that one set of host
//! implementations serves both.

pub mod processor {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "processor",
    });
}

pub mod collector {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "collector",
        with: {
            "sluice:plugin/types": super::processor::sluice::plugin::types,
            "sluice:plugin/log": super::processor::sluice::plugin::log,
            "sluice:plugin/metrics": super::processor::sluice::plugin::metrics,
            "sluice:plugin/state": super::processor::sluice::plugin::state,
        },
    });
}

pub use processor::sluice::plugin::types as wit;
