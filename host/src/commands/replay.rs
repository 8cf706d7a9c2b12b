//! `sluice replay`: run a pipeline whose sources include `type = "replay"` until every
//! replay has read its objects and the pipeline has drained, with a progress bar on
//! stderr and a summary on stdout.

use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use sluice::counters;
use sluice::supervisor::Supervisor;
use sluice::topology::replay::{Overrides, Replays, Totals};

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
    let overrides = Overrides {
        prefix: args.prefix,
        from: args.from,
        to: args.to,
    };
    let replays = Replays::prepare(&mut config, &overrides)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let started = Instant::now();
    runtime.block_on(async {
        let pipeline = Supervisor::start(config)
            .await
            .context("the pipeline did not start")?;
        let stop = pipeline.stopper();
        let bar = BAR.get_or_init(|| draw(replays.totals()));
        let interrupt = pipeline.stopper();
        let mut signals = super::pipeline::Signals::new()?;
        tokio::spawn(async move {
            signals.next().await;
            tracing::info!("stopping the replay: draining what was read (signal again to force)");
            interrupt.cancel();
            signals.next().await;
            std::process::exit(130);
        });
        let every = Duration::from_millis(200);
        let result = replays
            .follow(pipeline.wait(), &stop, every, |totals| update(bar, totals))
            .await;
        bar.finish_and_clear();
        result.context("the pipeline failed")
    })?;
    summarize(&replays, started.elapsed())
}

fn draw(totals: Totals) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} {msg}",
        )
        .expect("the template is valid"),
    );
    update(&bar, totals);
    bar
}

fn update(bar: &ProgressBar, totals: Totals) {
    bar.set_length(totals.bytes_total);
    bar.set_position(totals.bytes_read);
    bar.set_message(format!(
        "objects {}/{} · events {} sent, {} acknowledged",
        totals.objects_read + totals.objects_failed,
        totals.objects_total,
        totals.events_sent,
        totals.events_acknowledged,
    ));
}

/// Print what each replay read and what the sinks wrote; fail if an object could not
/// be read or an event was not taken by every sink.
fn summarize(replays: &Replays, elapsed: Duration) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let seconds = elapsed.as_secs_f64().max(0.001);
    for (name, progress) in &replays.watched {
        let load = |counter: &std::sync::atomic::AtomicU64| {
            counter.load(std::sync::atomic::Ordering::Relaxed)
        };
        let sent = load(&progress.events_sent);
        writeln!(
            out,
            "{name}: {} of {} objects ({:.1} MB) read in {:.1} s: {sent} events ({:.0}/s), \
             {} acknowledged, {} outside the time range",
            load(&progress.objects_read),
            load(&progress.objects_total),
            load(&progress.bytes_read) as f64 / 1e6,
            seconds,
            sent as f64 / seconds,
            load(&progress.events_acknowledged),
            load(&progress.events_outside_range),
        )?;
    }
    for line in replays.unread() {
        writeln!(out, "{line}")?;
    }
    let written = counters::totals(counters::EVENTS_OUT);
    let dead = counters::sum(counters::DEAD_LETTERED);
    let list: Vec<String> = written
        .iter()
        .filter(|(stage, _)| !replays.watched.iter().any(|(name, _)| name == *stage))
        .map(|(stage, count)| format!("{stage}={count}"))
        .collect();
    writeln!(
        out,
        "out by stage: {}; dead-lettered: {dead}",
        list.join(" ")
    )?;
    let problems = replays.problems();
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
