//! One live plugin instance: its own `Store`, limits and state transaction. Every call
//! runs under a deadline; a call that traps poisons the instance (wasmtime cannot
//! re-enter an instance after a trap) and the pool replaces it.

use wasmtime::{Store, Trap};

use super::bindings::collector::{Collector, CollectorPre};
use super::bindings::processor::{Processor, ProcessorPre};
use super::bindings::timed::{TimedProcessor, TimedProcessorPre};
use super::capabilities::state::DeferredWrites;
use super::capabilities::{StageShared, check_imports};
use super::codec::{Processed, check_size, decode_output, encode_batch};
use super::engine::Runtime;
use super::error::{CallFailure, LimitExceeded, PluginError, Refused};
use super::limits::{Limits, MemoryLimitExceeded};
use super::plugin::Plugin;
use super::spec::StageSpec;
use super::stderr::StderrTail;
use super::store::StoreData;
use super::world::World;
use crate::event::Event;
use crate::state::StateError;

/// A plugin linked for one stage, with only the capabilities the stage grants.
pub(crate) enum StagePre {
    Processor(ProcessorPre<StoreData>),
    Timed(TimedProcessorPre<StoreData>),
    Collector(CollectorPre<StoreData>),
}

impl StagePre {
    pub(crate) fn new(
        runtime: &Runtime,
        plugin: &Plugin,
        spec: &StageSpec,
    ) -> Result<StagePre, PluginError> {
        let granted = &spec.grants.linked();
        check_imports(&plugin.component, &runtime.engine, granted).map_err(|capability| {
            PluginError::NotGranted {
                plugin: plugin.name.clone(),
                stage: spec.stage.to_string(),
                capability,
            }
        })?;
        let link_error = |error: wasmtime::Error| PluginError::Link {
            plugin: plugin.name.clone(),
            reason: format!("{error:#}"),
        };
        let pre = runtime
            .linker(granted)?
            .instantiate_pre(&plugin.component)
            .map_err(link_error)?;
        match plugin.world {
            Some(World::Collector) => CollectorPre::new(pre).map(StagePre::Collector),
            _ if plugin.ticks => TimedProcessorPre::new(pre).map(StagePre::Timed),
            _ => ProcessorPre::new(pre).map(StagePre::Processor),
        }
        .map_err(link_error)
    }
}

