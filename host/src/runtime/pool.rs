//! A stage's pool of ready instances. Instances are created ahead of use, so a batch
//! never pays for instantiation; one that traps is thrown away and replaced at once.
//! When a batch fails, the pool splits it to find the event(s) responsible, so the good
//! events go on and only the bad ones are handed back as rejections.

use std::sync::{Arc, Mutex};

use super::codec::{Processed, Rejection};
use super::engine::Runtime;
use super::error::{CallFailure, PluginError};
use super::instance::{Instance, StageSpec};
use super::plugin::{Plugin, World};
use crate::event::Event;

pub struct InstancePool {
    plugin: Arc<Plugin>,
    spec: StageSpec,
    fuel_enabled: bool,
    idle: Mutex<Vec<Instance>>,
}

impl InstancePool {
    /// Check the plugin's world and start `size` instances (each runs `init`), so that a
    /// bad config fails here, before the stage takes any event.
    pub fn new(
        runtime: &Runtime,
        plugin: Arc<Plugin>,
        world: World,
        spec: StageSpec,
        size: usize,
    ) -> Result<Self, PluginError> {
        plugin.expect_world(runtime, &spec.stage, world)?;
        let fuel_enabled = runtime.fuel;
        let idle = (0..size.max(1))
            .map(|_| Instance::new(&plugin, &spec, fuel_enabled))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(InstancePool {
            plugin,
            spec,
            fuel_enabled,
            idle: Mutex::new(idle),
        })
    }

    pub fn stage(&self) -> &str {
        &self.spec.stage
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    fn checkout(&self) -> Result<Instance, PluginError> {
        let ready = self.idle.lock().unwrap().pop();
        match ready {
            Some(instance) => Ok(instance),
            None => Instance::new(&self.plugin, &self.spec, self.fuel_enabled),
        }
    }

    fn checkin(&self, instance: Instance) {
        if !instance.poisoned {
            self.idle.lock().unwrap().push(instance);
            return;
        }
        // Replace the poisoned instance now, so the next batch finds one ready.
        match Instance::new(&self.plugin, &self.spec, self.fuel_enabled) {
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
    /// `2·log2(n)` extra calls per bad event. Errs only when no instance can run.
    pub fn process_isolating(&self, events: &[Event]) -> Result<Processed, PluginError> {
        let error = match self.try_process(events)? {
            Ok(processed) => return Ok(processed),
            Err(error) => error,
        };
        if events.len() == 1 {
            return Ok(Processed {
                emitted: Vec::new(),
                rejected: vec![Rejection {
                    input: 0,
                    reason: error.to_string(),
                }],
            });
        }
        tracing::warn!(stage = %self.spec.stage, events = events.len(), "batch failed, isolating the cause: {error}");
        let middle = events.len() / 2;
        let mut processed = self.process_isolating(&events[..middle])?;
        processed.extend_shifted(self.process_isolating(&events[middle..])?, middle);
        Ok(processed)
    }

    /// One collector tick.
    pub fn collect(&self) -> Result<Processed, PluginError> {
        let mut instance = self.checkout()?;
        let result = instance
            .collect()
            .map_err(|failure| self.call_error(failure));
        self.checkin(instance);
        result
    }
}
