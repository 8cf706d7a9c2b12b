//! The object-store sink against a real S3-protocol server (s3s-fs) and the local
//! filesystem, read back by an independent Parquet reader (pyarrow): every event
//! stored once with its types and values, in the configured Hive partitions; nothing
//! lost while the S3 server is frozen for 10 s; events outside the declared schema on
//! the sink's dead-letter route with their reasons; schemas inferred per object as
//! fields come and change; a host killed mid-object with Kafka input storing every
//! event exactly once; a day read back by `sluice replay`.

mod harness;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::kafka::{GROUP_OPTIONS, Tansu};
use harness::s3::{S3, file_schemas, read_back, stored_seqs};
use harness::*;

/// 2026-11-29T10:42:00Z; event `seq` happens `seq * 20` ms later, so 200k events span
/// the hours 10 and 11.
const START_MS: u64 = 1_795_948_920_000;
const EVENTS_PER_POST: u64 = 5_000;
/// A POST waits for its objects to be stored, through an outage too.
const SOURCE: &str = "delivery_timeout_ms = 60000";

fn event(seq: u64) -> String {
    format!(
        r#"{{"device_id":"d{}","seq":{seq},"temperature":{},"ts":{}}}"#,
        seq % 4,
        seq as f64 * 0.25,
        START_MS + seq * 20
    )
}

fn sink(url: &str, extra: &str) -> String {
    format!(
        r#"
[sinks.lake]
type = "object_store"
inputs = ["ingest"]
url = "{url}"
partition = "dt={{date}}/hour={{hour}}/device={{device_id}}"
time_field = "ts"
max_events = 20000
max_age_secs = 1
schema = [
  {{ name = "device_id", type = "string", required = true }},
  {{ name = "seq", type = "int64", required = true }},
  {{ name = "temperature", type = "float64" }},
  {{ name = "ts", type = "timestamp_ms" }},
]
{extra}
"#
    )
}

