//! A device's uplink (`type = "uplink"`): collectors → a durable local buffer → MQTT
//! QoS 1 to the central broker. Against a real Mosquitto and a central host reading
//! what arrives: a 30 s broker outage loses nothing and keeps each device's order; a
//! SIGKILLed agent delivers its buffer after a restart; a full buffer drops exactly the
//! count it reports under `drop_oldest` and nothing under `block`; and disk use returns
//! to near zero once everything is delivered.

mod harness;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use harness::*;

/// The central host: every telemetry message that reaches the broker, in arrival order,
/// into `out`.
fn central(broker: &Mosquitto) -> Pipeline {
    let pipeline = Pipeline::start(&format!(
        r#"
[sources.telemetry]
type = "mqtt"
url = "{0}"
topics = ["sensors/+/telemetry"]
qos = 1
client_id = "central-{1}"

[sources.heartbeats]
type = "mqtt"
url = "{0}"
topics = ["sluice/devices/+/heartbeat"]
qos = 1
client_id = "central-heartbeats-{1}"

[sinks.out]
type = "file"
inputs = ["telemetry"]
path = "out"

[sinks.heartbeat_files]
type = "file"
inputs = ["heartbeats"]
path = "heartbeats"
"#,
        broker.url(),
        free_port()
    ));
    wait_until(
        Duration::from_secs(20),
        "the central host to subscribe",
        || {
            let log = pipeline.host.log_text();
            log.contains("subscribed") || log.contains("session_present=true")
        },
    );
    pipeline
}

/// A device: simulated sensors every `interval_ms` into the uplink, whose buffer is
/// configured by `buffer` (an inline table's body).
fn agent(broker: &Mosquitto, interval_ms: u64, buffer: &str) -> Pipeline {
    Pipeline::start(&sensors_to_uplink(
        &broker.url(),
        "gateway-1",
        3,
        interval_ms,
        &format!("path = \"buffer\", {buffer}"),
    ))
}

/// A gauge or counter of the uplink stage; a missing one fails the test.
fn uplink_metric(agent: &Pipeline, name: &str) -> u64 {
    let metrics = agent.host.metrics();
    let prefix = format!("{name}{{stage=\"uplink\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{metrics}"))
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

/// Per device, the seqs that arrived, in arrival order.
fn arrivals(central: &Pipeline) -> HashMap<String, Vec<u64>> {
    readings::arrivals(&central.data("out"))
}

/// Per device: seqs missing below the highest that arrived (sensor-sim counts from 1),
/// duplicates, and whether first arrivals came in order.
fn audit(arrived: &HashMap<String, Vec<u64>>) -> (u64, u64, bool) {
    let audit = readings::audit(arrived);
    (audit.missing, audit.duplicates, audit.in_order)
}

fn arrived_count(central: &Pipeline) -> usize {
    arrivals(central).values().map(Vec::len).sum()
}

/// Bytes of the buffer's segment files.
fn segment_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .map(|e| e.metadata().unwrap().len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_thirty_second_broker_outage_loses_nothing_and_keeps_each_devices_order() {
    let broker = Mosquitto::start();
    let central = central(&broker);
    let agent = agent(&broker, 50, "max_bytes = 16777216");
    wait_until(Duration::from_secs(30), "the first readings", || {
        arrived_count(&central) >= 30
    });
    broker.pause();
    std::thread::sleep(Duration::from_secs(30));
    let buffered = uplink_metric(&agent, "sluice_uplink_buffered_entries");
    assert!(
        buffered > 100,
        "the buffer grew during the outage: {buffered}"
    );
    broker.resume();
    wait_until(Duration::from_secs(90), "the buffer to drain", || {
        uplink_metric(&agent, "sluice_uplink_buffered_entries") < 10
    });
    let before = arrived_count(&central);
    wait_until(
        Duration::from_secs(30),
        "the drained readings to arrive",
        || arrived_count(&central) >= before + 30,
    );
    let (missing, duplicates, in_order) = audit(&arrivals(&central));
    assert_eq!(missing, 0, "no reading lost");
    assert!(in_order, "each device's readings arrive in order");
    eprintln!("duplicates after the outage: {duplicates}");
    assert_eq!(uplink_metric(&agent, "sluice_uplink_dropped_entries"), 0);
}

/// Every `seq` in the buffer's segments at `dir` (entries already delivered included).
fn buffered_seqs(dir: &Path) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "seg") {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let mut at = 0;
        while at + 8 <= data.len() {
            let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            let Some(body) = data.get(at + 8..at + 8 + len) else {
                break;
            };
            let topic_len = u16::from_le_bytes([body[0], body[1]]) as usize;
            let value: serde_json::Value = serde_json::from_slice(&body[2 + topic_len..]).unwrap();
            found.push((
                value["device_id"].as_str().unwrap().to_owned(),
                value["seq"].as_u64().unwrap(),
            ));
            at += 8 + len;
        }
    }
    found
}

