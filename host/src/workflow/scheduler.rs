//! The scheduler's loop: each tick records the slots that came due, starts the runs
//! that may start, and each attempt records how it ended and what that makes due next
//! (a retry, or the runs of the jobs depending on it).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::store::{RunRecord, Status, Trigger};
use super::{Workflow, now_ms};
use crate::jobs::{Concurrency, JobDef, RunContext, RunLog, Slot};

/// The longest wait between ticks: a firing is started at most this late.
const TICK: Duration = Duration::from_millis(500);
/// Missed slots recorded at most per job and tick (a long downtime with `catchup`
/// catches up over several ticks, oldest first).
const SLOTS_PER_TICK: usize = 100;
/// How long a stopped attempt may take to wind down before it is dropped.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub(super) async fn run(workflow: Arc<Workflow>, stop: CancellationToken) {
    if let Err(error) = release_orphans(&workflow).await {
        tracing::error!("jobs: {error}");
    }
    tracing::info!(
        jobs = workflow.jobs.len(),
        host = workflow.host,
        "jobs scheduled"
    );
    loop {
        if let Err(error) = tick(&workflow, &stop).await {
            tracing::error!("jobs: {error}");
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = workflow.wake.notified() => {}
            () = tokio::time::sleep(TICK) => {}
        }
    }
    let attempts: Vec<_> = workflow
        .attempts
        .lock()
        .unwrap()
        .values()
        .map(|(_, cancel)| cancel.clone())
        .collect();
    for attempt in attempts {
        attempt.cancel();
    }
}

/// Hand back the runs left `running` by a host that stopped during them.
async fn release_orphans(workflow: &Workflow) -> Result<(), super::StoreError> {
    for run in workflow.store.release_orphans(&workflow.host).await? {
        tracing::warn!(job = run.job, slot = %Slot::format(run.slot_end_ms), host = run.host, "a run whose host stopped during it runs again");
    }
    Ok(())
}

/// Stop the attempts of this host whose run is no longer theirs (`active` read before
/// any was started): another host took it over while this one had lost the database.
fn stop_taken_over(workflow: &Workflow, active: &[RunRecord]) {
    let attempts = workflow.attempts.lock().unwrap();
    for ((job, slot), (attempt, cancel)) in attempts.iter() {
        let still_ours = active.iter().any(|run| {
            (&run.job, run.slot_end_ms) == (job, *slot)
                && run.status == Status::Running
                && run.attempts == *attempt
                && run.host.as_ref() == Some(&workflow.host)
        });
        if !still_ours && !cancel.is_cancelled() {
            tracing::warn!(job, slot = %Slot::format(*slot), "another host took the run over; this attempt stops");
            cancel.cancel();
        }
    }
}

async fn tick(workflow: &Arc<Workflow>, stop: &CancellationToken) -> Result<(), super::StoreError> {
    let now = now_ms();
    if workflow.store.is_shared() {
        release_orphans(workflow).await?;
    }
    for job in workflow.jobs.values() {
        if let Some(schedule) = &job.schedule {
            record_due_slots(workflow, job, schedule, now).await?;
        }
    }
    let active = workflow.store.active().await?;
    stop_taken_over(workflow, &active);
    // When each job's run going on started (one runs at a time per job).
    let mut running: std::collections::HashMap<&str, i64> = active
        .iter()
        .filter(|run| run.status == Status::Running)
        .map(|run| (run.job.as_str(), run.started_ms.unwrap_or(0)))
        .collect();
    for run in active.iter().filter(|run| run.is_due(now)) {
        let job = &workflow.jobs[&run.job];
        if workflow.store.job_state(&job.name).await?.paused {
            continue;
        }
        if let Some(&started) = running.get(job.name.as_str()) {
            // A slot that fired while the previous run went on; a backlog of missed
            // slots (catch-up) queues whatever `concurrency` says.
            let fired_during = run.slot_end_ms >= started;
            if job.concurrency == Concurrency::Skip
                && fired_during
                && run.trigger == Trigger::Schedule
                && run.attempts == 0
            {
                let mut skipped = run.clone();
                skipped.status = Status::Skipped;
                skipped.reason =
                    Some("the previous run was still going (concurrency = \"skip\")".into());
                // Unless another host claimed it meanwhile, its previous run having ended.
                workflow.store.replace(&skipped, run).await?;
            }
            continue;
        }
        if let Some(claimed) = workflow
            .store
            .claim(&run.job, run.slot_end_ms, &workflow.host, now)
            .await?
        {
            running.insert(job.name.as_str(), now);
            start_attempt(workflow, job, claimed, stop);
        }
    }
    Ok(())
}

