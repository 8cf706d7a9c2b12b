//! The device build (`scripts/build-agent`: no compiler, no ONNX Runtime, no Kafka),
//! cross-compiled for aarch64 and run under qemu user-mode emulation: as `sluice agent`
//! with the fleet's public key it verifies a signed release whose plugins were compiled
//! for aarch64 when the release was made (`sluice fleet release --targets`, by the host
//! build), runs it and delivers its sensors' readings through the uplink to a broker on
//! loopback. A release without machine code for aarch64, or a plugin without a
//! precompiled artifact, it refuses and says why, and starts nothing.

mod harness;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
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

/// A central host on `api` serving the signed releases of group `arm` from
/// `dir/releases` (checked with `dir/keys/fleet.pub`), device `arm-1` in it; `extra`
/// lines are its pipeline (what the device's uplink sends to).
fn central(dir: &Path, api: u16, extra: &str, fleet: &str) -> Host {
    let config = dir.join("central.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{}"
[api]
listen = "127.0.0.1:{api}"
{extra}
[fleet]
poll_secs = 1
releases = "releases"
trust = "keys/fleet.pub"
groups.arm = {{}}
devices.arm-1 = {{ group = "arm", token = "token-arm" }}
{fleet}
"#,
            dir.join("data").display(),
        ),
    )
    .unwrap();
    Host::start(&config, api, Stdio::null())
}

/// The aarch64 device build as `sluice agent` `arm-1` of group `arm`, trusting the
/// fleet's public key in `dir/keys`.
fn arm_agent(dir: &Path, api: u16) -> Agent {
    let token = dir.join("token-arm");
    std::fs::write(&token, "token-arm\n").unwrap();
    let trust = dir.join("keys/fleet.pub");
    Agent::start_with(
        device(&[]),
        &format!("http://127.0.0.1:{api}"),
        "arm-1",
        &[
            OsStr::new("--token-file"),
            token.as_os_str(),
            OsStr::new("--trust"),
            trust.as_os_str(),
            OsStr::new("--group"),
            OsStr::new("arm"),
        ],
    )
}

/// `GET /fleet/v1/devices` (the central hosts here have no admin token).
fn devices(api: u16) -> serde_json::Value {
    let (status, body) = http_get(api, "/fleet/v1/devices").unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn an_aarch64_agent_without_a_compiler_runs_a_signed_release_precompiled_for_it() {
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
    // The release, made by the host build (which has the compiler) for aarch64 devices.
    let (key, _) = fleet_keygen(&dir.join("keys"));
    let made = fleet_release(
        &dir.join("arm.toml"),
        "arm",
        &key,
        &dir.join("releases"),
        &[TARGET],
    );
    assert!(made.starts_with("release 1 of group `arm`"), "{made}");
    let api = free_port();
    let _central = central(
        dir,
        api,
        &format!(
            r#"
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
"#,
            url = broker.url()
        ),
        &format!("heartbeats = {{ url = \"{}\" }}", broker.url()),
    );

    let agent = arm_agent(dir, api);
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

    // It ran the release's aarch64 machine code (the build cannot compile Wasm): the
    // config it runs names the artifact the manifest lists for its target, by sha256.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("releases/arm/1/manifest.json")).unwrap())
            .unwrap();
    let artifacts: Vec<&str> = manifest["files"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| name.starts_with("artifacts/") && name.contains(TARGET))
        .map(|(_, entry)| entry["sha256"].as_str().unwrap())
        .collect();
    assert_eq!(artifacts.len(), 1, "{manifest}");
    let configs: Vec<String> = std::fs::read_dir(agent.dir.path().join("agent/configs"))
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    assert_eq!(configs.len(), 1, "{configs:?}");
    assert!(
        configs[0].contains(&format!("precompiled_sha256 = \"{}\"", artifacts[0])),
        "{}",
        configs[0]
    );
    assert!(
        agent
            .dir
            .path()
            .join("agent/files")
            .join(artifacts[0])
            .exists()
    );

    // The central host shows the release the device runs and its heartbeat, which
    // reports that release's version.
    let (_, headers, _) = http_get_headers(
        api,
        "/fleet/v1/release",
        &["Authorization: Bearer token-arm"],
    )
    .unwrap();
    let id = headers["etag"].trim_matches('"').to_owned();
    let version =
        config_version(&std::fs::read_to_string(dir.join("releases/arm/1/config.toml")).unwrap());
    assert_eq!(version.as_deref(), Some("1"));
    wait_until(
        Duration::from_secs(30),
        "the agent's release and heartbeat at the central host",
        || {
            let device = &devices(api)["arm-1"];
            device["applied"] == id.as_str()
                && device["heartbeat"]["config_version"].as_str() == version.as_deref()
        },
    );
    assert!(
        agent.log().contains("applied a new release"),
        "{}",
        agent.log()
    );
    assert!(!agent.log().contains("ERROR"), "{}", agent.log());
}

#[test]
fn the_device_build_refuses_a_release_without_machine_code_for_it() {
    let central_dir = tempfile::tempdir().unwrap();
    let dir = central_dir.path();
    std::fs::write(
        dir.join("arm.toml"),
        format!(
            r#"
[plugins.sensor-sim]
path = "{}"

[sources.sensors]
type = "wasm"
plugin = "sensor-sim"
interval_ms = 100

[sinks.out]
type = "file"
inputs = ["sensors"]
path = "out"
"#,
            plugin("sensor-sim")
        ),
    )
    .unwrap();
    // Signed, but made for this machine's target only.
    let native = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    assert_ne!(
        native, TARGET,
        "this test runs on a machine other than aarch64"
    );
    let (key, _) = fleet_keygen(&dir.join("keys"));
    fleet_release(
        &dir.join("arm.toml"),
        "arm",
        &key,
        &dir.join("releases"),
        &[&native],
    );
    let api = free_port();
    let _central = central(
        dir,
        api,
        &format!(
            r#"
[sources.ingest]
type = "http"
listen = "127.0.0.1:{}"

[sinks.out]
type = "file"
inputs = ["ingest"]
path = "out"
"#,
            free_port()
        ),
        "",
    );
    let agent = arm_agent(dir, api);

    // The agent refuses it, naming the plugin and its target, and reports it.
    let refusal = |text: &str| {
        text.contains("plugin `sensor-sim`")
            && text.contains(&format!("has no artifact for {TARGET}"))
            && text.contains(&format!("(made for {native})"))
            && text.contains("cannot compile Wasm (built without the `compiler` feature)")
    };
    wait_until(
        Duration::from_secs(120),
        "the refusal reported to the central host",
        || devices(api)["arm-1"]["error"].as_str().is_some_and(refusal),
    );
    let log = agent.log();
    assert!(log.contains("refused a release") && refusal(&log), "{log}");
    // Nothing started, and nothing does while it is the release offered.
    std::thread::sleep(Duration::from_secs(3));
    let device = &devices(api)["arm-1"];
    assert!(device["applied"].is_null(), "{device}");
    assert!(device["offered"].is_string(), "{device}");
    assert!(
        !agent.dir.path().join("agent/run/out").exists(),
        "nothing started:\n{}",
        agent.log()
    );
    assert!(!agent.dir.path().join("agent/state.json").exists());
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
