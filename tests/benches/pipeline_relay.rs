//! Pipeline throughput: MQTT → filter + map (Wasm) → file, against the raw relay
//! MQTT → file, in one run against one real Mosquitto.
//!
//! Run: `cargo build --release -p sluice && cargo bench -p sluice-e2e --bench pipeline_relay`
//!
//! Each run queues `EVENTS` messages in the broker for the host's persistent session
//! while the host is down, then starts the host and times how long it takes to have
//! every event durably in files. Variants alternate; the best run of each counts.

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::*;

const EVENTS: u64 = 100_000;
const RUNS: usize = 3;

const RELAY: &str = r#"
[sinks.out]
type = "file"
inputs = ["in"]
path = "{out}"
"#;

const FILTER_MAP: &str = r#"
[plugins.filter]
path = "{filter}"
[plugins.map]
path = "{map}"

[transforms.hot]
type = "wasm"
plugin = "filter"
inputs = ["in"]
config = { when = { field = "temperature", gte = 0 } }

[transforms.shape]
type = "wasm"
plugin = "map"
inputs = ["hot"]
config = { rename = { temperature = "temperature_c" }, convert = { temperature_c = "celsius_to_fahrenheit" }, set = { site = "plant-1" } }

[sinks.out]
type = "file"
inputs = ["shape"]
path = "{out}"
"#;

fn run(broker: &Mosquitto, dir: &Path, variant: &str, stages: &str, run: usize) -> f64 {
    let out = dir.join(format!("{variant}-{run}"));
    let api = free_port();
    let client = format!("bench-{variant}-{run}");
    let topic = format!("bench/{variant}/{run}");
    let text = format!(
        "data_dir = \"{data}\"\n[api]\nlisten = \"127.0.0.1:{api}\"\n[sources.in]\ntype = \"mqtt\"\nurl = \"{url}\"\ntopics = [\"{topic}\"]\nclient_id = \"{client}\"\nbatch_size = 1000\n{stages}",
        data = dir.join("data").display(),
        url = broker.url(),
        stages = stages
            .replace("{out}", &out.display().to_string())
            .replace("{filter}", &plugin("filter"))
            .replace("{map}", &plugin("map")),
    );
    let config = dir.join(format!("{variant}-{run}.toml"));
    std::fs::write(&config, text).unwrap();
    // Create the session and subscription, then queue the events while the host is down.
    let first = Host::start(&config, api, Stdio::null());
    wait_until(Duration::from_secs(30), "the subscription", || {
        first.log_text().contains("subscribed")
    });
    first.stop();
    publish(
        broker.port,
        &topic,
        0..EVENTS,
        |seq| payload(seq, 200),
        0,
        || (),
    );
    let host = Host::start(&config, api, Stdio::null());
    let started = Instant::now();
    wait_until(Duration::from_secs(600), "every event on disk", || {
        line_count(&out) >= EVENTS
    });
    let rate = EVENTS as f64 / started.elapsed().as_secs_f64();
    host.stop();
    rate
}

/// Lines in the `.jsonl` files of `dir` (cheaper than parsing them).
fn line_count(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .map(|bytes| bytes.iter().filter(|b| **b == b'\n').count() as u64)
        .sum()
}

fn main() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut relay, mut wasm) = (0f64, 0f64);
    for n in 0..RUNS {
        relay = relay.max(run(&broker, dir.path(), "relay", RELAY, n));
        wasm = wasm.max(run(&broker, dir.path(), "filter-map", FILTER_MAP, n));
    }
    println!("| pipeline ({EVENTS} events of ~200 bytes, MQTT QoS 1 → fsynced files) | events/s |");
    println!("|---|---:|");
    println!("| raw relay: MQTT → file | {relay:.0} |");
    println!("| MQTT → filter → map (Wasm) → file | {wasm:.0} |");
    println!(
        "| filter + map relative to the raw relay | {:.0}% |",
        wasm / relay * 100.0
    );
}
