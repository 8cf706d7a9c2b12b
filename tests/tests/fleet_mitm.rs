//! A man in the middle between an agent and its central host, which serves signed
//! releases. Whatever the proxy changes of release 2 — the manifest's bytes, its
//! signature, the config, a plugin, the plugin's machine code — or swaps in (a release
//! signed with another key, release 1 replayed after release 3) is refused before it
//! runs, the reason is reported to the central host on the next poll, and the running
//! release goes on writing; once the proxy passes answers unchanged, release 2 applies.

mod harness;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use harness::fleet::*;
use harness::*;

const DEVICE: &str = "gw1";
const TOKEN: &str = "gw1-token";

/// The group's config `name`: simulated sensors into the file sink `out`, through the
/// `filter` plugin when `filtered` (a plugin release 1 does not have, so that its Wasm
/// and machine code are fetched for release 2).
fn group_config(dir: &Path, name: &str, out: &str, filtered: bool) -> PathBuf {
    let mut text = format!(
        r#"
[plugins.sensor-sim]
path = "{sim}"

[sources.sensors]
type = "wasm"
plugin = "sensor-sim"
interval_ms = 100
config = {{ devices = 1 }}
"#,
        sim = plugin("sensor-sim")
    );
    let input = if filtered {
        text.push_str(&format!(
            r#"
[plugins.filter]
path = "{filter}"

[transforms.warm]
type = "wasm"
plugin = "filter"
inputs = ["sensors"]
config = {{ when = {{ field = "temperature", gt = -100.0 }} }}
"#,
            filter = plugin("filter")
        ));
        "warm"
    } else {
        "sensors"
    };
    text.push_str(&format!(
        "\n[sinks.out]\ntype = \"file\"\ninputs = [\"{input}\"]\npath = \"{out}\"\n"
    ));
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The manifest a release poll answers with, when it is release `version`'s.
fn is_manifest_of(path: &str, answer: &Response, version: u64) -> bool {
    path == "/fleet/v1/release"
        && answer.status == 200
        && serde_json::from_slice::<serde_json::Value>(&answer.body)
            .is_ok_and(|manifest| manifest["version"] == version)
}

/// The answer to a release poll replaced with the release in `dir`: its manifest, its
/// signature and its id.
fn answer_with(answer: &mut Response, dir: &Path) {
    answer.status = 200;
    answer.body = std::fs::read(dir.join("manifest.json")).unwrap();
    let signature = std::fs::read_to_string(dir.join("manifest.sig")).unwrap();
    answer.set_header("x-sluice-signature", Some(signature.trim()));
    answer.set_header("etag", Some(&format!("\"{}\"", release_id(dir))));
    answer.set_header("content-type", Some("application/json"));
}

/// One byte of `body` changed, its length kept (so the sha256 is what fails).
fn flip(body: &mut [u8]) {
    let middle = body.len() / 2;
    body[middle] ^= 0x55;
}

/// Wait until the central host shows the device's error about `release` (`release ID
/// (version N)`, or a part of it) refused for `reason`; then check that the device still
/// runs `running` (its applied release) and its sink `out` keeps growing, and that the
/// agent's log names the refusal. The error.
fn refused(
    api: u16,
    agent: &Agent,
    release: &str,
    reason: &str,
    running: &str,
    out: &str,
) -> String {
    let error = || devices(api)[DEVICE]["error"].as_str().map(str::to_owned);
    wait_until(
        Duration::from_secs(20),
        &format!("the device to report {release}: {reason}"),
        || error().is_some_and(|error| error.contains(release) && error.contains(reason)),
    );
    let error = error().unwrap();
    let status = &devices(api)[DEVICE];
    assert_eq!(
        status["applied"],
        running,
        "the running release goes on: {status}\n{}",
        agent.log()
    );
    let before = agent.lines(out);
    wait_until(
        Duration::from_secs(10),
        "the running release to keep writing",
        || agent.lines(out) > before,
    );
    let log = agent.log();
    assert!(
        log.lines()
            .any(|line| line.contains("refused a release") && line.contains(reason)),
        "the agent's log names why: {reason}\n{log}"
    );
    error
}

#[test]
fn a_man_in_the_middle_cannot_make_an_agent_run_what_the_fleet_key_did_not_sign() {
    let central_dir = tempfile::tempdir().unwrap();
    let dir = central_dir.path();
    let (key, trust) = keygen(&dir.join("keys"));
    let releases = dir.join("releases");
    let first = make_release(
        &group_config(dir, "v1.toml", "v1", false),
        "edge",
        &key,
        &releases,
    );
    let api = free_port();
    let config = central_config(dir, api, "", &[(DEVICE.into(), TOKEN.into())]);
    let _central = Host::start(&config, api, Stdio::null());
    let proxy = Proxy::start(api);
    let agent = start_agent(&proxy.url(), DEVICE, TOKEN, &trust);

    let r1 = release_id(&first);
    wait_until(Duration::from_secs(30), "release 1 running", || {
        agent.lines("v1") > 0 && devices(api)[DEVICE]["applied"] == r1.as_str()
    });

    // Release 2 is made while the proxy rewrites its manifest: a file's sha256 in it
    // (as one would to slip in another config), so the signature no longer verifies.
    proxy.rewrite(|path, answer| {
        if is_manifest_of(path, answer, 2) {
            let manifest: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
            let pin = manifest["files"]["config.toml"]["sha256"].as_str().unwrap();
            let text = String::from_utf8(answer.body.clone()).unwrap();
            answer.body = text.replace(pin, &"0".repeat(64)).into_bytes();
        }
    });
    let second = make_release(
        &group_config(dir, "v2.toml", "v2", true),
        "edge",
        &key,
        &releases,
    );
    let r2 = release_id(&second);
    refused(
        api,
        &agent,
        "(version 2)",
        "signature does not verify with the trusted key",
        &r1,
        "v1",
    );
    assert_eq!(devices(api)[DEVICE]["offered"], r2.as_str());

    // The manifest as it is, its signature taken off.
    proxy.rewrite(|path, answer| {
        if is_manifest_of(path, answer, 2) {
            answer.set_header("x-sluice-signature", None);
        }
    });
    refused(
        api,
        &agent,
        &format!("release {r2} (version 2)"),
        "the release is not signed",
        &r1,
        "v1",
    );
    let fetched = |proxy: &Proxy| {
        let prefix = format!("/fleet/v1/release/{r2}/");
        proxy
            .requests()
            .into_iter()
            .filter(|path| path.starts_with(&prefix))
            .count()
    };
    assert_eq!(
        fetched(&proxy),
        0,
        "nothing of a release that does not verify is fetched"
    );

    // The signed manifest, and one of the files it lists rewritten (its length kept).
    let file_phases: [(&str, &str, &str); 3] = [
        ("/config.toml", "config.toml: sha256 ", "the config"),
        ("/plugins/", ".wasm: sha256 ", "a plugin"),
        ("/artifacts/", ".cwasm: sha256 ", "the machine code"),
    ];
    for (file, expected, what) in file_phases {
        let release_files = format!("/fleet/v1/release/{r2}/");
        proxy.rewrite(move |path, answer| {
            if path.starts_with(&release_files) && path.contains(file) && answer.status == 200 {
                if file == "/config.toml" {
                    // Another sink path: the device's readings where the attacker wants them.
                    let text = String::from_utf8(answer.body.clone()).unwrap();
                    answer.body = text.replace("\"v2\"", "\"tt\"").into_bytes();
                } else {
                    flip(&mut answer.body);
                }
            }
        });
        let error = refused(
            api,
            &agent,
            &format!("release {r2} (version 2)"),
            expected,
            &r1,
            "v1",
        );
        assert!(error.contains(", the manifest says "), "{what}: {error}");
        assert_eq!(agent.lines("v2"), 0, "{what}: nothing of release 2 ran");
    }
    assert!(
        !agent.dir.path().join("agent/run/tt").exists(),
        "the rewritten config never ran"
    );

    // A release signed with another key, made with it in another releases directory,
    // served in place of release 2.
    let rogue_dir = tempfile::tempdir().unwrap();
    let (rogue_key, _) = keygen(&rogue_dir.path().join("keys"));
    let rogue = make_release(
        &group_config(rogue_dir.path(), "rogue.toml", "rogue", false),
        "edge",
        &rogue_key,
        &rogue_dir.path().join("releases"),
    );
    let rogue_id = release_id(&rogue);
    let served = rogue.clone();
    proxy.rewrite(move |path, answer| {
        if path == "/fleet/v1/release" {
            answer_with(answer, &served);
        }
    });
    refused(
        api,
        &agent,
        &format!("release {rogue_id} (version 1)"),
        "signature does not verify with the trusted key",
        &r1,
        "v1",
    );
    assert_eq!(agent.lines("rogue"), 0);
    assert!(
        !proxy.requests().iter().any(|path| path.contains(&rogue_id)),
        "nothing of the other key's release is fetched"
    );

    // The proxy passes answers unchanged: release 2 applies.
    proxy.pass();
    wait_until(Duration::from_secs(30), "release 2 running", || {
        agent.lines("v2") > 0 && devices(api)[DEVICE]["applied"] == r2.as_str()
    });
    wait_until(Duration::from_secs(10), "the refusals cleared", || {
        devices(api)[DEVICE]["error"].is_null()
    });
    assert_eq!(agent.lines("rogue"), 0);

    // Release 3, then release 1 replayed: not release 3's parent (2), refused.
    let third = make_release(
        &group_config(dir, "v3.toml", "v3", false),
        "edge",
        &key,
        &releases,
    );
    let r3 = release_id(&third);
    wait_until(Duration::from_secs(30), "release 3 running", || {
        agent.lines("v3") > 0 && devices(api)[DEVICE]["applied"] == r3.as_str()
    });
    let replayed = first.clone();
    proxy.rewrite(move |path, answer| {
        if path == "/fleet/v1/release" {
            answer_with(answer, &replayed);
        }
    });
    let v1_lines = agent.lines("v1");
    refused(
        api,
        &agent,
        &format!("release {r1} (version 1)"),
        "version 1 is older than the running version 3 (whose parent is 2)",
        &r3,
        "v3",
    );
    assert_eq!(agent.lines("v1"), v1_lines, "release 1 did not run again");
}
