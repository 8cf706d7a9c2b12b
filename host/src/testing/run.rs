//! One test's pipeline, in process: the config's transforms built afresh as a start
//! builds them (state in memory, a scratch data directory), wired as a start wires
//! them, with sources as injection points and sinks as captures. Every output of every
//! stage (each route, the dead letters) also feeds a capture, which records what it
//! gets and settles it as delivered.
//!
//! An input step ends when the token of the events it inserted is settled: everything
//! derived from them has been captured (or consumed on purpose) by then. Timed stages
//! tick only when a step asks ([`ManualTicks`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::spec::{Point, Step, TestCase};
use crate::component::Role;
use crate::config::Config;
use crate::event::{Event, now_ms};
use crate::pipeline::{Ack, Batch, Inlet, Outputs, StageError};
use crate::state::StateStore;
use crate::topology::{CHANNEL_BATCHES, Channels, StartError, Toolkit, declared_routes};
use crate::transforms::wasm::{ManualTicks, WasmTransformConfig};

/// How long a step may take to settle, and the stages to finish once the inputs close.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A config ready to run tests: its plugins and models loaded once for all of them.
pub struct Harness {
    config: Config,
    toolkit: Toolkit,
    /// The stages' data directory: never the config's own.
    scratch: tempfile::TempDir,
}

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot make a scratch data directory: {0}")]
    Scratch(#[source] std::io::Error),
}

/// What a test's pipeline did.
#[derive(Debug, Default)]
pub struct Run {
    /// What reached each output, in order.
    pub captured: BTreeMap<Point, Vec<Event>>,
    /// Why it did not run cleanly: a stage's error, a failed tick, a hang.
    pub errors: Vec<String>,
}

