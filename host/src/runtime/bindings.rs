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

/// Bindings of a world whose imports are the processor's (and `$extra` more): they
/// reuse the processor's types, so that one host implementation of each capability
/// serves every world. A new capability's interface is one more line here.
macro_rules! reusing_processor {
    ($world:tt $(, $($extra:tt)*)?) => {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: $world,
            imports: { default: trappable },
            with: {
                "sluice:plugin/types": super::processor::sluice::plugin::types,
                "sluice:plugin/log": super::processor::sluice::plugin::log,
                "sluice:plugin/metrics": super::processor::sluice::plugin::metrics,
                "sluice:plugin/state": super::processor::sluice::plugin::state,
                "sluice:plugin/limits": super::processor::sluice::plugin::limits,
                $($($extra)*)?
            },
        });
    };
}

pub mod collector {
    reusing_processor!("collector");
}

/// The `timed-processor` world is `processor` plus the `tick` export.
pub mod timed {
    reusing_processor!("timed-processor");
}

/// The `scorer` world is `processor` plus `inference`; its components are linked as
/// processors (the exports are the same).
pub mod scorer {
    reusing_processor!(
        "scorer",
        "sluice:plugin/inference.model": super::ModelHandle,
    );
}

pub use processor::sluice::plugin::types as wit;
pub use processor::sluice::plugin::{limits, log, metrics, state, types};
pub use scorer::sluice::plugin::inference;

/// What a plugin's `model` handle refers to: declared here, with the bindings that name
/// it, so that the bindings import nothing of the capabilities that use them. The model
/// is live: a handle opened once runs whichever version is served when it runs.
pub struct ModelHandle {
    pub(crate) model: std::sync::Arc<crate::inference::LiveModel>,
}
