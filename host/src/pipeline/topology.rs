//! Turning a validated [`Config`] into running tasks. Everything that can fail is built
//! first — plugins loaded and initialised, files opened, ports bound — and only then is
//! anything spawned: a config that cannot start starts nothing.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::StageError;
use super::batch::Batch;
use super::outputs::{Inlet, Outputs};
use crate::config::{Config, DEAD_LETTER, PluginDef};
use crate::runtime::{PluginError, Runtime, RuntimeOptions};
use crate::sinks::{self, Sink};
use crate::sources::Source;
use crate::stage::{BuildContext, BuildError};
use crate::state::{StateError, StateStore};
use crate::transforms::TransformConfig;
use crate::transforms::wasm::WasmTransform;

/// Batches a stage's input holds before its upstream waits: the backpressure bound.
const CHANNEL_BATCHES: usize = 4;
/// The sink that takes dead letters no configured stage reads.
pub const DEFAULT_DEAD_LETTER_SINK: &str = "_dead_letter";
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
    #[cfg(feature = "mqtt")]
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    #[error("cannot create the data directory {0}: {1}")]
    DataDir(std::path::PathBuf, std::io::Error),
    #[error("API on {0}: {1}")]
    Api(SocketAddr, std::io::Error),
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
    #[cfg(feature = "mqtt")]
    broker: Option<crate::broker::EmbeddedBroker>,
}

impl Pipeline {
    pub async fn start(config: &Config) -> Result<Pipeline, StartError> {
        // Metric handles made before the recorder exists would record nothing.
        crate::serve::prometheus();
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StartError::DataDir(config.data_dir.clone(), e))?;
        let state = StateStore::open(&config.data_dir.join("state.redb"))?;
        let fuel = config
            .plugins
            .values()
            .any(|plugin| plugin.limits.fuel.is_some());
        let runtime = Runtime::new(RuntimeOptions {
            fuel,
            ..RuntimeOptions::with_default_cache()
        })?;
        let mut plugins: HashMap<String, (Arc<crate::runtime::Plugin>, PluginDef)> = HashMap::new();
        for (name, def) in &config.plugins {
            let loaded = runtime.load(name, &def.path, def.sha256.as_deref())?;
            plugins.insert(name.clone(), (loaded, def.clone()));
        }
        let context = BuildContext {
            runtime: &runtime,
            plugins: &plugins,
            state: &state,
            data_dir: &config.data_dir,
        };
        // The embedded broker is infrastructure the stages connect to, so it comes first.
        #[cfg(feature = "mqtt")]
        let broker = match &config.broker {
            Some(broker) => Some(crate::broker::start(broker).await?),
            None => None,
        };

        // Inputs of every stage that has one.
        let mut receivers: BTreeMap<String, mpsc::Receiver<Batch>> = BTreeMap::new();
        let mut inlets: BTreeMap<String, Inlet> = BTreeMap::new();
        let mut open_input = |name: &str| {
            let (sender, receiver) = mpsc::channel(CHANNEL_BATCHES);
            inlets.insert(
                name.to_owned(),
                Inlet {
                    stage: Arc::from(name),
                    sender,
                },
            );
            receivers.insert(name.to_owned(), receiver);
        };
        config
            .transforms
            .keys()
            .chain(config.sinks.keys())
            .for_each(|name| open_input(name));

        let graph = config.graph();
        let consumers = graph.consumers();
        let producers: Vec<(&String, Vec<String>)> = config
            .sources
            .keys()
            .map(|name| (name, Vec::new()))
            .chain(config.transforms.iter().map(|(name, stage)| {
                (
                    name,
                    stage
                        .config
                        .routes()
                        .iter()
                        .map(|r| r.get_ref().clone())
                        .collect(),
                )
            }))
            .collect();
        let unread_dead_letters = producers.iter().any(|(name, _)| {
            !consumers.contains_key(&((*name).clone(), Some(DEAD_LETTER.to_owned())))
        });
        let mut sinks: Vec<(String, Box<dyn Sink>)> = Vec::new();
        if unread_dead_letters {
            let fallback = crate::sinks::file::FileSinkConfig {
                path: "dead_letter".into(),
                prefix: "dead".into(),
                max_bytes: 64 << 20,
                max_age: Duration::from_secs(86_400),
                format: crate::sinks::file::Format::Payload,
            };
            sinks.push((
                DEFAULT_DEAD_LETTER_SINK.to_owned(),
                Box::new(fallback.build(DEFAULT_DEAD_LETTER_SINK, &config.data_dir)?),
            ));
            open_input(DEFAULT_DEAD_LETTER_SINK);
        }

