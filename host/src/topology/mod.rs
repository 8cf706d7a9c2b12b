//! Turning a validated [`Config`] into running tasks, in three steps: [`build`] every
//! stage (plugins loaded and initialised, files opened, ports bound), [`wire`] them with
//! bounded channels, then spawn. Everything that can fail happens before anything is
//! spawned: a config that cannot start starts nothing.

mod build;
mod check;
mod prepare;
mod progress;
#[cfg(feature = "object-store")]
pub mod replay;
mod wire;

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::component::{BuildError, Role};
use crate::config::Config;
use crate::pipeline::StageError;
use crate::runtime::PluginError;
use crate::state::StateError;

pub use build::DEFAULT_DEAD_LETTER_SINK;
pub(crate) use build::Toolkit;
pub use check::try_start_plugins;
pub use wire::CHANNEL_BATCHES;
pub(crate) use wire::{Channels, declared_routes};

/// How often the pipeline logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How long a stopping pipeline waits for in-flight events before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot create the data directory {0}: {1}")]
    DataDir(std::path::PathBuf, #[source] std::io::Error),
}

/// A running pipeline.
pub struct Pipeline {
    stop: CancellationToken,
    abort: CancellationToken,
    tasks: JoinSet<Result<(), StageError>>,
}

impl Pipeline {
    /// Build, wire and spawn `config`'s stages. Its `[api]`, `[broker]` and `[fleet]`
    /// are not a pipeline's: the supervisor runs them.
    pub fn start(config: &Config) -> Result<Pipeline, StartError> {
        Pipeline::start_as(config, Role::Host)
    }

    /// [`Pipeline::start`] for `role`: a job's pipeline ([`Role::Job`]) runs beside the
    /// host's and shares its serving tables.
    pub fn start_as(config: &Config, role: Role) -> Result<Pipeline, StartError> {
        // Metric handles made before the recorder exists would record nothing.
        crate::counters::recorder();
        // Shown from the start, so that a scrape tells zero from missing.
        let _ = crate::counters::counter(crate::counters::UNSETTLED, "pipeline");
        let built = build::build(config, role)?;
        let wired = wire::wire(config, built);
        Ok(Pipeline::spawn(config, wired))
    }

    /// Step three: spawn every stage, sinks first so that nothing waits on a missing
    /// reader, then the progress log.
    fn spawn(config: &Config, wired: wire::Wired) -> Pipeline {
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for (name, sink, input, dead_letters) in wired.sinks {
            tasks.spawn(crate::sinks::run(
                name,
                sink,
                input,
                dead_letters,
                abort.clone(),
            ));
        }
        for (transform, input, outputs) in wired.transforms {
            tasks.spawn(transform.run(input, outputs));
        }
        for (_, source, outputs) in wired.sources {
            tasks.spawn(source.run(outputs, stop.clone()));
        }
        let sinks: Vec<String> = config.sinks.keys().cloned().collect();
        let sources: Vec<String> = config.sources.keys().cloned().collect();
        let progress_stop = abort.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(PROGRESS_EVERY);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = progress_stop.cancelled() => return,
                    _ = ticks.tick() => progress::report(&sources, &sinks),
                }
            }
        });
        tracing::info!(
            sources = config.sources.len(),
            transforms = config.transforms.len(),
            sinks = config.sinks.len(),
            "pipeline running"
        );
        Pipeline { stop, abort, tasks }
    }

    /// A handle that stops the pipeline: sources stop taking events and everything in
    /// flight drains to the sinks.
    pub fn stopper(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Run until stopped (or a stage fails, which stops the rest), then drain.
    pub async fn wait(mut self) -> Result<(), StageError> {
        let mut first_error = None;
        let mut draining = false;
        loop {
            let next = tokio::select! {
                next = self.tasks.join_next() => next,
                _ = self.stop.cancelled(), if !draining => {
                    draining = true;
                    let abort = self.abort.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(DRAIN_TIMEOUT).await;
                        abort.cancel();
                    });
                    continue;
                }
            };
            let Some(result) = next else { break };
            let result = result.unwrap_or_else(|panic| Err(StageError::new("pipeline", panic)));
            if let Err(error) = result {
                tracing::error!("{error}");
                first_error.get_or_insert(error);
                self.stop.cancel();
            }
        }
        // The progress log, and the drain timer if one runs.
        self.abort.cancel();
        tracing::info!("pipeline stopped");
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests;
