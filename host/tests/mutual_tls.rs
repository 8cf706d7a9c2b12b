//! Client certificates as identity: the fleet API serves a device whose certificate
//! names it without a token, refuses another device's certificate, a revoked device, a
//! certificate from another CA and an expired one; `admin_certificates` open the admin
//! routes; the embedded broker admits a device by its certificate and keeps it to its
//! own topics. Every refusal leaves the host serving.

#[path = "listeners/support.rs"]
#[allow(dead_code)]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS, Transport};
use support::*;

/// The CA file, the server's pair and the `tls` table with `client_ca_file`.
fn mutual_tls(dir: &Path, ca: &Ca) -> String {
    let ca_file = dir.join("clients-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let tls = ca.server("central").write(dir);
    let tls = tls.trim_end_matches(" }");
    format!("{tls}, client_ca_file = \"{}\" }}", ca_file.display())
}

fn fleet_host(api: std::net::SocketAddr, tls: &str) -> String {
    format!(
        r#"
[api]
listen = "{api}"
admin_token = "admin-secret"
admin_certificates = ["ops"]
{tls}

[fleet]
groups.edge = {{ config = "edge.toml" }}
groups.lab = {{ config = "lab.toml" }}
devices.gw1 = {{ group = "edge" }}
devices.gw2 = {{ group = "lab", token = "gw2-secret" }}
devices.gw3 = {{ group = "edge", revoked = true }}

[sources.in]
type = "http"
listen = "127.0.0.1:0"

[sinks.out]
type = "file"
inputs = ["in"]
path = "out"
"#
    )
}

fn groups(dir: &Path) {
    let sink = |name: &str| {
        format!(
            "[sources.s]\ntype = \"http\"\nlisten = \"127.0.0.1:0\"\n[sinks.{name}]\ntype = \"file\"\ninputs = [\"s\"]\npath = \"{name}\"\n"
        )
    };
    std::fs::write(dir.join("edge.toml"), sink("edge_out")).unwrap();
    std::fs::write(dir.join("lab.toml"), sink("lab_out")).unwrap();
}

#[tokio::test]
async fn the_fleet_api_takes_a_devices_certificate_as_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    groups(dir.path());
    let ca = Ca::new("fleet CA");
    let api = free_port();
    let host = start(dir.path(), &fleet_host(api, &mutual_tls(dir.path(), &ca))).await;
    let get = |client: Option<Pair>, path: &'static str, headers: Vec<(&'static str, String)>| {
        let roots = ca.roots();
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            https_as(
                api,
                roots,
                client.as_ref(),
                b"h2",
                "GET",
                path,
                &headers,
                "",
            )
            .await
        }
    };
    let gw1 = ca.client("gw1");

    let own = get(
        Some(gw1.clone()),
        "/fleet/v1/release",
        vec![("x-sluice-device", "gw1".into())],
    )
    .await
    .unwrap();
    assert_eq!(own.status, 200, "{}", own.body);
    assert!(
        own.body.contains("\"group\":\"edge\""),
        "gw1's group config: {}",
        own.body
    );

    let posing = get(
        Some(gw1.clone()),
        "/fleet/v1/release",
        vec![("x-sluice-device", "gw2".into())],
    )
    .await
    .unwrap();
    assert_eq!(posing.status, 403, "{}", posing.body);
    assert!(
        posing
            .body
            .contains("these credentials are device `gw1`'s, not `gw2`'s"),
        "{}",
        posing.body
    );

    let mixed = get(
        Some(gw1.clone()),
        "/fleet/v1/release",
        vec![("authorization", "Bearer gw2-secret".into())],
    )
    .await
    .unwrap();
    assert_eq!(mixed.status, 403, "{}", mixed.body);
    assert!(
        mixed
            .body
            .contains("names device `gw1` but the token is device `gw2`'s"),
        "{}",
        mixed.body
    );

    let revoked = get(Some(ca.client("gw3")), "/fleet/v1/release", vec![])
        .await
        .unwrap();
    assert_eq!(revoked.status, 403, "{}", revoked.body);
    assert!(
        revoked.body.contains("device `gw3` is revoked"),
        "{}",
        revoked.body
    );

    let stranger = get(Some(ca.client("gw9")), "/fleet/v1/release", vec![])
        .await
        .unwrap();
    assert_eq!(
        stranger.status, 401,
        "a certificate naming no device: {}",
        stranger.body
    );

    // Tokens keep working beside certificates.
    let token = get(
        None,
        "/fleet/v1/release",
        vec![("authorization", "Bearer gw2-secret".into())],
    )
    .await
    .unwrap();
    assert_eq!(token.status, 200, "{}", token.body);
    assert!(token.body.contains("\"group\":\"lab\""), "{}", token.body);

    let other_ca = Ca::new("another CA");
    let failure = get(Some(other_ca.client("gw1")), "/fleet/v1/release", vec![])
        .await
        .err()
        .expect("a certificate from another CA fails the handshake");
    // Over TLS 1.3 the client hears the server's alert only at its first read.
    assert!(format!("{failure:?}").contains("UnknownCA"), "{failure:?}");
    let failure = get(Some(ca.expired_client("gw1")), "/fleet/v1/release", vec![])
        .await
        .err()
        .expect("an expired certificate fails the handshake");
    assert!(
        format!("{failure:?}").contains("CertificateExpired"),
        "{failure:?}"
    );

    // The admin routes: a certificate named in `admin_certificates`, not a device's.
    let ops = get(Some(ca.client("ops")), "/fleet/v1/devices", vec![])
        .await
        .unwrap();
    assert_eq!(ops.status, 200, "{}", ops.body);
    let devices: serde_json::Value = serde_json::from_str(&ops.body).unwrap();
    assert!(
        devices["gw1"]["last_seen_ms"].is_i64(),
        "gw1 was seen: {devices}"
    );
    let device = get(Some(gw1), "/fleet/v1/devices", vec![]).await.unwrap();
    assert_eq!(device.status, 401, "{}", device.body);
    let metrics = get(Some(ca.client("ops")), "/metrics", vec![])
        .await
        .unwrap();
    assert_eq!(metrics.status, 200);

    let health = get(None, "/health", vec![]).await.unwrap();
    assert_eq!(
        (health.status, health.body.as_str()),
        (200, "ok\n"),
        "still serving"
    );
    host.drain().await.unwrap();
}

