//! The object-store sink against a real S3-protocol server (s3s-fs) and the local
//! filesystem, read back by an independent Parquet reader (pyarrow): every event
//! stored once with its types and values, in the configured Hive partitions; nothing
//! lost while the S3 server is frozen for 10 s; events outside the declared schema on
//! the sink's dead-letter route with their reasons.

mod harness;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::s3::{S3, read_back};
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
