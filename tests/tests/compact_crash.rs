//! The `compact` job against a real S3 server (s3s-fs), over a partition of many small
//! Parquet objects written by the object_store sink: the host is killed (`kill -9`) in
//! the middle of the compaction three times, at different steps of a merge, and each
//! restart finishes what was begun. Read back by an independent Parquet reader
//! (pyarrow): the same rows before and after, none twice, fewer objects, no manifest
//! left.

mod harness;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use harness::jobs::{self, is_final, status};
use harness::s3::{S3, read_back};
use harness::*;

/// 2026-11-29T10:42:00Z; event `seq` happens `seq * 10` ms later, all on that day.
const START_MS: u64 = 1_795_948_920_000;
const PARTITION: &str = "dt=2026-11-29";
const TOTAL: u64 = 100_000;
/// Events per POST, and per object.
const PER_OBJECT: u64 = 500;

fn event(seq: u64) -> String {
    format!(
        r#"{{"device_id":"d{}","seq":{seq},"temperature":{},"ts":{}}}"#,
        seq % 4,
        seq as f64 * 0.25,
        START_MS + seq * 10
    )
}

/// Store `TOTAL` events through a pipeline whose object_store sink rolls an object
/// every `PER_OBJECT` events: one day's partition of small objects.
fn write_small_objects(s3: &S3) {
    let writer = HttpPipeline::start(
        "delivery_timeout_ms = 60000",
        &format!(
            r#"
[sinks.lake]
type = "object_store"
inputs = ["ingest"]
url = "s3://lake/telemetry"
partition = "dt={{date}}"
time_field = "ts"
max_events = {PER_OBJECT}
max_age_secs = 1
schema = [
  {{ name = "device_id", type = "string", required = true }},
  {{ name = "seq", type = "int64", required = true }},
  {{ name = "temperature", type = "float64" }},
  {{ name = "ts", type = "timestamp_ms" }},
]
{}
"#,
            s3.sink_options()
        ),
        std::process::Stdio::null(),
    );
    for first in (0..TOTAL).step_by(PER_OBJECT as usize) {
        let body: Vec<String> = (first..first + PER_OBJECT).map(event).collect();
        // Answered once the object holding them is stored.
        let (status, answer) = writer.post("/ingest", &[], body.join("\n").as_bytes());
        assert_eq!(status, 200, "{answer}");
    }
    assert!(writer.host.stop().success());
}

/// What a compaction has left in the partition directory at one moment.
#[derive(Debug, Default)]
struct Listing {
    /// Objects the sink wrote, and their bytes.
    small: Vec<u64>,
    /// The ids of `compacted-{id}.parquet` and of `_compaction-{id}.json`.
    outputs: BTreeSet<String>,
    manifests: BTreeSet<String>,
}

fn listing(dir: &Path) -> Listing {
    let mut listing = Listing::default();
    for entry in std::fs::read_dir(dir).unwrap() {
        // A file deleted while the directory is read is not listed.
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(id) = name
            .strip_prefix("compacted-")
            .and_then(|n| n.strip_suffix(".parquet"))
        {
            listing.outputs.insert(id.to_owned());
        } else if let Some(id) = name
            .strip_prefix("_compaction-")
            .and_then(|n| n.strip_suffix(".json"))
        {
            listing.manifests.insert(id.to_owned());
        } else if name.ends_with(".parquet")
            && let Ok(meta) = entry.metadata()
        {
            listing.small.push(meta.len());
        }
    }
    listing
}

/// The host running the `compact` job over the partition, merging up to `target_bytes`.
fn compact_config(s3: &S3, target_bytes: u64) -> String {
    format!(
        r#"
[sources.ingest]
type = "http"
listen = "127.0.0.1:{}"

[sinks.out]
type = "file"
inputs = ["ingest"]
path = "out"

[jobs.compact]
type = "compact"
every = "1h"
url = "s3://lake/telemetry"
{}
partition = "{PARTITION}"
target_bytes = {target_bytes}
"#,
        free_port(),
        s3.sink_options()
    )
}

/// Where in a compaction a kill comes: a predicate over the listing when the host
/// (re)started and now. Each waits for a merge begun after the (re)start.
struct KillPoint {
    name: &'static str,
    reached: fn(&Listing, &Listing) -> bool,
}

