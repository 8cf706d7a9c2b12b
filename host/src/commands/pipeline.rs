//! `sluice run | validate | graph`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use sluice::config::Config;
use sluice::pipeline::Pipeline;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum GraphFormat {
    Mermaid,
    Dot,
}

/// Load a config; on problems, print every one (each says `error:` already) and
/// return their count as the error.
pub(crate) fn load(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|errors| {
        let _ = std::io::stderr().write_all(errors.report().as_bytes());
        anyhow::anyhow!(
            "{} problem(s) in {}",
            errors.diagnostics.len(),
            errors.file.display()
        )
    })
}

pub fn validate(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    let mut problems = sluice::pipeline::check_plugins(&config);
    if let Some(fleet) = &config.fleet {
        let base = path.parent().unwrap_or(Path::new(""));
        if let Err(error) = fleet.check(base) {
            problems.push(error.to_string());
        }
    }
    if !problems.is_empty() {
        let list: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: error: {p}", path.display()))
            .collect();
        anyhow::bail!(
            "{}\n{} problem(s) in {}",
            list.join("\n"),
            problems.len(),
            path.display()
        );
    }
    writeln!(
        std::io::stdout(),
        "{}: ok ({} sources, {} transforms, {} sinks, {} plugins loaded and initialised)",
        path.display(),
        config.sources.len(),
        config.transforms.len(),
        config.sinks.len(),
        config.plugins.len()
    )?;
    Ok(())
}

pub fn graph(path: &Path, format: GraphFormat) -> anyhow::Result<()> {
    let graph = load(path)?.graph();
    let text = match format {
        GraphFormat::Mermaid => graph.to_mermaid(),
        GraphFormat::Dot => graph.to_dot(),
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}

/// Run the config at `path` until SIGINT/SIGTERM. SIGHUP reloads it: the new config
/// must load and its plugins initialise before the running pipeline is drained and
/// the new one started; a new config that fails either way leaves (or puts back) the
/// running one.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let mut signals = Signals::new()?;
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing a SIGHUP handler")?;
        let mut running = Running::start(config).await.context("the pipeline did not start")?;
        loop {
            tokio::select! {
                ended = &mut running.task => {
                    return ended.context("the pipeline panicked")?.context("the pipeline failed");
                }
                _ = signals.next() => {
                    tracing::info!("stopping: draining in-flight events (signal again to force)");
                    running.stop.cancel();
                    tokio::spawn(async move {
                        signals.next().await;
                        tracing::warn!("forced exit");
                        std::process::exit(130);
                    });
                    return running.task.await.context("the pipeline panicked")?.context("the pipeline failed");
                }
                _ = hangups.recv() => running = reload(path, running).await?,
            }
        }
    })
}

/// A started pipeline: its config, its stop handle and the task waiting on it.
struct Running {
    config: Config,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), sluice::pipeline::StageError>>,
}

impl Running {
    async fn start(config: Config) -> Result<Running, sluice::pipeline::StartError> {
        let pipeline = Pipeline::start(&config).await?;
        Ok(Running {
            config,
            stop: pipeline.stopper(),
            task: tokio::spawn(pipeline.wait()),
        })
    }

    /// Drain and stop; the outcome of the run is logged, not returned (a reload goes on).
    async fn drain(self) -> Config {
        self.stop.cancel();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!("the pipeline stopped with an error: {error}"),
            Err(panic) => tracing::error!("the pipeline panicked: {panic}"),
        }
        self.config
    }
}

async fn reload(path: &Path, running: Running) -> anyhow::Result<Running> {
    tracing::info!(config = %path.display(), "SIGHUP: reloading");
    let candidate = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            tracing::error!(
                "the new config is refused; the running one goes on:\n{}",
                errors.report()
            );
            return Ok(running);
        }
    };
    let problems = sluice::pipeline::check_plugins(&candidate);
    if !problems.is_empty() {
        tracing::error!(
            "the new config is refused; the running one goes on: {}",
            problems.join("; ")
        );
        return Ok(running);
    }
    let previous = running.drain().await;
    match Running::start(candidate).await {
        Ok(started) => {
            tracing::info!("reloaded");
            Ok(started)
        }
        Err(error) => {
            tracing::error!(
                "the new config did not start ({error}); starting the previous one again"
            );
            Running::start(previous)
                .await
                .context("neither the new nor the previous config starts")
        }
    }
}

/// SIGINT and SIGTERM, registered once so that a second signal is seen as such.
pub(crate) struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("installing a SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing a SIGTERM handler")?,
        })
    }

    pub(crate) async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
