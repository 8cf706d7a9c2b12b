//! The supervisor: what runs a config and replaces it. `sluice run` (on SIGHUP), `sluice
//! agent` (on a new fleet version) and `sluice replay` all go through it.
//!
//! A config is more than its pipeline: it may listen for the API (`[api]`), run an MQTT
//! broker (`[broker]`) and serve a fleet (`[fleet]`). Those outlive pipelines and are
//! owned here, so that a replacement keeps what did not change — the API's socket, and
//! the broker with the sessions and messages it holds — and every config reloads.
//!
//! A replacement is checked first ([`check`]: the config's plugins load and initialise,
//! its fleet is complete), so that a config that cannot start is refused while the
//! running one goes on. Then the running pipeline drains (every event in flight reaches
//! its sinks), and the new one starts; if it fails to, the previous config starts again.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, ApiServer, admin::Overview, tap::Outlets};
use crate::config::Config;
use crate::pipeline::StageError;
use crate::topology::{self, Pipeline};

#[cfg(test)]
mod tests;

/// Why a config did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Pipeline(#[from] topology::StartError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[cfg(feature = "broker")]
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    #[error(transparent)]
    Refused(#[from] Refused),
}

/// What [`check`] found: each problem names its stage, plugin or section.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.join("; "))]
pub struct Refused {
    pub problems: Vec<String>,
}

/// How a replacement ended, when the new config is not the one running.
#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    #[error("the new config is refused; the running one goes on: {0}")]
    Refused(#[source] Refused),
    #[error("the new config did not start ({0}); the previous one runs again")]
    RolledBack(#[source] StartError),
    #[error("the config did not start: {0}")]
    Failed(#[source] StartError),
    #[error("neither the new config ({new}) nor the previous one ({previous}) starts")]
    NeitherStarts {
        new: StartError,
        previous: StartError,
    },
}

/// Everything that can be found wrong with `config` without stopping what runs: its
/// plugins load and initialise, its `[fleet]` is complete and served, its `[broker]` is
/// built in.
pub fn check(config: &Config) -> Result<(), Refused> {
    let mut problems = topology::try_start_plugins(config);
    problems.extend(check_services(config));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Refused { problems })
    }
}

/// What [`check`] finds besides the plugins (quick: loads nothing).
fn check_services(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(fleet) = &config.fleet {
        if config.api.is_none() {
            problems.push("`[fleet]` is served on the API port: add `[api] listen = ...`".into());
        }
        if let Err(error) = fleet.check(base_dir(config)) {
            problems.push(error.to_string());
        }
    }
    if config.broker.is_some() && !cfg!(feature = "broker") {
        problems.push(
            "`[broker]`: this sluice is built without the embedded MQTT broker (cargo feature `broker`)"
                .into(),
        );
    }
    problems
}

/// `config`'s jobs with their runs, if it has any (not yet scheduled).
#[cfg(feature = "jobs")]
async fn open_jobs(
    config: &Config,
) -> Result<Option<std::sync::Arc<crate::workflow::Workflow>>, Refused> {
    crate::workflow::Workflow::open(
        config,
        std::sync::Arc::new(crate::workflow::pipelines::InProcess),
    )
    .await
    .map_err(|error| Refused {
        problems: vec![error.to_string()],
    })
}

/// Whether `config` runs jobs and nothing that ends by itself: its pipeline, without
/// sources, is over at once, and the host goes on for the jobs until stopped.
fn schedules_only(config: &Config) -> bool {
    #[cfg(feature = "jobs")]
    return config.sources.is_empty() && !config.jobs.is_empty();
    #[cfg(not(feature = "jobs"))]
    return {
        let _ = config;
        false
    };
}

/// The directory a config's relative paths (fleet group configs) start from.
fn base_dir(config: &Config) -> &Path {
    config.file.parent().unwrap_or(Path::new(""))
}

/// Runs one config at a time, and what outlives its pipeline.
#[derive(Default)]
pub struct Supervisor {
    api: Option<ApiServer>,
    #[cfg(feature = "broker")]
    broker: Option<(
        (crate::config::BrokerConfig, std::path::PathBuf),
        crate::broker::EmbeddedBroker,
    )>,
    running: Option<Generation>,
}

