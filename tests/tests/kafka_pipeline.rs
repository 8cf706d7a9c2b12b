//! Kafka in and out, against a real Kafka-protocol broker (tansu): delivery counts
//! through two pipelines, consumer groups sharing and taking over partitions, restarts
//! that resume from committed offsets, a broker outage, dead-letter topics, and a topic
//! rendered into one of Kafka's internal ones dead-lettered.

mod harness;

use std::collections::HashMap;
use std::time::Duration;

use harness::kafka::{GROUP_OPTIONS, Tansu};
use harness::*;

/// `[sources.in]` of type `kafka` reading `topic` in group `group`.
fn kafka_source(tansu: &Tansu, topic: &str, group: &str) -> String {
    format!(
        "[sources.in]\ntype = \"kafka\"\nbootstrap_servers = \"{}\"\ngroup_id = \"{group}\"\n\
         topics = [\"{topic}\"]\ncommit_interval_ms = 200\n{GROUP_OPTIONS}\n",
        tansu.bootstrap()
    )
}

fn file_sink(input: &str) -> String {
    format!("[sinks.out]\ntype = \"file\"\ninputs = [\"{input}\"]\npath = \"out\"\n")
}

/// Telemetry records with keys spreading them over the partitions.
fn records(seqs: std::ops::Range<u64>) -> impl Iterator<Item = (String, Vec<u8>)> {
    seqs.map(|seq| (format!("d{}", seq % 64), payload(seq, 120)))
}

/// How many events each seq arrived as, over several pipelines' outputs.
fn arrivals(pipelines: &[&Pipeline]) -> HashMap<u64, usize> {
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for pipeline in pipelines {
        for (seq, n) in seq_counts(&read_lines(&pipeline.data("out"))) {
            *counts.entry(seq).or_default() += n;
        }
    }
    counts
}

fn duplicates(counts: &HashMap<u64, usize>) -> usize {
    counts.values().map(|n| n - 1).sum()
}

#[test]
fn events_flow_http_to_kafka_to_files_and_a_restart_resumes_from_committed_offsets() {
    const TOTAL: u64 = 100_000;
    let tansu = Tansu::start();
    tansu.create_topic("telemetry", 4);
    let ingest = HttpPipeline::start(
        "",
        &format!(
            "[sinks.kafka]\ntype = \"kafka\"\ninputs = [\"ingest\"]\nbootstrap_servers = \"{}\"\n\
             topic = \"telemetry\"\nkey = \"{{device_id}}\"\ncompression = \"zstd\"\n",
            tansu.bootstrap()
        ),
        std::process::Stdio::null(),
    );
    let mut store = Pipeline::start(&format!(
        "{}{}",
        kafka_source(&tansu, "telemetry", "store"),
        file_sink("in")
    ));
    for chunk in (0..TOTAL).collect::<Vec<_>>().chunks(5_000) {
        let body: Vec<u8> = chunk
            .iter()
            .flat_map(|&seq| {
                let mut line = payload(seq, 120);
                line.push(b'\n');
                line
            })
            .collect();
        let (status, answer) = ingest.post("/ingest", &[], &body);
        assert_eq!(status, 200, "{answer}");
    }
    wait_until(Duration::from_secs(120), "every event in the files", || {
        arrivals(&[&store]).len() as u64 == TOTAL
    });
    let counts = arrivals(&[&store]);
    assert!((0..TOTAL).all(|seq| counts.contains_key(&seq)));
    assert_eq!(duplicates(&counts), 0, "no failure, so no duplicate");

    // A clean stop commits; the restart reads nothing old again.
    assert!(store.stop().success(), "{}", store.host.log_text());
    store.restart();
    tansu.produce("telemetry", records(TOTAL..TOTAL + 10));
    wait_until(Duration::from_secs(60), "the new events", || {
        arrivals(&[&store]).len() as u64 == TOTAL + 10
    });
    assert_eq!(
        duplicates(&arrivals(&[&store])),
        0,
        "the restart resumed from the committed offsets"
    );
}