/// MQTT over TLS to `port`, presenting `client`'s certificate.
fn certified_options(id: &str, port: u16, ca: &Ca, client: &Pair) -> MqttOptions {
    let (chain, key) = client.identity();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_client_auth_cert(chain, key)
        .unwrap();
    let mut options = MqttOptions::new(id, "localhost", port);
    options.set_transport(Transport::tls_with_config(config.into()));
    options
}

async fn connack(options: MqttOptions) -> Result<ConnectReturnCode, String> {
    let (_client, mut events) = AsyncClient::new(options, 10);
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => return Ok(ack.code),
                Ok(_) => {}
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return Ok(code),
                Err(error) => return Err(error.to_string()),
            }
        }
    })
    .await
    .expect("an answer within 10 s")
}

#[tokio::test]
async fn the_broker_admits_a_device_by_its_certificate_and_keeps_it_to_its_topics() {
    let dir = tempfile::tempdir().unwrap();
    groups(dir.path());
    let ca = Ca::new("fleet CA");
    let tls = mutual_tls(dir.path(), &ca);
    let (api, port) = (free_port(), free_port().port());
    let text = format!(
        r#"
[api]
listen = "{api}"
{tls}

[broker]
listen = "127.0.0.1:{port}"
{tls}

[fleet]
groups.edge = {{ config = "edge.toml" }}
devices.gw1 = {{ group = "edge" }}
devices.gw2 = {{ group = "edge" }}
devices.gw3 = {{ group = "edge", revoked = true }}

[sources.readings]
type = "mqtt"
url = "mqtts://localhost:{port}"
ca_file = "{ca}"
cert_file = "{dir}/server.crt"
key_file = "{dir}/server.key"
topics = ["sensors/#"]
qos = 1

[sinks.out]
type = "file"
inputs = ["readings"]
path = "out"
"#,
        ca = dir.path().join("clients-ca.pem").display(),
        dir = dir.path().display(),
    );
    let host = start(dir.path(), &text).await;

    // gw1 connects with its certificate and no password. MQTT 3.1.1 has no negative
    // PUBACK: the broker acknowledges the message under gw2's topic and routes nothing.
    let (client, mut events) =
        AsyncClient::new(certified_options("gw1", port, &ca, &ca.client("gw1")), 10);
    for topic in ["sensors/gw2/t", "sensors/gw1/t"] {
        client
            .publish(
                topic,
                QoS::AtLeastOnce,
                false,
                format!("{{\"from\":\"{topic}\"}}"),
            )
            .await
            .unwrap();
    }
    let mut acknowledged = 0;
    tokio::time::timeout(Duration::from_secs(10), async {
        while acknowledged < 2 {
            match events.poll().await.unwrap() {
                Event::Incoming(Packet::ConnAck(ack)) => {
                    assert_eq!(ack.code, ConnectReturnCode::Success)
                }
                Event::Incoming(Packet::PubAck(_)) => acknowledged += 1,
                _ => {}
            }
        }
    })
    .await
    .expect("both publishes are answered");

    assert_eq!(
        connack(certified_options("gw3", port, &ca, &ca.client("gw3"))).await,
        Ok(ConnectReturnCode::NotAuthorized),
        "a revoked device's certificate"
    );
    let mut posing = certified_options("gw1b", port, &ca, &ca.client("gw1"));
    posing.set_credentials("gw2", "");
    assert_eq!(
        connack(posing).await,
        Ok(ConnectReturnCode::NotAuthorized),
        "gw1's certificate with gw2's name"
    );
    let expired = connack(certified_options(
        "gw1c",
        port,
        &ca,
        &ca.expired_client("gw1"),
    ))
    .await;
    assert!(
        expired
            .as_ref()
            .is_err_and(|error| error.contains("CertificateExpired")),
        "{expired:?}"
    );

    let out = dir.path().join("data/out");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let text = read_dir_text(&out);
            if text.contains("sensors/gw1/t") {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("gw1's reading reaches the pipeline");
    // Give a wrongly routed message the time the allowed one took, and more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let arrived = read_dir_text(&out);
    assert!(
        !arrived.contains("sensors/gw2"),
        "nothing under gw2's topic: {arrived}"
    );
    host.drain().await.unwrap();
}

/// Everything the file sink wrote under `dir`.
fn read_dir_text(dir: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return String::new();
    };
    entries
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .collect()
}

#[test]
fn certificate_settings_that_cannot_work_are_refused_at_validation() {
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let missing = refused(
        dir.path(),
        &format!(
            "[api]\nlisten = \"{api}\"\ntls = {{ cert_file = \"{0}/none.crt\", key_file = \"{0}/none.key\" }}\n",
            dir.path().display()
        ),
    );
    assert!(
        missing.contains("cannot read") && missing.contains("none.crt"),
        "{missing}"
    );

    let ca = Ca::new("CA");
    let tls = ca.server("central").write(dir.path());
    std::fs::write(dir.path().join("edge.toml"), "").unwrap();
    let tokenless = refused(
        dir.path(),
        &format!(
            "[api]\nlisten = \"{api}\"\nadmin_certificates = [\"ops\"]\n{tls}\n\
             [fleet]\ngroups.edge = {{ config = \"edge.toml\" }}\ndevices.gw1 = {{ group = \"edge\" }}\n"
        ),
    );
    assert!(
        tokenless.contains("fleet devices without a `token` (gw1) cannot prove who they are"),
        "{tokenless}"
    );
    assert!(
        tokenless
            .contains("`admin_certificates` are set, but the API takes no client certificates"),
        "{tokenless}"
    );
}
