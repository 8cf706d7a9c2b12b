//! Signed releases as the central host serves them: made with the fleet's key, read and
//! checked once, served with their signature; a new release is picked up at the next
//! poll, a pin holds the group on one release, a rollback is a new signed release with
//! an earlier one's content, and a release whose files were changed on disk is not
//! served.

#[path = "listeners/support.rs"]
#[allow(dead_code)]
mod support;

mod common;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use sluice::release::make::{self, Plan, Source};
use sluice::release::{Manifest, SignedManifest, SigningKey, TrustedKey};
use support::*;

const TARGET: &str = sluice::runtime::precompiled::TARGET;

/// A fleet key pair in `dir`: the signing key and the public key's path.
fn keys(dir: &Path) -> (SigningKey, PathBuf) {
    let (private, public) = SigningKey::generate().unwrap();
    std::fs::write(dir.join("fleet.key"), private).unwrap();
    std::fs::write(dir.join("fleet.pub"), public).unwrap();
    (
        SigningKey::load(&dir.join("fleet.key")).unwrap(),
        dir.join("fleet.pub"),
    )
}

/// A group config in `dir/group` running the forward fixture, with `interval` in its text
/// so that two configs differ.
fn group_config(dir: &Path, interval: u32) -> PathBuf {
    let group = dir.join("group");
    std::fs::create_dir_all(&group).unwrap();
    std::fs::copy(common::plugin_path("sensor-sim"), group.join("sim.wasm")).unwrap();
    let path = group.join("edge.toml");
    std::fs::write(
        &path,
        format!(
            "[plugins.sim]\npath = \"sim.wasm\"\n[sources.s]\ntype = \"wasm\"\nplugin = \"sim\"\ninterval_ms = {interval}\n\
             [sinks.up]\ntype = \"uplink\"\ninputs = [\"s\"]\nurl = \"mqtt://127.0.0.1:1\"\ntopic = \"t\"\ndevice_id = \"d\"\n"
        ),
    )
    .unwrap();
    path
}

fn release(dir: &Path, key: &SigningKey, source: Source<'_>) -> u64 {
    make::make(&Plan {
        group: "edge",
        source,
        targets: &[TARGET.to_owned()],
        key,
        releases: &dir.join("releases"),
    })
    .unwrap()
    .version
}

