//! How a host's cost grows with its stages: one host running K independent Wasm `filter`
//! stages (K = 0, 10, 100, 1,000), each reading the same HTTP source and all feeding
//! one file sink. For each K: the time from `sluice run` to `/ready`, and the resident
//! memory once every stage has handled events; per stage, both over K = 0 (the host
//! with its source and sink alone). eKuiper, a rule engine users compare with, reports
//! 400–500 KB per rule.
//!
//! Run: `cargo build --release -p sluice && cargo bench -p sluice-e2e --bench scaling_stages`.
//! Prints the table and writes the plot to `docs/benchmarks/scaling-stages.svg`.

#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "support/plot.rs"]
mod plot;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::*;
use plot::{Axis, Band, Panel, Series};

const STAGES: [usize; 4] = [0, 10, 100, 1000];
/// Runs of each K; the median counts.
const RUNS: usize = 3;
/// Readings posted once the host is ready, so that every stage has run its plugin.
const READINGS: usize = 20;

struct Measured {
    ready: Duration,
    rss: u64,
}

fn config(dir: &std::path::Path, api: u16, ingest: u16, stages: usize) -> PathBuf {
    let mut text = format!(
        "data_dir = \"{}\"\n[api]\nlisten = \"127.0.0.1:{api}\"\n\
         [sources.ingest]\ntype = \"http\"\nlisten = \"127.0.0.1:{ingest}\"\n\
         [plugins.filter]\npath = \"{}\"\n",
        dir.join("data").display(),
        plugin("filter")
    );
    let mut inputs = Vec::new();
    for stage in 0..stages {
        writeln!(
            text,
            "[transforms.f{stage}]\ntype = \"wasm\"\nplugin = \"filter\"\ninputs = [\"ingest\"]\n\
             config = {{ when = {{ field = \"temperature\", gt = -100 }} }}"
        )
        .unwrap();
        inputs.push(format!("\"f{stage}\""));
    }
    if inputs.is_empty() {
        inputs.push("\"ingest\"".to_owned());
    }
    writeln!(
        text,
        "[sinks.out]\ntype = \"file\"\ninputs = [{}]\npath = \"out\"",
        inputs.join(", ")
    )
    .unwrap();
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn measure(stages: usize) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let (api, ingest) = (free_port(), free_port());
    let config = config(dir.path(), api, ingest, stages);
    let started = Instant::now();
    let host = Host::start(&config, api, Stdio::null());
    let ready = started.elapsed();
    let body: String = (0..READINGS)
        .map(|seq| {
            format!(
                "{{\"device_id\":\"d{}\",\"seq\":{seq},\"temperature\":21.5}}\n",
                seq % 4
            )
        })
        .collect();
    let (status, answer) = http_post(ingest, "/ingest", &[], body.as_bytes());
    assert_eq!(status, 200, "{answer}");
    // Every reading through every stage: K copies of each in the sink's files.
    let expected = READINGS * stages.max(1);
    wait_until(
        Duration::from_secs(120),
        "every stage's copies stored",
        || read_lines(&dir.path().join("data").join("out")).len() >= expected,
    );
    let rss = host.rss_bytes();
    host.stop();
    Measured { ready, rss }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let mut rows = Vec::new();
    for stages in STAGES {
        let runs: Vec<Measured> = (0..RUNS).map(|_| measure(stages)).collect();
        let ready_ms = median(runs.iter().map(|m| m.ready.as_secs_f64() * 1e3).collect());
        let rss_mib = median(runs.iter().map(|m| m.rss as f64 / 1048576.0).collect());
        rows.push((stages, ready_ms, rss_mib));
    }
    let (_, base_ready, base_rss) = rows[0];
    println!(
        "| stages (K Wasm filters on one source, one file sink; median of {RUNS}) | start to /ready ms | RSS MiB | start ms per stage | RSS KiB per stage |"
    );
    println!("|---:|---:|---:|---:|---:|");
    let mut per_stage = Vec::new();
    for &(stages, ready_ms, rss_mib) in &rows {
        let (ready_each, rss_each) = if stages == 0 {
            ("-".to_owned(), "-".to_owned())
        } else {
            let ready_each = (ready_ms - base_ready) / stages as f64;
            let rss_each = (rss_mib - base_rss) * 1024.0 / stages as f64;
            per_stage.push((stages as f64, ready_each, rss_each));
            (format!("{ready_each:.2}"), format!("{rss_each:.0}"))
        };
        println!("| {stages} | {ready_ms:.0} | {rss_mib:.1} | {ready_each} | {rss_each} |");
    }
    let out =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks/scaling-stages.svg");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, plot(&per_stage)).unwrap();
    println!("plot: {}", out.display());
}

/// RSS KiB per stage (with eKuiper's 400–500 KB per rule as a band) and start ms per
/// stage, over K on a log axis.
fn plot(points: &[(f64, f64, f64)]) -> String {
    let series = |value: fn(&(f64, f64, f64)) -> f64| {
        vec![Series {
            label: "sluice",
            points: points.iter().map(|p| (p.0, value(p))).collect(),
        }]
    };
    plot::panels(
        "K",
        &[10.0, 100.0, 1000.0],
        Axis::Log10,
        &[
            Panel {
                title: "RSS KiB per stage",
                series: series(|p| p.2),
                band: Some(Band {
                    low: 400.0 / 1.024,
                    high: 500.0 / 1.024,
                    label: "eKuiper, per rule",
                }),
                decimals: 0,
            },
            // Start times are read by polling `/ready` every 50 ms: below K = 1,000 the
            // per-stage figure is under that resolution, and may come out at or below zero.
            Panel {
                title: "start ms per stage (50 ms / K resolution)",
                series: series(|p| p.1.max(0.0)),
                band: None,
                decimals: 2,
            },
        ],
    )
}