/// A config whose pipeline runs.
struct Generation {
    config: Config,
    run: Run,
}

/// A started pipeline, and what serves beside it.
struct Run {
    /// Stops the pipeline's sources; what is in flight drains.
    stop: CancellationToken,
    /// Stops what serves the config beside the pipeline (the fleet's heartbeat listener).
    serving: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), StageError>>,
}

impl Supervisor {
    /// Start `config`; on failure nothing it started is left running.
    pub async fn start(config: Config) -> Result<Supervisor, StartError> {
        let mut supervisor = Supervisor::default();
        let problems = check_services(&config);
        if !problems.is_empty() {
            return Err(Refused { problems }.into());
        }
        supervisor
            .launch(config)
            .await
            .map_err(|(_, error)| error)?;
        Ok(supervisor)
    }

    /// Replace the running config with `candidate` (or start it when none runs): refused
    /// if [`check`] finds a problem; otherwise the running pipeline drains and the
    /// candidate starts, or the previous config again if the candidate cannot.
    pub async fn replace(&mut self, candidate: Config) -> Result<(), ReplaceError> {
        check(&candidate).map_err(ReplaceError::Refused)?;
        let previous = self.stop_running().await;
        let Err((_, error)) = self.launch(candidate).await else {
            return Ok(());
        };
        let Some(previous) = previous else {
            return Err(ReplaceError::Failed(error));
        };
        tracing::error!("the new config did not start ({error}); starting the previous one again");
        match self.launch(previous).await {
            Ok(()) => Err(ReplaceError::RolledBack(error)),
            Err((_, previous)) => Err(ReplaceError::NeitherStarts {
                new: error,
                previous,
            }),
        }
    }

    /// The config running, if one is.
    pub fn config(&self) -> Option<&Config> {
        self.running.as_ref().map(|running| &running.config)
    }

    /// A handle that stops the running pipeline (its sources; what is in flight drains).
    pub fn stopper(&self) -> CancellationToken {
        self.running
            .as_ref()
            .map_or_else(CancellationToken::new, |running| running.run.stop.clone())
    }

    /// Resolves when the running pipeline ends by itself (its sources finished, or a
    /// stage failed); never while none runs, nor while a config without sources has
    /// jobs to run (a host of jobs only). Safe to cancel: select on it.
    pub async fn ended(&mut self) -> Result<(), StageError> {
        if self
            .running
            .as_ref()
            .is_none_or(|running| schedules_only(&running.config))
        {
            return std::future::pending().await;
        }
        self.join().await
    }

    /// Wait for the running pipeline's task, then stop what serves beside it.
    async fn join(&mut self) -> Result<(), StageError> {
        let Some(running) = &mut self.running else {
            return Ok(());
        };
        let result = (&mut running.run.task)
            .await
            .unwrap_or_else(|panic| Err(StageError::new("pipeline", panic)));
        if let Some(running) = self.running.take() {
            running.run.serving.cancel();
        }
        if let Some(api) = &self.api {
            api.set_ready(false);
        }
        result
    }

    /// Wait until the running pipeline ends, then release the API and the broker.
    pub async fn wait(mut self) -> Result<(), StageError> {
        let result = self.join().await;
        self.release().await;
        result
    }

    /// Stop: drain the running pipeline, then release the API and the broker.
    pub async fn drain(self) -> Result<(), StageError> {
        self.stopper().cancel();
        self.wait().await
    }

    /// Start `config`'s pipeline and what serves it, reusing the API socket and the
    /// broker where the config did not change them. On failure the config comes back
    /// (to be reported, or started again), and nothing of it runs.
    async fn launch(&mut self, config: Config) -> Result<(), (Config, StartError)> {
        match self.run(&config).await {
            Ok(run) => {
                self.running = Some(Generation { config, run });
                Ok(())
            }
            Err(error) => Err((config, error)),
        }
    }

