//! The topology in process: memory sources and sinks around the real channels, outputs,
//! acknowledgements and dead letters. Every assertion is on counters the components
//! keep; waits poll those counters with a deadline, never a fixed sleep.

mod alert;
mod components;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use components::{MemorySinkConfig, MemorySourceConfig, SinkRecord, SortConfig, SourceCounters};
use tokio::sync::mpsc;

use super::{CHANNEL_BATCHES, Pipeline};
use crate::config::{Config, Input, Stage};
use crate::event::Event;

/// A config assembled in code, as the loader would make it from TOML.
struct Topology {
    config: Config,
    _data_dir: tempfile::TempDir,
}

impl Topology {
    fn new() -> Topology {
        let data_dir = tempfile::tempdir().unwrap();
        Topology {
            config: Config {
                file: "test.toml".into(),
                data_dir: data_dir.path().to_owned(),
                api: None,
                broker: None,
                plugins: BTreeMap::new(),
                models: BTreeMap::new(),
                inference: Default::default(),
                fleet: None,
                sources: BTreeMap::new(),
                transforms: BTreeMap::new(),
                sinks: BTreeMap::new(),
                #[cfg(feature = "jobs")]
                jobs: BTreeMap::new(),
                #[cfg(feature = "jobs")]
                scheduler: Default::default(),
            },
            _data_dir: data_dir,
        }
    }

    fn source(&mut self, name: &str) -> (Arc<SourceCounters>, mpsc::UnboundedSender<Vec<Event>>) {
        let (config, feed) = MemorySourceConfig::new();
        let counters = config.counters.clone();
        let stage =
            stage::<dyn crate::sources::SourceConfig>(name, "memory", &[], Box::new(config));
        self.config.sources.insert(name.to_owned(), stage);
        (counters, feed)
    }

    fn sort(&mut self, name: &str, inputs: &[&str]) {
        let stage = stage::<dyn crate::transforms::TransformConfig>(
            name,
            "sort",
            inputs,
            Box::new(SortConfig::new()),
        );
        self.config.transforms.insert(name.to_owned(), stage);
    }

    fn sink(&mut self, name: &str, inputs: &[&str]) -> Arc<SinkRecord> {
        let config = MemorySinkConfig::new();
        let record = config.record.clone();
        let stage = stage::<dyn crate::sinks::SinkConfig>(name, "memory", inputs, Box::new(config));
        self.config.sinks.insert(name.to_owned(), stage);
        record
    }
}

fn stage<C: ?Sized>(name: &str, kind: &'static str, inputs: &[&str], config: Box<C>) -> Stage<C> {
    Stage {
        name: name.to_owned(),
        span: 0..0,
        kind,
        inputs: inputs
            .iter()
            .map(|input| {
                let (stage, route) = match input.split_once('.') {
                    Some((stage, route)) => (stage.to_owned(), Some(route.to_owned())),
                    None => (input.to_string(), None),
                };
                Input {
                    stage,
                    route,
                    span: 0..0,
                }
            })
            .collect(),
        config,
    }
}

fn events(prefix: &str, count: usize) -> Vec<Event> {
    (0..count)
        .map(|n| Event::new(format!("{prefix}-{n}").into_bytes(), "test"))
        .collect()
}

/// Poll `done` until it holds, failing the test after 10 s.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn stop(pipeline: Pipeline) {
    pipeline.stopper().cancel();
    pipeline.wait().await.expect("the pipeline stops cleanly");
}

#[tokio::test]
async fn fan_in_delivers_and_acknowledges_every_event_of_every_source() {
    let mut topology = Topology::new();
    let (a, feed_a) = topology.source("a");
    let (b, feed_b) = topology.source("b");
    let sink = topology.sink("out", &["a", "b"]);
    let pipeline = Pipeline::start(&topology.config).unwrap();
    for n in 0..10 {
        feed_a.send(events(&format!("a{n}"), 10)).unwrap();
        feed_b.send(events(&format!("b{n}"), 10)).unwrap();
    }
    until("both sources' events are acknowledged", || {
        a.acked.load(Ordering::SeqCst) == 100 && b.acked.load(Ordering::SeqCst) == 100
    })
    .await;
    assert_eq!(sink.count(), 200);
    stop(pipeline).await;
}