/// POST events `0..total` in bodies of 5,000 from 8 threads, each body again until it
/// is answered 200 (delivered). Returns the longest time one body took.
fn post_all(pipeline: &HttpPipeline, total: u64) -> Duration {
    let next = Arc::new(AtomicU64::new(0));
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    std::thread::scope(|scope| {
        for _ in 0..8 {
            let (next, slowest) = (next.clone(), slowest.clone());
            scope.spawn(move || {
                loop {
                    let first = next.fetch_add(EVENTS_PER_POST, Ordering::SeqCst);
                    if first >= total {
                        return;
                    }
                    let body: Vec<String> = (first..(first + EVENTS_PER_POST).min(total))
                        .map(event)
                        .collect();
                    let body = body.join("\n");
                    let started = Instant::now();
                    loop {
                        let (status, _) = pipeline.post("/ingest", &[], body.as_bytes());
                        if status == 200 {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    let took = started.elapsed();
                    let mut slowest = slowest.lock().unwrap();
                    *slowest = (*slowest).max(took);
                }
            });
        }
    });
    *slowest.lock().unwrap()
}

fn expected_partitions() -> Vec<String> {
    let mut partitions = Vec::new();
    for hour in ["10", "11"] {
        for device in 0..4 {
            partitions.push(format!("dt=2026-11-29/hour={hour}/device=d{device}"));
        }
    }
    partitions
}

#[test]
fn two_hundred_thousand_events_become_parquet_on_s3_with_their_types_and_values() {
    const TOTAL: u64 = 200_000;
    let s3 = S3::start(&["lake"]);
    let pipeline = HttpPipeline::start(
        SOURCE,
        &sink("s3://lake/telemetry", &s3.sink_options()),
        std::process::Stdio::null(),
    );
    post_all(&pipeline, TOTAL);
    // Every POST was answered 200, so every event is in a stored object already.
    let stored = read_back(&s3.bucket_dir("lake").join("telemetry"));
    assert_eq!(stored["rows"], TOTAL, "{stored}");
    assert_eq!(stored["distinct"], TOTAL, "{stored}");
    assert_eq!(stored["wrong_values"], 0, "{stored}");
    assert_eq!(stored["types"]["seq"], "int64", "{stored}");
    assert_eq!(stored["types"]["temperature"], "double", "{stored}");
    assert_eq!(stored["types"]["device_id"], "string", "{stored}");
    assert_eq!(
        stored["types"]["ts"], "timestamp[ms, tz=+00:00]",
        "{stored}"
    );
    assert_eq!(
        stored["partitions"],
        serde_json::json!(expected_partitions()),
        "{stored}"
    );
    assert!(stored["files"].as_u64().unwrap() >= 8, "{stored}");
}

#[test]
fn a_local_directory_gets_the_same_layout() {
    const TOTAL: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let pipeline = HttpPipeline::start(
        SOURCE,
        &sink(
            &format!("file://{}", dir.path().display()),
            "compression = \"snappy\"",
        ),
        std::process::Stdio::null(),
    );
    post_all(&pipeline, TOTAL);
    let stored = read_back(dir.path());
    assert_eq!(stored["rows"], TOTAL, "{stored}");
    assert_eq!(stored["distinct"], TOTAL, "{stored}");
    assert_eq!(stored["wrong_values"], 0, "{stored}");
    assert_eq!(
        stored["partitions"],
        serde_json::json!(expected_partitions()[..4]),
        "{stored}"
    );
}

#[test]
fn the_s3_server_frozen_for_ten_seconds_loses_nothing() {
    const TOTAL: u64 = 150_000;
    let s3 = S3::start(&["lake"]);
    let pipeline = HttpPipeline::start(
        SOURCE,
        &sink("s3://lake/telemetry", &s3.sink_options()),
        std::process::Stdio::null(),
    );
    let slowest = std::thread::scope(|scope| {
        let poster = scope.spawn(|| post_all(&pipeline, TOTAL));
        std::thread::sleep(Duration::from_secs(1));
        s3.pause();
        std::thread::sleep(Duration::from_secs(10));
        s3.resume();
        poster.join().unwrap()
    });
    assert!(
        slowest >= Duration::from_secs(5),
        "the outage held deliveries back ({slowest:?})"
    );
    let stored = read_back(&s3.bucket_dir("lake").join("telemetry"));
    assert_eq!(stored["distinct"], TOTAL, "every event is stored: {stored}");
    assert_eq!(stored["wrong_values"], 0, "{stored}");
}

#[test]
fn events_outside_the_schema_go_to_the_sinks_dead_letter_route_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let stages = sink(&format!("file://{}", dir.path().display()), "")
        + "\n[sinks.refused]\ntype = \"file\"\ninputs = [\"lake.dead_letter\"]\npath = \"refused\"\n";
    let pipeline = HttpPipeline::start(SOURCE, &stages, std::process::Stdio::null());
    let body = format!(
        "{}\n{}\n{}",
        event(0),
        r#"{"device_id":"d1","seq":"one","temperature":1.0,"ts":1795948920000}"#,
        r#"{"seq":2}"#
    );
    let (status, _) = pipeline.post("/ingest", &[], body.as_bytes());
    assert_eq!(
        status, 200,
        "refused events count as handled: they are dead letters"
    );
    let stored = read_back(dir.path());
    assert_eq!(stored["rows"], 1, "{stored}");
    let letters = read_lines(&pipeline.data("refused"));
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(letters.iter().all(|l| l["stage"] == "lake"), "{letters:?}");
    let reasons: Vec<&str> = letters
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.iter().any(|r| r.contains("one")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("device_id")),
        "{reasons:?}"
    );
}

/// Readings 10 s apart from 2026-11-29T00:00:00Z: 30,000 of them cover three days and a
/// few hours.
fn reading(seq: u64) -> String {
    const NOV_29: u64 = 1_795_910_400_000;
    format!(
        r#"{{"device_id":"d{}","seq":{seq},"temperature":{},"ts":{}}}"#,
        seq % 4,
        seq as f64 * 0.25,
        NOV_29 + seq * 10_000
    )
}