#[test]
fn two_hosts_share_a_group_and_the_survivor_takes_over_after_a_kill() {
    const TOTAL: u64 = 60_000;
    let tansu = Tansu::start();
    tansu.create_topic("shared", 6);
    let stages = |group: &str| {
        format!(
            "{}{}",
            kafka_source(&tansu, "shared", group),
            file_sink("in")
        )
    };
    let mut first = Pipeline::start(&stages("group"));
    let second = Pipeline::start(&stages("group"));
    tansu.produce("shared", records(0..TOTAL / 2));
    wait_until(
        Duration::from_secs(60),
        "both hosts to get partitions and events",
        || {
            !read_lines(&first.data("out")).is_empty()
                && !read_lines(&second.data("out")).is_empty()
        },
    );
    first.kill_9();
    tansu.produce("shared", records(TOTAL / 2..TOTAL));
    wait_until(
        Duration::from_secs(120),
        "the survivor to deliver everything",
        || arrivals(&[&first, &second]).len() as u64 == TOTAL,
    );
    let counts = arrivals(&[&first, &second]);
    // What the killed host read after its last commit is read again by the survivor:
    // at most what it could hold in flight (channels of batches of 500) plus one commit
    // interval's worth.
    let replayed = duplicates(&counts);
    eprintln!("duplicates after the kill: {replayed}");
    assert!(replayed <= 20_000, "{replayed} duplicates");
}

#[test]
fn a_broker_outage_stalls_the_pipeline_and_loses_nothing() {
    const TOTAL: u64 = 20_000;
    let tansu = Tansu::start();
    tansu.create_topic("outage", 3);
    let store = Pipeline::start(&format!(
        "{}{}",
        kafka_source(&tansu, "outage", "g"),
        file_sink("in")
    ));
    tansu.produce("outage", records(0..TOTAL / 2));
    wait_until(Duration::from_secs(60), "the first events", || {
        !read_lines(&store.data("out")).is_empty()
    });
    tansu.pause();
    std::thread::sleep(Duration::from_secs(10));
    tansu.resume();
    tansu.produce("outage", records(TOTAL / 2..TOTAL));
    wait_until(
        Duration::from_secs(120),
        "every event after the outage",
        || arrivals(&[&store]).len() as u64 == TOTAL,
    );
    // Every seq arrived (the wait above fails otherwise); the outage replayed nothing
    // that had been committed.
    let counts = arrivals(&[&store]);
    assert!(
        duplicates(&counts) <= (TOTAL / 2) as usize,
        "{} duplicates",
        duplicates(&counts)
    );
}

#[test]
fn records_a_plugin_cannot_take_go_to_a_dead_letter_topic_with_the_reason() {
    let tansu = Tansu::start();
    tansu.create_topic("mixed", 2);
    let store = Pipeline::start(&format!(
        "[plugins.filter]\npath = \"{}\"\n{}\
         [transforms.hot]\ntype = \"wasm\"\nplugin = \"filter\"\ninputs = [\"in\"]\n\
         config = {{ when = {{ field = \"temperature\", gt = 0.0 }} }}\n\
         {}\
         [sinks.dead]\ntype = \"kafka\"\ninputs = [\"hot.dead_letter\"]\nbootstrap_servers = \"{}\"\ntopic = \"mixed-dead\"\n",
        plugin("filter"),
        kafka_source(&tansu, "mixed", "g"),
        file_sink("hot"),
        tansu.bootstrap()
    ));
    let mut input: Vec<(String, Vec<u8>)> = records(0..100).collect();
    input.extend((0..5).map(|n| (format!("bad{n}"), format!("not json {n}").into_bytes())));
    tansu.produce("mixed", input);
    wait_until(Duration::from_secs(60), "the good events", || {
        arrivals(&[&store]).len() == 100
    });
    let dead = tansu.read("mixed-dead", 5, Duration::from_secs(60));
    assert_eq!(
        dead.len(),
        5,
        "every bad record is in the dead-letter topic"
    );
    for record in &dead {
        let letter: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
        assert!(letter["payload"].as_str().unwrap().starts_with("not json"));
        assert_eq!(record.header("sluice.dead_letter.stage"), Some("hot"));
        let reason = record.header("sluice.dead_letter.reason");
        assert!(
            reason.is_some_and(|r| r.to_lowercase().contains("json")),
            "{reason:?}"
        );
        assert!(
            record.header("kafka.offset").is_some(),
            "the original headers are carried"
        );
    }
}

