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

pub fn run(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let pipeline = Pipeline::start(&config)
            .await
            .context("the pipeline did not start")?;
        let stop = pipeline.stopper();
        let mut signals = Signals::new()?;
        tokio::spawn(async move {
            signals.next().await;
            tracing::info!("stopping: draining in-flight events (signal again to force)");
            stop.cancel();
            signals.next().await;
            tracing::warn!("forced exit");
            std::process::exit(130);
        });
        pipeline.wait().await.context("the pipeline failed")
    })
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
