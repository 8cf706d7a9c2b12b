//! How a host's throughput grows with its cores: the filter → map pipeline of Wasm
//! stages (as in `pipeline_relay`) with `parallelism = 1` and `= 2` on each stage, and
//! beside it its limit, the raw relay (the same source and sink, no stage), each with
//! the host pinned (`taskset`) to one core and to both cores of the machine.
//!
//! The source is HTTP: 4 or 8 threads of this process (`POSTERS`) post NDJSON bodies of
//! `BATCH` events (~200 bytes each) as fast as the host answers (it answers once the
//! file sink has fsynced the batch), so the load generator costs little per event and
//! needs no broker, whose own CPU would otherwise set the pace (`pipeline_relay`:
//! Mosquitto takes most of the machine). Each poster has one batch in flight, so the
//! posters bound the batches the pipeline holds at once. The load generator still runs
//! on the same two cores: its CPU, the machine's busy time and what other processes
//! took are printed beside each figure, with the posts the host refused as full (429).
//! Variants alternate; the best of `RUNS` runs counts.
//!
//! Run: `cargo build --release -p sluice && cargo bench -p sluice-e2e --bench scaling_cores`.
//! Prints the table and writes the plot to `docs/benchmarks/scaling-cores.svg`.

#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "support/plot.rs"]
mod plot;
#[path = "support/process.rs"]
mod process;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harness::{Host, free_port, http_post, payload, plugin};
use plot::{Axis, Panel, Series};

/// Events per POST: one batch through the pipeline.
const BATCH: usize = 2000;
/// Concurrent posters, each with one batch in flight: 4 keep two workers of each stage
/// busy only if no batch waits elsewhere; 8 fill the stages' input channels too.
const POSTERS: [usize; 2] = [4, 8];
const EVENTS: usize = 800_000;
const RUNS: usize = 3;

/// A pipeline measured: its name and the stages between source `in` and sink `out`.
struct Variant {
    name: &'static str,
    /// The plot's legend.
    label: &'static str,
    stages: fn(usize) -> String,
    /// The `parallelism` of each Wasm stage (none for the relay).
    parallelism: usize,
}

fn relay(_: usize) -> String {
    String::new()
}

fn filter_map(parallelism: usize) -> String {
    format!(
        r#"
[plugins.filter]
path = "{filter}"
[plugins.map]
path = "{map}"

[transforms.hot]
type = "wasm"
plugin = "filter"
inputs = ["in"]
parallelism = {parallelism}
config = {{ when = {{ field = "temperature", gte = 0 }} }}

[transforms.shape]
type = "wasm"
plugin = "map"
inputs = ["hot"]
parallelism = {parallelism}
config = {{ rename = {{ temperature = "temperature_c" }}, convert = {{ temperature_c = "celsius_to_fahrenheit" }}, set = {{ site = "plant-1" }} }}
"#,
        filter = plugin("filter"),
        map = plugin("map"),
    )
}

const VARIANTS: [Variant; 3] = [
    Variant {
        name: "raw relay, HTTP → file",
        label: "relay",
        stages: relay,
        parallelism: 0,
    },
    Variant {
        name: "filter → map, parallelism 1",
        label: "filter → map, p=1",
        stages: filter_map,
        parallelism: 1,
    },
    Variant {
        name: "filter → map, parallelism 2",
        label: "filter → map, p=2",
        stages: filter_map,
        parallelism: 2,
    },
];

const CORES: [usize; 2] = [1, 2];

/// One run: events per second, and over the run the cores busy of the host, of the
/// load generator (this process) and of the whole machine.
#[derive(Clone, Copy, Default)]
struct Measured {
    rate: f64,
    host_cores: f64,
    generator_cores: f64,
    machine_cores: f64,
    /// Posts answered 429 (the source's output channel full) and posted again.
    refused: u64,
}

/// Jiffies the machine has spent busy (everything but idle and iowait), over all CPUs.
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    let idle = fields[3] + fields[4];
    (fields.iter().sum::<f64>() - idle) / 100.0
}

