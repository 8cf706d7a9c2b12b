//! The fleet over mutual TLS: a central host whose API and embedded broker both take
//! client certificates from one CA, and an agent that proves it is `gw1` with its
//! certificate alone (no token) both to the API (its group's signed release, verified
//! with the fleet's public key) and to the broker (its uplink's readings and
//! heartbeats). Everyone else is refused with an error the operator can read, and gw1's
//! pipeline runs on unharmed: another device's certificate, a certificate of another
//! CA, an expired one, a revoked device's, plaintext HTTP to the TLS port, and gw1's
//! certificate publishing under gw2's topics.

mod harness;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::tls::{Ca, MqttOutcome, Pair, client_config, counter, https_get, mqtt_publish};
use harness::*;

const ADMIN: &str = "Authorization: Bearer admin-secret";

fn central_config(dir: &Path, api: u16, broker: u16, ca: &Ca, server: &Pair) -> String {
    let tls = format!(
        r#"{{ cert_file = "{}", key_file = "{}", client_ca_file = "{}" }}"#,
        server.cert.display(),
        server.key.display(),
        ca.file.display()
    );
    let ca_file = ca.file.display();
    format!(
        r#"data_dir = "{data}"

[api]
listen = "127.0.0.1:{api}"
tls = {tls}
admin_token = "admin-secret"
admin_certificates = ["ops"]

[broker]
listen = "127.0.0.1:{broker}"
tls = {tls}

[sources.telemetry]
type = "mqtt"
url = "mqtts://localhost:{broker}"
ca_file = "{ca_file}"
topics = ["sensors/+/telemetry"]
batch_timeout_ms = 200

[sinks.out]
type = "file"
inputs = ["telemetry"]
path = "out"

[fleet]
poll_secs = 1
heartbeats = {{ url = "mqtts://localhost:{broker}", ca_file = "{ca_file}" }}
releases = "releases"
trust = "keys/fleet.pub"
groups.gateways = {{}}
devices.gw1 = {{ group = "gateways", token = "token-gw1" }}
devices.gw2 = {{ group = "gateways", token = "token-gw2" }}
devices.gw3 = {{ group = "gateways", token = "token-gw3", revoked = true }}
"#,
        data = dir.join("data").display(),
    )
}

/// The group's pipeline: two simulated sensors into an uplink to the central broker
/// over TLS, presenting the agent's own certificate. Its topic names the device (not
/// the reading's sensor), as the broker's default `device_publish` wants.
fn group_config(broker: u16) -> String {
    format!(
        r#"
[plugins.sensor-sim]
path = "{plugin}"

[sources.sensors]
type = "wasm"
plugin = "sensor-sim"
interval_ms = 100
config = {{ devices = 2, device_prefix = "${{SLUICE_DEVICE_ID}}-sensor-" }}

[sinks.uplink]
type = "uplink"
inputs = ["sensors"]
url = "mqtts://localhost:{broker}"
ca_file = "${{SLUICE_CA_FILE}}"
cert_file = "${{SLUICE_DEVICE_CERT}}"
key_file = "${{SLUICE_DEVICE_KEY}}"
topic = "sensors/${{SLUICE_DEVICE_ID}}/telemetry"
device_id = "${{SLUICE_DEVICE_ID}}"
heartbeat_secs = 1
buffer = {{ path = "buffer", max_bytes = 16777216 }}
"#,
        plugin = plugin("sensor-sim")
    )
}

/// `sluice agent` for `device` of group `gateways` against the TLS API (whose
/// certificate `ca` signed), presenting `pair`, without a token; it runs only releases
/// `trust` (the fleet's public key) verifies.
fn agent(api: u16, device: &str, ca: &Ca, pair: &Pair, trust: &Path) -> Agent {
    agent_at(&format!("https://localhost:{api}"), device, ca, pair, trust)
}

