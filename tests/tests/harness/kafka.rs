//! A Kafka-protocol broker for end-to-end tests: tansu (installed by scripts/setup into
//! `.tools/bin`), in memory, on a free loopback port; and a plain rdkafka client to
//! produce and read topics from the test.
//!
//! tansu's known defects shape these tests: its high watermarks are wrong (no lag
//! numbers, and `auto.offset.reset = latest` re-delivers), `cooperative-sticky` breaks
//! (the default assignors are used), and a group join takes about half of
//! `session.timeout.ms` (set to 3 s here).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::{free_port, wait_until};

/// Client options that make group joins quick on tansu.
pub const GROUP_OPTIONS: &str =
    r#"options = { "session.timeout.ms" = "3000", "heartbeat.interval.ms" = "500" }"#;

/// A record read back from a topic.
pub struct Record {
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<&str> {
        let found = self.headers.iter().find(|(key, _)| key == name);
        found.map(|(_, value)| value.as_str())
    }
}

pub struct Tansu {
    pub port: u16,
    child: Child,
}

fn binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/tansu");
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup",
        path.display()
    );
    path
}

impl Tansu {
    pub fn start() -> Tansu {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until(Duration::from_secs(10), "tansu to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Tansu { port, child }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let status = Command::new(binary())
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "tansu topic create {name}");
    }

    /// Freeze the broker (SIGSTOP): its connections stall as in a network outage.
    pub fn pause(&self) {
        signal(&self.child, "-STOP");
    }

    pub fn resume(&self) {
        signal(&self.child, "-CONT");
    }

    /// Produce `(key, payload)` records to `topic` and wait for every delivery.
    pub fn produce(&self, topic: &str, records: impl IntoIterator<Item = (String, Vec<u8>)>) {
        self.produce_with_headers(topic, records, &[]);
    }

    /// As [`Tansu::produce`], every record with `headers`.
    pub fn produce_with_headers(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = (String, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) {
        let untimed = records
            .into_iter()
            .map(|(key, payload)| (key, payload, None));
        self.send(topic, untimed, headers);
    }

    /// Produce `(key, payload, timestamp ms)` records: the record times the source
    /// gives its events, in any order.
    pub fn produce_at(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = (String, Vec<u8>, i64)>,
    ) {
        let timed = records
            .into_iter()
            .map(|(key, payload, at)| (key, payload, Some(at)));
        self.send(topic, timed, &[]);
    }

    fn send(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = (String, Vec<u8>, Option<i64>)>,
        headers: &[(&str, &str)],
    ) {
        let owned = headers.iter().fold(
            rdkafka::message::OwnedHeaders::new(),
            |all, (key, value)| {
                all.insert(rdkafka::message::Header {
                    key,
                    value: Some(*value),
                })
            },
        );
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .unwrap();
        for (key, payload, at) in records {
            let mut record = BaseRecord::to(topic)
                .key(&key)
                .payload(&payload)
                .headers(owned.clone());
            if let Some(at) = at {
                record = record.timestamp(at);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, unsent)) => {
                        // Queue full: let deliveries drain.
                        producer.poll(Duration::from_millis(10));
                        record = unsent;
                    }
                }
            }
            producer.poll(Duration::ZERO);
        }
        producer.flush(Duration::from_secs(60)).unwrap();
    }

    /// A consumer in a new group `group` reading `topic` from the start, committing
    /// nothing, with quick group joins.
    pub fn consumer(&self, group: &str, topic: &str) -> BaseConsumer {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "3000")
            .set("heartbeat.interval.ms", "500")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        consumer
    }

    /// Read `topic` from the start until `count` records came or `timeout` passed.
    pub fn read(&self, topic: &str, count: usize, timeout: Duration) -> Vec<Record> {
        let consumer = self.consumer(&format!("e2e-reader-{}", free_port()), topic);
        let deadline = std::time::Instant::now() + timeout;
        let mut records = Vec::new();
        while records.len() < count && std::time::Instant::now() < deadline {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                let headers = message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|h| {
                                let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                                (h.key.to_owned(), value.into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let payload = message.payload().unwrap_or_default().to_vec();
                records.push(Record { payload, headers });
            }
        }
        records
    }
}

fn signal(child: &Child, signal: &str) {
    Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
