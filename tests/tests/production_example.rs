//! examples/production as its README runs it: certificates from `make-certs`, the
//! fleet's key pair, a signed release of `gateway.toml`, `sluice validate` and
//! `sluice run` of `central.toml` with the secrets in the environment, and two gateways
//! as `sluice agent` with their certificates and the fleet's public key. Readings of
//! both arrive centrally, and `sluice fleet status` lists both with their release.
//!
//! The example's two configs are copied unchanged into a temporary directory laid out
//! as the repository is ([`example_copy`]), so that what they name relative to
//! themselves (`../../target/...`: the plugins, the releases, the data) resolves there
//! and nothing is written into the repository.

mod harness;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::tls::{client_config, https_get};
use harness::*;

const GATEWAYS: [&str; 2] = ["gateway-1", "gateway-2"];

/// The repository's examples/production.
fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/production")
}

/// Readings that arrived centrally from the sensors of `gateway`, each checked for the
/// central pipeline's `site`.
fn from(out: &Path, gateway: &str) -> usize {
    let prefix = format!("{gateway}-sensor-");
    let readings: Vec<serde_json::Value> = read_lines(out)
        .into_iter()
        .filter(|event| {
            event["device_id"]
                .as_str()
                .is_some_and(|id| id.starts_with(&prefix))
        })
        .collect();
    for reading in &readings {
        assert_eq!(reading["site"], "plant-1", "shaped centrally: {reading}");
    }
    readings.len()
}

#[test]
fn the_production_example_runs_signed_releases_on_gateways_known_by_their_certificates() {
    let (temporary, configs) = example_copy(
        "production",
        &["central.toml", "gateway.toml"],
        &["sensor-sim", "map"],
    );
    let root = temporary.path();

    // Certificates, the fleet's keys and the gateways' first release, as the README
    // makes them.
    let certs = root.join("certs");
    let made = Command::new(example().join("make-certs"))
        .arg(&certs)
        .output()
        .expect("examples/production/make-certs runs (it needs openssl)");
    assert!(
        made.status.success(),
        "make-certs: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let keys = root.join("keys");
    let (key, trust) = fleet_keygen(&keys);
    let native = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let released = fleet_release(
        &configs.join("gateway.toml"),
        "gateways",
        &key,
        // The directory central.toml's `releases` names.
        &root.join("target/production/releases"),
        &[&native],
    );
    assert!(
        released.starts_with("release 1 of group `gateways`"),
        "{released}"
    );

    let (api, broker) = (free_port(), free_port());
    let (api_port, broker_port) = (api.to_string(), broker.to_string());
    let env: Vec<(&str, OsString)> = vec![
        ("SLUICE_CERTS", certs.clone().into()),
        ("SLUICE_FLEET_KEY_DIR", keys.clone().into()),
        ("SLUICE_ADMIN_TOKEN", "e2e-admin-token-7d1f".into()),
        ("SLUICE_METRICS_TOKEN", "e2e-metrics-token-40ac".into()),
        ("ANALYTICS_PASSWORD", "e2e-analytics-93be".into()),
        ("SLUICE_API_PORT", api_port.into()),
        ("SLUICE_BROKER_PORT", broker_port.into()),
    ];
    let env: Vec<(&str, &OsStr)> = env
        .iter()
        .map(|(name, value)| (*name, value.as_os_str()))
        .collect();
    let central_config = configs.join("central.toml");

    // `sluice validate` loads every certificate and the release.
    let validated = Command::new(sluice_binary())
        .arg("validate")
        .arg(&central_config)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        validated.status.success(),
        "sluice validate: {}{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );

    let ca_file = certs.join("ca.pem");
    let trusting = client_config(&ca_file, None);
    let probe = trusting.clone();
    let central = Host::start_probed_env(&central_config, api, Stdio::null(), &env, move |port| {
        https_get(port, "/ready", &[], &probe).is_ok_and(|(status, _)| status == 200)
    });

    let broker_address = format!("localhost:{broker}");
    let agents: Vec<Agent> = GATEWAYS
        .iter()
        .map(|gateway| {
            let cert = certs.join(format!("{gateway}.crt"));
            let private = certs.join(format!("{gateway}.key"));
            Agent::start_with_env(
                Command::new(sluice_binary()),
                &format!("https://localhost:{api}"),
                gateway,
                &[
                    OsStr::new("--group"),
                    OsStr::new("gateways"),
                    OsStr::new("--trust"),
                    trust.as_os_str(),
                    OsStr::new("--ca-file"),
                    ca_file.as_os_str(),
                    OsStr::new("--cert-file"),
                    cert.as_os_str(),
                    OsStr::new("--key-file"),
                    private.as_os_str(),
                ],
                &[("SLUICE_BROKER", OsStr::new(&broker_address))],
            )
        })
        .collect();
    let logs = || {
        let mut text = String::new();
        for (gateway, agent) in GATEWAYS.iter().zip(&agents) {
            text += &format!("--- {gateway}:\n{}\n", agent.log());
        }
        text + &format!("--- central:\n{}", central.log_text())
    };

    // Readings of both gateways arrive centrally, over the broker's TLS.
    let out = root.join("target/production/telemetry");
    let arrived = || GATEWAYS.iter().all(|gateway| from(&out, gateway) >= 5);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !arrived() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(arrived(), "readings from both gateways\n{}", logs());

    // Both run the signed release, say so in their polls and report its version in
    // their heartbeats.
    let devices = || -> serde_json::Value {
        let (status, body) = https_get(
            api,
            "/fleet/v1/devices",
            &["Authorization: Bearer e2e-admin-token-7d1f"],
            &trusting,
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let settled = || {
        let devices = devices();
        GATEWAYS.iter().all(|gateway| {
            let device = &devices[gateway];
            device["applied"].is_string()
                && device["applied"] == device["offered"]
                && device["error"].is_null()
                && device["heartbeat"]["config_version"] == "1"
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !settled() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        settled(),
        "both gateways' releases: {}\n{}",
        devices(),
        logs()
    );
    let fleet = devices();

    // `sluice fleet status`, as an operator runs it.
    let token_file = root.join("admin.token");
    std::fs::write(&token_file, "e2e-admin-token-7d1f\n").unwrap();
    let status = Command::new(sluice_binary())
        .args(["fleet", "status", "--central"])
        .arg(format!("https://localhost:{api}"))
        .arg("--token-file")
        .arg(&token_file)
        .arg("--ca-file")
        .arg(&ca_file)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "sluice fleet status: {table}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        table.lines().any(|line| line.starts_with("gateways ")),
        "the group's rollout: {table}"
    );
    for gateway in GATEWAYS {
        let applied = fleet[gateway]["applied"].as_str().unwrap();
        let line = table
            .lines()
            .find(|line| line.split_whitespace().next() == Some(gateway))
            .unwrap_or_else(|| panic!("{gateway} not listed: {table}"));
        let columns: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            columns[1..4],
            ["gateways", applied, applied],
            "{gateway} with its group and its applied and offered release: {table}"
        );
    }
    for (gateway, agent) in GATEWAYS.iter().zip(&agents) {
        let log = agent.log();
        assert!(log.contains("applied a new release"), "{gateway}: {log}");
        assert!(!log.contains("ERROR"), "{gateway}: {log}");
    }
    drop(agents);
    assert!(
        central.stop().success(),
        "the central host drains and stops"
    );
}
