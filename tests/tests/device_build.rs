//! The device build (`scripts/build-agent`: no compiler, no ONNX Runtime, no Kafka),
//! cross-compiled for aarch64 and run under qemu user-mode emulation: as `sluice agent`
//! it gets its plugins precompiled for aarch64 by the central host and delivers its
//! sensors' readings through the uplink to a broker on loopback; without a precompiled
//! artifact it refuses a plugin and says why.

mod harness;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::*;

const TARGET: &str = "aarch64-unknown-linux-gnu";

/// The aarch64 device build: `SLUICE_DEVICE_BIN`, else where `scripts/build-agent
/// --target aarch64-unknown-linux-gnu` puts it in this target directory.
fn device_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_DEVICE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let target_dir = exe.ancestors().nth(3).unwrap();
    let path = target_dir.join(TARGET).join("debug/sluice");
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-agent --target {TARGET}",
        path.display()
    );
    path
}

/// The device build under qemu-aarch64, with `args`.
fn device(args: &[&str]) -> Command {
    let mut command = Command::new("qemu-aarch64");
    command
        .args(["-L", "/usr/aarch64-linux-gnu"])
        .arg(device_binary())
        .args(args);
    command
}

#[test]
fn an_aarch64_agent_without_a_compiler_runs_plugins_precompiled_by_the_central_host() {
    let broker = Mosquitto::start();
    let central_dir = tempfile::tempdir().unwrap();
    let dir = central_dir.path();
    std::fs::write(
        dir.join("arm.toml"),
        sensors_to_uplink(
            &broker.url(),
            "${SLUICE_DEVICE_ID}",
            2,
            100,
            "path = \"buffer\"",
        ),
    )
    .unwrap();
    let api = free_port();
    let central_config = dir.join("central.toml");
    std::fs::write(
        &central_config,
        format!(
            r#"data_dir = "{}"
[api]
listen = "127.0.0.1:{api}"

[sources.telemetry]
type = "mqtt"
url = "{url}"
topics = ["sensors/+/telemetry"]
qos = 1
client_id = "central-{api}"

[sinks.out]
type = "file"
inputs = ["telemetry"]
path = "out"

[fleet]
poll_secs = 1
heartbeats = {{ url = "{url}" }}
groups.arm = {{ config = "arm.toml" }}
devices.arm-1 = {{ group = "arm", token = "token-arm" }}
"#,
            dir.join("data").display(),
            url = broker.url()
        ),
    )
    .unwrap();
    let _central = Host::start(&central_config, api, Stdio::null());

    let agent = Agent::start(device(&[]), api, "arm-1", "token-arm");

    // Readings of both sensors arrive at the central host, each sensor's in order from 1.
    let out = dir.join("data/out");
    let seqs = |sensor: &str| -> Vec<u64> {
        read_lines(&out)
            .iter()
            .filter(|event| event["device_id"] == sensor)
            .map(|event| event["seq"].as_u64().unwrap())
            .collect()
    };
    let arrived = || seqs("arm-1-sensor-000").len() >= 20 && seqs("arm-1-sensor-001").len() >= 20;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !arrived() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        arrived(),
        "readings from the aarch64 agent at the central host:\n{}",
        agent.log()
    );
    for sensor in ["arm-1-sensor-000", "arm-1-sensor-001"] {
        let seqs = seqs(sensor);
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(
            seqs,
            expected,
            "{sensor}: every reading, in order\n{}",
            agent.log()
        );
    }

    // It ran the central host's aarch64 machine code, not Wasm it compiled.
    let plugins = agent.dir.path().join("agent/plugins");
    let artifacts: Vec<String> = std::fs::read_dir(&plugins)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(&format!(".{TARGET}.cwasm")))
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");

    // The central host shows the device's version and its heartbeat.
    wait_until(
        Duration::from_secs(30),
        "the agent's version and heartbeat at the central host",
        || {
            let (_, body) = http_get(api, "/fleet/v1/devices").unwrap();
            let devices: serde_json::Value = serde_json::from_str(&body).unwrap();
            let device = &devices["arm-1"];
            device["applied"].is_string()
                && device["heartbeat"]["config_version"] == device["applied"]
        },
    );
    assert!(!agent.log().contains("ERROR"), "{}", agent.log());
}

#[test]
fn the_device_build_refuses_a_plugin_it_has_no_machine_code_for() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("device.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{}"
[plugins.sensor-sim]
path = "{}"

[sources.sensors]
type = "wasm"
plugin = "sensor-sim"

[sinks.out]
type = "file"
inputs = ["sensors"]
path = "out"
"#,
            dir.path().join("data").display(),
            plugin("sensor-sim")
        ),
    )
    .unwrap();
    let output = device(&["run"]).arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("plugin `sensor-sim`")
            && stderr.contains("cannot compile Wasm (built without the `compiler` feature)")
            && stderr.contains(&format!("precompiled for {TARGET}")),
        "{stderr}"
    );
    assert!(!dir.path().join("data/out").exists(), "nothing started");
}
