//! `sluice replay`: run a pipeline whose sources include `type = "replay"` until every
//! replay has read its objects and the pipeline has drained, with a progress bar on
//! stderr and a summary on stdout.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use sluice::counters;
use sluice::sources::replay::{self, Progress, ReplaySourceConfig};
use sluice::supervisor::Supervisor;

/// Overrides for every replay source of the config.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The pipeline config (TOML) with at least one `type = "replay"` source.
    config: std::path::PathBuf,
    /// Only objects under this path (e.g. `dt=2026-11-28`).
    #[arg(long)]
    prefix: Option<String>,
    /// Start of the time range, inclusive: `2026-11-28` or `2026-11-28T10:00:00Z`.
    #[arg(long)]
    from: Option<String>,
    /// End of the time range, exclusive.
    #[arg(long)]
    to: Option<String>,
}

/// The bar log lines are printed around, once one is drawn.
static BAR: OnceLock<ProgressBar> = OnceLock::new();

pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let mut config = super::pipeline::load(&args.config)?;
    let mut replays = Vec::new();
    for (name, stage) in &mut config.sources {
        let any: &mut dyn std::any::Any = &mut *stage.config;
        if let Some(replay) = any.downcast_mut::<ReplaySourceConfig>() {
            override_with(replay, &args);
            replays.push(name.clone());
        }
    }
    anyhow::ensure!(
        !replays.is_empty(),
        "{} has no `type = \"replay\"` source to replay into",
        args.config.display()
    );
    let others = config.sources.len() - replays.len();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let started = Instant::now();
    let watched = runtime.block_on(async {
        let pipeline = Supervisor::start(config)
            .await
            .context("the pipeline did not start")?;
        let watched: Vec<(String, Arc<Progress>)> = replays
            .iter()
            .filter_map(|name| Some((name.clone(), replay::progress(name)?)))
            .collect();
        let stop = pipeline.stopper();
        let bar = BAR.get_or_init(|| draw(&watched));
        let watch = watched.clone();
        let ticker = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(200));
            loop {
                ticks.tick().await;
                update(bar, &watch);
                // Other sources (a live MQTT input beside the replay) would run on:
                // the replay is done when its objects are.
                if others > 0 && watch.iter().all(|(_, p)| p.done.load(Ordering::Acquire)) {
                    stop.cancel();
                }
            }
        });
        let interrupt = pipeline.stopper();
        let mut signals = super::pipeline::Signals::new()?;
        tokio::spawn(async move {
            signals.next().await;
            tracing::info!("stopping the replay: draining what was read (signal again to force)");
            interrupt.cancel();
            signals.next().await;
            std::process::exit(130);
        });
        let result = pipeline.wait().await;
        ticker.abort();
        update(bar, &watched);
        bar.finish_and_clear();
        result.context("the pipeline failed")?;
        anyhow::Ok(watched)
    })?;
    summarize(&watched, started.elapsed())
}

fn override_with(replay: &mut ReplaySourceConfig, args: &ReplayArgs) {
    if let Some(prefix) = &args.prefix {
        replay.prefix.clone_from(prefix);
    }
    if let Some(from) = &args.from {
        replay.from = Some(from.clone());
    }
    if let Some(to) = &args.to {
        replay.to = Some(to.clone());
    }
}

fn draw(watched: &[(String, Arc<Progress>)]) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} {msg}",
        )
        .expect("the template is valid"),
    );
    update(&bar, watched);
    bar
}

fn update(bar: &ProgressBar, watched: &[(String, Arc<Progress>)]) {
    let sum = |read: fn(&Progress) -> u64| watched.iter().map(|(_, p)| read(p)).sum::<u64>();
    bar.set_length(sum(|p| p.bytes_total.load(Ordering::Relaxed)));
    bar.set_position(sum(|p| p.bytes_read.load(Ordering::Relaxed)));
    bar.set_message(format!(
        "objects {}/{} · events {} sent, {} acknowledged",
        sum(|p| p.objects_read.load(Ordering::Relaxed) + p.failed.lock().unwrap().len() as u64),
        sum(|p| p.objects_total.load(Ordering::Relaxed)),
        sum(|p| p.events_sent.load(Ordering::Relaxed)),
        sum(|p| p.events_acknowledged.load(Ordering::Relaxed)),
    ));
}

/// Print what each replay read and what the sinks wrote; fail if an object could not
/// be read or an event was not taken by every sink.
fn summarize(watched: &[(String, Arc<Progress>)], elapsed: Duration) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let mut problems = Vec::new();
    let seconds = elapsed.as_secs_f64().max(0.001);
    for (name, progress) in watched {
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        let sent = load(&progress.events_sent);
        let acknowledged = load(&progress.events_acknowledged);
        let failed = progress.failed.lock().unwrap();
        writeln!(
            out,
            "{name}: {} of {} objects ({:.1} MB) read in {:.1} s: {sent} events ({:.0}/s), \
             {acknowledged} acknowledged, {} outside the time range",
            load(&progress.objects_read),
            load(&progress.objects_total),
            load(&progress.bytes_read) as f64 / 1e6,
            seconds,
            sent as f64 / seconds,
            load(&progress.events_outside_range),
        )?;
        for (object, reason) in failed.iter() {
            writeln!(out, "{name}: could not read {object}: {reason}")?;
        }
        if !failed.is_empty() {
            problems.push(format!(
                "{name}: {} object(s) could not be read",
                failed.len()
            ));
        }
        if acknowledged < sent {
            problems.push(format!(
                "{name}: {} event(s) were not taken by every sink (see the log)",
                sent - acknowledged
            ));
        }
    }
    let written = counters::totals(counters::EVENTS_OUT);
    let dead = counters::sum(counters::DEAD_LETTERED);
    let list: Vec<String> = written
        .iter()
        .filter(|(stage, _)| !watched.iter().any(|(name, _)| name == *stage))
        .map(|(stage, count)| format!("{stage}={count}"))
        .collect();
    writeln!(
        out,
        "out by stage: {}; dead-lettered: {dead}",
        list.join(" ")
    )?;
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(())
}

/// Log lines on stderr, printed around the progress bar when one is drawn so that the
/// two do not tear each other.
pub struct LogWriter;

pub struct LogLine(Vec<u8>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::new())
    }
}

impl Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let write = || {
            let _ = std::io::stderr().write_all(&self.0);
        };
        match BAR.get().filter(|bar| !bar.is_finished()) {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}
