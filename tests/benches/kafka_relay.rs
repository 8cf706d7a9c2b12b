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

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::kafka::Tansu;
use harness::*;
use rdkafka::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const EVENTS: u64 = 200_000;
const PARTITIONS: u32 = 4;
const RUNS: usize = 2;

/// Count records on `topic` until `EVENTS` arrived; returns when they have.
fn await_output(tansu: &Tansu, topic: &str) {
    let consumer = tansu.consumer(&format!("bench-reader-{topic}"), topic);
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut seen = 0u64;
    while seen < EVENTS {
        assert!(
            Instant::now() < deadline,
            "{topic}: only {seen} of {EVENTS} records"
        );
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            seen += 1;
        }
    }
}

/// The limit: consume and produce the same bytes, no processing, deliveries awaited
/// at the end.
fn raw_relay(tansu: &Tansu, output: &str, group: &str) {
    let consumer = tansu.consumer(group, "bench-in");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", tansu.bootstrap())
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .create()
        .unwrap();
    let mut relayed = 0u64;
    while relayed < EVENTS {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let payload = message.payload().unwrap_or_default();
        let key = message.key().unwrap_or_default();
        let mut record = BaseRecord::to(output).key(key).payload(payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, unsent)) => {
                    producer.poll(Duration::from_millis(1));
                    record = unsent;
                }
            }
        }
        producer.poll(Duration::ZERO);
        relayed += 1;
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

fn sluice(tansu: &Tansu, dir: &Path, output: &str, group: &str) -> Host {
    let api = free_port();
    let config = dir.join(format!("{group}.toml"));
    let text = format!(
        "data_dir = \"{data}\"\n[api]\nlisten = \"127.0.0.1:{api}\"\n\
         [plugins.map]\npath = \"{map}\"\n\
         [sources.in]\ntype = \"kafka\"\nbootstrap_servers = \"{broker}\"\ngroup_id = \"{group}\"\n\
         topics = [\"bench-in\"]\nbatch_size = 1000\n\
         options = {{ \"session.timeout.ms\" = \"3000\", \"heartbeat.interval.ms\" = \"500\" }}\n\
         [transforms.shape]\ntype = \"wasm\"\nplugin = \"map\"\ninputs = [\"in\"]\n\
         config = {{ rename = {{ temperature = \"temperature_c\" }}, convert = {{ temperature_c = \"celsius_to_fahrenheit\" }}, set = {{ site = \"plant-1\" }} }}\n\
         [sinks.out]\ntype = \"kafka\"\ninputs = [\"shape\"]\nbootstrap_servers = \"{broker}\"\ntopic = \"{output}\"\n",
        data = dir.join(group).display(),
        map = plugin("map"),
        broker = tansu.bootstrap(),
    );
    std::fs::write(&config, text).unwrap();
    Host::start(&config, api, Stdio::null())
}

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
        .env("IN_TOPIC", "bench-in")
        .env("OUT_TOPIC", output)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Events per second from `start` until the output topic holds every record.
fn timed(tansu: &Tansu, output: &str, start: impl FnOnce()) -> f64 {
    tansu.create_topic(output, PARTITIONS);
    let began = Instant::now();
    start();
    await_output(tansu, output);
    EVENTS as f64 / began.elapsed().as_secs_f64()
}

fn main() {
    let tansu = Tansu::start();
    tansu.create_topic("bench-in", PARTITIONS);
    tansu.produce(
        "bench-in",
        (0..EVENTS).map(|seq| (format!("d{}", seq % 64), payload(seq, 200))),
    );
    let dir = tempfile::tempdir().unwrap();
    let (mut raw, mut wasm, mut quix) = (0f64, 0f64, 0f64);
    for run in 0..RUNS {
        // The relay runs beside the reader, as the pipelines do.
        std::thread::scope(|scope| {
            raw = raw.max(timed(&tansu, &format!("raw-{run}"), || {
                scope.spawn(|| raw_relay(&tansu, &format!("raw-{run}"), &format!("raw-{run}")));
            }));
        });
        let mut host = None;
        wasm = wasm.max(timed(&tansu, &format!("sluice-{run}"), || {
            host = Some(sluice(
                &tansu,
                dir.path(),
                &format!("sluice-{run}"),
                &format!("sluice-{run}"),
            ));
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
