//! The quickstart that the README runs: the central host with its embedded broker, and
//! two gateways as `sluice agent` processes fetching their pipeline from its `[fleet]`
//! (a live group, served unsigned: the agents run with `--insecure-unsigned`).

mod harness;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::*;

/// A quickstart gateway's token, from the example.
fn token(root: &Path, id: &str) -> String {
    let token = std::fs::read_to_string(root.join("examples/quickstart/tokens").join(id)).unwrap();
    token.trim().to_owned()
}

/// `sluice agent` for a quickstart gateway, with its token from the example.
fn gateway(root: &Path, id: &str) -> Agent {
    Agent::start(Command::new(sluice_binary()), 9598, id, &token(root, id))
}

/// The `config_version` of `device`'s release `id` (what its heartbeats report while it
/// runs it), asked with the device's token.
fn version_of(root: &Path, device: &str, id: &serde_json::Value) -> Option<String> {
    let path = format!("/fleet/v1/release/{}/config.toml", id.as_str()?);
    let bearer = format!("Authorization: Bearer {}", token(root, device));
    let (status, config) = http_get_with(9598, &path, &[&bearer])?;
    config_version(&config).filter(|_| status == 200)
}

#[test]
fn the_quickstart_runs_its_gateways_as_agents_of_the_central_host() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = root.join("examples/quickstart/sluice.toml");
    let out = root.join("target/quickstart/telemetry");
    let before = read_lines(&out).len();
    let inbox = root.join("target/quickstart/alerts");
    let alerts_before = read_lines(&inbox).len();
    let host = Host::start(&config, 9598, Stdio::null());
    let gateways = [gateway(&root, "gateway-1"), gateway(&root, "gateway-2")];
    let from = |gateway: &str| {
        read_lines(&out)[before..]
            .iter()
            .filter(|event| {
                event["device_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with(&format!("{gateway}-sensor-")))
            })
            .count()
    };
    wait_until(
        Duration::from_secs(90),
        "telemetry from both gateways on disk",
        || from("gateway-1") > 10 && from("gateway-2") > 10,
    );
    let written = read_lines(&out);
    let last = written.last().unwrap();
    assert_eq!(last["site"], "plant-1", "{last}");
    assert!(
        last["temperature_c"].as_f64().unwrap() <= 80.0,
        "alerts do not go to the telemetry files: {last}"
    );
    assert_eq!(last["anomaly"], false, "the model scored it: {last}");

    // Anomalies become one alert per device, posted to the webhook (the host's own
    // `alert_inbox` stands in for the receiver).
    wait_until(
        Duration::from_secs(60),
        "a firing alert through the webhook",
        || {
            read_lines(&inbox)[alerts_before..].iter().any(|alert| {
                alert["text"]
                    .as_str()
                    .is_some_and(|text| text.ends_with(" is firing"))
            })
        },
    );
    let alert = read_lines(&inbox).pop().unwrap();
    assert!(alert["temperature_c"].as_f64().unwrap() > 80.0, "{alert}");
    assert!(alert["since"].as_str().unwrap().ends_with('Z'), "{alert}");

    // The central host knows each gateway: the release it runs (from its polls) and its
    // last heartbeat (over MQTT), reporting that release's version, with the uplink's
    // buffer depth.
    let devices = || -> serde_json::Value {
        let (status, body) = http_get(9598, "/fleet/v1/devices").unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    wait_until(
        Duration::from_secs(30),
        "both gateways' versions and heartbeats",
        || {
            let devices = devices();
            ["gateway-1", "gateway-2"].iter().all(|id| {
                let device = &devices[id];
                device["applied"].is_string()
                    && device["applied"] == device["offered"]
                    && device["heartbeat"]["config_version"]
                        .as_str()
                        .is_some_and(|heard| {
                            version_of(&root, id, &device["applied"]).as_deref() == Some(heard)
                        })
                    && device["heartbeat"]["buffered_entries"].is_u64()
            })
        },
    );

    // The admin page in a real browser shows every stage of the central graph, with
    // events flowing, and both gateways with their heartbeats.
    let dump = chromium(&["--dump-dom"], "http://127.0.0.1:9598/admin");
    let dom = String::from_utf8_lossy(&dump.stdout);
    let (mut shown, rates) = admin_page(&dom);
    shown.sort();
    // Every `[sources.X]`, `[transforms.X]` and `[sinks.X]` table of the config.
    let mut stages: Vec<String> = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let table = line.trim().strip_prefix('[')?.strip_suffix(']')?;
            let (family, name) = table.split_once('.')?;
            let stage = ["sources", "transforms", "sinks"].contains(&family) && !name.contains('.');
            stage.then(|| name.to_owned())
        })
        .collect();
    stages.sort();
    assert!(stages.len() >= 8, "{stages:?}");
    assert_eq!(shown, stages, "{dom}");
    assert!(
        rates.iter().any(|rate| *rate > 0.0),
        "a rate above zero: {rates:?}"
    );
    for id in ["gateway-1", "gateway-2"] {
        assert!(
            dom.contains(&format!("<td>{id}</td>")),
            "{id} on the page: {dom}"
        );
    }
    for gateway in &gateways {
        assert!(!gateway.log().contains("ERROR"), "{}", gateway.log());
    }
    assert!(host.stop().success());
}
