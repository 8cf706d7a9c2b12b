//! Two central hosts (`sluice run`, the real binary) keeping their jobs' runs in one
//! real PostgreSQL (`[scheduler] postgres`): each slot of a job runs once between them,
//! on either host, and so does the job depending on it; a host killed (`kill -9`)
//! during a run leaves it to the other, which runs it again once its lock is gone; the
//! database restarting stops nothing for good.
//!
//! The jobs are shell commands appending `slot_end_ms host` lines to files beside the configs,
//! so the files show what ran where, whatever the runs' records say.

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use harness::postgres::Postgres;
use harness::*;

/// The config of host `name`: its own data directory, API and pipeline (an idle HTTP
/// ingest: a host runs while its pipeline does), the shared database and jobs. `slow`
/// fires once a year: it runs when the test asks.
fn config(dir: &Path, name: &str, api: u16, postgres: &Postgres) -> std::path::PathBuf {
    let text = format!(
        r#"
data_dir = "{data}"

[api]
listen = "127.0.0.1:{api}"

[sources.ingest]
type = "http"
listen = "127.0.0.1:{ingest}"

[sinks.out]
type = "console"
inputs = ["ingest"]

[scheduler]
postgres = "{connection}"
host = "{name}"

[jobs.tick]
type = "command"
every = "1s"
command = "sh"
args = ["-c", "echo {{slot_ms}} {name} >> tick.txt"]

[jobs.after]
type = "command"
depends_on = ["tick"]
command = "sh"
args = ["-c", "echo {{slot_ms}} {name} >> after.txt"]

# `done` only while its host lives: a machine that dies takes its programs with it.
[jobs.slow]
type = "command"
schedule = "0 0 1 1 *"
command = "sh"
args = ["-c", "echo start {name} >> slow.txt; sleep 3; kill -0 $PPID && echo done {name} >> slow.txt"]
"#,
        data = dir.join(format!("data-{name}")).display(),
        connection = postgres.connection(),
        ingest = free_port(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// `job`'s runs as host `api` serves them, newest first.
fn runs(api: u16, job: &str) -> Vec<serde_json::Value> {
    let (status, body) =
        http_get(api, &format!("/v1/jobs/{job}/runs?limit=500")).expect("the API answers");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The lines of `file` by their first word (the slot), with the hosts that wrote each.
fn lines_by_slot(file: &Path) -> BTreeMap<i64, Vec<String>> {
    let mut by_slot: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
        let (slot, host) = line.split_once(' ').expect("`slot host`");
        let slot = slot.parse().expect("a slot's end in milliseconds");
        by_slot.entry(slot).or_default().push(host.into());
    }
    by_slot
}

/// The slots of the succeeded runs among `runs`, with the host that ran each.
fn succeeded(runs: &[serde_json::Value]) -> BTreeSet<(i64, String)> {
    runs.iter()
        .filter(|run| run["status"] == "succeeded")
        .map(|run| {
            let host = run["host"].as_str().unwrap_or_default().to_owned();
            (run["slot_end_ms"].as_i64().unwrap(), host)
        })
        .collect()
}

#[test]
fn two_hosts_on_one_postgres_run_each_slot_once() {
    let mut postgres = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let (api_a, api_b) = (free_port(), free_port());
    let a = Host::start(
        &config(dir.path(), "a", api_a, &postgres),
        api_a,
        Stdio::null(),
    );
    let b = Host::start(
        &config(dir.path(), "b", api_b, &postgres),
        api_b,
        Stdio::null(),
    );

    // Ten slots or more, some run by each host.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done = succeeded(&runs(api_a, "tick"));
        let hosts: BTreeSet<&str> = done.iter().map(|(_, host)| host.as_str()).collect();
        if done.len() >= 10 && hosts.len() == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no ten slots run by both hosts: {:?}\n{}\n{}\n{}",
            runs(api_a, "tick"),
            postgres.query("SELECT count(*) FROM sluice_job_runs"),
            a.log_text(),
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let settled = succeeded(&runs(api_a, "tick"));
    let ticks = lines_by_slot(&dir.path().join("tick.txt"));
    let twice: Vec<_> = ticks.iter().filter(|(_, hosts)| hosts.len() > 1).collect();
    assert!(twice.is_empty(), "slots run more than once: {twice:?}");
    // Both APIs read the one store, and each run was made once, on the host it names.
    assert!(settled.is_subset(&succeeded(&runs(api_b, "tick"))));
    let by_file: BTreeSet<(i64, String)> = ticks
        .iter()
        .map(|(slot, hosts)| (*slot, hosts[0].clone()))
        .collect();
    assert!(
        settled.is_subset(&by_file),
        "runs {settled:?}, lines {ticks:?}"
    );
    let attempts: BTreeSet<i64> = runs(api_a, "tick")
        .iter()
        .filter_map(|run| run["attempts"].as_i64())
        .collect();
    assert!(attempts.is_subset(&BTreeSet::from([0, 1])), "{attempts:?}");

    // The dependent job: once per slot its upstream ran, on either host.
    wait_until(Duration::from_secs(30), "the dependent job's runs", || {
        let after = succeeded(&runs(api_b, "after"));
        settled
            .iter()
            .all(|(slot, _)| after.iter().any(|(done, _)| done == slot))
    });
    let after = lines_by_slot(&dir.path().join("after.txt"));
    let twice: Vec<_> = after.iter().filter(|(_, hosts)| hosts.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "dependent slots run more than once: {twice:?}"
    );
    assert!(
        settled.len() <= after.len(),
        "every upstream slot has its dependent's run: {after:?}"
    );

    // A host dies during a run: the other takes the slot over and runs it once.
    let (status, body) = http_post(api_a, "/v1/jobs/slow/run", &[], b"");
    assert_eq!(status, 200, "{body}");
    let run: serde_json::Value = serde_json::from_str(&body).unwrap();
    let slot = run["slot_end_ms"].as_i64().unwrap();
    let mut runner = String::new();
    wait_until(Duration::from_secs(20), "the slow run to start", || {
        let now = runs(api_a, "slow");
        match now.iter().find(|r| r["slot_end_ms"] == slot) {
            Some(r) if r["status"] == "running" => {
                runner = r["host"].as_str().unwrap().to_owned();
                true
            }
            _ => false,
        }
    });
    let (dying, survivor, survivor_api) = if runner == "a" {
        (a, b, api_b)
    } else {
        (b, a, api_a)
    };
    let survivor_name = if runner == "a" { "b" } else { "a" };
    std::thread::sleep(Duration::from_millis(500));
    dying.kill_9();
    let mut finished = serde_json::Value::Null;
    wait_until(
        Duration::from_secs(30),
        "the survivor to run the slot",
        || {
            let now = runs(survivor_api, "slow");
            finished = now
                .into_iter()
                .find(|r| r["slot_end_ms"] == slot)
                .unwrap_or_default();
            finished["status"] == "succeeded"
        },
    );
    assert_eq!(finished["host"], survivor_name, "{finished:#}");
    assert_eq!(finished["attempts"], 2, "{finished:#}");
    // The dead host's program is gone with it: `done` once, by the survivor.
    std::thread::sleep(Duration::from_secs(4));
    let slow = std::fs::read_to_string(dir.path().join("slow.txt")).unwrap();
    let lines: Vec<&str> = slow.lines().collect();
    assert_eq!(
        lines,
        [
            format!("start {runner}"),
            format!("start {survivor_name}"),
            format!("done {survivor_name}")
        ],
        "{}",
        survivor.log_text()
    );
    assert!(
        survivor
            .log_text()
            .contains("a run whose host stopped during it runs again"),
        "{}",
        survivor.log_text()
    );
    assert_eq!(
        postgres.query("SELECT count(*) FROM sluice_job_runs WHERE job = 'slow'"),
        "1"
    );

    // The database restarts: the host connects again and goes on with the next slots.
    postgres.restart();
    let restarted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // The first answers may be errors: the host finds its connection broken.
    let ran_since = || {
        let answer = http_get(survivor_api, "/v1/jobs/after/runs?limit=500");
        let runs: Vec<serde_json::Value> = answer
            .filter(|(status, _)| *status == 200)
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .unwrap_or_default();
        succeeded(&runs).iter().any(|(slot, _)| *slot > restarted)
    };
    while !ran_since() {
        assert!(
            std::time::Instant::now() < deadline,
            "no slot ran after the database restarted:\n{}",
            survivor.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
