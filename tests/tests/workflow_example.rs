//! examples/workflow end to end: the example's configs and train.py, unchanged, run by
//! the real binary against a real S3 server (s3s-fs) with ONNX Runtime, the nightly
//! schedule set to fire once, seconds after the start, and `compact` every 5 s (paused
//! while the nightly jobs run, as the example's schedules keep them apart).
//!
//! - Six devices post readings all along (three go quiet before the nightly slot ends).
//!   trainset → train → deploy-model → rescore each succeed for that slot, in that
//!   order. Every posted reading is stored once, scored by exactly one model version:
//!   the committed one until the switch, the nightly one from then on, per device in
//!   that order (scores recomputed with onnxruntime in Python from both files). The
//!   serving table serves each device's latest reading with the new version's score,
//!   for the quiet devices the re-scored copy of a reading scored live by the old one.
//! - An object of another schema in the training set makes `train` fail; it is retried
//!   once and failed, and deploy-model and rescore are recorded as upstream_failed.
//!   With the object removed, `sluice jobs retry train --downstream` runs all three.

mod harness;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use harness::jobs::{self, status};
use harness::s3::{self, S3};
use harness::*;
use serde_json::Value;

const FILES: [&str; 4] = ["sluice.toml", "trainset.toml", "rescore.toml", "train.py"];
/// The nightly jobs, in the order they run for a slot.
const CHAIN: [&str; 4] = ["trainset", "train", "deploy-model", "rescore"];
/// How long after the test starts the nightly slot ends (its only firing in the test).
const LEAD_SECS: i64 = 20;
/// Readings per POST.
const BATCH: u64 = 5;
/// Quiet devices post their last reading this long before the slot ends.
const QUIET_BEFORE_MS: i64 = 2_000;
const JOB_TIMEOUT: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The example's host, its lake in s3s-fs, its nightly schedule firing once, at `slot`.
struct Workflow {
    host: Host,
    api: u16,
    ingest: u16,
    /// The end of the nightly slot (it covers the 24 hours before).
    slot: i64,
    /// The example's copy, laid out as the repository is; its data in `target/workflow`.
    root: tempfile::TempDir,
}

impl Workflow {
    fn start(s3: &S3) -> Workflow {
        let (root, example) = example_copy("workflow", &FILES, &["anomaly", "map"]);
        let (api, ingest) = (free_port(), free_port());
        // The nightly cron at a second LEAD_SECS away (UTC): its slot is the day before it.
        let slot = (now_ms() / 1000 + LEAD_SECS) * 1000;
        let secs = slot / 1000;
        let schedule = format!(
            "{} {} {} * * *",
            secs % 60,
            secs / 60 % 60,
            secs / 3600 % 24
        );
        let mut env = s3.aws_env();
        env.extend([
            ("LAKE_URL", "s3://lake".to_owned()),
            ("API_PORT", api.to_string()),
            ("INGEST_PORT", ingest.to_string()),
            ("TRAIN_SCHEDULE", schedule),
            ("COMPACT_SCHEDULE", "*/5 * * * * *".to_owned()),
        ]);
        let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, OsStr::new(v))).collect();
        // Named relative to the working directory, as the README runs it; the host names
        // its jobs' configs from its own (absolute) directory.
        let config = relative_to_working_dir(&example.join("sluice.toml"));
        let host = Host::start_env(&config, api, Stdio::null(), &env);
        assert!(
            now_ms() < slot - 3 * QUIET_BEFORE_MS,
            "the host took too long to start: the nightly slot ends at {slot}"
        );
        // Kept apart from the nightly replays, as the example's schedules keep it: a
        // replay finding an object merged away since it listed the lake fails.
        jobs::operate(api, "compact", "pause");
        Workflow {
            host,
            api,
            ingest,
            slot,
            root,
        }
    }

    /// The model file the train job writes for the slot.
    fn trained_model(&self) -> PathBuf {
        let name = format!("target/workflow/models/anomaly-{}.onnx", self.slot);
        self.root.path().join(name)
    }

    /// Wait for `jobs`' runs of the slot; each must succeed, after the one before it.
    fn chain_succeeds(&self, jobs: &[&str]) -> Vec<Value> {
        let runs: Vec<Value> = jobs
            .iter()
            .map(|job| jobs::wait_final(self.api, job, self.slot, JOB_TIMEOUT))
            .collect();
        for run in &runs {
            assert_eq!(status(run), "succeeded", "{run:#}");
        }
        for pair in runs.windows(2) {
            assert!(
                pair[0]["ended_ms"].as_i64() <= pair[1]["started_ms"].as_i64(),
                "{} ran before {} ended: {:#} {:#}",
                pair[1]["job"],
                pair[0]["job"],
                pair[0],
                pair[1]
            );
        }
        runs
    }
}

