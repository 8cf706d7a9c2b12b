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

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::*;

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

/// Two panels over K on a log axis: RSS KiB per stage (with eKuiper's 400–500 KB per
/// rule as a band) and start ms per stage. Plain SVG: nothing to install to draw it.
fn plot(points: &[(f64, f64, f64)]) -> String {
    let (width, height, margin) = (360.0, 240.0, 48.0);
    let x = |k: f64| margin + (k.log10() - 1.0) / 2.0 * (width - 2.0 * margin);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n",
        2.0 * width
    );
    type Panel = (
        &'static str,
        fn(&(f64, f64, f64)) -> f64,
        Option<(f64, f64)>,
        usize,
    );
    // Start times are read by polling `/ready` every 50 ms: below K = 1,000 the per-stage
    // figure is under that resolution, and may come out at or below zero.
    let panels: [Panel; 2] = [
        (
            "RSS KiB per stage",
            |p| p.2,
            Some((400.0 / 1.024, 500.0 / 1.024)),
            0,
        ),
        (
            "start ms per stage (50 ms / K resolution)",
            |p| p.1.max(0.0),
            None,
            2,
        ),
    ];
    for (panel, &(title, value, band, decimals)) in panels.iter().enumerate() {
        let left = panel as f64 * width;
        let top = band.map_or(0.0, |(_, high)| high);
        let max = points.iter().map(value).fold(top, f64::max).max(1e-9) * 1.15;
        let y = |v: f64| height - margin - v / max * (height - 2.0 * margin);
        writeln!(svg, "<g transform=\"translate({left},0)\">").unwrap();
        writeln!(
            svg,
            "<text x=\"{margin}\" y=\"20\" font-size=\"13\">{title}</text>"
        )
        .unwrap();
        writeln!(
            svg,
            "<line x1=\"{margin}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#444\"/><line x1=\"{margin}\" y1=\"{margin}\" x2=\"{margin}\" y2=\"{0}\" stroke=\"#444\"/>",
            height - margin,
            width - margin
        )
        .unwrap();
        for k in [10.0, 100.0, 1000.0] {
            writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">K={k}</text>",
                x(k),
                height - margin + 16.0
            )
            .unwrap();
        }
        for tick in [0.0, max / 2.0, max / 1.15] {
            writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{tick:.decimals$}</text>",
                margin - 4.0,
                y(tick) + 4.0
            )
            .unwrap();
        }
        if let Some((low, high)) = band {
            writeln!(
                svg,
                "<rect x=\"{margin}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#f4c27a\" opacity=\"0.5\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">eKuiper, per rule</text>",
                y(high),
                width - 2.0 * margin,
                y(low) - y(high),
                width - margin - 4.0,
                y(high) - 4.0
            )
            .unwrap();
        }
        let line: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(value(p))))
            .collect();
        writeln!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f6fb2\" stroke-width=\"2\"/>",
            line.join(" ")
        )
        .unwrap();
        for p in points {
            writeln!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#1f6fb2\"/><text x=\"{:.1}\" y=\"{:.1}\">{:.decimals$}</text>",
                x(p.0),
                y(value(p)),
                x(p.0) + 5.0,
                y(value(p)) - 6.0,
                value(p)
            )
            .unwrap();
        }
        svg.push_str("</g>\n");
    }
    svg.push_str("</svg>\n");
    svg
}