impl Harness {
    pub fn prepare(config: Config) -> Result<Harness, HarnessError> {
        let toolkit = Toolkit::prepare(&config, None, Role::Job)?;
        let scratch = tempfile::tempdir().map_err(HarnessError::Scratch)?;
        Ok(Harness {
            config,
            toolkit,
            scratch,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether transform `stage` runs a plugin that exports `tick`.
    pub fn ticks(&self, stage: &str) -> bool {
        self.config
            .transforms
            .get(stage)
            .and_then(|stage| {
                let any: &dyn std::any::Any = &*stage.config;
                any.downcast_ref::<WasmTransformConfig>()
            })
            .and_then(|wasm| self.toolkit.plugin(wasm.plugin.get_ref()))
            .is_some_and(|loaded| loaded.plugin.ticks)
    }

    /// Run `test`'s steps on a fresh pipeline, then let it drain.
    pub async fn run(&mut self, test: &TestCase) -> Run {
        let ticks = self.manual_ticks();
        let state = StateStore::in_memory();
        let transforms = match self
            .toolkit
            .transforms(&self.config, &state, self.scratch.path())
        {
            Ok(transforms) => transforms,
            Err(error) => {
                return Run {
                    errors: vec![error.to_string()],
                    ..Run::default()
                };
            }
        };
        let config = &self.config;
        let captures = Captures::default();
        let readers: Vec<String> = transforms
            .iter()
            .map(|(name, _)| name)
            .chain(config.sinks.keys())
            .cloned()
            .collect();
        let (channels, mut receivers) = Channels::open(config, readers.iter().map(String::as_str));
        for sink in config.sinks.keys() {
            let input = receivers.remove(sink).expect("every sink has an input");
            captures.spawn(point(sink, None), input);
        }
        let outputs_of = |stage: &str, routes: Vec<String>| {
            channels.outputs(stage, routes, |route, readers| {
                // An unread default output dead-letters what is emitted there, as it
                // does in a running pipeline.
                if route.is_none() && readers.is_empty() {
                    return Vec::new();
                }
                vec![captures.open(point(stage, route))]
            })
        };
        let mut running = Running::default();
        for (name, transform) in transforms {
            let outputs = outputs_of(&name, declared_routes(config, &name));
            let input = receivers
                .remove(&name)
                .expect("every transform has an input");
            running.spawn(name, transform.run(input, outputs));
        }
        let injection = Injection {
            sources: config
                .sources
                .keys()
                .map(|name| (name.clone(), outputs_of(name, Vec::new())))
                .collect(),
            inlets: readers
                .iter()
                .filter_map(|name| Some((name.clone(), channels.inlet(name)?.clone())))
                .collect(),
        };
        drop(channels);

        let mut errors = Vec::new();
        for step in &test.steps {
            let done = match step {
                Step::Insert {
                    stage,
                    events,
                    stamp_now,
                } => injection.insert(stage, events, *stamp_now).await,
                Step::Tick { stage, now_ms: at } => tick(&ticks[stage], stage, *at).await,
            };
            if let Err(error) = done {
                errors.push(error);
                break;
            }
        }
        drop(injection);
        errors.extend(running.drain(config).await);
        for (stage, ticks) in &ticks {
            for failure in ticks.take_failures() {
                errors.push(format!("stage `{stage}`: tick failed: {failure}"));
            }
        }
        Run {
            captured: captures.finish().await,
            errors,
        }
    }

    /// Fresh manual ticks on every plugin stage, by stage.
    fn manual_ticks(&mut self) -> BTreeMap<String, ManualTicks> {
        let mut all = BTreeMap::new();
        for (name, stage) in &mut self.config.transforms {
            let any: &mut dyn std::any::Any = &mut *stage.config;
            if let Some(wasm) = any.downcast_mut::<WasmTransformConfig>() {
                let ticks = ManualTicks::new();
                wasm.manual_ticks = Some(ticks.clone());
                all.insert(name.clone(), ticks);
            }
        }
        all
    }
}

fn point(stage: &str, route: Option<&str>) -> Point {
    Point {
        stage: stage.to_owned(),
        route: route.map(str::to_owned),
    }
}

/// Tick `stage` once and wait for what it emitted to settle.
async fn tick(ticks: &ManualTicks, stage: &str, at: Option<i64>) -> Result<(), String> {
    match tokio::time::timeout(SETTLE_TIMEOUT, ticks.tick(at.unwrap_or_else(now_ms))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(format!("stage `{stage}`: {error}")),
        Err(_) => Err(format!(
            "stage `{stage}`: its tick did not settle within {} s",
            SETTLE_TIMEOUT.as_secs()
        )),
    }
}

/// Where a test's events go in: a source's outputs, or a stage's input.
struct Injection {
    sources: BTreeMap<String, Outputs>,
    inlets: BTreeMap<String, Inlet>,
}

impl Injection {
    /// Insert `events` at `stage` under one token, and wait until it is settled.
    async fn insert(&self, stage: &str, events: &[Event], stamp_now: bool) -> Result<(), String> {
        let (taken, settled) = oneshot::channel::<()>();
        let token = Ack::new(move || {
            let _ = taken.send(());
        });
        let now = now_ms();
        let mut batch = Batch::with_capacity(events.len());
        for event in events {
            let mut event = event.clone();
            if stamp_now {
                event.timestamp_ms = now;
            }
            batch.push(event, token.clone());
        }
        token.handed_on();
        let sent = match (self.sources.get(stage), self.inlets.get(stage)) {
            (Some(outputs), _) => outputs.send(batch).await.map_err(|error| error.to_string()),
            (None, Some(inlet)) => inlet
                .sender
                .send(batch)
                .await
                .map_err(|_| format!("stage `{stage}` stopped taking events")),
            (None, None) => unreachable!("the test's stages were checked against the config"),
        };
        sent.map_err(|error| format!("inserting at `{stage}`: {error}"))?;
        match tokio::time::timeout(SETTLE_TIMEOUT, settled).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(format!(
                "the events inserted at `{stage}` were not all taken: a stage failed or gave \
                 up on them (a running pipeline would have them redelivered)"
            )),
            Err(_) => Err(format!(
                "the events inserted at `{stage}` were not settled within {} s",
                SETTLE_TIMEOUT.as_secs()
            )),
        }
    }
}

/// The transforms' tasks, by name.
#[derive(Default)]
struct Running {
    tasks: JoinSet<Result<(), StageError>>,
    names: BTreeMap<tokio::task::Id, String>,
}

impl Running {
    fn spawn(
        &mut self,
        name: String,
        task: impl Future<Output = Result<(), StageError>> + Send + 'static,
    ) {
        let id = self.tasks.spawn(task).id();
        self.names.insert(id, name);
    }

    /// Wait for every stage to finish, its inputs closed: their errors, and the stage
    /// that hangs (the first, upstream, of those still running after the timeout).
    async fn drain(mut self, config: &Config) -> Vec<String> {
        let mut errors = Vec::new();
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(None) => return errors,
                Ok(Some(Ok((id, result)))) => {
                    self.names.remove(&id);
                    if let Err(error) = result {
                        errors.push(error.to_string());
                    }
                }
                Ok(Some(Err(error))) => {
                    let name = self.names.remove(&error.id()).unwrap_or_default();
                    errors.push(format!("stage `{name}` panicked: {error}"));
                }
                Err(_) => break,
            }
        }
        self.tasks.abort_all();
        let order: Vec<String> = config
            .graph()
            .topological_order()
            .map(|nodes| nodes.iter().map(|node| node.name.clone()).collect())
            .unwrap_or_default();
        let mut hanging: Vec<String> = self.names.into_values().collect();
        hanging.sort_by_key(|name| order.iter().position(|n| n == name));
        if hanging.is_empty() {
            return errors;
        }
        let first = hanging.remove(0);
        let waiting = if hanging.is_empty() {
            String::new()
        } else {
            format!(" (waiting on it: {})", hanging.join(", "))
        };
        errors.push(format!(
            "stage `{first}` did not finish within {} s after its input closed{waiting}",
            SETTLE_TIMEOUT.as_secs()
        ));
        errors
    }
}

/// What reached each output, recorded by one task per output.
#[derive(Default)]
struct Captures {
    seen: Arc<Mutex<BTreeMap<Point, Vec<Event>>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Captures {
    /// A new capture of `at`, and its input.
    fn open(&self, at: Point) -> Inlet {
        let (sender, receiver) = mpsc::channel(CHANNEL_BATCHES);
        let inlet = Inlet::new(Arc::from(format!("test:{at}")), sender);
        self.spawn(at, receiver);
        inlet
    }

    /// Record what comes on `input` as `at`'s, settling each event as delivered.
    fn spawn(&self, at: Point, mut input: mpsc::Receiver<Batch>) {
        let seen = self.seen.clone();
        let task = tokio::spawn(async move {
            while let Some(batch) = input.recv().await {
                seen.lock()
                    .unwrap()
                    .entry(at.clone())
                    .or_default()
                    .extend(batch.events.iter().cloned());
                batch.delivered();
            }
        });
        self.tasks.lock().unwrap().push(task);
    }

    /// Everything captured, once every output has closed.
    async fn finish(self) -> BTreeMap<Point, Vec<Event>> {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap());
        for task in tasks {
            let _ = task.await;
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}