/// The absolute `path` relative to the working directory (`../../tmp/...`).
fn relative_to_working_dir(path: &Path) -> PathBuf {
    let up = std::env::current_dir().unwrap().components().count() - 1;
    let mut relative: PathBuf = std::iter::repeat_n("..", up).collect();
    relative.push(path.strip_prefix("/").unwrap());
    relative
}

/// One reading a device posted, and when.
#[derive(Debug, Clone)]
struct Posted {
    device: String,
    seq: u64,
    ts: i64,
    features: [f64; 3],
    sent_ms: i64,
    answered_ms: i64,
}

/// Reading `seq` of device number `device`: normal, or (every seventh) overheating and
/// shaking, with sensor-sim's ranges (models/anomaly.md).
fn features(device: u64, seq: u64) -> [f64; 3] {
    if seq % 7 == 3 {
        return [90.0 + (seq % 25) as f64, 9.0 + (seq % 5) as f64, 50.0];
    }
    [
        19.0 + ((device * 31 + seq * 17) % 60) as f64 / 10.0,
        0.5 + ((device * 7 + seq * 13) % 15) as f64 / 10.0,
        10.0 + ((device * 3 + seq * 7) % 80) as f64,
    ]
}

/// Device `number` (named `name`) posting readings, a batch at a time, while `more()`:
/// what it posted. A POST is answered once its readings are stored; one the pipeline
/// pushes back (429: nothing taken) is read again and sent again.
fn device(ingest: u16, name: String, number: u64, more: impl Fn() -> bool) -> Vec<Posted> {
    let mut posted = Vec::new();
    while more() {
        let first = posted.len() as u64 + 1;
        let pushed_back_until = now_ms() + 30_000;
        let (batch, answered_ms) = loop {
            let sent_ms = now_ms();
            let batch: Vec<Posted> = (first..first + BATCH)
                .map(|seq| Posted {
                    device: name.clone(),
                    seq,
                    ts: sent_ms - (first + BATCH - 1 - seq) as i64 * 10,
                    features: features(number, seq),
                    sent_ms,
                    answered_ms: 0,
                })
                .collect();
            let body: Vec<String> = batch
                .iter()
                .map(|p| {
                    let [temperature, vibration, battery] = p.features;
                    format!(
                        r#"{{"device_id":"{}","seq":{},"ts":{},"temperature":{temperature:.1},"vibration":{vibration:.1},"battery":{battery:.1}}}"#,
                        p.device, p.seq, p.ts
                    )
                })
                .collect();
            let (status, answer) = http_post(ingest, "/ingest", &[], body.join("\n").as_bytes());
            if status == 429 && now_ms() < pushed_back_until {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            assert_eq!(status, 200, "{name}: {answer}");
            break (batch, now_ms());
        };
        posted.extend(batch.into_iter().map(|p| Posted { answered_ms, ..p }));
    }
    posted
}

/// Sets its flag when dropped: devices stop posting when the test ends, even by a panic.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The `anomaly_score` the anomaly plugin gives each reading under each of `models`:
/// P(anomaly) from ONNX Runtime (Python's, the library the host loads), f32, to four
/// decimals.
fn scores(models: &[&Path], readings: &[[f64; 3]]) -> Vec<Vec<f64>> {
    let script = r#"
import json, math, sys
import numpy as np, onnxruntime as ort
features = np.array(json.load(sys.stdin), dtype=np.float32).reshape(-1, 3)
def round4(p):
    return math.copysign(math.floor(abs(p) * 1e4 + 0.5) / 1e4, p)
print(json.dumps([
    [round4(float(p)) for p in ort.InferenceSession(path).run(["probabilities"], {"features": features})[0][:, 1]]
    for path in sys.argv[1:]
]))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .args(models)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with onnxruntime: run scripts/setup");
    serde_json::to_writer(child.stdin.take().unwrap(), readings).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "scoring in Python failed");
    serde_json::from_slice(&output.stdout).unwrap()
}

fn committed_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/anomaly.onnx")
}