/// Record the firings of `job` since its cursor: each as a waiting run with `catchup`,
/// else only the newest (the others as skipped). A job's first start here records
/// nothing: it begins with its next firing.
async fn record_due_slots(
    workflow: &Workflow,
    job: &JobDef,
    schedule: &crate::jobs::Schedule,
    now: i64,
) -> Result<(), super::StoreError> {
    let state = workflow.store.job_state(&job.name).await?;
    if state.paused {
        return Ok(());
    }
    let Some(cursor) = state.cursor_ms else {
        return match schedule.latest_at(now) {
            Some(latest) => workflow.store.advance_cursor(&job.name, latest).await,
            None => Ok(()),
        };
    };
    let mut due = Vec::new();
    let mut at = cursor;
    while let Some(next) = schedule.next_after(at).filter(|next| *next <= now) {
        due.push(next);
        at = next;
        if job.catchup && due.len() == SLOTS_PER_TICK {
            break;
        }
    }
    let Some(&newest) = due.last() else {
        return Ok(());
    };
    for &end in &due {
        let slot = schedule.slot(end);
        let record = if job.catchup || end == newest {
            RunRecord::new(&job.name, slot, Status::Waiting, Trigger::Schedule)
        } else {
            let mut missed = RunRecord::new(&job.name, slot, Status::Skipped, Trigger::Schedule);
            missed.reason =
                Some("missed while the host was down or the job paused (catchup = false)".into());
            missed
        };
        if workflow.store.insert(&record).await? && record.status == Status::Skipped {
            tracing::info!(job = job.name, slot = %Slot::format(end), "missed slot skipped");
        }
    }
    workflow.store.advance_cursor(&job.name, newest).await
}

fn start_attempt(workflow: &Arc<Workflow>, job: &JobDef, run: RunRecord, stop: &CancellationToken) {
    let cancel = stop.child_token();
    workflow.attempts.lock().unwrap().insert(
        (job.name.clone(), run.slot_end_ms),
        (run.attempts, cancel.clone()),
    );
    let workflow = workflow.clone();
    let job = job.clone();
    // A timeout cancels `cancel` too; only the host's own stop is not the job's failure.
    let host_stopping = stop.clone();
    tokio::spawn(async move {
        let key = (job.name.clone(), run.slot_end_ms);
        let claimed = run.clone();
        let run = attempt(&workflow, &job, run, cancel).await;
        workflow.attempts.lock().unwrap().remove(&key);
        let stopping = host_stopping.is_cancelled();
        if let Err(error) = settle(&workflow, &job, run, &claimed, stopping).await {
            tracing::error!(job = job.name, "jobs: {error}");
        }
        workflow.wake.notify_one();
    });
}

/// Run one attempt and return the run as it ended (not yet stored).
async fn attempt(
    workflow: &Workflow,
    job: &JobDef,
    mut run: RunRecord,
    cancel: CancellationToken,
) -> RunRecord {
    let slot = run.slot();
    let log = RunLog::default();
    log.line(format!(
        "attempt {} of {} on {} for slot {} … {}",
        run.attempts,
        job.retries + 1,
        workflow.host,
        Slot::format(slot.start_ms),
        Slot::format(slot.end_ms)
    ));
    tracing::info!(job = job.name, slot = %Slot::format(slot.end_ms), attempt = run.attempts, "job run started");
    let context = RunContext {
        job: job.name.clone(),
        slot,
        attempt: run.attempts,
        base_dir: workflow.base_dir.clone(),
        data_dir: workflow.data_dir.clone(),
        log: log.clone(),
        cancel: cancel.clone(),
        pipelines: workflow.pipelines.clone(),
    };
    let mut work = job.config.clone().run(context);
    let timeout = job.timeout.unwrap_or(Duration::MAX);
    let outcome = tokio::select! {
        outcome = &mut work => outcome,
        () = tokio::time::sleep(timeout) => {
            cancel.cancel();
            // Let the kind stop what it started (a child process, a pipeline).
            let _ = tokio::time::timeout(STOP_GRACE, &mut work).await;
            Err(crate::jobs::JobError::new(format!("timed out after {} s", timeout.as_secs())))
        }
        () = cancel.cancelled() => {
            let _ = tokio::time::timeout(STOP_GRACE, &mut work).await;
            Err(crate::jobs::JobError::new("stopped: the host is stopping"))
        }
    };
    run.ended_ms = Some(now_ms());
    match outcome {
        Ok(produced) => {
            log.line(format!(
                "succeeded: {} objects, {} rows",
                produced.objects, produced.rows
            ));
            run.status = Status::Succeeded;
            run.reason = None;
            run.produced = produced;
        }
        Err(error) => {
            log.line(format!("failed: {error}"));
            run.status = Status::Failed;
            run.reason = Some(error.to_string());
        }
    }
    run.log = log.text();
    run
}

