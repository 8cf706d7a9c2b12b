//! `sluice tap`: a live, rate-limited sample of a running host's events leaving a stage,
//! a route, its dead letters or what a sink stored, over the API with the admin token;
//! the sample never costs the pipeline an event.

mod harness;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use harness::*;

const TOKEN: &str = "tap-admin";

/// ingest → valid (filter) → shape (map: adds `site`) → files; shape → route (router):
/// readings over 80 on `hot`, the rest on its default output, which nothing reads, so
/// they become its dead letters.
fn pipeline(ingest: u16) -> Pipeline {
    Pipeline::start(&format!(
        r#"admin_token = "{TOKEN}"

[sources.ingest]
type = "http"
listen = "127.0.0.1:{ingest}"

[plugins.filter]
path = "{filter}"
[plugins.map]
path = "{map}"
[plugins.router]
path = "{router}"

[transforms.valid]
type = "wasm"
plugin = "filter"
inputs = ["ingest"]
config = {{ when = {{ field = "temperature", gt = -40 }} }}

[transforms.shape]
type = "wasm"
plugin = "map"
inputs = ["valid"]
config = {{ set = {{ site = "plant-1" }} }}

[transforms.route]
type = "wasm"
plugin = "router"
inputs = ["shape"]
routes = ["hot"]
config = {{ routes = [{{ name = "hot", when = {{ field = "temperature", gt = 80 }} }}] }}

[sinks.files]
type = "file"
inputs = ["shape"]
path = "files"

[sinks.hot_files]
type = "file"
inputs = ["route.hot"]
path = "hot"
"#,
        filter = plugin("filter"),
        map = plugin("map"),
        router = plugin("router"),
    ))
}

/// Readings posted to the ingest source until stopped, `lines` per request; how many
/// the host took (answered 200), each with its own `seq`.
struct Traffic {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    thread: JoinHandle<()>,
}

