//! One live plugin instance: its own `Store`, limits and state transaction. Every call
//! runs under a deadline; a call that traps poisons the instance (wasmtime cannot
//! re-enter an instance after a trap) and the pool replaces it.

use std::sync::Arc;

use wasmtime::{Store, Trap};

use super::bindings::collector::{Collector, CollectorPre};
use super::bindings::processor::{Processor, ProcessorPre};
use super::codec::{Processed, decode_output, encode_batch};
use super::engine::Runtime;
use super::error::{CallFailure, PluginError};
use super::grants::Grants;
use super::limits::{Limits, MemoryLimitExceeded, MemoryLimiter};
use super::plugin::{Plugin, World};
use super::stderr::StderrTail;
use super::store::StoreData;
use crate::event::Event;
use crate::state::{StateStore, Transaction};

/// Everything a stage decides about its plugin instances.
#[derive(Clone)]
pub struct StageSpec {
    pub stage: Arc<str>,
    /// The plugin's config, a JSON object.
    pub config: String,
    pub limits: Limits,
    pub grants: Grants,
    pub state: Arc<StateStore>,
}

enum Exports {
    Processor(Processor),
    Collector(Collector),
}

pub struct Instance {
    store: Store<StoreData>,
    exports: Exports,
    limits: Limits,
    fuel_enabled: bool,
    /// Set after a trap: the instance must not be called again.
    pub(crate) poisoned: bool,
}

impl Instance {
    /// Instantiate `plugin` for `spec` and run its `init`.
    pub fn new(
        plugin: &Plugin,
        spec: &StageSpec,
        fuel_enabled: bool,
    ) -> Result<Instance, PluginError> {
        let call_error = |failure| PluginError::Call {
            stage: spec.stage.to_string(),
            plugin: plugin.name.clone(),
            failure,
        };
        let stderr = StderrTail::new(spec.stage.clone());
        let mut wasi = spec
            .grants
            .wasi_builder()
            .map_err(|(what, reason)| PluginError::Grant {
                stage: spec.stage.to_string(),
                what,
                reason,
            })?;
        wasi.stderr(stderr.clone());
        let data = StoreData {
            stage: spec.stage.clone(),
            wasi: wasi.build(),
            table: Default::default(),
            limiter: MemoryLimiter {
                limit: spec.limits.memory_bytes,
            },
            stderr,
            state: Transaction::new(spec.state.clone(), spec.stage.clone()),
            state_error: None,
        };
        let mut store = Store::new(plugin.pre.engine(), data);
        store.limiter(|data| &mut data.limiter);
        store.epoch_deadline_trap();
        arm(&mut store, &spec.limits, fuel_enabled);
        let exports = match plugin.world {
            Some(World::Collector) => CollectorPre::new(plugin.pre.clone())
                .and_then(|pre| pre.instantiate(&mut store))
                .map(Exports::Collector),
            _ => ProcessorPre::new(plugin.pre.clone())
                .and_then(|pre| pre.instantiate(&mut store))
                .map(Exports::Processor),
        };
        let exports =
            exports.map_err(|error| call_error(classify(&mut store, &spec.limits, error)))?;
        let mut instance = Instance {
            store,
            exports,
            limits: spec.limits.clone(),
            fuel_enabled,
            poisoned: false,
        };
        let config = spec.config.clone();
        instance
            .call(|store, exports| match exports {
                Exports::Processor(p) => p.call_init(store, &config),
                Exports::Collector(c) => c.call_init(store, &config),
            })
            .map_err(|failure| match failure {
                CallFailure::Returned(message) => call_error(CallFailure::Init(message)),
                other => call_error(other),
            })?;
        Ok(instance)
    }

    /// Process one batch.
    pub fn process(&mut self, events: &[Event]) -> Result<Processed, CallFailure> {
        let batch = encode_batch(events);
        let output = self.call(|store, exports| match exports {
            Exports::Processor(p) => p.call_process(store, &batch),
            Exports::Collector(_) => unreachable!("pools check the world before use"),
        })?;
        decode_output(output, events.len()).map_err(CallFailure::MalformedOutput)
    }

    /// Collect one tick's events.
    pub fn collect(&mut self) -> Result<Processed, CallFailure> {
        let output = self.call(|store, exports| match exports {
            Exports::Collector(c) => c.call_collect(store),
            Exports::Processor(_) => unreachable!("pools check the world before use"),
        })?;
        decode_output(output, 0).map_err(CallFailure::MalformedOutput)
    }

    /// Run one export under the limits; commit the state writes only if it succeeded.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&mut Store<StoreData>, &Exports) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<R, CallFailure> {
        arm(&mut self.store, &self.limits, self.fuel_enabled);
        let result = f(&mut self.store, &self.exports);
        let data = self.store.data_mut();
        match result {
            Ok(Ok(value)) => {
                if let Some(error) = data.state_error.take() {
                    data.state.rollback();
                    return Err(CallFailure::State(error));
                }
                data.state
                    .commit()
                    .map_err(|error| CallFailure::State(error.to_string()))?;
                Ok(value)
            }
            Ok(Err(message)) => {
                data.state.rollback();
                data.state_error = None;
                Err(CallFailure::Returned(message))
            }
            Err(error) => {
                data.state.rollback();
                data.state_error = None;
                self.poisoned = true;
                Err(classify(&mut self.store, &self.limits, error))
            }
        }
    }
}

/// Set the deadline (and fuel) for the next call.
fn arm(store: &mut Store<StoreData>, limits: &Limits, fuel_enabled: bool) {
    store.set_epoch_deadline(Runtime::deadline_ticks(limits.timeout));
    if fuel_enabled {
        store
            .set_fuel(limits.fuel.unwrap_or(u64::MAX))
            .expect("fuel is enabled on this engine");
    }
}

/// Turn a wasmtime error into a typed failure.
fn classify(store: &mut Store<StoreData>, limits: &Limits, error: wasmtime::Error) -> CallFailure {
    let stderr = store.data().stderr.take();
    if let Some(oom) = error.downcast_ref::<MemoryLimitExceeded>() {
        return CallFailure::OutOfMemory {
            desired: oom.desired,
            limit: oom.limit,
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallFailure::Timeout(limits.timeout),
        Some(Trap::OutOfFuel) => CallFailure::OutOfFuel(limits.fuel.unwrap_or(u64::MAX)),
        _ => {
            tracing::debug!("plugin trap: {error:?}");
            CallFailure::Trap {
                message: error.root_cause().to_string(),
                stderr,
            }
        }
    }
}