/// Each device's newest value in the serving table `devices`.
fn served(api: u16, device: &str) -> Value {
    let (status, body) = http_get(api, &format!("/v1/tables/devices/keys/{device}")).unwrap();
    assert_eq!(status, 200, "{device}: {body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    body["values"][0]["value"].clone()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 2e-4
}

#[test]
fn the_nightly_jobs_retrain_switch_the_live_model_and_rescore_each_reading_once() {
    let s3 = S3::start(&["lake"]);
    let workflow = Workflow::start(&s3);
    let (api, ingest, slot) = (workflow.api, workflow.ingest, workflow.slot);

    let stop = AtomicBool::new(false);
    let (posted, runs) = std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        let devices: Vec<_> = (0..6)
            .map(|number| {
                let quiet = number >= 3;
                let name = format!("{}-{number}", if quiet { "quiet" } else { "steady" });
                let stop = &stop;
                let more = move || {
                    !stop.load(Ordering::Relaxed) && (!quiet || now_ms() < slot - QUIET_BEFORE_MS)
                };
                scope.spawn(move || device(ingest, name, number, more))
            })
            .collect();
        let runs = workflow.chain_succeeds(&CHAIN);
        // Compaction merges the live lake, and the steady devices go on under the new
        // version a while.
        jobs::operate(api, "compact", "resume");
        wait_until(
            Duration::from_secs(30),
            "a compaction merging objects",
            || {
                jobs::runs(api, "compact").iter().any(|run| {
                    status(run) == "succeeded" && run["produced"]["objects"].as_u64() > Some(0)
                })
            },
        );
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        let posted: Vec<Posted> = devices
            .into_iter()
            .flat_map(|device| device.join().unwrap())
            .collect();
        (posted, runs)
    });
    let [trainset, train, deploy, rescore] = &runs[..] else {
        unreachable!()
    };
    let in_slot = posted.iter().filter(|p| p.ts < slot).count() as u64;
    eprintln!(
        "{} readings posted, {in_slot} in the slot; the training set {}; train:\n{}",
        posted.len(),
        trainset["produced"],
        train["log"].as_str().unwrap()
    );
    let trainset_rows = trainset["produced"]["rows"].as_u64().unwrap();
    assert!(
        trainset_rows > 0 && trainset_rows <= in_slot,
        "the training set holds the slot's readings stored by then: {trainset:#}"
    );
    assert_eq!(
        rescore["produced"]["rows"], in_slot,
        "every reading of the slot scored again, once: {rescore:#}"
    );
    assert!(
        deploy["log"]
            .as_str()
            .unwrap()
            .contains("version 0 → version 1"),
        "{deploy:#}"
    );

    // Compaction paused (and at rest) before the lake is read, as a reader of the raw
    // files must: a merge in the middle holds rows twice.
    jobs::operate(api, "compact", "pause");
    wait_until(Duration::from_secs(30), "compaction at rest", || {
        jobs::runs(api, "compact")
            .iter()
            .all(|run| status(run) != "running")
    });

    // Every posted reading stored once, nothing else.
    let lake = s3.bucket_dir("lake").join("telemetry");
    let mut stored: HashMap<(String, u64), Vec<f64>> = HashMap::new();
    for row in s3::rows(&lake, &["device_id", "seq", "anomaly_score"]) {
        let key = (
            row["device_id"].as_str().unwrap().to_owned(),
            row["seq"].as_u64().unwrap(),
        );
        stored
            .entry(key)
            .or_default()
            .push(row["anomaly_score"].as_f64().unwrap());
    }
    let twice: Vec<_> = stored
        .iter()
        .filter(|(_, scores)| scores.len() > 1)
        .collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let lost: Vec<&Posted> = posted
        .iter()
        .filter(|p| !stored.contains_key(&(p.device.clone(), p.seq)))
        .collect();
    assert!(lost.is_empty(), "never stored: {lost:?}");
    assert_eq!(stored.len(), posted.len(), "only what was posted");

    // Each scored by exactly one version: the old until the switch, the new after it.
    let readings: Vec<[f64; 3]> = posted.iter().map(|p| p.features).collect();
    let [old, new] = &scores(&[&committed_model(), &workflow.trained_model()], &readings)[..]
    else {
        unreachable!()
    };
    let (switch_began, switch_ended) = (
        deploy["started_ms"].as_i64().unwrap(),
        deploy["ended_ms"].as_i64().unwrap(),
    );
    let mut by_device: HashMap<&str, Vec<(u64, bool)>> = HashMap::new();
    for (i, reading) in posted.iter().enumerate() {
        assert!(
            (old[i] - new[i]).abs() > 1e-3,
            "{reading:?} scores {} under both versions: the test cannot tell them apart",
            old[i]
        );
        let score = stored[&(reading.device.clone(), reading.seq)][0];
        let by_new = close(score, new[i]);
        assert!(
            by_new || close(score, old[i]),
            "{reading:?} scored {score}: neither version's ({} old, {} new)",
            old[i],
            new[i]
        );
        if reading.answered_ms < switch_began {
            assert!(
                !by_new,
                "stored before the switch, yet scored by the new version: {reading:?}"
            );
        }
        if reading.sent_ms > switch_ended {
            assert!(
                by_new,
                "posted after the switch, yet scored by the old version: {reading:?}"
            );
        }
        by_device
            .entry(&reading.device)
            .or_default()
            .push((reading.seq, by_new));
    }
    for (device, mut versions) in by_device {
        versions.sort_unstable();
        assert!(
            versions.windows(2).all(|pair| pair[0].1 <= pair[1].1),
            "{device}: the old version after the new one: {versions:?}"
        );
        assert!(
            versions.iter().any(|(_, by_new)| !by_new),
            "{device}: none scored by the old version"
        );
        if device.starts_with("steady") {
            assert!(
                versions.iter().any(|(_, by_new)| *by_new),
                "{device}: none scored by the new version"
            );
        }
    }

    // The serving table: each device's latest reading with the new version's score; the
    // quiet devices' was scored live by the old version, and the rescore replaced it.
    for (i, last) in posted.iter().enumerate() {
        let newest = posted
            .iter()
            .filter(|p| p.device == last.device)
            .map(|p| p.seq)
            .max();
        if Some(last.seq) != newest {
            continue;
        }
        let value = served(api, &last.device);
        assert_eq!(value["seq"], last.seq, "{value}");
        let score = value["anomaly_score"].as_f64().unwrap();
        assert!(
            close(score, new[i]),
            "{}: served {value}, the new version says {}",
            last.device,
            new[i]
        );
        if last.device.starts_with("quiet") {
            let live = stored[&(last.device.clone(), last.seq)][0];
            assert!(
                close(live, old[i]),
                "{}: scored live by the old version: {live}",
                last.device
            );
        }
    }
    assert!(workflow.host.stop().success());
}

