//! Scheduled jobs across a restart of the real host, with the same data directory:
//! the slots that fired while it was down run once each, oldest first, for a job with
//! `catchup = true`; a job without runs only the newest of them and lists the others as
//! skipped; a run the host was in the middle of runs again and succeeds once. After a
//! `kill -9` and after a graceful stop.

mod harness;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use harness::jobs::{self, is_final, status};
use harness::*;
use serde_json::Value;

/// The period of the two scheduled jobs.
const PERIOD_MS: i64 = 2_000;
/// How long the host stays down: three firings or more.
const DOWNTIME: Duration = Duration::from_secs(7);

/// A trivial pipeline (HTTP in, files out) and three `command` jobs, each writing the
/// slots it runs for to a file in the config's directory: `catchup` and `latest` every
/// 2 s with `catchup` on and off, and `slow` (hourly, run by hand) taking 4 s.
fn config(ingest: u16) -> String {
    format!(
        r#"
[sources.ingest]
type = "http"
listen = "127.0.0.1:{ingest}"

[sinks.out]
type = "file"
inputs = ["ingest"]
path = "out"

[jobs.catchup]
type = "command"
every = "2s"
catchup = true
command = "sh"
args = ["-c", "echo {{slot_ms}} {{slot_end}} >> catchup.txt"]

[jobs.latest]
type = "command"
every = "2s"
catchup = false
command = "sh"
args = ["-c", "echo {{slot_ms}} {{slot_end}} >> latest.txt"]

[jobs.slow]
type = "command"
every = "1h"
command = "sh"
args = ["-c", "echo start {{slot_ms}} >> slow.txt; sleep 4; echo done {{slot_ms}} >> slow.txt"]
"#
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The slot ends (ms) a job wrote to `file`, in the order it wrote them.
fn written(file: &Path) -> Vec<i64> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|line| line.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

fn slot(run: &Value) -> i64 {
    run["slot_end_ms"].as_i64().unwrap()
}

fn slots_with(runs: &[Value], wanted: &str) -> Vec<i64> {
    runs.iter()
        .filter(|run| status(run) == wanted)
        .map(slot)
        .collect()
}

/// Lines of `slow.txt` that are `what slot`.
fn slow_lines(dir: &Path, what: &str, slot: i64) -> usize {
    std::fs::read_to_string(dir.join("slow.txt"))
        .unwrap_or_default()
        .lines()
        .filter(|line| *line == format!("{what} {slot}"))
        .count()
}

/// Run the jobs, stop the host with `stop` while `slow` runs, keep it down for
/// [`DOWNTIME`], start it again, and check what each job did.
fn missed_slots_after(stop: impl FnOnce(&mut Pipeline), killed: bool) {
    let mut host = Pipeline::start(&config(free_port()));
    let api = host.host.api_port;
    let dir = host.dir.path().to_owned();
    let (catchup_file, latest_file) = (dir.join("catchup.txt"), dir.join("latest.txt"));

    wait_until(Duration::from_secs(30), "a few slots of each job", || {
        written(&catchup_file).len() >= 2 && written(&latest_file).len() >= 2
    });
    // Stop just after a slot has run for both jobs (the next fires 2 s later), while a
    // run of `slow` goes on.
    let seen = written(&catchup_file).len();
    wait_until(
        Duration::from_secs(10),
        "a fresh slot run by both jobs",
        || {
            let (catchup, latest) = (jobs::runs(api, "catchup"), jobs::runs(api, "latest"));
            written(&catchup_file).len() > seen
                && catchup.iter().chain(&latest).all(is_final)
                && catchup.last().map(slot) == latest.last().map(slot)
                && written(&latest_file).last() == latest.last().map(slot).as_ref()
        },
    );
    let last_before = *written(&catchup_file).last().unwrap();
    let slow_slot = slot(&jobs::operate(api, "slow", "run"));
    wait_until(Duration::from_secs(5), "`slow` running", || {
        jobs::run_of(api, "slow", slow_slot).is_some_and(|run| status(&run) == "running")
            && slow_lines(&dir, "start", slow_slot) == 1
    });
    stop(&mut host);
    let stopped_at = now_ms();
    assert!(
        stopped_at < last_before + PERIOD_MS,
        "the host stopped before the slot after {last_before} fired"
    );

    std::thread::sleep(DOWNTIME);
    let restarting_at = now_ms();
    host.restart();
    let ready_at = now_ms();
    // The firings while the host was down.
    let missed: Vec<i64> = (last_before / PERIOD_MS + 1..)
        .map(|n| n * PERIOD_MS)
        .take_while(|&end| end <= restarting_at)
        .collect();
    assert!(missed.len() >= 3, "{missed:?}");

    wait_until(
        Duration::from_secs(30),
        "`slow` run again, and a slot after the restart run by both jobs",
        || {
            let after_restart = |job: &str| {
                jobs::runs(api, job)
                    .iter()
                    .any(|run| status(run) == "succeeded" && slot(run) > ready_at)
            };
            jobs::run_of(api, "slow", slow_slot).is_some_and(|run| status(&run) == "succeeded")
                && after_restart("catchup")
                && after_restart("latest")
        },
    );
    // Paused, they start no more runs: what they did can be read at rest.
    for job in ["catchup", "latest"] {
        assert_eq!(
            jobs::cli(api, &["pause", job]),
            format!("job `{job}` paused\n")
        );
    }
    wait_until(Duration::from_secs(10), "the last runs to end", || {
        ["catchup", "latest"]
            .iter()
            .all(|job| jobs::runs(api, job).iter().all(|r| status(r) != "running"))
    });
    // A slot recorded just before the pause may wait for the resume.
    let at_rest = |job: &str| {
        let mut runs = jobs::runs(api, job);
        if runs.last().is_some_and(|run| status(run) == "waiting") {
            runs.pop();
        }
        runs
    };

    // `catchup = true`: every slot, the missed ones too, once and in order.
    let catchup = at_rest("catchup");
    let ran = written(&catchup_file);
    assert_eq!(
        slots_with(&catchup, "succeeded").len(),
        catchup.len(),
        "every run succeeded: {catchup:#?}"
    );
    assert_eq!(ran, slots_with(&catchup, "succeeded"), "each run ran once");
    assert!(
        ran.windows(2).all(|pair| pair[1] - pair[0] == PERIOD_MS),
        "one run per slot, oldest first, none left out: {ran:?}"
    );
    for end in &missed {
        assert!(ran.contains(end), "missed slot {end} ran: {ran:?}");
    }

    // `catchup = false`: of the missed slots only the newest ran; the others are
    // listed as skipped, with the reason.
    let latest = at_rest("latest");
    let after: Vec<&Value> = latest.iter().filter(|r| slot(r) > last_before).collect();
    assert!(
        after
            .windows(2)
            .all(|pair| slot(pair[1]) - slot(pair[0]) == PERIOD_MS),
        "every slot since the stop has a run: {after:#?}"
    );
    let skipped: Vec<&Value> = after
        .iter()
        .copied()
        .take_while(|run| status(run) == "skipped")
        .collect();
    let resumed = &after[skipped.len()..];
    assert!(
        skipped.len() >= missed.len() - 1 && skipped.len() >= 2,
        "all missed slots but the newest are skipped (missed: {missed:?}): {after:#?}"
    );
    assert_eq!(slot(skipped[0]), last_before + PERIOD_MS);
    for run in &skipped {
        let reason = run["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("catchup"), "{run}");
    }
    assert!(
        resumed.iter().all(|run| status(run) == "succeeded"),
        "from the newest missed slot on, every slot ran: {after:#?}"
    );
    let first_run = slot(resumed[0]);
    assert!(
        first_run >= *missed.last().unwrap()
            && first_run <= ready_at / PERIOD_MS * PERIOD_MS + PERIOD_MS,
        "the first run after the restart is the newest missed slot's ({first_run}, missed {missed:?})"
    );
    assert_eq!(
        written(&latest_file),
        slots_with(&latest, "succeeded"),
        "the skipped slots never ran"
    );

    // The run the stop interrupted ran again from the start and succeeded, once.
    let slow = jobs::run_of(api, "slow", slow_slot).unwrap();
    assert_eq!(status(&slow), "succeeded", "{slow:#}");
    assert_eq!(slow_lines(&dir, "start", slow_slot), 2, "started twice");
    assert_eq!(
        slow_lines(&dir, "done", slow_slot),
        1,
        "finished once: the stopped attempt did not go on"
    );
    if killed {
        assert_eq!(slow["attempts"], 2, "the killed attempt counts: {slow:#}");
    }

    // What an operator reads.
    let listed = jobs::cli(api, &["runs", "latest", "--limit", "50"]);
    assert!(
        listed
            .lines()
            .any(|l| l.contains("skipped") && l.contains("catchup = false")),
        "{listed}"
    );
    assert!(listed.lines().any(|l| l.contains("succeeded")), "{listed}");
    let list = jobs::cli(api, &["list"]);
    for (job, state) in [
        ("catchup", "paused"),
        ("latest", "paused"),
        ("slow", "scheduled"),
    ] {
        let line = list
            .lines()
            .find(|line| line.starts_with(job))
            .unwrap_or_else(|| panic!("no `{job}` in:\n{list}"));
        assert!(line.contains(state), "{line}");
    }
    let slow_line = list.lines().find(|l| l.starts_with("slow")).unwrap();
    assert!(
        slow_line.contains("every 1h") && slow_line.contains("succeeded"),
        "{list}"
    );
    assert!(host.stop().success());
}

#[test]
fn after_a_kill_9_missed_slots_run_as_catchup_says_and_the_interrupted_run_runs_again() {
    missed_slots_after(Pipeline::kill_9, true);
}

#[test]
fn after_a_graceful_stop_missed_slots_run_as_catchup_says_and_the_interrupted_run_runs_again() {
    missed_slots_after(
        |host| assert!(host.stop().success(), "the host stops cleanly"),
        false,
    );
}
