//! The workflow: a config's `[jobs]` run on their schedules, each after the jobs it
//! depends on have succeeded for the same slot, retried with backoff, stopped at their
//! timeout, and kept with their logs ([`store`]). Operators list, run, retry (with what
//! depends on them), pause and resume jobs over the API ([`routes`]) and `sluice jobs`.
//!
//! It runs beside the pipeline, as the fleet does: the supervisor starts it with a
//! config and stops it with that config; a run a stop interrupts runs again at the
//! next start.

pub mod pipelines;
pub mod routes;
mod scheduler;
pub mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::jobs::{JobDef, PipelineRunner, Schedule, Slot};
use store::{JobState, RunRecord, RunStore, Status, StoreError, Trigger};

/// An operator's request that cannot be done, with the HTTP status it answers.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("no job `{0}`")]
    UnknownJob(String),
    #[error("{0}")]
    NoRun(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A config's jobs and their runs.
pub struct Workflow {
    jobs: BTreeMap<String, JobDef>,
    store: RunStore,
    /// This host's name in the runs it takes.
    host: String,
    base_dir: PathBuf,
    data_dir: PathBuf,
    pipelines: Arc<dyn PipelineRunner>,
    /// Wakes the scheduler when an operator changes something.
    wake: Notify,
    /// The attempts this process runs, by job and slot end: the attempt's number, and
    /// what stops it.
    attempts: Mutex<HashMap<(String, i64), (u32, CancellationToken)>>,
}

/// One job as `GET /v1/jobs` lists it.
#[derive(Debug, Serialize)]
pub struct JobSummary {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The schedule, or the jobs whose slots it runs in.
    pub schedule: String,
    pub depends_on: Vec<String>,
    pub paused: bool,
    /// The next scheduled firing (of its upstream's schedule, for a dependent job).
    pub next_run_ms: Option<i64>,
    /// The newest runs, newest first.
    pub runs: Vec<RunRecord>,
}

impl Workflow {
    /// The jobs of `config`, with runs kept in its data directory (or `[scheduler]
    /// postgres`); `None` when it has no jobs.
    pub async fn open(
        config: &Config,
        pipelines: Arc<dyn PipelineRunner>,
    ) -> Result<Option<Arc<Workflow>>, StoreError> {
        if config.jobs.is_empty() {
            return Ok(None);
        }
        let store = RunStore::open(&config.scheduler, &config.data_dir)?;
        let host = config.scheduler.host.clone().unwrap_or_else(host_name);
        Ok(Some(Arc::new(Workflow {
            jobs: config.jobs.clone(),
            store,
            host,
            base_dir: base_dir(&config.file),
            data_dir: config.data_dir.clone(),
            pipelines,
            wake: Notify::new(),
            attempts: Mutex::default(),
        })))
    }

    /// Run the schedule until `stop`; attempts going on then are stopped and run again
    /// at the next start.
    pub fn spawn(self: &Arc<Self>, stop: CancellationToken) {
        tokio::spawn(scheduler::run(self.clone(), stop));
    }

    fn job(&self, name: &str) -> Result<&JobDef, WorkflowError> {
        self.jobs
            .get(name)
            .ok_or_else(|| WorkflowError::UnknownJob(name.to_owned()))
    }

    /// The schedule a job's slots follow: its own, or its upstream's.
    fn schedule_of(&self, name: &str) -> Option<&Schedule> {
        crate::config::job_roots(&self.jobs, name)
            .into_iter()
            .find_map(|root| self.jobs[root].schedule.as_ref())
    }

    /// Every job with its newest `runs` runs.
    pub async fn list(&self, runs: usize) -> Result<Vec<JobSummary>, WorkflowError> {
        let now = now_ms();
        let mut summaries = Vec::new();
        for job in self.jobs.values() {
            let schedule = self.schedule_of(&job.name);
            summaries.push(JobSummary {
                name: job.name.clone(),
                kind: job.kind,
                schedule: match (&job.schedule, schedule) {
                    (Some(own), _) => own.describe(),
                    (None, Some(upstream)) => format!(
                        "after {} ({})",
                        job.depends_on.join(", "),
                        upstream.describe()
                    ),
                    (None, None) => format!("after {}", job.depends_on.join(", ")),
                },
                depends_on: job.depends_on.clone(),
                paused: self.store.job_state(&job.name).await?.paused,
                next_run_ms: schedule.and_then(|s| s.next_after(now)),
                runs: without_logs(self.store.runs(&job.name, runs).await?),
            });
        }
        Ok(summaries)
    }

    /// `job`'s newest runs, without their logs ([`Workflow::run_of`] has them).
    pub async fn runs(&self, job: &str, limit: usize) -> Result<Vec<RunRecord>, WorkflowError> {
        self.job(job)?;
        Ok(without_logs(self.store.runs(job, limit).await?))
    }

    pub async fn run_of(&self, job: &str, slot_end_ms: i64) -> Result<RunRecord, WorkflowError> {
        self.job(job)?;
        self.store.get(job, slot_end_ms).await?.ok_or_else(|| {
            WorkflowError::BadRequest(format!(
                "job `{job}` has no run for slot {}",
                Slot::format(slot_end_ms)
            ))
        })
    }

    /// Run `job` for the slot ending at `slot_end_ms` (the latest firing by default) now,
    /// whatever its upstream did; a final run of that slot runs again.
    pub async fn trigger(
        &self,
        job: &str,
        slot_end_ms: Option<i64>,
    ) -> Result<RunRecord, WorkflowError> {
        self.job(job)?;
        let schedule = self.schedule_of(job).ok_or_else(|| {
            WorkflowError::BadRequest(format!("job `{job}` has no schedule to take a slot from"))
        })?;
        let end = match slot_end_ms {
            Some(end) => end,
            None => schedule.latest_at(now_ms()).ok_or_else(|| {
                WorkflowError::BadRequest("the schedule has no firing before now".into())
            })?,
        };
        if schedule.latest_at(end) != Some(end) {
            return Err(WorkflowError::BadRequest(format!(
                "{} is not a firing of job `{job}`'s schedule ({}); the nearest before it is {}",
                Slot::format(end),
                schedule.describe(),
                schedule
                    .latest_at(end)
                    .map(Slot::format)
                    .unwrap_or_default()
            )));
        }
        let run = self.rerun(job, schedule.slot(end), Trigger::Manual).await?;
        self.wake.notify_one();
        Ok(run)
    }

    /// Run `job`'s run of a slot (its newest failed one by default) again; with
    /// `downstream`, the runs of that slot of every job depending on it run again after it.
    pub async fn retry(
        &self,
        job: &str,
        slot_end_ms: Option<i64>,
        downstream: bool,
    ) -> Result<RunRecord, WorkflowError> {
        self.job(job)?;
        let slot = match slot_end_ms {
            Some(end) => self.run_of(job, end).await?.slot(),
            None => self
                .store
                .runs(job, store::RUNS_KEPT)
                .await?
                .into_iter()
                .find(|run| run.status == Status::Failed)
                .ok_or_else(|| {
                    WorkflowError::BadRequest(format!(
                        "job `{job}` has no failed run to retry; name one with its slot"
                    ))
                })?
                .slot(),
        };
        let run = self.rerun(job, slot, Trigger::Manual).await?;
        if downstream {
            for dependent in self.descendants(job) {
                if let Some(existing) = self.store.get(&dependent, slot.end_ms).await? {
                    if !existing.status.is_final() {
                        continue;
                    }
                    self.store.remove(&dependent, slot.end_ms).await?;
                }
            }
        }
        self.wake.notify_one();
        Ok(run)
    }

    async fn rerun(
        &self,
        job: &str,
        slot: Slot,
        trigger: Trigger,
    ) -> Result<RunRecord, WorkflowError> {
        if let Some(existing) = self.store.get(job, slot.end_ms).await?
            && !existing.status.is_final()
        {
            return Err(WorkflowError::Conflict(format!(
                "job `{job}`'s run for slot {} is {}",
                Slot::format(slot.end_ms),
                serde_json::to_value(existing.status)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or("active")
            )));
        }
        let run = RunRecord::new(job, slot, Status::Waiting, trigger);
        self.store.put(&run).await?;
        tracing::info!(job, slot = %Slot::format(slot.end_ms), "job run requested");
        Ok(run)
    }

    /// Every job that depends on `job`, directly or not.
    fn descendants(&self, job: &str) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        let mut todo = vec![job.to_owned()];
        while let Some(next) = todo.pop() {
            for dependent in self.jobs.values().filter(|j| j.depends_on.contains(&next)) {
                if !found.contains(&dependent.name) {
                    found.push(dependent.name.clone());
                    todo.push(dependent.name.clone());
                }
            }
        }
        found
    }

    /// Stop (`true`) or allow starting runs of `job`; slots passing while it is paused
    /// are handled at resume as after downtime (its `catchup`).
    pub async fn set_paused(&self, job: &str, paused: bool) -> Result<JobState, WorkflowError> {
        self.job(job)?;
        let mut state = self.store.job_state(job).await?;
        state.paused = paused;
        self.store.set_job_state(job, &state).await?;
        tracing::info!(job, paused, "job paused or resumed");
        self.wake.notify_one();
        Ok(state)
    }
}

/// Runs as lists show them: a log is fetched with its run, not with every poll of a list.
fn without_logs(mut runs: Vec<RunRecord>) -> Vec<RunRecord> {
    for run in &mut runs {
        run.log.clear();
    }
    runs
}

/// The directory of the config `file`, absolute: a program runs there (`""` is no
/// directory to run in).
fn base_dir(file: &std::path::Path) -> PathBuf {
    let parent = file.parent().filter(|p| !p.as_os_str().is_empty());
    std::path::absolute(parent.unwrap_or(std::path::Path::new(".")))
        .unwrap_or_else(|_| PathBuf::from("."))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The machine's name, for the runs this host takes.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "sluice".to_owned())
}
