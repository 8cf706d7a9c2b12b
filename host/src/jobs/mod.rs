//! Jobs: work that runs on a schedule beside the stream — a replay over yesterday's
//! objects, a compaction of small files, a training script, a model switched live.
//!
//! A job kind (a `[jobs.NAME]` `type`) is one module here: its config struct and what one
//! run of it does, registered by one line in [`KINDS`], as sources and sinks are. When a
//! run starts, how many times it is tried, and what runs after it belong to the
//! scheduler (`crate::workflow`); a kind only runs once for the slot it is given and
//! reports what it produced. A kind that needs something only a higher layer has (a
//! whole pipeline, for `replay`) asks for it through [`RunContext::pipelines`].

mod context;
mod schedule;

use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

#[cfg(test)]
pub use context::NoPipelines;
pub use context::{PipelineRunner, RunContext, RunLog, Slot};
pub use schedule::{Schedule, ScheduleError};

use crate::component::Problem;

crate::registry! { JobKind:
    "command" => command::CommandJob,
    #[cfg(feature = "object-store")] "replay" => replay::ReplayJob,
    #[cfg(feature = "object-store")] "compact" => compact::CompactJob,
    "model" => model::ModelJob,
}

/// `[scheduler]`: where the runs of the config's jobs are kept.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Keep runs in PostgreSQL (libpq key=value or URL form, TLS as its `sslmode` says)
    /// instead of the host's data directory: central hosts sharing one database run each
    /// slot of a job once between them.
    #[serde(default)]
    pub postgres: Option<String>,
    /// This host's name in the runs it records; the machine's host name otherwise.
    #[serde(default)]
    pub host: Option<String>,
}

/// The config of one job kind, and one run of it.
pub trait JobKind: std::any::Any + Debug + Send + Sync {
    /// What `validate` reports at the job's table.
    fn problems(&self, _context: &CheckContext<'_>) -> Vec<Problem> {
        Vec::new()
    }

    /// Run once for `run.slot`. The future is dropped (and `run.cancel` cancelled) when
    /// the job's `timeout` passes or the host stops: a kind holding something outside
    /// the process (a child process, a pipeline) stops it when cancelled.
    fn run(self: Arc<Self>, run: RunContext) -> BoxFuture<'static, Result<Produced, JobError>>;
}

/// What a job's config is checked against.
pub struct CheckContext<'a> {
    /// The config file's directory: relative paths in a job's table start here.
    pub base: &'a Path,
    /// The config's `[models.NAME]`.
    pub models: &'a std::collections::BTreeMap<String, crate::inference::ModelDef>,
}

/// What a successful run made, kept with the run and shown in its history.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Produced {
    /// Objects (files) written.
    pub objects: u64,
    /// Rows (events) written.
    pub rows: u64,
}

/// Why a run failed; kept with the run and retried as the job's `retries` say.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct JobError(pub String);

impl JobError {
    pub fn new(message: impl std::fmt::Display) -> Self {
        JobError(message.to_string())
    }
}

/// Whether a run may start while the job's previous run is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    /// The new slot is recorded as skipped.
    #[default]
    Skip,
    /// The new slot waits for the previous run to end.
    Queue,
}

/// One `[jobs.NAME]`: when it runs, after what, how often it is tried, and its kind.
#[derive(Debug, Clone)]
pub struct JobDef {
    pub name: String,
    /// Where the job's table starts in the config file.
    pub span: std::ops::Range<usize>,
    /// Its `type`.
    pub kind: &'static str,
    /// `schedule` or `every`; a job with `depends_on` runs in its upstream's slots and
    /// has none of its own.
    pub schedule: Option<Schedule>,
    pub depends_on: Vec<String>,
    /// Attempts after the first failed one.
    pub retries: u32,
    /// The wait before the first retry; each further one doubles it (up to an hour).
    pub retry_backoff: Duration,
    /// How long one attempt may run.
    pub timeout: Option<Duration>,
    pub concurrency: Concurrency,
    /// After downtime: run every missed slot (`true`) or only the latest.
    pub catchup: bool,
    pub config: Arc<dyn JobKind>,
}

impl JobDef {
    /// The wait before attempt `attempt` (2 is the first retry).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(2).min(16);
        self.retry_backoff
            .saturating_mul(1 << doublings)
            .min(Duration::from_secs(3600))
    }
}
