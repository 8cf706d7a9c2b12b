//! The scheduler in process, with `command` jobs (shell one-liners) on periods of a
//! second: order of dependencies, retries and re-runs, catch-up, timeouts.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Workflow;
use super::store::{JobState, RunRecord, Status};
use crate::config::Config;

fn workflow(dir: &Path, jobs: &str) -> Arc<Workflow> {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let path = dir.join("sluice.toml");
    std::fs::write(&path, jobs).unwrap();
    let config = Config::load(&path).unwrap_or_else(|errors| panic!("{}", errors.report()));
    futures::executor::block_on(Workflow::open(&config, Arc::new(crate::jobs::NoPipelines)))
        .unwrap()
        .expect("the config has jobs")
}

/// Wait until `done` holds for `job`'s runs (newest first), up to 30 s.
async fn wait_runs(
    workflow: &Workflow,
    job: &str,
    done: impl Fn(&[RunRecord]) -> bool,
) -> Vec<RunRecord> {
    for _ in 0..300 {
        let runs = workflow.runs(job, 100).await.unwrap();
        if done(&runs) {
            return runs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{job}: {:#?}", workflow.runs(job, 100).await.unwrap());
}

fn statuses(runs: &[RunRecord]) -> Vec<Status> {
    runs.iter().map(|run| run.status).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn dependent_jobs_run_in_order_for_the_same_slot() {
    let dir = tempfile::tempdir().unwrap();
    let workflow = workflow(
        dir.path(),
        r#"
        [jobs.extract]
        type = "command"
        every = "2s"
        command = "sh"
        args = ["-c", "echo extract {slot_end} >> order.txt"]

        [jobs.train]
        type = "command"
        depends_on = ["extract"]
        command = "sh"
        args = ["-c", "echo train {slot_end} >> order.txt"]

        [jobs.publish]
        type = "command"
        depends_on = ["train"]
        command = "sh"
        args = ["-c", "echo publish {slot_end} >> order.txt; echo published"]
    "#,
    );
    let stop = CancellationToken::new();
    workflow.spawn(stop.clone());
    let published = wait_runs(&workflow, "publish", |runs| {
        runs.iter().any(|r| r.status == Status::Succeeded)
    })
    .await;
    stop.cancel();
    let slot = published.last().unwrap().slot();
    let end = crate::jobs::Slot::format(slot.end_ms);
    let order = std::fs::read_to_string(dir.path().join("order.txt")).unwrap();
    let first: Vec<&str> = order.lines().take(3).collect();
    assert_eq!(
        first,
        [
            format!("extract {end}"),
            format!("train {end}"),
            format!("publish {end}")
        ]
    );
    let log = workflow.run_of("publish", slot.end_ms).await.unwrap().log;
    assert!(log.contains("published"), "{log}");
    assert!(
        published.iter().all(|run| run.log.is_empty()),
        "lists leave logs out"
    );
    assert_eq!(slot.end_ms - slot.start_ms, 2000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_job_is_retried_then_failed_and_a_downstream_retry_runs_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let workflow = workflow(
        dir.path(),
        r#"
        [jobs.trainset]
        type = "command"
        every = "1h"
        command = "sh"
        args = ["-c", "echo ok"]

        [jobs.train]
        type = "command"
        depends_on = ["trainset"]
        retries = 2
        retry_backoff_secs = 1
        command = "sh"
        args = ["-c", "test -e input.ok || { echo 'input.csv: no rows' >&2; exit 3; }"]

        [jobs.deploy]
        type = "command"
        depends_on = ["train"]
        command = "true"
    "#,
    );
    let stop = CancellationToken::new();
    workflow.spawn(stop.clone());
    workflow.trigger("trainset", None).await.unwrap();
    let train = wait_runs(&workflow, "train", |runs| {
        runs.first().is_some_and(|r| r.status == Status::Failed)
    })
    .await;
    assert_eq!(train[0].attempts, 3, "{:#?}", train[0]);
    let log = workflow
        .run_of("train", train[0].slot_end_ms)
        .await
        .unwrap()
        .log;
    assert!(log.contains("input.csv: no rows"), "{log}");
    assert!(
        train[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("exit status: 3"),
        "{:?}",
        train[0].reason
    );
    let deploy = wait_runs(&workflow, "deploy", |runs| !runs.is_empty()).await;
    assert_eq!(statuses(&deploy), [Status::UpstreamFailed]);

    std::fs::write(dir.path().join("input.ok"), "").unwrap();
    workflow.retry("train", None, true).await.unwrap();
    let deploy = wait_runs(&workflow, "deploy", |runs| {
        runs.first().is_some_and(|r| r.status == Status::Succeeded)
    })
    .await;
    assert_eq!(deploy.len(), 1, "one run of the slot: {deploy:#?}");
    assert_eq!(
        statuses(&workflow.runs("train", 10).await.unwrap()),
        [Status::Succeeded]
    );
    stop.cancel();
}

/// Downtime: the job's cursor is five firings behind when the scheduler starts.
async fn after_downtime(catchup: bool) -> Vec<RunRecord> {
    let dir = tempfile::tempdir().unwrap();
    let workflow = workflow(
        dir.path(),
        &format!(
            r#"
        [jobs.hourly]
        type = "command"
        every = "1s"
        catchup = {catchup}
        command = "true"
    "#
        ),
    );
    let now = super::now_ms();
    let behind = JobState {
        cursor_ms: Some((now / 1000 - 5) * 1000),
        paused: false,
    };
    workflow
        .store
        .set_job_state("hourly", &behind)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    workflow.spawn(stop.clone());
    let runs = wait_runs(&workflow, "hourly", |runs| {
        runs.iter()
            .filter(|r| r.slot_end_ms <= now)
            .all(|r| r.status.is_final())
            && runs.iter().filter(|r| r.slot_end_ms <= now).count() >= 5
    })
    .await;
    stop.cancel();
    runs.into_iter().filter(|r| r.slot_end_ms <= now).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn missed_slots_run_with_catchup_and_are_skipped_without() {
    let caught_up = after_downtime(true).await;
    assert_eq!(statuses(&caught_up), [Status::Succeeded; 5]);
    let skipped = after_downtime(false).await;
    assert_eq!(
        statuses(&skipped),
        [
            Status::Succeeded,
            Status::Skipped,
            Status::Skipped,
            Status::Skipped,
            Status::Skipped
        ]
    );
    assert!(
        skipped[1]
            .reason
            .as_deref()
            .unwrap()
            .contains("catchup = false")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_past_its_timeout_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let workflow = workflow(
        dir.path(),
        r#"
        [jobs.slow]
        type = "command"
        every = "1h"
        timeout_secs = 1
        command = "sh"
        args = ["-c", "sleep 37; touch finished"]
    "#,
    );
    let stop = CancellationToken::new();
    workflow.spawn(stop.clone());
    workflow.trigger("slow", None).await.unwrap();
    let runs = wait_runs(&workflow, "slow", |runs| runs[0].status == Status::Failed).await;
    assert_eq!(runs[0].reason.as_deref(), Some("timed out after 1 s"));
    let took = runs[0].ended_ms.unwrap() - runs[0].started_ms.unwrap();
    assert!(
        took < 15_000,
        "the program was killed, not waited for: {took} ms"
    );
    // Nor is what it started (`sleep`) left running: the whole group is stopped.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sleeping = std::process::Command::new("pgrep")
        .args(["-f", "^sleep 37$"])
        .output()
        .unwrap();
    assert!(
        sleeping.stdout.is_empty(),
        "left running: {}",
        String::from_utf8_lossy(&sleeping.stdout)
    );
    assert!(!dir.path().join("finished").exists());
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_job_starts_nothing_until_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let workflow = workflow(
        dir.path(),
        r#"
        [jobs.export]
        type = "command"
        every = "1h"
        command = "true"
    "#,
    );
    workflow.set_paused("export", true).await.unwrap();
    let stop = CancellationToken::new();
    workflow.spawn(stop.clone());
    workflow.trigger("export", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        statuses(&workflow.runs("export", 10).await.unwrap()),
        [Status::Waiting]
    );
    workflow.set_paused("export", false).await.unwrap();
    wait_runs(&workflow, "export", |runs| {
        runs[0].status == Status::Succeeded
    })
    .await;
    let error = workflow
        .trigger("export", Some(123))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("is not a firing"), "{error}");
    stop.cancel();
}