/// The merges begun since `start`: their manifests.
fn begun<'a>(start: &'a Listing, now: &'a Listing) -> impl Iterator<Item = &'a String> {
    now.manifests.difference(&start.manifests)
}

const KILL_POINTS: [KillPoint; 3] = [
    KillPoint {
        name: "as a merge's manifest appears",
        reached: |start, now| begun(start, now).next().is_some(),
    },
    KillPoint {
        name: "with a merge's output stored and its inputs being deleted",
        reached: |start, now| begun(start, now).any(|id| now.outputs.contains(id)),
    },
    KillPoint {
        name: "half-way through the objects left, during a merge",
        reached: |start, now| {
            now.small.len() <= start.small.len() / 2 && begun(start, now).next().is_some()
        },
    },
];

#[test]
fn a_compaction_killed_three_times_half_way_loses_and_doubles_no_row() {
    let s3 = S3::start(&["lake"]);
    write_small_objects(&s3);
    let lake = s3.bucket_dir("lake").join("telemetry");
    let partition = lake.join(PARTITION);

    let before = read_back(&lake);
    let small = listing(&partition).small;
    eprintln!(
        "before: {} objects of {} bytes on average; {before}",
        small.len(),
        small.iter().sum::<u64>() / small.len() as u64
    );
    assert_eq!(before["rows"], TOTAL, "{before}");
    assert_eq!(before["distinct"], TOTAL, "{before}");
    assert!(small.len() >= 150, "many small objects: {}", small.len());
    // Merges of about eight objects: some 25 of them.
    let target_bytes = 8 * small.iter().sum::<u64>() / small.len() as u64;

    let mut host = Pipeline::start(&compact_config(&s3, target_bytes));
    let api = host.host.api_port;
    let started = jobs::cli(api, &["run", "compact"]);
    assert!(started.contains("will run"), "{started}");
    let slot = jobs::runs(api, "compact")
        .last()
        .expect("the run requested")["slot_end_ms"]
        .as_i64()
        .unwrap();

    for point in &KILL_POINTS {
        let at_start = listing(&partition);
        let began = Instant::now();
        loop {
            let now = listing(&partition);
            if (point.reached)(&at_start, &now) {
                host.kill_9();
                eprintln!(
                    "killed {} after {:?}: {} small objects, {} merged, manifests {:?}",
                    point.name,
                    began.elapsed(),
                    now.small.len(),
                    now.outputs.len(),
                    now.manifests
                );
                break;
            }
            assert!(
                now.small.len() >= 2 && began.elapsed() < Duration::from_secs(120),
                "the compaction ended before the kill {}: give it more objects ({now:?})",
                point.name
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // The run the kill interrupted is handed back at the start and runs again,
        // first finishing the merge whose manifest it finds.
        host.restart();
    }
    wait_until(
        Duration::from_secs(180),
        "the compaction to finish after the last restart",
        || jobs::runs(api, "compact").iter().all(is_final),
    );
    let run = jobs::run_of(api, "compact", slot).unwrap();
    assert_eq!(status(&run), "succeeded", "{run:#}");
    assert_eq!(
        run["attempts"], 4,
        "one attempt and three after kills: {run:#}"
    );
    let shown = jobs::cli(api, &["runs", "compact"]);
    assert!(shown.contains("succeeded"), "{shown}");
    assert!(host.stop().success());

    let after = read_back(&lake);
    let left = listing(&partition);
    eprintln!(
        "after: {} small objects, {} merged; {after}",
        left.small.len(),
        left.outputs.len()
    );
    assert_eq!(
        after["rows"], before["rows"],
        "no row lost nor doubled: {after}"
    );
    assert_eq!(after["distinct"], TOTAL, "every row once: {after}");
    assert_eq!(after["wrong_values"], 0, "{after}");
    assert_eq!(after["max_seq"], TOTAL - 1, "{after}");
    assert!(left.manifests.is_empty(), "no manifest left: {left:?}");
    assert!(
        after["files"].as_u64().unwrap() < before["files"].as_u64().unwrap() / 4,
        "fewer objects: {} before, {after}",
        before["files"]
    );
}