enum Exports {
    Processor(Processor),
    Timed(TimedProcessor),
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
    /// Instantiate `plugin` (linked as `pre`) for `spec` and run its `init`.
    pub(crate) fn new(
        plugin: &Plugin,
        pre: &StagePre,
        spec: &StageSpec,
        shared: &StageShared,
        fuel_enabled: bool,
    ) -> Result<Instance, PluginError> {
        let call_error = |failure| PluginError::Call {
            stage: spec.stage.to_string(),
            plugin: plugin.name.clone(),
            failure,
        };
        let stderr = StderrTail::new(
            spec.stage.clone(),
            shared.log.clone(),
            spec.limits.log.message_bytes as usize,
        );
        let mut wasi = spec
            .grants
            .wasi_builder()
            .map_err(|(what, reason)| PluginError::Grant {
                stage: spec.stage.to_string(),
                what,
                reason,
            })?;
        wasi.stderr(stderr.clone());
        let data = StoreData::new(spec, shared, wasi.build(), stderr);
        let mut store = Store::new(plugin.component.engine(), data);
        store.limiter(|data| &mut data.limiter);
        store.epoch_deadline_trap();
        arm(&mut store, &spec.limits, fuel_enabled);
        let exports = match pre {
            StagePre::Collector(pre) => pre.instantiate(&mut store).map(Exports::Collector),
            StagePre::Processor(pre) => pre.instantiate(&mut store).map(Exports::Processor),
            StagePre::Timed(pre) => pre.instantiate(&mut store).map(Exports::Timed),
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
            .call(
                |store, exports| match exports {
                    Exports::Processor(p) => p.call_init(store, &config),
                    Exports::Timed(t) => t.call_init(store, &config),
                    Exports::Collector(c) => c.call_init(store, &config),
                },
                Ok,
                Commit::Now,
            )
            .map(|((), _)| ())
            .map_err(|failure| match failure {
                CallFailure::Returned(message) => call_error(CallFailure::Init(message)),
                other => call_error(other),
            })?;
        Ok(instance)
    }

    /// Process one batch, committing its state writes at once.
    pub fn process(&mut self, events: &[Event]) -> Result<Processed, CallFailure> {
        self.process_with(events, Commit::Now)
            .map(|(processed, _)| processed)
    }

    /// Process one batch; its state writes come back uncommitted, to be committed once
    /// what it emitted is taken downstream.
    pub fn process_deferred(
        &mut self,
        events: &[Event],
    ) -> Result<(Processed, DeferredWrites), CallFailure> {
        self.process_with(events, Commit::Deferred)
            .map(|(processed, deferred)| {
                (processed, deferred.expect("deferred writes were asked for"))
            })
    }

    fn process_with(
        &mut self,
        events: &[Event],
        commit: Commit,
    ) -> Result<(Processed, Option<DeferredWrites>), CallFailure> {
        let batch = encode_batch(events);
        let limits = self.limits.clone();
        self.call(
            |store, exports| match exports {
                Exports::Processor(p) => p.call_process(store, &batch),
                Exports::Timed(t) => t.call_process(store, &batch),
                Exports::Collector(_) => unreachable!("pools check the world before use"),
            },
            |output| {
                check_size(&output, events.len(), &limits)?;
                decode_output(output, events.len()).map_err(CallFailure::MalformedOutput)
            },
            commit,
        )
    }

    /// One tick of a `timed-processor`. Its state writes come back uncommitted, to be
    /// committed once what it emitted is taken downstream.
    pub fn tick(
        &mut self,
        now_ms: i64,
        stopping: bool,
    ) -> Result<(Processed, DeferredWrites), CallFailure> {
        let limits = self.limits.clone();
        self.call(
            |store, exports| match exports {
                Exports::Timed(t) => t.call_tick(store, now_ms, stopping),
                _ => unreachable!("pools tick only plugins that export `tick`"),
            },
            |output| {
                if !output.rejected.is_empty() {
                    return Err(CallFailure::MalformedOutput(
                        "a tick rejected events, but it has no input".into(),
                    ));
                }
                check_size(&output, 0, &limits)?;
                decode_output(output, 0).map_err(CallFailure::MalformedOutput)
            },
            Commit::Deferred,
        )
        .map(|(processed, deferred)| (processed, deferred.expect("deferred writes were asked for")))
    }

    /// Collect one tick's events. Its state writes come back uncommitted, like a tick's.
    pub fn collect(&mut self) -> Result<(Processed, DeferredWrites), CallFailure> {
        let limits = self.limits.clone();
        self.call(
            |store, exports| match exports {
                Exports::Collector(c) => c.call_collect(store),
                Exports::Processor(_) | Exports::Timed(_) => {
                    unreachable!("pools check the world before use")
                }
            },
            |output| {
                check_size(&output, 0, &limits)?;
                decode_output(output, 0).map_err(CallFailure::MalformedOutput)
            },
            Commit::Deferred,
        )
        .map(|(processed, deferred)| (processed, deferred.expect("deferred writes were asked for")))
    }

    /// Run one export under the limits, check what it returned with `accept`, and keep
    /// the state writes only if both succeeded: committed now, or handed back.
    fn call<R, T>(
        &mut self,
        f: impl FnOnce(&mut Store<StoreData>, &Exports) -> wasmtime::Result<Result<R, String>>,
        accept: impl FnOnce(R) -> Result<T, CallFailure>,
        commit: Commit,
    ) -> Result<(T, Option<DeferredWrites>), CallFailure> {
        arm(&mut self.store, &self.limits, self.fuel_enabled);
        self.store.data_mut().capabilities.inference.new_call();
        let outcome = match f(&mut self.store, &self.exports) {
            Ok(Ok(value)) => accept(value),
            Ok(Err(message)) => Err(CallFailure::Returned(message)),
            Err(error) => {
                self.poisoned = true;
                Err(classify(&mut self.store, &self.limits, error))
            }
        };
        let state = &mut self.store.data_mut().capabilities.state;
        match outcome {
            Ok(value) => match commit {
                Commit::Now => state.commit().map(|()| (value, None)),
                Commit::Deferred => Ok((value, Some(state.defer()))),
            },
            Err(failure) => {
                state.rollback();
                Err(failure)
            }
        }
    }
}

/// When a successful call's state writes are committed.
enum Commit {
    Now,
    /// Handed back to the caller.
    Deferred,
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
    // A host import that refused the plugin trapped it with one of these.
    if let Some(exceeded) = error.downcast_ref::<LimitExceeded>() {
        return CallFailure::Limit(exceeded.clone());
    }
    if let Some(Refused(reason)) = error.downcast_ref::<Refused>() {
        return CallFailure::Refused(reason.clone());
    }
    if let Some(state) = error.downcast_ref::<StateError>() {
        return CallFailure::State(state.to_string());
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
