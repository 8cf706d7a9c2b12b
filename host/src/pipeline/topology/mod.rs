//! Turning a validated [`Config`] into running tasks, in three steps: [`build`] every
//! stage (plugins loaded and initialised, files opened, ports bound), [`wire`] them with
//! bounded channels, then spawn. Everything that can fail happens before anything is
//! spawned: a config that cannot start starts nothing.

mod build;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::StageError;
use crate::config::Config;
use crate::runtime::PluginError;
use crate::stage::BuildError;
use crate::state::StateError;

pub use build::DEFAULT_DEAD_LETTER_SINK;
pub use wire::CHANNEL_BATCHES;

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
    #[cfg(feature = "broker")]
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    #[cfg(not(feature = "broker"))]
    #[error(
        "`[broker]`: this sluice is built without the embedded MQTT broker (cargo feature `broker`)"
    )]
    BrokerNotBuilt,
    #[error("cannot create the data directory {0}: {1}")]
    DataDir(std::path::PathBuf, #[source] std::io::Error),
    #[error("API on {0}: {1}")]
    Api(SocketAddr, #[source] std::io::Error),
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    #[error("`[fleet]` is served on the API port: add `[api] listen = ...`")]
    FleetWithoutApi,
}

/// A running pipeline.
pub struct Pipeline {
    stop: CancellationToken,
    abort: CancellationToken,
    tasks: JoinSet<Result<(), StageError>>,
    /// Whether the HTTP API runs (it outlives the data path while draining).
    has_api: bool,
    /// The embedded broker lives as long as the pipeline: stopped once the stages
    /// have drained, or when a pipeline that never ran is dropped.
    #[cfg(feature = "broker")]
    broker: Option<crate::broker::EmbeddedBroker>,
}

impl Pipeline {
    pub async fn start(config: &Config) -> Result<Pipeline, StartError> {
        // Metric handles made before the recorder exists would record nothing.
        crate::serve::prometheus();
        let built = build::build(config)?;
        // The embedded broker is infrastructure the stages connect to once they run.
        #[cfg(feature = "broker")]
        let broker = match &config.broker {
            Some(broker) => Some(crate::broker::start(broker).await?),
            None => None,
        };
        #[cfg(not(feature = "broker"))]
        if config.broker.is_some() {
            return Err(StartError::BrokerNotBuilt);
        }
        let wired = wire::wire(config, built);
        let pipeline = Pipeline::spawn(config, wired);
        #[cfg(feature = "broker")]
        let pipeline = Pipeline { broker, ..pipeline };
        Ok(pipeline)
    }

    /// Step three: spawn every stage, sinks first so that nothing waits on a missing
    /// reader, then the API and the progress log.
    fn spawn(config: &Config, wired: wire::Wired) -> Pipeline {
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        let ready = Arc::new(AtomicBool::new(false));
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
        let has_api = wired.api.is_some();
        if let Some(api) = wired.api {
            tracing::info!(address = ?api.listener.local_addr().ok(), fleet = api.fleet.is_some(), "API: /metrics, /health, /ready, /admin, /v1/tables");
            let (ready, stop) = (ready.clone(), abort.clone());
            tasks.spawn(async move {
                crate::serve::serve(api.listener, ready, stop, api.fleet, api.overview)
                    .await
                    .map_err(|error| StageError::new("api", error))
            });
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
                    _ = ticks.tick() => super::progress::report(&sources, &sinks),
                }
            }
        });
        ready.store(true, Ordering::Release);
        tracing::info!(
            sources = config.sources.len(),
            transforms = config.transforms.len(),
            sinks = config.sinks.len(),
            "pipeline running"
        );
        Pipeline {
            stop,
            abort,
            tasks,
            has_api,
            #[cfg(feature = "broker")]
            broker: None,
        }
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
                    // The API lives until the data is drained; then nothing else is left.
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
            // Only the API task left: the data path is done.
            if self.tasks.len() == 1 && self.has_api {
                self.abort.cancel();
            }
        }
        #[cfg(feature = "broker")]
        if let Some(broker) = self.broker.take() {
            broker.stop().await;
        }
        tracing::info!("pipeline stopped");
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests;
