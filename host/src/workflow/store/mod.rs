//! Where runs are kept: each job's runs by slot (status, attempts, times, log tail, what
//! they produced) and each job's schedule cursor and pause switch.
//!
//! Embedded in the host's data directory ([`embedded`], redb: crash-safe, one host), or
//! in PostgreSQL when several central hosts share the jobs: then every change of a run's
//! status is one statement guarded by the database, so that of two hosts only one
//! claims a slot.

mod embedded;

use serde::{Deserialize, Serialize};

use crate::jobs::{Produced, Slot};

pub use embedded::EmbeddedStore;

#[derive(Debug, thiserror::Error)]
#[error("job runs ({place}): {message}")]
pub struct StoreError {
    pub place: String,
    pub message: String,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Due: starts when the job's concurrency and pause allow.
    Waiting,
    Running,
    /// Failed an attempt; the next starts at `next_attempt_ms`.
    Retrying,
    Succeeded,
    /// Failed its last attempt.
    Failed,
    /// Not run: missed without `catchup`, or its previous run was still going.
    Skipped,
    /// Not run: a job it depends on failed for its slot.
    UpstreamFailed,
}

impl Status {
    /// Whether the run is over (it changes only when an operator runs it again).
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Waiting | Status::Running | Status::Retrying)
    }
}

/// Why a run exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Schedule,
    /// Its upstream jobs succeeded for its slot.
    Upstream,
    /// `sluice jobs run` or `retry`.
    Manual,
}

/// One run of a job: a slot and everything that happened to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub job: String,
    pub slot_start_ms: i64,
    pub slot_end_ms: i64,
    pub status: Status,
    pub trigger: Trigger,
    /// Attempts started.
    pub attempts: u32,
    #[serde(default)]
    pub started_ms: Option<i64>,
    #[serde(default)]
    pub ended_ms: Option<i64>,
    /// When a `retrying` run's next attempt may start.
    #[serde(default)]
    pub next_attempt_ms: Option<i64>,
    /// Why it failed, was skipped or retries.
    #[serde(default)]
    pub reason: Option<String>,
    /// The tail of its output (`jobs::RunLog`).
    #[serde(default)]
    pub log: String,
    #[serde(default)]
    pub produced: Produced,
    /// The host that ran (or runs) it.
    #[serde(default)]
    pub host: Option<String>,
}

impl RunRecord {
    pub fn new(job: &str, slot: Slot, status: Status, trigger: Trigger) -> RunRecord {
        RunRecord {
            job: job.to_owned(),
            slot_start_ms: slot.start_ms,
            slot_end_ms: slot.end_ms,
            status,
            trigger,
            attempts: 0,
            started_ms: None,
            ended_ms: None,
            next_attempt_ms: None,
            reason: None,
            log: String::new(),
            produced: Produced::default(),
            host: None,
        }
    }

    pub fn slot(&self) -> Slot {
        Slot {
            start_ms: self.slot_start_ms,
            end_ms: self.slot_end_ms,
        }
    }

    /// Whether a scheduler may start it at `now_ms`.
    pub fn is_due(&self, now_ms: i64) -> bool {
        match self.status {
            Status::Waiting => true,
            Status::Retrying => self.next_attempt_ms.is_none_or(|at| at <= now_ms),
            _ => false,
        }
    }
}

/// A job's scheduling state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    /// The last firing the scheduler has handled; none before the job first ran here.
    pub cursor_ms: Option<i64>,
    pub paused: bool,
}

/// Runs kept per job; older final ones are forgotten.
pub const RUNS_KEPT: usize = 500;

/// The run store of a host.
pub enum RunStore {
    Embedded(std::sync::Arc<EmbeddedStore>),
}

impl RunStore {
    pub async fn job_state(&self, job: &str) -> Result<JobState, StoreError> {
        match self {
            RunStore::Embedded(store) => store.job_state(job),
        }
    }

    pub async fn set_job_state(&self, job: &str, state: &JobState) -> Result<(), StoreError> {
        match self {
            RunStore::Embedded(store) => store.set_job_state(job, state),
        }
    }

    /// Keep `run` unless a run of its job and slot exists; whether it was kept.
    pub async fn insert(&self, run: &RunRecord) -> Result<bool, StoreError> {
        match self {
            RunStore::Embedded(store) => store.insert(run),
        }
    }

    /// Replace the run of `run`'s job and slot.
    pub async fn put(&self, run: &RunRecord) -> Result<(), StoreError> {
        match self {
            RunStore::Embedded(store) => store.put(run),
        }
    }

    /// Take a due run for `host`: it becomes `running` with one more attempt. `None` when
    /// it is no longer due (another host took it, an operator changed it).
    pub async fn claim(
        &self,
        job: &str,
        slot_end_ms: i64,
        host: &str,
        now_ms: i64,
    ) -> Result<Option<RunRecord>, StoreError> {
        match self {
            RunStore::Embedded(store) => store.claim(job, slot_end_ms, host, now_ms),
        }
    }

    pub async fn get(&self, job: &str, slot_end_ms: i64) -> Result<Option<RunRecord>, StoreError> {
        match self {
            RunStore::Embedded(store) => store.get(job, slot_end_ms),
        }
    }

    pub async fn remove(&self, job: &str, slot_end_ms: i64) -> Result<(), StoreError> {
        match self {
            RunStore::Embedded(store) => store.remove(job, slot_end_ms),
        }
    }

    /// `job`'s newest runs, newest slot first.
    pub async fn runs(&self, job: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        match self {
            RunStore::Embedded(store) => store.runs(job, limit),
        }
    }

    /// Every run not yet final (waiting, running, retrying), of every job.
    pub async fn active(&self) -> Result<Vec<RunRecord>, StoreError> {
        match self {
            RunStore::Embedded(store) => store.active(),
        }
    }

    /// Runs `running` on `host` that no attempt of this process holds: left by a host
    /// that stopped during them. They are handed back as `waiting`.
    pub async fn release_orphans(&self, host: &str) -> Result<Vec<RunRecord>, StoreError> {
        match self {
            RunStore::Embedded(store) => store.release_orphans(host),
        }
    }
}