fn central(api: std::net::SocketAddr, extra: &str) -> String {
    format!(
        r#"
[api]
listen = "{api}"
admin_token = "admin"

[fleet]
releases = "releases"
trust = "fleet.pub"
groups.edge = {{ {extra} }}
devices.gw1 = {{ group = "edge", token = "gw1-token" }}

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

/// The release gw1 is offered: its manifest (verified with `trusted`) and its id.
async fn offered(api: std::net::SocketAddr, trusted: &TrustedKey) -> (Manifest, String) {
    let response = reqwest_like(api, "/fleet/v1/release").await;
    assert_eq!(response.0, 200, "{}", String::from_utf8_lossy(&response.1));
    let headers = response.2;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(headers["x-sluice-signature"].as_bytes())
        .unwrap();
    let signed = SignedManifest {
        bytes: response.1,
        signature: Some(signature),
    };
    let manifest = signed
        .verify(Some(trusted))
        .expect("the served manifest verifies");
    let id = headers["etag"].trim_matches('"').to_owned();
    (manifest, id)
}

/// GET `path` as gw1 over plain HTTP: status, body and headers.
async fn reqwest_like(
    api: std::net::SocketAddr,
    path: &str,
) -> (u16, Vec<u8>, std::collections::BTreeMap<String, String>) {
    request_as(api, "GET", path, &[("authorization", "Bearer gw1-token")]).await
}

type Answer = (u16, Vec<u8>, std::collections::BTreeMap<String, String>);

/// A request with `headers` over plain HTTP: status, body and headers.
async fn request_as(
    api: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(api).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "central");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(String::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec(), headers)
}

#[tokio::test]
async fn the_central_host_serves_the_latest_signed_release_and_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keys(dir.path());
    let trusted = TrustedKey::load(&public).unwrap();
    let config = group_config(dir.path(), 100);
    assert_eq!(release(dir.path(), &key, Source::Config(&config)), 1);
    let api = free_port();
    let host = start(dir.path(), &central(api, "")).await;

    let (first, id) = offered(api, &trusted).await;
    assert_eq!(
        (first.group.as_str(), first.version, first.parent),
        ("edge", 1, None)
    );
    let artifact = first
        .files
        .keys()
        .find(|name| name.starts_with("artifacts/") && name.contains(TARGET))
        .expect("machine code for this target")
        .clone();
    for name in first.files.keys() {
        let (status, bytes, _) = reqwest_like(api, &format!("/fleet/v1/release/{id}/{name}")).await;
        assert_eq!(status, 200, "{name}");
        first
            .check(name, &bytes)
            .expect("each file is the manifest's");
    }
    let config_text = reqwest_like(api, &format!("/fleet/v1/release/{id}/config.toml"))
        .await
        .1;
    assert!(
        String::from_utf8_lossy(&config_text).contains("config_version = \"1\""),
        "heartbeats report the release's version"
    );
    let (status, body, _) =
        reqwest_like(api, &format!("/fleet/v1/release/{id}/artifacts/nope")).await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = reqwest_like(
        api,
        &format!("/fleet/v1/release/{}/{artifact}", "0".repeat(24)),
    )
    .await;
    assert_eq!(status, 404, "another release id");
    // The old routes that compiled on request are gone.
    let (status, _, _) = reqwest_like(api, "/fleet/v1/config").await;
    assert_eq!(status, 404);

    // A release made while the host runs is the next poll's.
    let changed = group_config(dir.path(), 250);
    assert_eq!(release(dir.path(), &key, Source::Config(&changed)), 2);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (second, second_id) = offered(api, &trusted).await;
    assert_eq!((second.version, second.parent), (2, Some(1)));
    assert_ne!(second_id, id);
    // The previous release's files stay available to a device mid-download.
    let (status, _, _) = reqwest_like(api, &format!("/fleet/v1/release/{id}/config.toml")).await;
    assert_eq!(status, 200);

    // An operator's rollback: release 3, with release 1's content.
    assert_eq!(release(dir.path(), &key, Source::Rollback(1)), 3);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (third, _) = offered(api, &trusted).await;
    assert_eq!(
        (third.version, third.parent, third.rollback_of),
        (3, Some(2), Some(1))
    );
    let plugins = |manifest: &Manifest| {
        manifest
            .files
            .iter()
            .filter(|(name, _)| !name.starts_with("config"))
            .map(|(name, file)| (name.clone(), file.sha256.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        plugins(&third),
        plugins(&first),
        "the same plugins and machine code"
    );
    host.drain().await.unwrap();
}

#[tokio::test]
async fn a_pinned_group_stays_and_a_changed_release_is_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keys(dir.path());
    let trusted = TrustedKey::load(&public).unwrap();
    release(
        dir.path(),
        &key,
        Source::Config(&group_config(dir.path(), 100)),
    );
    release(
        dir.path(),
        &key,
        Source::Config(&group_config(dir.path(), 200)),
    );
    let api = free_port();
    let host = start(dir.path(), &central(api, "release = 1")).await;
    assert_eq!(
        offered(api, &trusted).await.0.version,
        1,
        "the pin, not the latest"
    );
    host.drain().await.unwrap();

    // A byte changed in release 2's plugin on the central host's disk: the host refuses
    // to start rather than serve what every device would refuse.
    let plugin = std::fs::read_dir(dir.path().join("releases/edge/2/plugins"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&plugin).unwrap();
    bytes[100] ^= 0x20;
    std::fs::write(&plugin, bytes).unwrap();
    let refused = sluice::supervisor::Supervisor::start(config(dir.path(), &central(api, "")))
        .await
        .err()
        .expect("a release that does not match its manifest is refused")
        .to_string();
    assert!(
        refused.contains("releases/edge/2") && refused.contains("sha256"),
        "{refused}"
    );

    // A release signed with another key is refused too.
    let stranger = tempfile::tempdir().unwrap();
    let (other_key, _) = keys(stranger.path());
    std::fs::remove_dir_all(dir.path().join("releases/edge/2")).unwrap();
    release(
        dir.path(),
        &other_key,
        Source::Config(&group_config(dir.path(), 300)),
    );
    let refused = sluice::supervisor::Supervisor::start(config(dir.path(), &central(api, "")))
        .await
        .err()
        .expect("a release the fleet's key did not sign is refused")
        .to_string();
    assert!(refused.contains("signature does not verify"), "{refused}");
}

#[test]
fn a_release_is_never_replaced_and_a_rollback_needs_an_existing_release() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = keys(dir.path());
    let config = group_config(dir.path(), 100);
    release(dir.path(), &key, Source::Config(&config));
    let refused = |group: &str, source: Source<'_>| {
        make::make(&Plan {
            group,
            source,
            targets: &[],
            key: &key,
            releases: &dir.path().join("releases"),
        })
        .unwrap_err()
        .to_string()
    };
    let error = refused("edge", Source::Rollback(5));
    assert!(
        error.contains("no release 5 to roll back to (it has [1])"),
        "{error}"
    );
    let error = refused("../etc", Source::Config(&config));
    assert!(
        error.contains("cannot name a group's release directory"),
        "{error}"
    );
}

/// Four devices polling as agents would: what each is offered (the release's version).
struct Devices {
    api: std::net::SocketAddr,
    /// Each device's running release id, reported in `X-Sluice-Applied`.
    applied: std::collections::BTreeMap<String, String>,
    versions: std::collections::BTreeMap<String, u64>,
}