/// Store how the attempt that claimed `claimed` ended, and make due what follows from
/// it: the runs of the jobs depending on it are created here, by whichever host settles
/// it, so once.
async fn settle(
    workflow: &Workflow,
    job: &JobDef,
    mut run: RunRecord,
    claimed: &RunRecord,
    host_stopping: bool,
) -> Result<(), super::StoreError> {
    let slot = run.slot_end_ms;
    let at = Slot::format(slot);
    // An attempt ends succeeded or failed. A failure is retried while retries are left,
    // and is not the job's own when the host is stopping: the next start runs it again.
    if run.status == Status::Failed && host_stopping {
        run.status = Status::Waiting;
        run.attempts = run.attempts.saturating_sub(1);
    } else if run.status == Status::Failed && run.attempts <= job.retries {
        run.status = Status::Retrying;
        run.next_attempt_ms = Some(now_ms() + job.backoff(run.attempts + 1).as_millis() as i64);
    }
    if !workflow.store.finish(&run, claimed).await? {
        tracing::warn!(job = job.name, slot = %at, "another host took the run over; this attempt's outcome is not kept");
        return Ok(());
    }
    match run.status {
        Status::Succeeded => {
            tracing::info!(job = job.name, slot = %at, "job run succeeded");
            finished(&job.name, "succeeded");
            metrics::gauge!("sluice_job_last_success_timestamp_seconds", "job" => job.name.clone())
                .set(now_ms() as f64 / 1000.0);
            for dependent in workflow
                .jobs
                .values()
                .filter(|d| d.depends_on.contains(&job.name))
            {
                if upstream_succeeded(workflow, dependent, slot).await? {
                    let next = RunRecord::new(
                        &dependent.name,
                        run.slot(),
                        Status::Waiting,
                        Trigger::Upstream,
                    );
                    workflow.store.insert(&next).await?;
                }
            }
        }
        Status::Waiting => {}
        Status::Retrying => {
            let wait = job.backoff(run.attempts + 1);
            tracing::warn!(job = job.name, slot = %at, attempt = run.attempts, reason = run.reason, "job run failed; retrying in {} s", wait.as_secs());
        }
        _ => {
            tracing::error!(job = job.name, slot = %at, attempts = run.attempts, reason = run.reason, "job run failed");
            finished(&job.name, "failed");
            crate::signals::job_failed(crate::signals::JobFailure {
                job: job.name.clone(),
                slot: at.clone(),
                reason: run.reason.clone().unwrap_or_default(),
                attempts: run.attempts,
            });
            for dependent in workflow.descendants(&job.name) {
                let mut skipped = RunRecord::new(
                    &dependent,
                    run.slot(),
                    Status::UpstreamFailed,
                    Trigger::Upstream,
                );
                skipped.reason = Some(format!("`{}` failed for this slot", job.name));
                workflow.store.insert(&skipped).await?;
            }
        }
    }
    Ok(())
}

/// Count a run that ended for good (`sluice_job_runs_total{job, status}`), for alerting.
fn finished(job: &str, status: &'static str) {
    metrics::counter!("sluice_job_runs_total", "job" => job.to_owned(), "status" => status)
        .increment(1);
}

/// Whether every job `job` depends on has succeeded for the slot ending at `slot`.
async fn upstream_succeeded(
    workflow: &Workflow,
    job: &JobDef,
    slot: i64,
) -> Result<bool, super::StoreError> {
    for upstream in &job.depends_on {
        let done = workflow.store.get(upstream, slot).await?;
        if done.is_none_or(|run| run.status != Status::Succeeded) {
            return Ok(false);
        }
    }
    Ok(true)
}