        for (name, stage) in &config.sinks {
            sinks.push((name.clone(), stage.config.build(name, &context).await?));
        }
        let mut transforms: Vec<(String, WasmTransform)> = Vec::new();
        for (name, stage) in &config.transforms {
            let transform = match &stage.config {
                TransformConfig::Wasm(wasm) => wasm.build(name, &context)?,
            };
            transforms.push((name.clone(), transform));
        }
        let mut sources: Vec<(String, Box<dyn Source>)> = Vec::new();
        for (name, stage) in &config.sources {
            sources.push((name.clone(), stage.config.build(name, &context).await?));
        }

        let inlets_of = |stage: &str, route: Option<&str>| -> Vec<Inlet> {
            consumers
                .get(&(stage.to_owned(), route.map(str::to_owned)))
                .map(|readers| {
                    readers
                        .iter()
                        .map(|reader| inlets[reader].clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut outputs: HashMap<String, Outputs> = HashMap::new();
        for (name, routes) in &producers {
            let routes = routes
                .iter()
                .map(|route| (route.clone(), inlets_of(name, Some(route))))
                .collect();
            let mut dead = inlets_of(name, Some(DEAD_LETTER));
            if dead.is_empty() {
                dead.push(inlets[DEFAULT_DEAD_LETTER_SINK].clone());
            }
            let output = Outputs::new(
                Arc::from(name.as_str()),
                inlets_of(name, None),
                routes,
                dead,
            );
            outputs.insert((*name).clone(), output);
        }
        drop(inlets);

        let api = match &config.api {
            Some(api) => Some(
                tokio::net::TcpListener::bind(api.listen)
                    .await
                    .map_err(|error| StartError::Api(api.listen, error))?,
            ),
            None => None,
        };
        // Everything is built: start, sinks first so that nothing waits on a missing reader.
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        let ready = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        for (name, sink) in sinks {
            let input = receivers.remove(&name).expect("every sink has an input");
            tasks.spawn(sinks::run(name, sink, input, abort.clone()));
        }
        for (name, transform) in transforms {
            let input = receivers
                .remove(&name)
                .expect("every transform has an input");
            let output = outputs.remove(&name).expect("every transform has outputs");
            tasks.spawn(transform.run(input, output));
        }
        for (name, source) in sources {
            let output = outputs.remove(&name).expect("every source has outputs");
            tasks.spawn(source.run(output, stop.clone()));
        }
        let api_address = match api {
            Some(listener) => {
                let address = listener.local_addr().ok();
                tracing::info!(address = ?address, "API: /metrics, /health, /ready");
                let (ready, stop) = (ready.clone(), abort.clone());
                tasks.spawn(async move {
                    crate::serve::serve(listener, ready, stop)
                        .await
                        .map_err(|error| StageError::new("api", error))
                });
                address
            }
            None => None,
        };
        let sinks: Vec<String> = config.sinks.keys().cloned().collect();
        let sources: Vec<String> = config.sources.keys().cloned().collect();
        let progress_stop = abort.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(PROGRESS_EVERY);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = progress_stop.cancelled() => return,
                    _ = ticks.tick() => report_progress(&sources, &sinks),
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
        Ok(Pipeline {
            stop,
            abort,
            tasks,

            has_api: api_address.is_some(),
            #[cfg(feature = "mqtt")]
            broker,
        })
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
        #[cfg(feature = "mqtt")]
        if let Some(broker) = self.broker.take() {
            broker.stop().await;
        }
        tracing::info!("pipeline stopped");
        first_error.map_or(Ok(()), Err)
    }
}

/// Log events taken in by each source and written by each sink, from the metrics.
fn report_progress(sources: &[String], sinks: &[String]) {
    let rendered = crate::serve::prometheus().render();
    let count = |stage: &str, metric: &str| -> u64 {
        let prefix = format!("{metric}{{stage=\"{stage}\"}} ");
        rendered
            .lines()
            .find_map(|line| line.strip_prefix(&prefix)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    let list = |stages: &[String], metric: &str| -> String {
        stages
            .iter()
            .map(|stage| format!("{stage}={}", count(stage, metric)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let dead: u64 = rendered
        .lines()
        .filter(|line| line.starts_with("sluice_events_dead_lettered_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64;
    tracing::info!(
        "progress: in [{}] written [{}] dead-lettered {dead}",
        list(sources, "sluice_events_in_total"),
        list(sinks, "sluice_events_out_total")
    );
}