impl Devices {
    /// One poll of `device`, which then runs what it is offered unless `refuse`: it
    /// reports the refusal in its next poll, as the agent does.
    async fn poll(&mut self, device: &str, refuse: Option<&str>) -> u64 {
        let token = format!("Bearer {device}-token");
        let mut headers = vec![("authorization", token.as_str())];
        let applied = self.applied.get(device).cloned();
        if let Some(applied) = &applied {
            headers.push(("x-sluice-applied", applied.as_str()));
        }
        if let Some(reason) = refuse {
            headers.push(("x-sluice-error", reason));
        }
        let (status, body, answer) =
            request_as(self.api, "GET", "/fleet/v1/release", &headers).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let manifest: Manifest = serde_json::from_slice(&body).unwrap();
        if refuse.is_none() {
            self.applied.insert(
                device.to_owned(),
                answer["etag"].trim_matches('"').to_owned(),
            );
            self.versions.insert(device.to_owned(), manifest.version);
        }
        manifest.version
    }

    async fn poll_all(&mut self) -> Vec<u64> {
        let mut offered = Vec::new();
        for device in ["gw0", "gw1", "gw2", "gw3"] {
            offered.push(self.poll(device, None).await);
        }
        offered
    }
}

async fn rollouts(api: std::net::SocketAddr) -> serde_json::Value {
    let (status, body, _) = request_as(
        api,
        "GET",
        "/fleet/v1/rollouts",
        &[("authorization", "Bearer admin")],
    )
    .await;
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn a_rollout_goes_wave_by_wave_and_a_refused_release_halts_and_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = keys(dir.path());
    release(
        dir.path(),
        &key,
        Source::Config(&group_config(dir.path(), 100)),
    );
    let api = free_port();
    let text = central(
        api,
        "rollout = { waves = [1, \"100%\"], soak_secs = 1, max_wave_secs = 60 }",
    )
    .replace(
        "devices.gw1 = { group = \"edge\", token = \"gw1-token\" }",
        "devices.gw0 = { group = \"edge\", token = \"gw0-token\" }\n\
             devices.gw1 = { group = \"edge\", token = \"gw1-token\" }\n\
             devices.gw2 = { group = \"edge\", token = \"gw2-token\" }\n\
             devices.gw3 = { group = \"edge\", token = \"gw3-token\", release = 1 }",
    );
    let host = start(dir.path(), &text).await;
    let mut devices = Devices {
        api,
        applied: Default::default(),
        versions: Default::default(),
    };
    assert_eq!(
        devices.poll_all().await,
        [1, 1, 1, 1],
        "the group stands on release 1"
    );

    release(
        dir.path(),
        &key,
        Source::Config(&group_config(dir.path(), 200)),
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        devices.poll_all().await,
        [2, 1, 1, 1],
        "the first wave is gw0 alone"
    );
    assert_eq!(
        devices.poll_all().await,
        [2, 1, 1, 1],
        "gw0 runs it, not yet soaked"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        devices.poll_all().await,
        [2, 2, 2, 1],
        "healthy for 1 s: the next wave (gw3 is pinned)"
    );
    devices.poll_all().await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    devices.poll_all().await;
    assert_eq!(rollouts(api).await["edge"]["state"], "completed");

    // Release 3 fails on its first wave: gw0 refuses it.
    release(
        dir.path(),
        &key,
        Source::Config(&group_config(dir.path(), 300)),
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(devices.poll_all().await, [3, 2, 2, 1]);
    assert_eq!(
        devices
            .poll("gw0", Some("plugin `sim` traps at init"))
            .await,
        2,
        "gw0 goes back"
    );
    for _ in 0..3 {
        assert_eq!(
            devices.poll_all().await,
            [2, 2, 2, 1],
            "the others never get release 3"
        );
    }
    let state = rollouts(api).await;
    assert_eq!(state["edge"]["state"], "halted", "{state}");
    assert!(
        state["edge"]["reason"]
            .as_str()
            .unwrap()
            .contains("device `gw0` refused release 3"),
        "{state}"
    );
    let (status, body, _) = request_as(
        api,
        "POST",
        "/fleet/v1/rollouts/edge/abort",
        &[("authorization", "Bearer admin")],
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, body, _) = request_as(
        api,
        "POST",
        "/fleet/v1/rollouts/edge/resume",
        &[("authorization", "Bearer admin")],
    )
    .await;
    assert_eq!(status, 409, "an aborted rollout cannot resume");
    assert!(String::from_utf8_lossy(&body).contains("aborted: cannot resume"));
    let (status, _, _) = request_as(api, "POST", "/fleet/v1/rollouts/edge/abort", &[]).await;
    assert_eq!(status, 401, "operators only");
    host.drain().await.unwrap();

    // The rollout's state outlives the host.
    let host = start(dir.path(), &text).await;
    assert_eq!(rollouts(api).await["edge"]["state"], "aborted");
    assert_eq!(devices.poll_all().await, [2, 2, 2, 1]);
    host.drain().await.unwrap();
}