fn agent_at(central: &str, device: &str, ca: &Ca, pair: &Pair, trust: &Path) -> Agent {
    Agent::start_with(
        Command::new(sluice_binary()),
        central,
        device,
        &[
            OsStr::new("--ca-file"),
            ca.file.as_os_str(),
            OsStr::new("--cert-file"),
            pair.cert.as_os_str(),
            OsStr::new("--key-file"),
            pair.key.as_os_str(),
            OsStr::new("--trust"),
            trust.as_os_str(),
            OsStr::new("--group"),
            OsStr::new("gateways"),
        ],
    )
}

/// Readings that arrived centrally from the sensors of `gateway`.
fn from(out: &Path, gateway: &str) -> usize {
    let prefix = format!("{gateway}-sensor-");
    read_lines(out)
        .iter()
        .filter(|event| {
            event["device_id"]
                .as_str()
                .is_some_and(|id| id.starts_with(&prefix))
        })
        .count()
}

/// Whether `check` holds within `timeout`.
fn poll(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while !check() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// Wait until the agent's log holds every one of `needles`.
fn refused_with(agent: &Agent, what: &str, needles: &[&str]) {
    let holds = || {
        let log = agent.log();
        needles.iter().all(|needle| log.contains(needle))
    };
    if !poll(Duration::from_secs(30), holds) {
        panic!(
            "{what}: {needles:?} not in the agent's log:\n{}",
            agent.log()
        );
    }
}

#[test]
fn a_device_runs_on_its_certificate_alone_and_other_certificates_are_refused() {
    let central_dir = tempfile::tempdir().unwrap();
    let dir = central_dir.path();
    let ca = Ca::new(dir, "fleet");
    let rogue = Ca::new(dir, "rogue");
    let server = ca.server();
    let gw1 = ca.client("gw1");
    let gw3 = ca.client("gw3");
    let ops = ca.client("ops");
    let rogue_gw2 = rogue.client("gw2");
    let expired_gw2 = ca.expired_client("gw2");

    let (api, broker) = (free_port(), free_port());
    std::fs::write(dir.join("gateways.toml"), group_config(broker)).unwrap();
    // The group's release, signed with the fleet's key, for this machine's target.
    let (key, trust) = fleet_keygen(&dir.join("keys"));
    let made = fleet_release(
        &dir.join("gateways.toml"),
        "gateways",
        &key,
        &dir.join("releases"),
        &[&format!("{}-unknown-linux-gnu", std::env::consts::ARCH)],
    );
    assert!(made.starts_with("release 1 of group `gateways`"), "{made}");
    let config = dir.join("central.toml");
    std::fs::write(&config, central_config(dir, api, broker, &ca, &server)).unwrap();
    let trusting = client_config(&ca.file, None);
    let probe = trusting.clone();
    let central = Host::start_probed(&config, api, Stdio::null(), move |port| {
        https_get(port, "/ready", &[], &probe).is_ok_and(|(status, _)| status == 200)
    });
    let out = dir.join("data/out");
    let devices = || -> serde_json::Value {
        let (status, body) = https_get(api, "/fleet/v1/devices", &[ADMIN], &trusting).unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let metrics = || -> String {
        let (status, body) = https_get(api, "/metrics", &[ADMIN], &trusting).unwrap();
        assert_eq!(status, 200, "{body}");
        body
    };

    // gw1 with its certificate and no token: its release, its broker.
    let first = agent(api, "gw1", &ca, &gw1, &trust);
    let logs = || {
        format!(
            "--- agent:\n{}\n--- central:\n{}",
            first.log(),
            central.log_text()
        )
    };
    if !poll(Duration::from_secs(90), || from(&out, "gw1") >= 20) {
        panic!("no readings from gw1\n{}", logs());
    }
    // The version gw1's heartbeats report is the one its applied release's config
    // gives the uplink: release 1.
    let as_gw1 = client_config(&ca.file, Some(&gw1));
    let version_of = |release: &serde_json::Value| -> Option<String> {
        let path = format!("/fleet/v1/release/{}/config.toml", release.as_str()?);
        let (status, config) = https_get(api, &path, &[], &as_gw1).ok()?;
        config_version(&config).filter(|_| status == 200)
    };
    let reported = poll(Duration::from_secs(30), || {
        let device = &devices()["gw1"];
        device["applied"].is_string()
            && device["applied"] == device["offered"]
            && device["heartbeat"]["config_version"]
                .as_str()
                .is_some_and(|heard| {
                    version_of(&device["applied"]).as_deref() == Some(heard) && heard == "1"
                })
            && device["heartbeat"]["buffered_entries"].is_u64()
    });
    if !reported {
        panic!("gw1's version and heartbeat: {}\n{}", devices(), logs());
    }
    assert!(
        first.log().contains("applied a new release"),
        "{}",
        first.log()
    );

    // Admins by certificate: `ops` may list the devices without the token; a device's
    // certificate may not.
    let as_ops = client_config(&ca.file, Some(&ops));
    let (status, body) = https_get(api, "/fleet/v1/devices", &[], &as_ops).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("gw1"), "{body}");
    let (status, _) = https_get(api, "/fleet/v1/devices", &[], &as_gw1).unwrap();
    assert_eq!(status, 401, "a device's certificate is no admin's");
    // gw1's certificate is gw1's release, without a token, and not with another's.
    let (status, body) = https_get(api, "/fleet/v1/release", &[], &as_gw1).unwrap();
    assert_eq!(status, 200, "{body}");
    let manifest: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(manifest["group"], "gateways", "{manifest}");
    assert_eq!(manifest["version"], 1, "{manifest}");
    let (status, body) = https_get(
        api,
        "/fleet/v1/release",
        &["Authorization: Bearer token-gw2"],
        &as_gw1,
    )
    .unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("names device `gw1` but the token is device `gw2`'s"),
        "{body}"
    );

    let before = metrics();
    let handshakes_before = counter(
        &before,
        r#"sluice_broker_refused_total{reason="tls_handshake"}"#,
    );
    let admitted_before = counter(
        &before,
        r#"sluice_broker_refused_total{reason="not_admitted"}"#,
    );

    // An agent claiming gw2 with gw1's certificate.
    let impostor = agent(api, "gw2", &ca, &gw1, &trust);
    // gw2's name on certificates the central host does not take.
    let rogue_agent = agent(api, "gw2", &ca, &rogue_gw2, &trust);
    let expired_agent = agent(api, "gw2", &ca, &expired_gw2, &trust);
    // gw3 is revoked, its certificate valid.
    let revoked = agent(api, "gw3", &ca, &gw3, &trust);
    // Plaintext to the TLS port.
    let plaintext = agent_at(&format!("http://localhost:{api}"), "gw1", &ca, &gw1, &trust);

    refused_with(
        &impostor,
        "the impostor refused",
        &["403", "these credentials are device `gw1`'s, not `gw2`'s"],
    );
    refused_with(
        &revoked,
        "the revoked device refused",
        &["403", "device `gw3` is revoked"],
    );
    // The API refuses the handshake of a certificate it does not trust, and the agent
    // says why as TLS told it.
    refused_with(
        &rogue_agent,
        "a certificate of another CA",
        &["fleet: asking https://", "received fatal alert: UnknownCA"],
    );
    refused_with(
        &expired_agent,
        "an expired certificate",
        &[
            "fleet: asking https://",
            "received fatal alert: CertificateExpired",
        ],
    );
    refused_with(
        &plaintext,
        "plaintext HTTP to the TLS port",
        &["fleet: asking http://", "error sending request"],
    );
    for (pair, what) in [(&rogue_gw2, "another CA"), (&expired_gw2, "expired")] {
        let config = client_config(&ca.file, Some(pair));
        let answer = https_get(api, "/fleet/v1/release", &[], &config);
        assert!(answer.is_err(), "{what}: {answer:?}");
    }
    assert_eq!(
        http_get(api, "/ready"),
        None,
        "plaintext gets no HTTP answer"
    );

    // The broker: the same certificates are refused there too.
    let as_rogue = client_config(&ca.file, Some(&rogue_gw2));
    let as_expired = client_config(&ca.file, Some(&expired_gw2));
    let as_gw3 = client_config(&ca.file, Some(&gw3));
    let reading: &[u8] = br#"{"device_id":"gw2-sensor-9","seq":1}"#;
    for (config, what) in [(&as_rogue, "another CA"), (&as_expired, "expired")] {
        let outcome = mqtt_publish(
            broker,
            "e2e-refused",
            config,
            &[("sensors/gw2/telemetry", reading)],
        );
        assert!(
            matches!(outcome, MqttOutcome::Failed(_)),
            "{what}: {outcome:?}"
        );
    }
    let outcome = mqtt_publish(
        broker,
        "e2e-revoked",
        &as_gw3,
        &[(
            "sensors/gw3/telemetry",
            br#"{"device_id":"gw3-sensor-9","seq":1}"#,
        )],
    );
    match &outcome {
        MqttOutcome::Failed(error) => assert!(error.contains("NotAuthorized"), "{error}"),
        other => panic!("a revoked device's certificate was admitted: {other:?}"),
    }
    let after = metrics();
    eprintln!(
        "broker refusals:\n{}",
        after
            .lines()
            .filter(|line| line.starts_with("sluice_broker_refused_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let handshakes = counter(
        &after,
        r#"sluice_broker_refused_total{reason="tls_handshake"}"#,
    );
    assert!(
        handshakes >= handshakes_before + 2,
        "two refused TLS handshakes: {handshakes_before} then {handshakes}"
    );
    let log = central.log_text();
    for reason in [
        "embedded broker: TLS handshake failed: invalid peer certificate: UnknownIssuer",
        "embedded broker: TLS handshake failed: invalid peer certificate: certificate expired",
        "embedded broker: refused a connection: NotAuthorized",
    ] {
        assert!(log.contains(reason), "{reason:?} not logged:\n{log}");
    }
    let admitted = counter(
        &after,
        r#"sluice_broker_refused_total{reason="not_admitted"}"#,
    );
    assert!(
        admitted > admitted_before,
        "the revoked device refused: {admitted_before} then {admitted}"
    );

    // gw1's certificate publishing under gw2's topic: acknowledged (MQTT 3.1.1 has no
    // negative PUBACK), counted and not routed; its own topic goes through.
    let forged: &[u8] = br#"{"device_id":"forged-sensor-0","seq":1}"#;
    let own: &[u8] = br#"{"device_id":"probe-sensor-0","seq":1}"#;
    let not_allowed = r#"sluice_broker_refused_total{reason="publish_not_allowed"}"#;
    let refused_before = counter(&metrics(), not_allowed);
    let outcome = mqtt_publish(
        broker,
        "e2e-gw1-probe",
        &as_gw1,
        &[
            ("sensors/gw2/telemetry", forged),
            ("sensors/gw1/telemetry", own),
        ],
    );
    assert!(matches!(outcome, MqttOutcome::Published(2)), "{outcome:?}");
    wait_until(Duration::from_secs(30), "gw1's own probe centrally", || {
        from(&out, "probe") == 1
    });
    assert_eq!(
        from(&out, "forged"),
        0,
        "nothing published under gw2's topic arrives"
    );
    assert_eq!(counter(&metrics(), not_allowed), refused_before + 1);

    // gw1 goes on; nobody else got in.
    let so_far = from(&out, "gw1");
    wait_until(Duration::from_secs(30), "more readings from gw1", || {
        from(&out, "gw1") >= so_far + 20
    });
    assert_eq!(from(&out, "gw2"), 0);
    assert_eq!(from(&out, "gw3"), 0);
    let fleet = devices();
    assert!(fleet["gw2"]["applied"].is_null(), "{fleet}");
    assert!(fleet["gw3"]["applied"].is_null(), "{fleet}");
    assert!(
        fleet["gw1"]["heartbeat"]["config_version"].is_string(),
        "{fleet}"
    );
    for agent in [
        &impostor,
        &rogue_agent,
        &expired_agent,
        &revoked,
        &plaintext,
    ] {
        assert!(
            !agent.log().contains("applied a new release"),
            "{}",
            agent.log()
        );
    }
    drop(central);
}
