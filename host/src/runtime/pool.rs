//! A stage's pool of ready instances. Instances are created ahead of use, so a batch
//! never pays for instantiation; one that traps is thrown away and replaced at once.
//! When a batch fails, the pool splits it to find the event(s) responsible, so the good
//! events go on and only the bad ones are handed back as rejections.

use std::sync::{Arc, Mutex};

use super::capabilities::StageShared;
pub use super::capabilities::state::DeferredWrites;
use super::codec::{Processed, Rejection};
use super::engine::Runtime;
use super::error::{CallFailure, PluginError};
use super::instance::{Instance, StagePre};
use super::plugin::Plugin;
use super::spec::StageSpec;
use super::world::World;
use crate::event::Event;

/// How many bad events per batch are isolated one by one before the rest of a failing
/// part is rejected whole: each costs about `2·log2(n)` extra calls.
pub const ISOLATED_PER_BATCH: usize = 8;

pub struct InstancePool {
    plugin: Arc<Plugin>,
    pre: StagePre,
    spec: StageSpec,
    /// Per-stage quotas' state, shared by every instance of the stage.
    shared: StageShared,
    fuel_enabled: bool,
    idle: Mutex<Vec<Instance>>,
    /// Keeps the epoch clock running while this pool can run a call: a pipeline's
    /// pools outlive the `Runtime` they were built from.
    _deadlines: Arc<super::engine::EpochTicker>,
}

impl InstancePool {
    /// Check the plugin's world and grants, link it for this stage and start `size`
    /// instances (each runs `init`), so that a bad config fails here, before the stage
    /// takes any event.
    pub fn new(
        runtime: &Runtime,
        plugin: Arc<Plugin>,
        world: World,
        spec: StageSpec,
        size: usize,
    ) -> Result<Self, PluginError> {
        plugin.expect_world(runtime, &spec.stage, world)?;
        let pre = StagePre::new(runtime, &plugin, &spec)?;
        let shared = StageShared::new(&spec.context());
        let mut pool = InstancePool {
            plugin,
            pre,
            spec,
            shared,
            fuel_enabled: runtime.fuel,
            idle: Mutex::new(Vec::new()),
            _deadlines: runtime.ticker.clone(),
        };
        let idle = (0..size.max(1))
            .map(|_| pool.instantiate())
            .collect::<Result<Vec<_>, _>>()?;
        *pool.idle.get_mut().unwrap() = idle;
        Ok(pool)
    }

    pub fn stage(&self) -> &str {
        &self.spec.stage
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    fn instantiate(&self) -> Result<Instance, PluginError> {
        Instance::new(
            &self.plugin,
            &self.pre,
            &self.spec,
            &self.shared,
            self.fuel_enabled,
        )
    }

    fn checkout(&self) -> Result<Instance, PluginError> {
        let ready = self.idle.lock().unwrap().pop();
        match ready {
            Some(instance) => Ok(instance),
            None => self.instantiate(),
        }
    }

    fn checkin(&self, instance: Instance) {
        if !instance.poisoned {
            self.idle.lock().unwrap().push(instance);
            return;
        }
        // Replace the poisoned instance now, so the next batch finds one ready.
        match self.instantiate() {
            Ok(fresh) => self.idle.lock().unwrap().push(fresh),
            Err(error) => {
                tracing::error!(stage = %self.spec.stage, "cannot replace a failed instance: {error}")
            }
        }
    }

    fn call_error(&self, failure: CallFailure) -> PluginError {
        PluginError::Call {
            stage: self.spec.stage.to_string(),
            plugin: self.plugin.name.clone(),
            failure,
        }
    }

    /// One `process` call on the whole batch. The outer error means no instance could
    /// run; the inner one that this batch failed.
    fn try_process(&self, events: &[Event]) -> Result<Result<Processed, PluginError>, PluginError> {
        let mut instance = self.checkout()?;
        let result = instance
            .process(events)
            .map_err(|failure| self.call_error(failure));
        self.checkin(instance);
        Ok(result)
    }

    /// Process `events` as one call; any failure fails the whole batch.
    pub fn process(&self, events: &[Event]) -> Result<Processed, PluginError> {
        self.try_process(events)?
    }

    /// Process `events`; when the batch fails, split it until the failing events are
    /// isolated and return those as rejections with the reason. Costs about
    /// `2·log2(n)` extra calls per bad event. A plugin that fails on everything would
    /// cost ~`2n` calls — with timeouts, minutes — so a batch gets the calls to isolate
    /// [`ISOLATED_PER_BATCH`] bad events; past that, a failing part is rejected whole,
    /// its reason saying so. Errs only when no instance can run.
    ///
    /// When the whole batch succeeds in one call, its state writes come back with it,
    /// to be committed once its outputs are taken downstream; the calls that isolate a
    /// failure commit their parts' writes as each part succeeds.
    pub fn process_isolating(
        &self,
        events: &[Event],
    ) -> Result<(Processed, Option<DeferredWrites>), PluginError> {
        let mut instance = self.checkout()?;
        let whole = instance.process_deferred(events);
        self.checkin(instance);
        let error = match whole {
            Ok((processed, writes)) => return Ok((processed, Some(writes))),
            Err(failure) => self.call_error(failure),
        };
        let depth = usize::BITS - events.len().leading_zeros();
        let mut budget = 2 * ISOLATED_PER_BATCH * depth as usize;
        self.split(events, error, &mut budget)
            .map(|processed| (processed, None))
    }

    fn isolate(&self, events: &[Event], budget: &mut usize) -> Result<Processed, PluginError> {
        match self.try_process(events)? {
            Ok(processed) => Ok(processed),
            Err(error) => self.split(events, error, budget),
        }
    }

    /// `events` failed with `error`: reject them, or split them and isolate each half.
    fn split(
        &self,
        events: &[Event],
        error: PluginError,
        budget: &mut usize,
    ) -> Result<Processed, PluginError> {
        if events.len() == 1 || *budget < 2 {
            let reason = if events.len() == 1 {
                error.to_string()
            } else {
                format!("{error} (not isolated further: the batch used up its isolation calls)")
            };
            let rejected = (0..events.len())
                .map(|input| Rejection {
                    input,
                    reason: reason.clone(),
                })
                .collect();
            return Ok(Processed {
                emitted: Vec::new(),
                rejected,
            });
        }
        tracing::warn!(stage = %self.spec.stage, events = events.len(), "batch failed, isolating the cause: {error}");
        *budget -= 2;
        let middle = events.len() / 2;
        let mut processed = self.isolate(&events[..middle], budget)?;
        processed.extend_shifted(self.isolate(&events[middle..], budget)?, middle);
        Ok(processed)
    }

    /// Whether the plugin exports `tick` (contract 0.1.3's `timed-processor`).
    pub fn ticks(&self) -> bool {
        self.plugin.ticks
    }

    /// One `tick`; its state writes come back to be committed once its output is taken.
    pub fn tick(
        &self,
        now_ms: i64,
        stopping: bool,
    ) -> Result<(Processed, DeferredWrites), PluginError> {
        let mut instance = self.checkout()?;
        let result = instance
            .tick(now_ms, stopping)
            .map_err(|failure| self.call_error(failure));
        self.checkin(instance);
        result
    }

    /// One collector tick; its state writes come back to be committed once its output
    /// is taken.
    pub fn collect(&self) -> Result<(Processed, DeferredWrites), PluginError> {
        let mut instance = self.checkout()?;
        let result = instance
            .collect()
            .map_err(|failure| self.call_error(failure));
        self.checkin(instance);
        result
    }
}
