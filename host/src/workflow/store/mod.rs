//! Where runs are kept: each job's runs by slot (status, attempts, times, log tail, what
//! they produced) and each job's schedule cursor and pause switch.
//!
//! Embedded in the host's data directory ([`embedded`], redb: crash-safe, one host), or
//! in PostgreSQL when several central hosts share the jobs ([`postgres`]): then every
//! change of a run's status is guarded by the database, so that of two hosts only one
//! claims a slot, and a run whose host died is found by the database's locks.
//!
//! How an attempt goes through a store: [`RunStore::claim`] takes a due run (and, in
//! PostgreSQL, a lock held while the attempt runs), [`RunStore::finish`] stores how it
//! ended (and releases the lock); any other change made on what the scheduler read
//! before is a [`RunStore::replace`], which does nothing when the run changed since.

mod embedded;
#[cfg(feature = "postgres")]
mod postgres;

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::jobs::{Produced, SchedulerConfig, Slot};

pub use embedded::EmbeddedStore;
#[cfg(feature = "postgres")]
pub use postgres::PgStore;

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
    /// The tail of its output (`jobs::RunLog`); left out of lists.
    #[serde(default, skip_serializing_if = "String::is_empty")]
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

    /// Start an attempt on `host` at `now_ms`: `running`, with one more attempt.
    fn start_attempt(&mut self, host: &str, now_ms: i64) {
        self.status = Status::Running;
        self.attempts += 1;
        self.started_ms = Some(now_ms);
        self.ended_ms = None;
        self.next_attempt_ms = None;
        self.host = Some(host.to_owned());
    }

    /// Hand back a run whose host stopped during it: it waits to run again.
    fn hand_back(&mut self) {
        self.status = Status::Waiting;
        self.reason = Some("the host stopped during the run; it runs again".into());
    }

    /// Whether the run is still where `was` left it: nobody claimed, settled or took it
    /// over since (the same status, attempts and host).
    fn is_still(&self, was: &RunRecord) -> bool {
        self.status == was.status && self.attempts == was.attempts && self.host == was.host
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

/// Call a store's method: the embedded one's are blocking, PostgreSQL's asynchronous.
macro_rules! on_store {
    ($self:ident.$method:ident($($arg:expr),*)) => {
        match $self {
            RunStore::Embedded(store) => store.$method($($arg),*),
            #[cfg(feature = "postgres")]
            RunStore::Postgres(store) => store.$method($($arg),*).await,
        }
    };
}

/// The run store of a host.
pub enum RunStore {
    Embedded(Arc<EmbeddedStore>),
    #[cfg(feature = "postgres")]
    Postgres(Arc<PgStore>),
}

impl RunStore {
    /// The store `[scheduler]` names: PostgreSQL (connected at first use), else
    /// `jobs.redb` in `data_dir`.
    pub fn open(scheduler: &SchedulerConfig, data_dir: &Path) -> Result<RunStore, StoreError> {
        match &scheduler.postgres {
            #[cfg(feature = "postgres")]
            Some(connection) => Ok(RunStore::Postgres(Arc::new(PgStore::new(connection)?))),
            #[cfg(not(feature = "postgres"))]
            Some(_) => Err(StoreError {
                place: "[scheduler] postgres".into(),
                message: "this sluice is built without PostgreSQL (cargo feature `postgres`)"
                    .into(),
            }),
            None => Ok(RunStore::Embedded(EmbeddedStore::shared(
                &data_dir.join("jobs.redb"),
            )?)),
        }
    }

    /// Whether other hosts share the store: then a run orphaned by one of them is looked
    /// for at every tick ([`RunStore::release_orphans`]), not only at the start.
    pub fn is_shared(&self) -> bool {
        match self {
            RunStore::Embedded(_) => false,
            #[cfg(feature = "postgres")]
            RunStore::Postgres(_) => true,
        }
    }

    pub async fn job_state(&self, job: &str) -> Result<JobState, StoreError> {
        on_store!(self.job_state(job))
    }

    pub async fn set_job_state(&self, job: &str, state: &JobState) -> Result<(), StoreError> {
        on_store!(self.set_job_state(job, state))
    }

    /// Move `job`'s cursor to `cursor_ms` unless it is past it already (another host
    /// moved it on); its pause switch stays as it is.
    pub async fn advance_cursor(&self, job: &str, cursor_ms: i64) -> Result<(), StoreError> {
        on_store!(self.advance_cursor(job, cursor_ms))
    }

    /// Keep `run` unless a run of its job and slot exists; whether it was kept.
    pub async fn insert(&self, run: &RunRecord) -> Result<bool, StoreError> {
        on_store!(self.insert(run))
    }

    /// Replace the run of `run`'s job and slot.
    pub async fn put(&self, run: &RunRecord) -> Result<(), StoreError> {
        on_store!(self.put(run))
    }

    /// Replace the run of `run`'s job and slot if it is still where `was` (read before)
    /// left it; whether it was replaced (not when another host claimed or settled it).
    pub async fn replace(&self, run: &RunRecord, was: &RunRecord) -> Result<bool, StoreError> {
        on_store!(self.replace(run, was))
    }

    /// Take a due run for `host`: it becomes `running` with one more attempt. `None` when
    /// it is no longer due (another host took it, an operator changed it). In
    /// PostgreSQL the attempt holds a lock on the run until [`RunStore::finish`]: while
    /// it does, no other host takes the run over.
    pub async fn claim(
        &self,
        job: &str,
        slot_end_ms: i64,
        host: &str,
        now_ms: i64,
    ) -> Result<Option<RunRecord>, StoreError> {
        on_store!(self.claim(job, slot_end_ms, host, now_ms))
    }

    /// Store how the attempt that claimed `claimed` ended (`run`), and release its lock.
    /// `false` when the run is no longer that attempt's: another host took it over after
    /// this one lost the database, and `run` is not kept.
    pub async fn finish(&self, run: &RunRecord, claimed: &RunRecord) -> Result<bool, StoreError> {
        match self {
            RunStore::Embedded(store) => store.replace(run, claimed),
            #[cfg(feature = "postgres")]
            RunStore::Postgres(store) => store.finish(run, claimed).await,
        }
    }

    pub async fn get(&self, job: &str, slot_end_ms: i64) -> Result<Option<RunRecord>, StoreError> {
        on_store!(self.get(job, slot_end_ms))
    }

    pub async fn remove(&self, job: &str, slot_end_ms: i64) -> Result<(), StoreError> {
        on_store!(self.remove(job, slot_end_ms))
    }

    /// `job`'s newest runs, newest slot first.
    pub async fn runs(&self, job: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        on_store!(self.runs(job, limit))
    }

    /// Every run not yet final (waiting, running, retrying), of every job, by job and
    /// slot.
    pub async fn active(&self) -> Result<Vec<RunRecord>, StoreError> {
        on_store!(self.active())
    }

    /// Runs `running` that no attempt holds, handed back as `waiting`. Embedded: the
    /// runs of `host` (called at the start, when this process holds none). PostgreSQL:
    /// the runs of any host whose lock is free, its holder's session gone with its host.
    pub async fn release_orphans(&self, host: &str) -> Result<Vec<RunRecord>, StoreError> {
        on_store!(self.release_orphans(host))
    }
}
