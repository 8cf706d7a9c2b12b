//! The first-party plugins, run as Wasm components through the runtime.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::{Value, json};
use sluice::runtime::{DirGrant, InstancePool, Runtime, World};
use sluice::state::StateStore;

fn processor(runtime: &Runtime, plugin: &str, config: Value) -> InstancePool {
    pool(runtime, plugin, World::Processor, spec(plugin, config))
}

#[test]
fn filter_keeps_matching_events_and_dead_letters_non_json() {
    let runtime = runtime();
    let pool = processor(
        &runtime,
        "filter",
        json!({"when": {"field": "temperature", "gt": 80}}),
    );
    let processed = pool
        .process(&events(&[
            r#"{"temperature":90}"#,
            r#"{"temperature":20}"#,
            "not json",
            r#"{"temperature":81.5}"#,
        ]))
        .unwrap();
    assert_eq!(
        payloads(&processed),
        [r#"{"temperature":90}"#, r#"{"temperature":81.5}"#]
    );
    assert_eq!(processed.rejected.len(), 1);
    assert_eq!(processed.rejected[0].input, 2);
    assert!(
        processed.rejected[0].reason.starts_with("invalid JSON:"),
        "{}",
        processed.rejected[0].reason
    );

    let drop = processor(
        &runtime,
        "filter",
        json!({"when": {"field": "temperature", "gt": 80}, "action": "drop"}),
    );
    let processed = drop
        .process(&events(&[r#"{"temperature":90}"#, r#"{"temperature":20}"#]))
        .unwrap();
    assert_eq!(payloads(&processed), [r#"{"temperature":20}"#]);
}

#[test]
fn map_renames_sets_converts_and_drops() {
    let runtime = runtime();
    let pool = processor(
        &runtime,
        "map",
        json!({
            "rename": {"temp": "reading.celsius"},
            "set": {"site": "plant-1"},
            "convert": {"reading.celsius": "celsius_to_fahrenheit", "battery": "int"},
            "drop": ["debug"]
        }),
    );
    let processed = pool
        .process(&events(&[r#"{"temp":100,"battery":"87.9","debug":"x"}"#]))
        .unwrap();
    let out: Value = serde_json::from_str(&payloads(&processed)[0]).unwrap();
    assert_eq!(
        out,
        json!({"reading": {"celsius": 212.0}, "battery": 87, "site": "plant-1"})
    );

    let processed = pool
        .process(&events(&[r#"{"temp":"hot"}"#, "[1,2]"]))
        .unwrap();
    let reasons: Vec<&str> = processed
        .rejected
        .iter()
        .map(|r| r.reason.as_str())
        .collect();
    assert_eq!(
        reasons,
        [
            "cannot convert `reading.celsius` (\"hot\") with CelsiusToFahrenheit",
            "expected a JSON object, found array"
        ]
    );
}

#[test]
fn router_routes_by_predicate_with_a_default() {
    let runtime = runtime();
    let pool = processor(
        &runtime,
        "router",
        json!({"routes": [{"name": "alerts", "when": {"field": "temperature", "gt": 80}}], "default": "normal"}),
    );
    let processed = pool
        .process(&events(&[r#"{"temperature":90}"#, r#"{"temperature":20}"#]))
        .unwrap();
    let routes: Vec<Option<&str>> = processed
        .emitted
        .iter()
        .map(|e| e.route.as_deref())
        .collect();
    assert_eq!(routes, [Some("alerts"), Some("normal")]);
}

#[test]
fn router_routes_by_field_value() {
    let runtime = runtime();
    let pool = processor(&runtime, "router", json!({"by_field": "site"}));
    let processed = pool
        .process(&events(&[
            r#"{"site":"north"}"#,
            r#"{"site":"south"}"#,
            r#"{}"#,
        ]))
        .unwrap();
    let routes: Vec<Option<&str>> = processed
        .emitted
        .iter()
        .map(|e| e.route.as_deref())
        .collect();
    assert_eq!(routes, [Some("north"), Some("south"), None]);
}

#[test]
fn router_without_routes_fails_at_init() {
    let runtime = runtime();
    let loaded = runtime
        .load("router", &plugin_path("router"), None)
        .unwrap();
    let error = InstancePool::new(
        &runtime,
        loaded,
        World::Processor,
        spec("route", json!({})),
        1,
    )
    .err()
    .unwrap();
    assert!(
        error
            .to_string()
            .ends_with("init failed: set `routes` (a list of {name, when}) or `by_field`"),
        "{error}"
    );
}

#[test]
fn dedup_state_survives_instance_and_host_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.redb");
    let config = json!({"field": "id", "window_seconds": 60});
    let run = |payloads_in: &[&str]| {
        let runtime = runtime();
        let mut spec = spec("dedup", config.clone());
        spec.state = StateStore::open(&db).unwrap();
        let pool = pool(&runtime, "dedup", World::Processor, spec);
        payloads(&pool.process(&events(payloads_in)).unwrap())
    };
    assert_eq!(
        run(&[r#"{"id":"a"}"#, r#"{"id":"b"}"#, r#"{"id":"a"}"#]),
        [r#"{"id":"a"}"#, r#"{"id":"b"}"#]
    );
    // A new host process (new runtime, new instances, reopened database) still knows a and b.
    assert_eq!(run(&[r#"{"id":"b"}"#, r#"{"id":"c"}"#]), [r#"{"id":"c"}"#]);
}

#[test]
fn sensor_sim_emits_keyed_telemetry_with_sequence_numbers() {
    let runtime = runtime();
    let pool = pool(
        &runtime,
        "sensor-sim",
        World::Collector,
        spec(
            "devices",
            json!({"devices": 2, "anomaly_rate": 1.0, "seed": 7}),
        ),
    );
    // Each tick's state (the seqs) holds once its readings are taken.
    let (first, writes) = pool.collect().unwrap();
    writes.commit().unwrap();
    let (second, writes) = pool.collect().unwrap();
    writes.commit().unwrap();
    assert_eq!(first.emitted.len(), 2);
    let reading: Value = serde_json::from_slice(&second.emitted[1].event.payload).unwrap();
    assert_eq!(reading["device_id"], "sensor-001");
    assert_eq!(reading["seq"], 2);
    assert!(
        reading["temperature"].as_f64().unwrap() >= 85.0,
        "anomaly_rate 1.0 makes every reading hot"
    );
    assert_eq!(
        second.emitted[1].event.key.as_deref(),
        Some(&b"sensor-001"[..])
    );
    assert!(
        second.emitted[1]
            .event
            .headers
            .iter()
            .any(|(name, value)| name == "sim-anomaly" && value == "true")
    );
}

#[test]
fn sysstat_reads_proc_only_when_granted() {
    let runtime = runtime();
    let mut granted = spec("host-stats", json!({"host": "test-box"}));
    granted.grants.dirs.push(DirGrant {
        host: "/proc".into(),
        guest: "/proc".into(),
        writable: false,
    });
    let pool = pool(&runtime, "sysstat", World::Collector, granted);
    pool.collect().unwrap().1.commit().unwrap();
    // CPU time advances in jiffies (10 ms): give the second tick some to compare.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (processed, _) = pool.collect().unwrap();
    let stats: Value = serde_json::from_slice(&processed.emitted[0].event.payload).unwrap();
    assert_eq!(stats["host"], "test-box");
    assert!(stats["mem_total_kb"].as_u64().unwrap() > 0);
    assert!(
        stats["cpu_percent"].as_f64().is_some(),
        "the second tick reports CPU use: {stats}"
    );

    let ungranted = common::pool(
        &runtime,
        "sysstat",
        World::Collector,
        spec("host-stats", json!({})),
    );
    let error = ungranted.collect().err().unwrap().to_string();
    assert!(
        error.contains("cannot read /proc/stat") && error.contains("is it granted"),
        "{error}"
    );
}

#[test]
fn one_plugin_serves_many_stages_with_separate_state() {
    let runtime = runtime();
    let store = StateStore::in_memory();
    let loaded = runtime.load("dedup", &plugin_path("dedup"), None).unwrap();
    let stage = |name: &str| {
        let mut spec = spec(name, json!({"field": "id"}));
        spec.state = Arc::clone(&store);
        InstancePool::new(&runtime, loaded.clone(), World::Processor, spec, 2).unwrap()
    };
    let (a, b) = (stage("a"), stage("b"));
    assert_eq!(
        payloads(&a.process(&events(&[r#"{"id":1}"#])).unwrap()).len(),
        1
    );
    assert_eq!(
        payloads(&b.process(&events(&[r#"{"id":1}"#])).unwrap()).len(),
        1,
        "stage b has its own state"
    );
    assert_eq!(
        payloads(&a.process(&events(&[r#"{"id":1}"#])).unwrap()).len(),
        0
    );
}

/// The `window` plugin keeps open windows in its instance between calls. What it holds
/// must never run ahead of the stage's state: a call whose writes the host dropped (its
/// outputs were not taken) and a call of another instance of the stage both change
/// what the state holds behind the instance's back.
#[test]
fn window_results_count_only_what_the_state_kept_across_instances_and_dropped_calls() {
    let runtime = runtime();
    let config = json!({
        "size_ms": 60_000, "key": "device", "field": "v", "time_field": "ts",
        "watermark": "events", "flush_on_stop": true, "aggregates": ["count", "sum"],
    });
    let spec = spec("per_minute", config);
    let first = pool(&runtime, "window", World::Processor, spec.clone());
    let second = pool(&runtime, "window", World::Processor, spec);
    let readings = |values: &[u32]| -> Vec<sluice::event::Event> {
        let payloads: Vec<String> = values
            .iter()
            .map(|v| format!(r#"{{"device":"d1","ts":{},"v":{v}}}"#, 120_000 + v))
            .collect();
        events(&payloads.iter().map(String::as_str).collect::<Vec<_>>())
    };
    first.process(&readings(&[1])).unwrap();
    second.process(&readings(&[2])).unwrap();
    first.process(&readings(&[4])).unwrap();
    // Processed, but its writes are dropped, as when its outputs are not taken.
    let (_, writes) = first.process_isolating(&readings(&[8])).unwrap();
    drop(writes.expect("the whole batch succeeded"));
    first.process(&readings(&[16])).unwrap();
    let (closed, writes) = first.tick(0, true).unwrap();
    writes.commit().unwrap();
    assert_eq!(
        payloads(&closed)
            .iter()
            .map(|payload| serde_json::from_str::<Value>(payload).unwrap())
            .collect::<Vec<_>>(),
        [
            json!({"device": "d1", "window_start": 120_000, "window_end": 180_000, "count": 4, "sum": 23.0})
        ]
    );
}