#[tokio::test]
async fn fan_out_acknowledges_only_after_every_sink_has_the_event() {
    let mut topology = Topology::new();
    let (source, feed) = topology.source("in");
    let fast = topology.sink("fast", &["in"]);
    let slow = topology.sink("slow", &["in"]);
    slow.set_open(false);
    let pipeline = Pipeline::start(&topology.config).unwrap();
    feed.send(events("e", 50)).unwrap();
    until("the fast sink has every event", || fast.count() == 50).await;
    assert_eq!(slow.count(), 0);
    assert_eq!(
        source.acked.load(Ordering::SeqCst),
        0,
        "no event is acknowledged while a sink still holds its copy"
    );
    slow.set_open(true);
    until("every event is acknowledged", || {
        source.acked.load(Ordering::SeqCst) == 50
    })
    .await;
    assert_eq!(slow.count(), 50);
    stop(pipeline).await;
}

#[tokio::test]
async fn routes_and_dead_letters_reach_their_readers() {
    let mut topology = Topology::new();
    let (source, feed) = topology.source("in");
    topology.sort("sort", &["in"]);
    let alerts = topology.sink("alerts", &["sort.alerts"]);
    let normal = topology.sink("normal", &["sort"]);
    let rejects = topology.sink("rejects", &["sort.dead_letter"]);
    let pipeline = Pipeline::start(&topology.config).unwrap();
    let mut batch = events("alert", 3);
    batch.extend(events("ok", 5));
    batch.extend(events("bad", 2));
    feed.send(batch).unwrap();
    until("every event is acknowledged", || {
        source.acked.load(Ordering::SeqCst) == 10
    })
    .await;
    assert_eq!(alerts.payloads(), ["alert-0", "alert-1", "alert-2"]);
    assert_eq!(normal.count(), 5);
    let records: Vec<serde_json::Value> = rejects
        .payloads()
        .iter()
        .map(|payload| serde_json::from_str(payload).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    for (n, record) in records.iter().enumerate() {
        assert_eq!(record["stage"], "sort");
        assert_eq!(record["reason"], "starts with bad");
        assert_eq!(record["payload"], format!("bad-{n}"));
    }
    stop(pipeline).await;
}

#[tokio::test]
async fn dead_letters_nobody_reads_go_to_the_fallback_sink_in_the_data_dir() {
    let mut topology = Topology::new();
    let (source, feed) = topology.source("in");
    topology.sort("sort", &["in"]);
    let out = topology.sink("out", &["sort", "sort.alerts"]);
    let data_dir = topology.config.data_dir.clone();
    let pipeline = Pipeline::start(&topology.config).unwrap();
    let mut batch = events("bad", 4);
    batch.extend(events("ok", 6));
    feed.send(batch).unwrap();
    until("every event is acknowledged", || {
        source.acked.load(Ordering::SeqCst) == 10
    })
    .await;
    stop(pipeline).await;
    assert_eq!(out.count(), 6);
    let lines: Vec<String> = std::fs::read_dir(data_dir.join("dead_letter"))
        .unwrap()
        .flat_map(|file| {
            let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
            text.lines().map(str::to_owned).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines.iter().all(|line| line.contains("starts with bad")));
}

#[tokio::test]
async fn a_stalled_sink_stops_the_source_at_the_channel_bound() {
    let mut topology = Topology::new();
    let (source, feed) = topology.source("in");
    let sink = topology.sink("out", &["in"]);
    sink.set_open(false);
    let pipeline = Pipeline::start(&topology.config).unwrap();
    for n in 0..20 {
        feed.send(events(&format!("b{n}"), 1)).unwrap();
    }
    // The sink holds one batch in its write and its input holds CHANNEL_BATCHES: the
    // source's next send waits.
    let bound = CHANNEL_BATCHES + 1;
    until("the source waits on a full channel", || {
        source.sending.load(Ordering::SeqCst) == bound + 1
    })
    .await;
    // A pipeline without the bound would go on taking batches: give it the chance.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(source.sent.load(Ordering::SeqCst), bound);
    assert_eq!(source.sending.load(Ordering::SeqCst), bound + 1);
    assert_eq!(sink.count(), 0);
    assert_eq!(source.acked.load(Ordering::SeqCst), 0);
    sink.set_open(true);
    until("every batch is acknowledged", || {
        source.acked.load(Ordering::SeqCst) == 20
    })
    .await;
    stop(pipeline).await;
}

#[tokio::test]
async fn stopping_drains_everything_the_sources_took() {
    let mut topology = Topology::new();
    let (source, feed) = topology.source("in");
    topology.sort("sort", &["in"]);
    let out = topology.sink("out", &["sort", "sort.alerts", "sort.dead_letter"]);
    out.set_open(false);
    let pipeline = Pipeline::start(&topology.config).unwrap();
    for n in 0..50 {
        feed.send(events(&format!("ok{n}"), 10)).unwrap();
    }
    until("the pipeline is full", || {
        source.sent.load(Ordering::SeqCst) >= 40
    })
    .await;
    let stopper = pipeline.stopper();
    let waiting = tokio::spawn(pipeline.wait());
    stopper.cancel();
    out.set_open(true);
    waiting.await.unwrap().expect("a clean stop");
    let sent = source.sent.load(Ordering::SeqCst);
    assert!(
        (40..500).contains(&sent),
        "the source stopped taking events: {sent}"
    );
    assert_eq!(out.count(), sent, "everything taken was delivered");
    assert_eq!(source.acked.load(Ordering::SeqCst), sent);
}

/// A start that fails at its last stage leaves nothing behind: the MQTT sink built
/// before it never connected, and the memory source never ran.
#[cfg(all(feature = "mqtt", feature = "http"))]
#[tokio::test]
async fn a_stage_that_cannot_be_built_starts_nothing() {
    let broker = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut topology = Topology::new();
    let (source, feed) = topology.source("in");
    let mqtt: Box<dyn crate::sinks::SinkConfig> = Box::new(
        toml::from_str::<crate::sinks::mqtt::MqttSinkConfig>(&format!(
            "url = \"mqtt://{}\"\ntopic = \"t\"",
            broker.local_addr().unwrap()
        ))
        .unwrap(),
    );
    topology.config.sinks.insert(
        "mqtt".to_owned(),
        stage("mqtt", "mqtt", &["in", "http"], mqtt),
    );
    let http: Box<dyn crate::sources::SourceConfig> = Box::new(
        toml::from_str::<crate::sources::http::HttpSourceConfig>(&format!(
            "listen = \"{}\"",
            taken.local_addr().unwrap()
        ))
        .unwrap(),
    );
    topology
        .config
        .sources
        .insert("http".to_owned(), stage("http", "http", &[], http));

    let error = Pipeline::start(&topology.config)
        .err()
        .expect("the start fails");
    assert!(
        error.to_string().contains("stage `http`: cannot listen"),
        "{error}"
    );
    feed.send(events("e", 1)).unwrap();
    let connected = tokio::time::timeout(Duration::from_millis(300), broker.accept()).await;
    assert!(
        connected.is_err(),
        "the MQTT sink connected although the start failed"
    );
    assert_eq!(source.ran.load(Ordering::SeqCst), 0, "no stage ran");
}

#[tokio::test]
async fn an_event_held_by_a_sink_that_panics_is_never_acknowledged() {
    use crate::counters::{UNSETTLED, sum};
    let mut topology = Topology::new();
    let (counters, feed) = topology.source("in");
    let record = topology.sink("out", &["in"]);
    record.panic_on("boom");
    let pipeline = Pipeline::start(&topology.config).unwrap();
    feed.send(events("fine", 3)).unwrap();
    until("three events delivered", || {
        counters.acked.load(Ordering::SeqCst) == 3
    })
    .await;
    let before = sum(UNSETTLED);
    feed.send(events("boom", 2)).unwrap();
    until("the panicked sink's copies to be released", || {
        sum(UNSETTLED) >= before + 2
    })
    .await;
    assert_eq!(
        counters.acked.load(Ordering::SeqCst),
        3,
        "a copy dropped by a panic is a failure, not a delivery"
    );
    assert_eq!(record.count(), 3);
    pipeline.stopper().cancel();
    assert!(pipeline.wait().await.is_err(), "the panic is reported");
}