#[test]
fn a_sigkilled_agent_delivers_its_buffer_after_a_restart() {
    let broker = Mosquitto::start();
    let central = central(&broker);
    let mut agent = agent(&broker, 50, "max_bytes = 16777216");
    wait_until(Duration::from_secs(30), "the first readings", || {
        arrived_count(&central) >= 15
    });
    broker.pause();
    wait_until(
        Duration::from_secs(30),
        "readings to pile up in the buffer",
        || uplink_metric(&agent, "sluice_uplink_buffered_entries") >= 60,
    );
    agent.kill_9();
    let buffered = buffered_seqs(&agent.data("buffer"));
    assert!(buffered.len() >= 60, "{} buffered", buffered.len());
    broker.resume();
    agent.restart();
    wait_until(
        Duration::from_secs(60),
        "every buffered reading to arrive",
        || {
            let arrived = arrivals(&central);
            buffered
                .iter()
                .all(|(device, seq)| arrived.get(device).is_some_and(|seqs| seqs.contains(seq)))
        },
    );
    // Readings made after the restart, so that a seq skipped at the kill would show.
    let highest = buffered.iter().map(|(_, seq)| *seq).max().unwrap();
    wait_until(
        Duration::from_secs(30),
        "readings after the restart",
        || {
            let arrived = arrivals(&central);
            arrived.len() == 3
                && arrived
                    .values()
                    .all(|seqs| seqs.iter().any(|seq| *seq > highest + 5))
        },
    );
    let (missing, _, in_order) = audit(&arrivals(&central));
    assert!(in_order, "each device's readings arrive in order");
    assert_eq!(
        missing, 0,
        "a collector's seq holds only once its reading is in the buffer: none skipped at the kill"
    );
    // The heartbeats tell the central host what the device holds. The restarted agent's
    // first heartbeat (QoS 0, after its backlog) may reach the central file after the
    // last reading does, so it is waited for.
    wait_until(
        Duration::from_secs(20),
        "a heartbeat after the restart that reports the backlog",
        || {
            read_lines(&central.data("heartbeats"))
                .iter()
                .any(|h| h["buffered_entries"].as_u64() > Some(0))
        },
    );
    let heartbeats = read_lines(&central.data("heartbeats"));
    for heartbeat in &heartbeats {
        assert_eq!(heartbeat["device_id"], "gateway-1");
        assert!(
            heartbeat["buffered_entries"].is_u64() && heartbeat["dropped"] == 0,
            "{heartbeat}"
        );
    }
}

#[test]
fn a_full_buffer_drops_exactly_what_it_reports_under_drop_oldest() {
    let broker = Mosquitto::start();
    let central = central(&broker);
    broker.pause();
    // About 100 readings fit; 3 devices every 20 ms make ~450 in three seconds.
    let agent = agent(
        &broker,
        20,
        r#"max_bytes = 16384, segment_bytes = 2048, when_full = "drop_oldest""#,
    );
    std::thread::sleep(Duration::from_secs(3));
    broker.resume();
    wait_until(Duration::from_secs(60), "the buffer to drain", || {
        uplink_metric(&agent, "sluice_uplink_buffered_entries") < 10
            && arrived_count(&central) > 200
    });
    let dropped = uplink_metric(&agent, "sluice_uplink_dropped_entries");
    let (missing, _, in_order) = audit(&arrivals(&central));
    assert!(dropped > 100, "the buffer overflowed: {dropped}");
    assert_eq!(
        missing, dropped,
        "every reading missing is one the agent counted as dropped"
    );
    assert!(in_order);
    // Delivered: at most the segment being written is left.
    wait_until(
        Duration::from_secs(10),
        "disk use back to near zero",
        || segment_bytes(&agent.data("buffer")) <= 2048 + 512,
    );
}

/// The collectors' readings wait behind a full buffer when the agent is killed: a
/// sensor's seq (plugin state) must not have moved past what the buffer holds.
#[test]
fn an_agent_killed_behind_a_full_buffer_skips_no_reading() {
    let broker = Mosquitto::start();
    let central = central(&broker);
    broker.pause();
    let mut agent = agent(
        &broker,
        20,
        r#"max_bytes = 16384, segment_bytes = 2048, when_full = "block""#,
    );
    wait_until(Duration::from_secs(30), "the buffer to fill", || {
        uplink_metric(&agent, "sluice_uplink_buffered_bytes") > 12_000
    });
    std::thread::sleep(Duration::from_secs(1));
    agent.kill_9();
    broker.resume();
    agent.restart();
    wait_until(
        Duration::from_secs(60),
        "readings after the restart",
        || arrived_count(&central) > 400,
    );
    let (missing, _, in_order) = audit(&arrivals(&central));
    assert_eq!(missing, 0, "no seq skipped at the kill");
    assert!(in_order);
}

#[test]
fn a_full_buffer_pauses_the_collectors_and_drops_nothing_under_block() {
    let broker = Mosquitto::start();
    let central = central(&broker);
    broker.pause();
    let agent = agent(
        &broker,
        20,
        r#"max_bytes = 16384, segment_bytes = 2048, when_full = "block""#,
    );
    std::thread::sleep(Duration::from_secs(3));
    let buffered = uplink_metric(&agent, "sluice_uplink_buffered_bytes");
    assert!(buffered <= 16384, "the bound holds: {buffered} bytes");
    broker.resume();
    wait_until(Duration::from_secs(60), "readings after the pause", || {
        arrived_count(&central) > 300
    });
    let (missing, _, in_order) = audit(&arrivals(&central));
    assert_eq!(missing, 0, "nothing dropped");
    assert!(in_order);
    assert_eq!(uplink_metric(&agent, "sluice_uplink_dropped_entries"), 0);
}