impl Traffic {
    fn start(ingest: u16, lines: u64) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (stopping, counting) = (stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            let mut next = 0;
            while !stopping.load(Ordering::Relaxed) {
                let body: String = (next..next + lines)
                    .map(|seq| {
                        format!(
                            "{{\"device_id\":\"d{}\",\"seq\":{seq},\"temperature\":{}}}\n",
                            seq % 8,
                            seq % 100
                        )
                    })
                    .collect();
                let (status, _) = http_post(ingest, "/ingest", &[], body.as_bytes());
                // Pushed back (429): the same readings again, later.
                if status == 200 {
                    next += lines;
                    counting.store(next, Ordering::Relaxed);
                } else {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Traffic {
            stop,
            accepted,
            thread,
        }
    }

    /// Stop posting: how many readings the host took.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        self.accepted.load(Ordering::Relaxed)
    }
}

/// `sluice tap http://127.0.0.1:API ARGS...`, given at most a minute.
fn tap(api: u16, args: &[&str]) -> Output {
    let mut child = Command::new(sluice_binary())
        .arg("tap")
        .arg(format!("http://127.0.0.1:{api}"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("sluice tap {args:?} still running after a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn records(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn token_file(dir: &Path) -> String {
    let path = dir.join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    path.display().to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_tap_samples_a_stage_a_route_the_dead_letters_and_a_sink_while_events_flow() {
    let ingest = free_port();
    let host = pipeline(ingest);
    let api = host.host.api_port;
    let token = token_file(host.dir.path());
    let saved = host.dir.path().join("shape.jsonl");
    let traffic = Traffic::start(ingest, 20);

    let shape = tap(
        api,
        &[
            "shape",
            "--limit",
            "20",
            "--save",
            saved.to_str().unwrap(),
            "--token-file",
            &token,
        ],
    );
    assert!(shape.status.success(), "{}", stderr(&shape));
    let sampled = records(&shape);
    assert_eq!(sampled.len(), 20);
    for record in &sampled {
        // The event record a pipeline test reads back, and nothing else.
        let mut fields: Vec<&str> = record
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "headers",
                "key",
                "payload",
                "payload_encoding",
                "route",
                "stage",
                "timestamp_ms"
            ]
        );
        assert_eq!(record["stage"], "shape");
        assert_eq!(record["route"], serde_json::Value::Null);
        assert_eq!(record["payload_encoding"], "json");
        // The stage's output: what map made of the reading.
        assert_eq!(record["payload"]["site"], "plant-1", "{record}");
        assert!(record["payload"]["seq"].is_u64());
    }
    // The saved file holds exactly the records, without the status lines.
    assert_eq!(std::fs::read(&saved).unwrap(), shape.stdout);
    assert!(stderr(&shape).contains("20 sent"), "{}", stderr(&shape));

    let hot = tap(api, &["route.hot", "--limit", "10", "--token-file", &token]);
    assert!(hot.status.success(), "{}", stderr(&hot));
    let hot = records(&hot);
    assert_eq!(hot.len(), 10);
    for record in &hot {
        assert_eq!(record["route"], "hot");
        assert!(
            record["payload"]["temperature"].as_u64().unwrap() > 80,
            "{record}"
        );
    }

    let dead = tap(
        api,
        &["route.dead_letter", "--limit", "5", "--token-file", &token],
    );
    assert!(dead.status.success(), "{}", stderr(&dead));
    for record in records(&dead) {
        assert_eq!(record["route"], "dead_letter");
        assert_eq!(
            record["payload"]["reason"],
            "stage `route` emitted on its default output, which no stage reads"
        );
        assert!(
            record["payload"]["payload"]
                .as_str()
                .unwrap()
                .contains("\"seq\"")
        );
    }

    // A sink's output is what it stored.
    let stored = tap(api, &["files", "--limit", "5", "--token-file", &token]);
    assert!(stored.status.success(), "{}", stderr(&stored));
    let stored = records(&stored);
    assert_eq!(stored.len(), 5);
    assert!(
        stored
            .iter()
            .all(|r| r["stage"] == "files" && r["payload"]["site"] == "plant-1")
    );
    traffic.stop();

    let unknown = tap(api, &["nosuch", "--limit", "1", "--token-file", &token]);
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("404"), "{}", stderr(&unknown));
    assert!(
        stderr(&unknown).contains("`nosuch`"),
        "{}",
        stderr(&unknown)
    );
    let no_route = tap(api, &["shape.cold", "--limit", "1", "--token-file", &token]);
    assert!(!no_route.status.success());
    assert!(
        stderr(&no_route).contains("no route `cold`"),
        "{}",
        stderr(&no_route)
    );

    let wrong = host.dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let refused = tap(
        api,
        &[
            "shape",
            "--limit",
            "1",
            "--token-file",
            wrong.to_str().unwrap(),
        ],
    );
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("403"), "{}", stderr(&refused));
    let anonymous = tap(api, &["shape", "--limit", "1"]);
    assert!(!anonymous.status.success());
    assert!(stderr(&anonymous).contains("401"), "{}", stderr(&anonymous));
    let too_fast = tap(api, &["shape", "--rate", "5000", "--token-file", &token]);
    assert!(!too_fast.status.success());
    assert!(stderr(&too_fast).contains("400"), "{}", stderr(&too_fast));
}

#[test]
fn a_slow_tap_drops_from_its_sample_never_from_the_pipeline() {
    let ingest = free_port();
    let host = pipeline(ingest);
    let api = host.host.api_port;
    let token = token_file(host.dir.path());
    let traffic = Traffic::start(ingest, 200);

    let started = Instant::now();
    let sampled = tap(
        api,
        &[
            "shape",
            "--rate",
            "10",
            "--limit",
            "30",
            "--token-file",
            &token,
        ],
    );
    let took = started.elapsed();
    let posted = traffic.stop();
    assert!(sampled.status.success(), "{}", stderr(&sampled));
    assert_eq!(records(&sampled).len(), 30);
    // A second's burst of 10, then 10 a second.
    assert!(
        took >= Duration::from_millis(1800),
        "30 records at 10/s in {took:?}"
    );
    let status = stderr(&sampled);
    let dropped: u64 = status
        .lines()
        .find_map(|line| {
            line.strip_prefix("tap shape: 30 sent, ")?
                .strip_suffix(" dropped")
        })
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no drop count in `{status}`"));
    assert!(dropped > 0, "{status}");

    // Every reading the host took is in the files, each once.
    assert!(posted > 1000, "only {posted} readings posted");
    let files = host.data("files");
    wait_until(
        Duration::from_secs(30),
        "every reading in the files",
        || read_lines(&files).len() as u64 >= posted,
    );
    let seqs: HashSet<u64> = read_lines(&files)
        .iter()
        .map(|value| value["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs.len() as u64, posted);
    assert_eq!(read_lines(&files).len() as u64, posted);
}

#[test]
fn a_saved_tap_is_a_recording_that_sluice_test_replays() {
    let ingest = free_port();
    let host = pipeline(ingest);
    let api = host.host.api_port;
    let token = token_file(host.dir.path());
    let saved = host.dir.path().join("valid.jsonl");
    let traffic = Traffic::start(ingest, 20);
    let recorded = tap(
        api,
        &[
            "valid",
            "--limit",
            "25",
            "--save",
            saved.to_str().unwrap(),
            "--token-file",
            &token,
        ],
    );
    traffic.stop();
    assert!(recorded.status.success(), "{}", stderr(&recorded));
    let hot = records(&recorded)
        .iter()
        .filter(|record| record["payload"]["temperature"].as_u64().unwrap() > 80)
        .count();

    // Live traffic recorded at `valid`, turned into a test of what comes after it.
    let tests = |shaped: usize| {
        format!(
            r#"
[[tests]]
name = "recorded readings are shaped and routed"

[[tests.inputs]]
insert_at = "shape"
recording = "valid.jsonl"

[[tests.outputs]]
extract_from = "shape"
count = {shaped}
conditions = [{{ field = "site", eq = "plant-1" }}]

[[tests.outputs]]
extract_from = "route.hot"
count = {hot}
conditions = [{{ field = "temperature", gt = 80 }}]

[[tests.dead_letters]]
stage = "route"
reason = "default output, which no stage reads"
count = {cold}
"#,
            cold = 25 - hot
        )
    };
    let test_file = host.dir.path().join("pipeline.test.toml");
    let run = || {
        Command::new(sluice_binary())
            .arg("test")
            .arg(host.dir.path().join("pipeline.toml"))
            .output()
            .unwrap()
    };
    std::fs::write(&test_file, tests(25)).unwrap();
    let passed = run();
    let stdout = String::from_utf8_lossy(&passed.stdout);
    assert!(passed.status.success(), "{stdout}{}", stderr(&passed));
    assert!(stdout.contains("1 passed"), "{stdout}");

    // The same recording under a wrong count fails, and says by how much.
    std::fs::write(&test_file, tests(24)).unwrap();
    let failed = run();
    let stdout = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(failed.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("24") && stdout.contains("25"), "{stdout}");
}