#[test]
fn a_days_partition_replayed_into_a_pipeline_yields_the_same_events() {
    const TOTAL: u64 = 30_000;
    const PER_DAY: u64 = 8_640;
    let s3 = S3::start(&["lake"]);
    let store = HttpPipeline::start(
        SOURCE,
        &sink("s3://lake/telemetry", &s3.sink_options()),
        std::process::Stdio::null(),
    );
    for chunk in (0..TOTAL)
        .collect::<Vec<_>>()
        .chunks(EVENTS_PER_POST as usize)
    {
        let body: Vec<String> = chunk.iter().map(|&seq| reading(seq)).collect();
        let (status, answer) = store.post("/ingest", &[], body.join("\n").as_bytes());
        assert_eq!(status, 200, "{answer}");
    }

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("replay.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{}"
[sources.history]
type = "replay"
url = "s3://lake/telemetry"
{}
time_field = "ts"
batch_size = 500

[sinks.out]
type = "file"
inputs = ["history"]
path = "out"
"#,
            dir.path().join("data").display(),
            s3.sink_options()
        ),
    )
    .unwrap();
    // The second day, 2026-11-30, by the time range; its partitions alone are read.
    let replay = std::process::Command::new(sluice_binary())
        .arg("replay")
        .arg(&config)
        .args(["--from", "2026-11-30", "--to", "2026-12-01"])
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&replay.stdout);
    let log = String::from_utf8_lossy(&replay.stderr);
    assert!(replay.status.success(), "{summary}\n{log}");
    let day: Vec<u64> = (PER_DAY..2 * PER_DAY).collect();
    assert!(
        summary.contains(&format!("{} events", day.len())),
        "the summary counts the events: {summary}"
    );
    assert!(summary.contains("0 outside the time range"), "{summary}");

    let replayed = read_lines(&dir.path().join("data/out"));
    let mut seqs: Vec<u64> = replayed
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, day, "every event of the day, once");
    for value in &replayed {
        let seq = value["seq"].as_u64().unwrap();
        let original: serde_json::Value = serde_json::from_str(&reading(seq)).unwrap();
        // Values as the declared schema types them: `temperature` is a float64.
        assert_eq!(value["device_id"], original["device_id"]);
        assert_eq!(value["ts"], original["ts"]);
        assert_eq!(
            value["temperature"].as_f64(),
            original["temperature"].as_f64()
        );
        assert_eq!(
            value.as_object().unwrap().len(),
            4,
            "no field more: {value}"
        );
    }

    // A replay with nothing to read says so and fails nothing.
    let empty = std::process::Command::new(sluice_binary())
        .arg("replay")
        .arg(&config)
        .args(["--prefix", "dt=2030-01-01"])
        .output()
        .unwrap();
    assert!(
        empty.status.success(),
        "{}",
        String::from_utf8_lossy(&empty.stderr)
    );
    assert!(
        String::from_utf8_lossy(&empty.stdout).contains("0 of 0 objects"),
        "{}",
        String::from_utf8_lossy(&empty.stdout)
    );
}

