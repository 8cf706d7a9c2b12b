//! Kafka → `map` (Wasm) → Kafka through Sluice, against a raw rdkafka relay with no
//! processing (the limit) and the same transform in quixstreams (what a Python team
//! would pick), in one run on one local Kafka-protocol broker (tansu).
//!
//! Run: `scripts/bench-setup && scripts/build-plugins --rust-only &&
//!       cargo build --release -p sluice && cargo bench -p sluice-e2e --bench kafka_relay`
//!
//! Each variant reads the same `EVENTS` records (pre-produced to the input topic) from
//! the start in a fresh consumer group and writes to its own output topic; the time is
//! from the variant's start until a reader has seen every record on its output topic.

#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "support/kafka.rs"]
mod kafka;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use harness::kafka::Tansu;
use kafka::{INPUT, PARTITIONS, await_output, fill_input, raw_relay, start_sluice};

const EVENTS: u64 = 200_000;
const RUNS: usize = 2;

fn quix_python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/bench-venv/bin/python");
    assert!(python.exists(), "run scripts/bench-setup first");
    python
}

fn quixstreams(tansu: &Tansu, output: &str, group: &str) -> std::process::Child {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/kafka/quix_map.py");
    Command::new(quix_python())
        .arg(script)
        .env("BROKER", tansu.bootstrap())
        .env("GROUP", group)
        .env("IN_TOPIC", INPUT)
        .env("OUT_TOPIC", output)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Events per second from `start` until the output topic holds every record (the
/// reader joins its group after the start, as the variant does).
fn timed(tansu: &Tansu, output: &str, start: impl FnOnce()) -> f64 {
    tansu.create_topic(output, PARTITIONS);
    let began = Instant::now();
    start();
    let reader = tansu.consumer(&format!("bench-reader-{output}"), output);
    let arrivals = await_output(&reader, EVENTS);
    EVENTS as f64 / (arrivals.last - began).as_secs_f64()
}

fn main() {
    let tansu = Tansu::start();
    fill_input(&tansu, EVENTS);
    let dir = tempfile::tempdir().unwrap();
    let (mut raw, mut wasm, mut quix) = (0f64, 0f64, 0f64);
    for run in 0..RUNS {
        // The relay runs beside the reader, as the pipelines do.
        let (name, relayed) = (format!("raw-{run}"), AtomicU64::new(0));
        std::thread::scope(|scope| {
            raw = raw.max(timed(&tansu, &name, || {
                scope.spawn(|| raw_relay(&tansu, &name, &name, &relayed, EVENTS));
            }));
        });
        let mut host = None;
        wasm = wasm.max(timed(&tansu, &format!("sluice-{run}"), || {
            let name = format!("sluice-{run}");
            host = Some(start_sluice(&tansu, dir.path(), &name, &name, &name));
        }));
        drop(host);
        let mut child = None;
        quix = quix.max(timed(&tansu, &format!("quix-{run}"), || {
            child = Some(quixstreams(
                &tansu,
                &format!("quix-{run}"),
                &format!("quix-{run}"),
            ));
        }));
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    println!(
        "| pipeline ({EVENTS} records of ~200 bytes, {PARTITIONS} partitions, tansu) | events/s |"
    );
    println!("|---|---:|");
    println!("| raw rdkafka relay, no processing (the limit) | {raw:.0} |");
    println!("| Sluice: Kafka → map (Wasm) → Kafka | {wasm:.0} |");
    println!("| quixstreams: the same map in Python | {quix:.0} |");
    println!(
        "| Sluice relative to the raw relay | {:.0}% |",
        wasm / raw * 100.0
    );
    println!("| Sluice relative to quixstreams | {:.1}× |", wasm / quix);
}