/// A Parquet object of another schema (no features, no label) written into the training
/// set where the trainset job writes the readings of `telemetry_dir` (`dt=…/hour=…`).
fn stray_object(lake: &Path, telemetry_dir: &Path) -> PathBuf {
    let partition = telemetry_dir.strip_prefix(lake.join("telemetry")).unwrap();
    let dir = lake.join("trainset").join(partition);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("other-schema.parquet");
    let script = r#"
import sys, time
import pyarrow as pa, pyarrow.parquet as pq
ts = pa.array([int(time.time() * 1000)], pa.timestamp("ms"))
pq.write_table(pa.table({"device_id": ["elsewhere"], "seq": [1], "ts": ts}), sys.argv[1])
"#;
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

#[test]
fn a_train_failing_on_bad_input_is_retried_then_failed_until_retried_with_its_downstream() {
    let s3 = S3::start(&["lake"]);
    let workflow = Workflow::start(&s3);
    let (api, ingest, slot) = (workflow.api, workflow.ingest, workflow.slot);
    let lake = s3.bucket_dir("lake");

    // Readings until shortly before the slot ends; then something else in the training set.
    let posted: Vec<Posted> = std::thread::scope(|scope| {
        let devices: Vec<_> = (0..3)
            .map(|number| {
                let more = move || now_ms() < slot - QUIET_BEFORE_MS;
                scope.spawn(move || device(ingest, format!("quiet-{number}"), number, more))
            })
            .collect();
        devices
            .into_iter()
            .flat_map(|d| d.join().unwrap())
            .collect()
    });
    let stored = std::fs::read_dir(lake.join("telemetry"))
        .unwrap()
        .flat_map(|date| std::fs::read_dir(date.unwrap().path()).unwrap())
        .map(|hour| hour.unwrap().path())
        .next()
        .expect("readings stored");
    let stray = stray_object(&lake, &stored);

    let train = jobs::wait_final(api, "train", slot, JOB_TIMEOUT);
    assert_eq!(status(&train), "failed", "{train:#}");
    assert_eq!(train["attempts"], 2, "retried once: {train:#}");
    let log = train["log"].as_str().unwrap();
    assert!(
        log.contains("bad input, no model written")
            && log.contains(
                "other-schema.parquet has no column temperature, vibration, battery, anomaly"
            ),
        "{log}"
    );
    for job in ["deploy-model", "rescore"] {
        let run = jobs::wait_final(api, job, slot, JOB_TIMEOUT);
        assert_eq!(status(&run), "upstream_failed", "{run:#}");
        assert_eq!(run["attempts"], 0, "{run:#}");
    }
    assert!(!workflow.trained_model().exists());

    // The input fixed, the failed run and what depends on it run again.
    std::fs::remove_file(&stray).unwrap();
    let answer = jobs::cli(api, &["retry", "train", "--downstream"]);
    eprintln!("{answer}");
    let runs = workflow.chain_succeeds(&CHAIN[1..]);
    assert_eq!(runs[0]["attempts"], 1, "{:#}", runs[0]);
    assert_eq!(
        runs[2]["produced"]["rows"],
        posted.len() as u64,
        "the slot's readings scored again: {:#}",
        runs[2]
    );
    assert!(workflow.trained_model().exists());
    assert!(workflow.host.stop().success());
}