    async fn run(&mut self, config: &Config) -> Result<Run, StartError> {
        self.place_api(config).await?;
        #[cfg(feature = "broker")]
        self.place_broker(config).await?;
        #[cfg(feature = "jobs")]
        let workflow = open_jobs(config).await?;
        let pipeline = Pipeline::start(config)?;
        let serving = CancellationToken::new();
        let fleet = match &config.fleet {
            Some(fleet) => {
                let base = base_dir(config).to_owned();
                let fleet =
                    crate::fleet::registry::FleetState::new(fleet.clone(), base, &config.data_dir)
                        .map_err(|error| Refused {
                            problems: vec![error.to_string()],
                        })?;
                crate::fleet::heartbeats::spawn(&fleet, serving.clone());
                Some(fleet)
            }
            None => None,
        };
        #[allow(unused_mut)]
        let mut operators = axum::Router::new();
        #[cfg(feature = "jobs")]
        if let Some(workflow) = workflow {
            workflow.spawn(serving.clone());
            operators = operators.merge(crate::workflow::routes::routes(workflow));
        }
        if let (Some(api), Some(settings)) = (&self.api, &config.api) {
            api.set_routes(
                settings,
                Overview::new(config, fleet.clone()),
                Outlets::new(config),
                fleet,
                operators,
            );
            api.set_ready(true);
        }
        Ok(Run {
            stop: pipeline.stopper(),
            serving,
            task: tokio::spawn(pipeline.wait()),
        })
    }

    /// The API `config` asks for: the running listener when its settings are the same
    /// (certificates renew without it: the listener reloads their files).
    async fn place_api(&mut self, config: &Config) -> Result<(), ApiError> {
        let wanted = config.api.as_ref().map(|api| api.listener());
        if self.api.as_ref().map(ApiServer::settings) == wanted.as_ref() {
            return Ok(());
        }
        if let Some(api) = self.api.take() {
            api.stop().await;
        }
        if let Some(api) = &config.api {
            self.api = Some(ApiServer::bind(api)?);
        }
        Ok(())
    }

    /// The broker `config` asks for: the running one when its settings are the same
    /// (clients keep their sessions and queued messages).
    #[cfg(feature = "broker")]
    async fn place_broker(&mut self, config: &Config) -> Result<(), crate::broker::BrokerError> {
        let wanted = config
            .broker
            .clone()
            .map(|settings| (settings, config.data_dir.clone()));
        let local = crate::broker::local_sessions(config);
        let access = || {
            config
                .broker
                .as_ref()
                .map(|broker| crate::broker::Access::new(broker, config.fleet.as_ref()))
        };
        if self.broker.as_ref().map(|(placed, _)| placed) == wanted.as_ref() {
            return match (&self.broker, access()) {
                (Some((_, broker)), Some(access)) => {
                    broker.set_access(access);
                    broker.declare(&local)
                }
                _ => Ok(()),
            };
        }
        if let Some((_, broker)) = self.broker.take() {
            broker.stop().await;
        }
        if let Some((settings, data_dir)) = wanted {
            let access = access().unwrap_or_default();
            let broker = crate::broker::start(&settings, &data_dir, &local, access).await?;
            self.broker = Some(((settings, data_dir), broker));
        }
        Ok(())
    }

    /// Drain the running pipeline, if any, and give back its config. How the run ended is
    /// logged: a replacement goes on either way.
    async fn stop_running(&mut self) -> Option<Config> {
        let running = self.running.take()?;
        if let Some(api) = &self.api {
            api.set_ready(false);
        }
        running.run.stop.cancel();
        match running.run.task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!("the pipeline stopped with an error: {error}"),
            Err(panic) => tracing::error!("the pipeline panicked: {panic}"),
        }
        running.run.serving.cancel();
        Some(running.config)
    }

    async fn release(&mut self) {
        if let Some(api) = self.api.take() {
            api.stop().await;
        }
        #[cfg(feature = "broker")]
        if let Some((_, broker)) = self.broker.take() {
            broker.stop().await;
        }
    }
}
