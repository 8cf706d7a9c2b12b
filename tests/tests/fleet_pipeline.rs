//! The fleet from the central host's one config: two agents in different groups get
//! their group's pipeline and follow a change within a few polls; a broken version is
//! refused, reported and the running one kept; a device token reaches only its own
//! group's releases (`GET /fleet/v1/release`, `GET /fleet/v1/release/{id}/{file}`).

mod harness;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::*;

/// A group config: simulated sensors into a file at `out`, plus `extra` stages.
fn group(plugin_path: &str, out: &str, extra: &str) -> String {
    format!(
        r#"
[plugins.sensor-sim]
path = "{plugin_path}"

[sources.devices]
type = "wasm"
plugin = "sensor-sim"
interval_ms = 200
config = {{ devices = 1 }}

[sinks.out]
type = "file"
inputs = ["devices"]
path = "{out}"
{extra}
"#
    )
}

fn devices(api: u16) -> serde_json::Value {
    let (status, body) = http_get_with(
        api,
        "/fleet/v1/devices",
        &["Authorization: Bearer admin-secret"],
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// `GET /fleet/v1/release` with `token`: the manifest (JSON) and the release's id (its
/// `ETag`). The groups here are live (`config = ...`): their releases are unsigned.
fn release(api: u16, token: &str) -> (serde_json::Value, String) {
    let (status, headers, body) = http_get_headers(
        api,
        "/fleet/v1/release",
        &[&format!("Authorization: Bearer {token}")],
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(!headers.contains_key("x-sluice-signature"), "{headers:?}");
    let id = headers["etag"].trim_matches('"').to_owned();
    (serde_json::from_str(&body).unwrap(), id)
}

/// The status of `GET path` with `token` (none: no `Authorization`).
fn status(api: u16, path: &str, token: Option<&str>) -> u16 {
    let header = token.map(|token| format!("Authorization: Bearer {token}"));
    let headers: Vec<&str> = header.iter().map(String::as_str).collect();
    http_get_with(api, path, &headers).unwrap().0
}

/// The plugin files (`plugins/<sha256>.wasm`) a manifest lists.
fn plugin_files(manifest: &serde_json::Value) -> Vec<String> {
    manifest["files"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|name| name.starts_with("plugins/"))
        .cloned()
        .collect()
}

#[test]
fn a_fleet_follows_the_central_config_refuses_a_broken_version_and_keeps_groups_apart() {
    let central_dir = tempfile::tempdir().unwrap();
    let dir = central_dir.path();
    let sensor_sim = plugin("sensor-sim");
    let filter = plugin("filter");
    std::fs::write(dir.join("alpha.toml"), group(&sensor_sim, "alpha-v1", "")).unwrap();
    let beta_filter = format!(
        r#"
[plugins.filter]
path = "{filter}"

[transforms.hot]
type = "wasm"
plugin = "filter"
inputs = ["devices"]
config = {{ when = {{ field = "temperature", gt = -100.0 }} }}

[sinks.hot_files]
type = "file"
inputs = ["hot"]
path = "beta-hot"
"#
    );
    std::fs::write(
        dir.join("beta.toml"),
        group(&sensor_sim, "beta-v1", &beta_filter),
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

[sources.ingest]
type = "http"
listen = "127.0.0.1:{}"

[sinks.out]
type = "file"
inputs = ["ingest"]
path = "out"

[fleet]
poll_secs = 1
admin_token = "admin-secret"
groups.alpha = {{ config = "alpha.toml" }}
groups.beta = {{ config = "beta.toml" }}
devices.dev-a = {{ group = "alpha", token = "token-a" }}
devices.dev-b = {{ group = "beta", token = "token-b" }}
"#,
            dir.join("data").display(),
            free_port()
        ),
    )
    .unwrap();
    let _central = Host::start(&central_config, api, Stdio::null());

    // Tokens: none, a wrong one, and a device asking for another group's release.
    assert_eq!(status(api, "/fleet/v1/release", None), 401);
    assert_eq!(status(api, "/fleet/v1/release", Some("token-x")), 401);
    assert_eq!(status(api, "/fleet/v1/devices", None), 401);
    // A device's token is no admin's.
    assert_eq!(status(api, "/fleet/v1/devices", Some("token-a")), 403);
    // Each device is offered its own group's release: a live group's config, unsigned.
    let (alpha, alpha_id) = release(api, "token-a");
    assert_eq!(alpha["group"], "alpha", "{alpha}");
    let (beta, beta_id) = release(api, "token-b");
    assert_eq!(beta["group"], "beta", "{beta}");
    assert_ne!(alpha_id, beta_id);
    let alpha_config = format!("/fleet/v1/release/{alpha_id}/config.toml");
    let (code, config) =
        http_get_with(api, &alpha_config, &["Authorization: Bearer token-a"]).unwrap();
    assert_eq!(code, 200, "{config}");
    assert!(
        config.contains("alpha-v1") && !config.contains("beta"),
        "{config}"
    );
    // Without a token, or with an unknown one, no file of a release either.
    assert_eq!(status(api, &alpha_config, None), 401);
    assert_eq!(status(api, &alpha_config, Some("token-x")), 401);
    // Beta's filter plugin, which alpha's release does not have.
    let alpha_plugins = plugin_files(&alpha);
    let filter = plugin_files(&beta)
        .into_iter()
        .find(|file| !alpha_plugins.contains(file))
        .unwrap_or_else(|| panic!("{alpha}\n---\n{beta}"));
    let beta_config = format!("/fleet/v1/release/{beta_id}/config.toml");
    let beta_filter = format!("/fleet/v1/release/{beta_id}/{filter}");
    // Another group's release, by its id, is as unknown to a device as a made-up one;
    // so is another group's plugin asked for in the device's own release.
    for path in [
        beta_config.as_str(),
        beta_filter.as_str(),
        &format!("/fleet/v1/release/{alpha_id}/{filter}"),
        "/fleet/v1/release/000000000000000000000000/config.toml",
    ] {
        assert_eq!(status(api, path, Some("token-a")), 404, "{path}");
    }
    for path in [&beta_config, &beta_filter] {
        assert_eq!(status(api, path, Some("token-b")), 200, "{path}");
    }
    // The old routes are gone: nothing is served by plugin hash or compiled on request.
    for path in [
        "/fleet/v1/config".to_owned(),
        format!(
            "/fleet/v1/plugins/{}",
            filter
                .trim_start_matches("plugins/")
                .trim_end_matches(".wasm")
        ),
    ] {
        assert_eq!(status(api, &path, Some("token-b")), 404, "{path}");
    }

    let a = Agent::start(Command::new(sluice_binary()), api, "dev-a", "token-a");
    let b = Agent::start(Command::new(sluice_binary()), api, "dev-b", "token-b");
    let running = || a.lines("alpha-v1") > 0 && b.lines("beta-v1") > 0 && b.lines("beta-hot") > 0;
    for _ in 0..600 {
        if running() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        running(),
        "agents not running:\n{}\n---\n{}",
        a.log(),
        b.log()
    );
    assert_eq!(a.lines("beta-v1"), 0, "{}", a.log());
    // Each device reports what it runs with its next poll.
    let settled = |device: &str| {
        let status = &devices(api)[device];
        status["applied"].is_string() && status["applied"] == status["offered"]
    };
    wait_until(
        Duration::from_secs(20),
        "both devices reporting their version",
        || settled("dev-a") && settled("dev-b"),
    );
    let first = devices(api);

    // A change on the central host reaches the device within a few polls.
    std::fs::write(dir.join("alpha.toml"), group(&sensor_sim, "alpha-v2", "")).unwrap();
    wait_until(Duration::from_secs(30), "the new version running", || {
        a.lines("alpha-v2") > 0
    });
    wait_until(Duration::from_secs(20), "the new version reported", || {
        settled("dev-a") && devices(api)["dev-a"]["applied"] != first["dev-a"]["applied"]
    });
    let second = devices(api);
    assert_ne!(second["dev-a"]["applied"], first["dev-a"]["applied"]);
    assert_eq!(
        second["dev-a"]["applied"], second["dev-a"]["offered"],
        "{second}"
    );
    assert_eq!(
        second["dev-b"]["applied"], first["dev-b"]["applied"],
        "the other group is untouched"
    );

    // A broken version (a plugin that is no component) is refused and reported; the
    // running version goes on.
    let broken = dir.join("broken.wasm");
    std::fs::write(&broken, b"\0asm not really a component").unwrap();
    std::fs::write(
        dir.join("alpha.toml"),
        group(
            &PathBuf::from(&broken).display().to_string(),
            "alpha-v3",
            "",
        ),
    )
    .unwrap();
    wait_until(Duration::from_secs(30), "the refusal reported", || {
        devices(api)["dev-a"]["error"].is_string()
    });
    let third = devices(api);
    assert_eq!(
        third["dev-a"]["applied"], second["dev-a"]["applied"],
        "{third}"
    );
    assert_ne!(third["dev-a"]["offered"], third["dev-a"]["applied"]);
    let before = a.lines("alpha-v2");
    wait_until(
        Duration::from_secs(20),
        "the previous version still running",
        || a.lines("alpha-v2") > before,
    );
    assert_eq!(a.lines("alpha-v3"), 0);
}
