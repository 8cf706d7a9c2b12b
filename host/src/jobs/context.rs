//! What one run of a job is given: its slot, a log, a way to stop, and the host's
//! services a kind may need.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::{JobError, Produced};

/// The time range a run is for: `[start, end)`, in milliseconds since the epoch. A
/// scheduled slot ends at the time it fires and starts at the schedule's previous time,
/// so the nightly run at midnight covers the day before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl Slot {
    /// RFC 3339 in UTC, to the second (`2026-12-07T00:00:00Z`).
    pub fn format(ms: i64) -> String {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|time| time.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|| ms.to_string())
    }

    /// `text` with `{slot_start}`, `{slot_end}` (RFC 3339), `{slot_date}` (the start's
    /// `YYYY-MM-DD`) and `{slot_ms}` (the end, in milliseconds) replaced.
    pub fn expand(&self, text: &str) -> String {
        let date = Slot::format(self.start_ms);
        text.replace("{slot_start}", &Slot::format(self.start_ms))
            .replace("{slot_end}", &Slot::format(self.end_ms))
            .replace("{slot_date}", date.get(..10).unwrap_or(&date))
            .replace("{slot_ms}", &self.end_ms.to_string())
    }
}

/// The last lines of a run's output, kept with the run (bounded: a chatty program
/// cannot grow the host's memory or the store).
#[derive(Debug, Clone, Default)]
pub struct RunLog {
    lines: Arc<Mutex<LogTail>>,
}

#[derive(Debug, Default)]
struct LogTail {
    lines: VecDeque<String>,
    /// Lines that fell out of the tail.
    dropped: u64,
}

impl RunLog {
    /// Lines kept per run.
    pub const LINES: usize = 200;
    /// Bytes kept per line; the rest is cut.
    pub const LINE_BYTES: usize = 1024;

    pub fn line(&self, line: impl std::fmt::Display) {
        let mut line = line.to_string();
        if line.len() > Self::LINE_BYTES {
            let mut cut = Self::LINE_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str(" …");
        }
        let mut tail = self.lines.lock().unwrap();
        if tail.lines.len() == Self::LINES {
            tail.lines.pop_front();
            tail.dropped += 1;
        }
        tail.lines.push_back(line);
    }

    /// The kept lines, after a note of how many came before them.
    pub fn text(&self) -> String {
        let tail = self.lines.lock().unwrap();
        let mut text = String::new();
        if tail.dropped > 0 {
            text.push_str(&format!("[{} earlier lines not kept]\n", tail.dropped));
        }
        for line in &tail.lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}

/// Runs a whole pipeline for a job (the `replay` kind): implemented by the scheduler's
/// layer, which may build pipelines, so that kinds need not.
pub trait PipelineRunner: Send + Sync {
    /// Run the pipeline `config` (a file) until its replay sources have read the objects
    /// of `[from, to)` (under `prefix`, if given) and every event is settled; stop early
    /// when `cancel` is. It produced the objects read and the events every sink took.
    fn replay(
        &self,
        config: &Path,
        from: String,
        to: String,
        prefix: Option<String>,
        log: RunLog,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<Produced, JobError>>;
}

/// One run of a job.
#[derive(Clone)]
pub struct RunContext {
    pub job: String,
    pub slot: Slot,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The config file's directory: relative paths in a job's table start here.
    pub base_dir: PathBuf,
    /// The host's `data_dir`.
    pub data_dir: PathBuf,
    pub log: RunLog,
    /// Cancelled when the attempt times out or the host stops.
    pub cancel: CancellationToken,
    pub pipelines: Arc<dyn PipelineRunner>,
}

impl RunContext {
    /// A path of the job's table: relative ones start at the config's directory.
    pub fn path(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }
}

/// For tests of jobs that run no pipeline.
#[cfg(test)]
pub struct NoPipelines;

#[cfg(test)]
impl PipelineRunner for NoPipelines {
    fn replay(
        &self,
        config: &Path,
        _: String,
        _: String,
        _: Option<String>,
        _: RunLog,
        _: CancellationToken,
    ) -> BoxFuture<'static, Result<Produced, JobError>> {
        let config = config.display().to_string();
        Box::pin(async move {
            Err(JobError::new(format!(
                "{config}: no pipelines in these tests"
            )))
        })
    }
}
