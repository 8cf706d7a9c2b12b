//! What the Kafka benches share: the raw rdkafka relay (the limit), the Sluice pipeline
//! that does the same with a Wasm `map` in the middle, and the reader that waits for the
//! output. The benches include this module beside `harness` (`crate::harness`).

// Each bench includes this module and uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::harness::kafka::Tansu;
use crate::harness::{Host, free_port, plugin};

/// Partitions of the input and output topics.
pub const PARTITIONS: u32 = 4;

/// The input topic the records are pre-produced to.
pub const INPUT: &str = "bench-in";

/// Pre-produce `events` records of ~200 bytes to [`INPUT`].
pub fn fill_input(tansu: &Tansu, events: u64) {
    tansu.create_topic(INPUT, PARTITIONS);
    tansu.produce(
        INPUT,
        (0..events).map(|seq| (format!("d{}", seq % 64), crate::harness::payload(seq, 200))),
    );
}

/// A consumer of `topic` in a group of its own, already given every partition (its own
/// group join is not timed), whose fetches return after at most 10 ms without data
/// rather than librdkafka's 500 (an arrival is not rounded up to a long poll).
pub fn reader(tansu: &Tansu, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", tansu.bootstrap())
        .set("group.id", format!("bench-reader-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumer
        .assignment()
        .map_or(0, |assignment| assignment.count())
        < PARTITIONS as usize
    {
        assert!(Instant::now() < deadline, "{topic}: reader not assigned");
        // Polling drives the group join; the topic is still empty.
        let _ = consumer.poll(Duration::from_millis(100));
    }
    consumer
}

/// When the output began and finished arriving.
pub struct Arrivals {
    pub first: Instant,
    pub last: Instant,
}

/// Count records on the reader's topic until `events` arrived.
pub fn await_output(reader: &BaseConsumer, events: u64) -> Arrivals {
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut first = None;
    let mut seen = 0u64;
    while seen < events {
        assert!(
            Instant::now() < deadline,
            "only {seen} of {events} records on the output"
        );
        if let Some(Ok(_)) = reader.poll(Duration::from_millis(100)) {
            first.get_or_insert_with(Instant::now);
            seen += 1;
        }
    }
    Arrivals {
        first: first.unwrap_or_else(Instant::now),
        last: Instant::now(),
    }
}

/// The limit: consume from [`INPUT`] in `group` and produce the same bytes to `output`,
/// no processing, deliveries awaited at the end. Several relays in one group share
/// `relayed` and stop once together they have relayed `events`.
pub fn raw_relay(tansu: &Tansu, output: &str, group: &str, relayed: &AtomicU64, events: u64) {
    let consumer = tansu.consumer(group, INPUT);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", tansu.bootstrap())
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .create()
        .unwrap();
    while relayed.load(Ordering::Relaxed) < events {
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
        relayed.fetch_add(1, Ordering::Relaxed);
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// Start a host running the Sluice pipeline: `kafka` source in `group` → `map` (Wasm: rename, unit
/// conversion, set) → `kafka` sink to `output`, each with its default settings (the
/// source's batch size among them). `name` keeps each host's files apart.
pub fn start_sluice(tansu: &Tansu, dir: &Path, name: &str, group: &str, output: &str) -> Host {
    let api = free_port();
    let config: PathBuf = dir.join(format!("{name}.toml"));
    let text = format!(
        "data_dir = \"{data}\"\n[api]\nlisten = \"127.0.0.1:{api}\"\n\
         [plugins.map]\npath = \"{map}\"\n\
         [sources.in]\ntype = \"kafka\"\nbootstrap_servers = \"{broker}\"\ngroup_id = \"{group}\"\n\
         topics = [\"{INPUT}\"]\n\
         options = {{ \"session.timeout.ms\" = \"3000\", \"heartbeat.interval.ms\" = \"500\" }}\n\
         [transforms.shape]\ntype = \"wasm\"\nplugin = \"map\"\ninputs = [\"in\"]\n\
         config = {{ rename = {{ temperature = \"temperature_c\" }}, convert = {{ temperature_c = \"celsius_to_fahrenheit\" }}, set = {{ site = \"plant-1\" }} }}\n\
         [sinks.out]\ntype = \"kafka\"\ninputs = [\"shape\"]\nbootstrap_servers = \"{broker}\"\ntopic = \"{output}\"\n",
        data = dir.join(name).display(),
        map = plugin("map"),
        broker = tansu.bootstrap(),
    );
    std::fs::write(&config, text).unwrap();
    Host::start(&config, api, Stdio::null())
}