/// A producer's `kafka.partition` / `kafka.offset` / `kafka.assignment` headers would
/// choose the object store's object names (and what a stored object deletes): the
/// source drops them and sets its own; the producer's other headers pass.
#[test]
fn a_producer_cannot_spoof_the_headers_the_host_derives() {
    let tansu = Tansu::start();
    tansu.create_topic("spoofed", 1);
    tansu.produce_with_headers(
        "spoofed",
        records(0..20),
        &[
            ("kafka.partition", "7"),
            ("kafka.offset", "0"),
            ("kafka.assignment", "999999-9999999999999-ffffffff"),
            ("sluice.dead_letter.reason", "no"),
            ("team", "ops"),
        ],
    );
    let pipeline = Pipeline::start(&format!(
        "{}
[sinks.out]
type = \"file\"\ninputs = [\"in\"]\npath = \"out\"\nformat = \"envelope\"\n",
        kafka_source(&tansu, "spoofed", "spoof-check")
    ));
    wait_until(Duration::from_secs(60), "the 20 records", || {
        read_lines(&pipeline.data("out")).len() >= 20
    });
    let mut offsets = Vec::new();
    for line in read_lines(&pipeline.data("out")) {
        let headers = line["headers"].as_object().unwrap();
        assert_eq!(headers["kafka.partition"], "0", "{line}");
        assert_eq!(headers["team"], "ops", "{line}");
        let assignment = headers["kafka.assignment"].as_str().unwrap();
        assert!(assignment.starts_with("0-"), "read from offset 0: {line}");
        assert!(headers.get("sluice.dead_letter.reason").is_none(), "{line}");
        offsets.push(
            headers["kafka.offset"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
    }
    offsets.sort_unstable();
    assert_eq!(
        offsets,
        (0..20).collect::<Vec<_>>(),
        "the broker's offsets, each once"
    );
}

/// A topic rendered from an event could name one of Kafka's internal topics and write
/// into the broker's own bookkeeping: that event is dead-lettered with the reason, and
/// the others of its batch are delivered.
#[test]
fn an_event_whose_topic_renders_to_an_internal_topic_is_dead_lettered() {
    let tansu = Tansu::start();
    tansu.create_topic("orders", 1);
    let ingest = HttpPipeline::start(
        "",
        &format!(
            "[sinks.out]\ntype = \"kafka\"\ninputs = [\"ingest\"]\nbootstrap_servers = \"{}\"\n\
             topic = \"{{topic}}\"\n\
             [sinks.refused]\ntype = \"file\"\ninputs = [\"out.dead_letter\"]\npath = \"refused\"\n",
            tansu.bootstrap()
        ),
        std::process::Stdio::null(),
    );
    let events = [
        r#"{"topic":"orders","seq":1}"#,
        r#"{"topic":"__consumer_offsets","seq":2}"#,
        r#"{"topic":"orders","seq":3}"#,
    ];
    let (status, answer) = ingest.post("/ingest", &[], events.join("\n").as_bytes());
    assert_eq!(status, 200, "{answer}\n{}", ingest.host.log_text());

    wait_until(Duration::from_secs(30), "the dead letter", || {
        !read_lines(&ingest.data("refused")).is_empty()
    });
    let letters = read_lines(&ingest.data("refused"));
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["payload"], events[1]);
    assert_eq!(
        letters[0]["reason"], "topic `__consumer_offsets` is internal to Kafka",
        "{letters:?}"
    );
    let delivered: Vec<serde_json::Value> = tansu
        .read("orders", 2, Duration::from_secs(60))
        .iter()
        .map(|record| serde_json::from_slice(&record.payload).unwrap())
        .collect();
    let seqs: Vec<&serde_json::Value> = delivered.iter().map(|event| &event["seq"]).collect();
    assert_eq!(seqs, [1, 3], "the others are delivered");
    let internal = tansu.read("__consumer_offsets", 1, Duration::from_secs(5));
    assert!(
        internal
            .iter()
            .all(|record| !String::from_utf8_lossy(&record.payload).contains(r#""seq":2"#)),
        "nothing of the event reached the internal topic"
    );
}