#[test]
fn without_a_schema_new_fields_and_type_changes_follow_the_inference_rule() {
    let dir = tempfile::tempdir().unwrap();
    let stages = format!(
        r#"
[sinks.lake]
type = "object_store"
inputs = ["ingest"]
url = "file://{}"
partition = ""
max_age_secs = 1
"#,
        dir.path().display()
    );
    let pipeline = HttpPipeline::start(SOURCE, &stages, std::process::Stdio::null());
    let post = |lines: &[&str]| {
        let (status, answer) = pipeline.post("/ingest", &[], lines.join("\n").as_bytes());
        assert_eq!(status, 200, "{answer}");
    };
    // Each POST is answered once its object is stored, so each phase is its own object.
    post(&[r#"{"seq":1,"level":3}"#, r#"{"seq":2,"level":4}"#]);
    post(&[r#"{"seq":3,"level":5,"site":"north"}"#]);
    post(&[r#"{"seq":4,"level":5.5}"#, r#"{"seq":5,"level":6}"#]);
    post(&[r#"{"seq":6,"level":"high"}"#, r#"{"seq":7,"level":7}"#]);
    let files = file_schemas(dir.path());
    let types: Vec<&serde_json::Value> = files.iter().map(|file| &file["types"]).collect();
    assert_eq!(
        types,
        [
            &serde_json::json!({"level": "int64", "seq": "int64"}),
            &serde_json::json!({"level": "int64", "seq": "int64", "site": "string"}),
            &serde_json::json!({"level": "double", "seq": "int64"}),
            &serde_json::json!({"level": "string", "seq": "int64"}),
        ],
        "a new field is a new column from then on; integers and floats make a double; \
         a number and a text make text"
    );
    assert_eq!(stored_seqs(dir.path()), (1..=7).collect::<Vec<_>>());
}

#[test]
fn a_host_killed_mid_object_with_kafka_input_stores_every_event_exactly_once() {
    const TOTAL: u64 = 60_000;
    let tansu = Tansu::start();
    tansu.create_topic("telemetry", 2);
    let lake = tempfile::tempdir().unwrap();
    // Offsets are committed only every 5 s, so the kill leaves stored objects whose
    // events the restart reads again, rolled at other offsets (by age, by batch).
    let mut pipeline = Pipeline::start(&format!(
        r#"
[sources.in]
type = "kafka"
bootstrap_servers = "{}"
group_id = "lake"
topics = ["telemetry"]
commit_interval_ms = 5000
{GROUP_OPTIONS}

[sinks.lake]
type = "object_store"
inputs = ["in"]
url = "file://{}"
partition = "dt={{date}}"
max_events = 4000
max_age_secs = 1
"#,
        tansu.bootstrap(),
        lake.path().display()
    ));
    let records = |seqs: std::ops::Range<u64>| {
        seqs.map(|seq| (format!("d{:02}", seq % 16), payload(seq, 120)))
    };
    std::thread::scope(|scope| {
        // Trickled in, so that objects roll by age at arbitrary offsets; the restart
        // then finds a backlog and rolls at `max_events` instead.
        scope.spawn(|| {
            for first in (0..TOTAL).step_by(1000) {
                tansu.produce("telemetry", records(first..first + 1000));
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        wait_until(
            Duration::from_secs(60),
            "objects stored before the kill",
            || stored_seqs(lake.path()).len() >= 12_000,
        );
        pipeline.kill_9();
        std::thread::sleep(Duration::from_secs(2));
        pipeline.restart();
    });
    wait_until(Duration::from_secs(120), "every event stored", || {
        stored_seqs(lake.path()).len() as u64 >= TOTAL
    });
    assert!(pipeline.stop().success());
    let mut seqs = stored_seqs(lake.path());
    let stored = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(
        seqs,
        (0..TOTAL).collect::<Vec<_>>(),
        "every event is stored"
    );
    assert_eq!(stored as u64, TOTAL, "and none twice");
}

#[test]
fn an_object_over_sixteen_mebibytes_goes_up_in_parts_and_reads_back_whole() {
    let s3 = S3::start(&["lake"]);
    let pipeline = HttpPipeline::start(
        "delivery_timeout_ms = 60000\nmax_body_bytes = 33554432",
        &format!(
            r#"
[sinks.lake]
type = "object_store"
inputs = ["ingest"]
url = "s3://lake/raw"
format = "jsonl"
partition = ""
max_age_secs = 1
{}
"#,
            s3.sink_options()
        ),
        std::process::Stdio::null(),
    );
    // 1,100 events of 16 KiB: one object of 18 MB, past the 16 MiB multipart threshold.
    let pad = "x".repeat(16 * 1024);
    let lines: Vec<String> = (0..1100)
        .map(|seq| format!(r#"{{"seq":{seq},"pad":"{pad}"}}"#))
        .collect();
    let (status, answer) = pipeline.post("/ingest", &[], lines.join("\n").as_bytes());
    assert_eq!(status, 200, "{answer}");
    let dir = s3.bucket_dir("lake").join("raw");
    let objects: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    assert_eq!(objects.len(), 1, "{objects:?}");
    let stored = std::fs::read_to_string(&objects[0]).unwrap();
    assert!(stored.len() > 16 << 20, "{} bytes", stored.len());
    assert_eq!(stored, lines.join("\n") + "\n", "every part, in order");
}
