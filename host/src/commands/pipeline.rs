//! `sluice run | validate | graph`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use sluice::config::Config;
use sluice::supervisor::{ReplaceError, Supervisor};

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
    if let Err(sluice::supervisor::Refused { problems }) = sluice::supervisor::check(&config) {
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
        let mut supervisor = Supervisor::start(config)
            .await
            .context("the pipeline did not start")?;
        loop {
            tokio::select! {
                ended = supervisor.ended() => return ended.context("the pipeline failed"),
                _ = signals.next() => {
                    tracing::info!("stopping: draining in-flight events (signal again to force)");
                    tokio::spawn(async move {
                        signals.next().await;
                        tracing::warn!("forced exit");
                        std::process::exit(130);
                    });
                    return supervisor.drain().await.context("the pipeline failed");
                }
                _ = hangups.recv() => reload(path, &mut supervisor).await?,
            }
        }
    })
}

/// SIGHUP: replace the running config with the file's; only a config that runs nothing
/// (neither the new nor the previous one starting) ends the process.
async fn reload(path: &Path, supervisor: &mut Supervisor) -> anyhow::Result<()> {
    tracing::info!(config = %path.display(), "SIGHUP: reloading");
    let candidate = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            tracing::error!(
                "the new config is refused; the running one goes on:\n{}",
                errors.report()
            );
            return Ok(());
        }
    };
    match supervisor.replace(candidate).await {
        Ok(()) => tracing::info!("reloaded"),
        Err(error @ (ReplaceError::Refused(_) | ReplaceError::RolledBack(_))) => {
            tracing::error!("{error}");
        }
        Err(error) => return Err(error).context("reloading"),
    }
    Ok(())
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