/// A script that starts `sluice` pinned to `cores` (CPUs 0..cores), exec'd so that the
/// host keeps the script's process id. The host's runtime sizes itself to the CPUs it
/// may use, as it would on a machine with that many.
fn pinned_binary(dir: &Path, sluice: &Path, cores: usize) -> PathBuf {
    let path = dir.join(format!("sluice-on-{cores}-cores"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec taskset -c 0-{} {} \"$@\"\n",
            cores - 1,
            sluice.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Lines in the files of the sink's directory.
fn lines(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let bytes = std::fs::read(entry.path()).unwrap();
            bytes.iter().filter(|b| **b == b'\n').count()
        })
        .sum()
}

/// Post `body` until it is taken (the pipeline answers 429 while it is full), counting
/// the refusals.
fn post(port: u16, body: &[u8], refused: &AtomicU64) {
    loop {
        match http_post(port, "/ingest", &[], body) {
            (200, _) => return,
            (429, _) => {
                refused.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
            (status, answer) => panic!("the host answered {status}: {answer}"),
        }
    }
}

fn run(dir: &Path, binary: &Path, variant: &Variant, posters: usize, body: &[u8]) -> Measured {
    let run_dir = tempfile::tempdir_in(dir).unwrap();
    let (api, ingest) = (free_port(), free_port());
    let out = run_dir.path().join("data").join("out");
    let text = format!(
        "data_dir = \"{data}\"\n[api]\nlisten = \"127.0.0.1:{api}\"\n\
         [sources.in]\ntype = \"http\"\nlisten = \"127.0.0.1:{ingest}\"\n\
         {stages}\n[sinks.out]\ntype = \"file\"\ninputs = [\"{last}\"]\npath = \"out\"\n",
        data = run_dir.path().join("data").display(),
        stages = (variant.stages)(variant.parallelism),
        last = if variant.parallelism == 0 {
            "in"
        } else {
            "shape"
        },
    );
    let config = run_dir.path().join("pipeline.toml");
    std::fs::write(&config, text).unwrap();
    let host = Host::start_binary(binary, &config, api, Stdio::null());
    let pid = host.child.id();
    // One batch first, so that every stage's instances exist before the clock starts.
    let refused = AtomicU64::new(0);
    post(ingest, body, &refused);
    refused.store(0, Ordering::Relaxed);

    let (host_before, mine_before, machine_before) = (
        process::cpu_seconds(pid),
        process::cpu_seconds(std::process::id()),
        machine_busy_seconds(),
    );
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..posters {
            scope.spawn(|| {
                for _ in 0..EVENTS / BATCH / posters {
                    post(ingest, body, &refused);
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let (host_after, mine_after, machine_after) = (
        process::cpu_seconds(pid),
        process::cpu_seconds(std::process::id()),
        machine_busy_seconds(),
    );
    host.stop();
    let stored = lines(&out);
    assert_eq!(
        stored,
        EVENTS + BATCH,
        "every event posted is in the sink's files"
    );
    Measured {
        rate: EVENTS as f64 / elapsed,
        host_cores: (host_after - host_before) / elapsed,
        generator_cores: (mine_after - mine_before) / elapsed,
        machine_cores: (machine_after - machine_before) / elapsed,
        refused: refused.load(Ordering::Relaxed),
    }
}

fn main() {
    let sluice = harness::sluice_binary();
    let dir = tempfile::tempdir().unwrap();
    let binaries = CORES.map(|cores| pinned_binary(dir.path(), &sluice, cores));
    let body: Vec<u8> = (0..BATCH as u64)
        .flat_map(|seq| {
            let mut line = payload(seq, 200);
            line.push(b'\n');
            line
        })
        .collect();
    // best[posters][variant][cores]
    let mut best = [[[Measured::default(); 2]; 3]; 2];
    for round in 0..RUNS {
        for (p, posters) in POSTERS.iter().enumerate() {
            for (v, variant) in VARIANTS.iter().enumerate() {
                for (c, binary) in binaries.iter().enumerate() {
                    eprintln!(
                        "round {}/{RUNS}: {} on {} core(s), {posters} posters",
                        round + 1,
                        variant.name,
                        CORES[c]
                    );
                    let measured = run(dir.path(), binary, variant, *posters, &body);
                    if measured.rate > best[p][v][c].rate {
                        best[p][v][c] = measured;
                    }
                }
            }
        }
    }
    println!(
        "| pipeline ({EVENTS} events of ~200 bytes, HTTP NDJSON in batches of {BATCH} → file, fsynced; best of {RUNS}) | posters (batches in flight) | host cores (taskset) | events/s | of the relay on as many cores | host CPU (cores busy) | host CPU µs per event | load generator CPU (cores) | other processes (cores) | machine busy (of 2 cores) | posts refused (429) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (p, posters) in POSTERS.iter().enumerate() {
        for (v, variant) in VARIANTS.iter().enumerate() {
            for (c, cores) in CORES.iter().enumerate() {
                let m = best[p][v][c];
                println!(
                    "| {} | {posters} | {cores} | {:.0} | {:.0}% | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                    variant.name,
                    m.rate,
                    m.rate / best[p][0][c].rate * 100.0,
                    m.host_cores,
                    m.host_cores * 1e6 / m.rate,
                    m.generator_cores,
                    (m.machine_cores - m.host_cores - m.generator_cores).max(0.0),
                    m.machine_cores,
                    m.refused,
                );
            }
        }
    }
    println!();
    println!(
        "| pipeline | posters | events/s on 1 core | on 2 cores | gained by the second core | 2 cores / 1 core |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (p, posters) in POSTERS.iter().enumerate() {
        for (v, variant) in VARIANTS.iter().enumerate() {
            let (one, two) = (best[p][v][0].rate, best[p][v][1].rate);
            println!(
                "| {} | {posters} | {one:.0} | {two:.0} | {:.0} | {:.2}x |",
                variant.name,
                two - one,
                two / one
            );
        }
    }
    let out =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks/scaling-cores.svg");
    std::fs::write(&out, plot(&best[1])).unwrap();
    println!("plot: {}", out.display());
}

/// Events/s and the host's busy cores over the cores it may use, a line per variant
/// (with 8 posters).
fn plot(best: &[[Measured; 2]; 3]) -> String {
    let series = |value: fn(&Measured) -> f64| {
        VARIANTS
            .iter()
            .zip(best)
            .map(|(variant, runs)| Series {
                label: variant.label,
                points: CORES
                    .iter()
                    .zip(runs)
                    .map(|(cores, m)| (*cores as f64, value(m)))
                    .collect(),
            })
            .collect()
    };
    plot::panels(
        "cores",
        &CORES.map(|cores| cores as f64),
        Axis::Linear,
        &[
            Panel {
                title: "events/s",
                series: series(|m| m.rate),
                band: None,
                decimals: 0,
            },
            Panel {
                title: "host CPU (cores busy)",
                series: series(|m| m.host_cores),
                band: None,
                decimals: 2,
            },
        ],
    )
}
