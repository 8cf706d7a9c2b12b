//! End to end: simulated telemetry with injected anomalies, scored by the `anomaly`
//! plugin with the committed model that the host runs; the alerts route catches the
//! anomalies with the precision and recall that models/anomaly.md states.

mod harness;

use std::time::Duration;

use harness::*;
use serde_json::Value;

/// models/anomaly.md: precision and recall on held-out sensor-sim telemetry.
const CARD_PRECISION: f64 = 1.0;
const CARD_RECALL: f64 = 1.0;
const READINGS: usize = 4000;

fn model() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/anomaly.onnx");
    path.canonicalize().unwrap().display().to_string()
}

/// Whether sensor-sim marked the reading as an anomaly (its ground truth).
fn injected(record: &Value) -> bool {
    record["headers"]["sim-anomaly"] == "true"
}

#[test]
fn the_alerts_route_catches_injected_anomalies_as_the_model_card_states() {
    let config = format!(
        r#"
[models.anomaly]
path = "{model}"
sha256 = "c9fd4b8f393547314b1d9c88b1163d5aec84a253b3d058630d935a23efc6e3c2"
inputs = [{{ name = "features", type = "f32", shape = [-1, 3] }}]

[plugins.sensor-sim]
path = "{sim}"
[plugins.anomaly]
path = "{anomaly}"
grants = {{ models = ["anomaly"], capabilities = [] }}

[sources.devices]
type = "wasm"
plugin = "sensor-sim"
interval_ms = 20
config = {{ devices = 20, events_per_device = 20, anomaly_rate = 0.05, seed = 7 }}

[transforms.score]
type = "wasm"
plugin = "anomaly"
inputs = ["devices"]
routes = ["alerts"]

[sinks.alerts]
type = "file"
inputs = ["score.alerts"]
path = "alerts"
format = "envelope"

[sinks.normal]
type = "file"
inputs = ["score"]
path = "normal"
format = "envelope"
"#,
        model = model(),
        sim = plugin("sensor-sim"),
        anomaly = plugin("anomaly"),
    );
    let mut pipeline = Pipeline::start(&config);
    let (alerts_dir, normal_dir) = (pipeline.data("alerts"), pipeline.data("normal"));
    wait_until(Duration::from_secs(60), "the scored readings", || {
        read_lines(&alerts_dir).len() + read_lines(&normal_dir).len() >= READINGS
    });
    assert!(pipeline.stop().success(), "{}", pipeline.host.log_text());
    let (alerts, normal) = (read_lines(&alerts_dir), read_lines(&normal_dir));

    let true_positives = alerts.iter().filter(|r| injected(r)).count();
    let false_positives = alerts.len() - true_positives;
    let false_negatives = normal.iter().filter(|r| injected(r)).count();
    assert!(
        true_positives > 50,
        "too few anomalies to measure: {true_positives}"
    );
    let precision = true_positives as f64 / alerts.len() as f64;
    let recall = true_positives as f64 / (true_positives + false_negatives) as f64;
    assert!(
        precision >= CARD_PRECISION && recall >= CARD_RECALL,
        "precision {precision} ({false_positives} false alerts), recall {recall} ({false_negatives} missed) of {} readings",
        alerts.len() + normal.len()
    );

    // Every reading carries its score and label, and alerts are the anomalous ones.
    for record in alerts.iter().chain(&normal) {
        let payload: Value = serde_json::from_str(record["payload"].as_str().unwrap()).unwrap();
        let score = payload["anomaly_score"].as_f64().unwrap();
        assert_eq!(
            payload["anomaly"].as_bool().unwrap(),
            score >= 0.5,
            "{payload}"
        );
    }
    assert!(alerts.iter().all(|r| {
        r["payload"]
            .as_str()
            .unwrap()
            .ends_with(r#""anomaly":true}"#)
    }));
    assert!(read_lines(&pipeline.data("dead_letter")).is_empty());
}

#[test]
fn a_wrong_model_pin_stops_the_pipeline_before_it_starts_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[models.anomaly]
path = "{model}"
sha256 = "{zeros}"
[plugins.anomaly]
path = "{anomaly}"
grants = {{ models = ["anomaly", "fraud"] }}
[sources.ingest]
type = "http"
listen = "127.0.0.1:{port}"
[transforms.score]
type = "wasm"
plugin = "anomaly"
inputs = ["ingest"]
[sinks.out]
type = "console"
inputs = ["score"]
"#,
            model = model(),
            zeros = "0".repeat(64),
            anomaly = plugin("anomaly"),
            port = free_port(),
        ),
    )
    .unwrap();
    let output = std::process::Command::new(sluice_binary())
        .arg("validate")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(
        stderr.contains(
            "plugin `anomaly` is granted model `fraud`, which no `[models.fraud]` defines"
        ),
        "{stdout}{stderr}"
    );

    // With the grant fixed, the pin is what stops the run.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(r#", "fraud""#, "");
    std::fs::write(&config, text).unwrap();
    let output = std::process::Command::new(sluice_binary())
        .arg("run")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "model `anomaly` ({}): sha256 is c9fd4b8f393547314b1d9c88b1163d5aec84a253b3d058630d935a23efc6e3c2 but the config pins {}",
            model(),
            "0".repeat(64)
        )),
        "{stderr}"
    );
}
