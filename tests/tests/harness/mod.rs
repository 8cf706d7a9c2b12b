//! Real services for end-to-end tests, each in its own module: the `sluice` binary as a
//! host or an agent, brokers (Mosquitto, tansu), a database, an S3 server, a browser,
//! HTTP and MQTT clients; here, what they share and the readers of what came out.
// Each test binary uses a part of the harness, its re-exports included.
#![allow(dead_code, unused_imports)]

mod agent;
pub mod browser;
pub mod fleet;
mod host;
mod http;
pub mod jobs;
pub mod kafka;
mod mqtt;
pub mod postgres;
pub mod readings;
pub mod receiver;
pub mod s3;
pub mod tls;

pub use agent::{Agent, sensors_to_uplink};
pub use browser::{HEADLESS, admin_page, chromium};
pub use fleet::{fleet_keygen, fleet_release};
pub use host::{Host, HttpPipeline, Pipeline};
pub use http::{config_version, http_get, http_get_headers, http_get_with, http_post, http_put};
pub use mqtt::{Mosquitto, payload, publish};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A port nothing listens on, and that this test process has not handed out before:
/// the system may offer a just-closed port again, and two listeners of one test (an
/// API and an ingest) would then be given the same.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Wait until `check` holds, or panic with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn terminate(child: &Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
}

/// The `sluice` binary next to the test executable (`target/<profile>/sluice`).
pub fn sluice_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("sluice");
    assert!(
        path.exists(),
        "{} is missing: `cargo build -p sluice` first",
        path.display()
    );
    path
}

pub fn plugin(name: &str) -> String {
    let dir = std::env::var_os("SLUICE_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"));
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-plugins",
        path.display()
    );
    path.canonicalize().unwrap().display().to_string()
}

/// A temporary directory laid out as the repository is for `examples/NAME`: its `files`
/// copied unchanged into `examples/NAME/`, with `target/plugins` (the built plugins,
/// `plugins` of them checked to be there) and `models` linked beside, so that what the
/// configs name relative to themselves (`../../target/...`, `../../models/...`) resolves
/// there and nothing is written into the repository. The directory, and the example's
/// copy in it.
pub fn example_copy(name: &str, files: &[&str], plugins: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = tempfile::tempdir().unwrap();
    let copy = root.path().join("examples").join(name);
    std::fs::create_dir_all(&copy).unwrap();
    for file in files {
        std::fs::copy(
            repository.join("examples").join(name).join(file),
            copy.join(file),
        )
        .unwrap();
    }
    let built: Vec<String> = plugins.iter().map(|name| plugin(name)).collect();
    let plugin_dir = Path::new(&built[0]).parent().unwrap();
    std::fs::create_dir_all(root.path().join("target")).unwrap();
    std::os::unix::fs::symlink(plugin_dir, root.path().join("target/plugins")).unwrap();
    std::os::unix::fs::symlink(
        repository.join("models").canonicalize().unwrap(),
        root.path().join("models"),
    )
    .unwrap();
    (root, copy)
}

/// Every JSON line in the `*.jsonl` files under `dir`; a torn last line is skipped.
pub fn read_lines(dir: &Path) -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    // In the order written: a file's name holds its process's start time and a count.
    let mut paths: Vec<PathBuf> = entries.map(|entry| entry.unwrap().path()).collect();
    paths.sort();
    let mut values = Vec::new();
    for path in paths {
        if path.extension().is_some_and(|e| e == "jsonl") {
            let text = std::fs::read_to_string(&path).unwrap();
            values.extend(
                text.lines()
                    .filter_map(|line| serde_json::from_str(line).ok()),
            );
        }
    }
    values
}

/// How often each `seq` appears.
pub fn seq_counts(values: &[serde_json::Value]) -> HashMap<u64, usize> {
    let mut counts = HashMap::new();
    for value in values {
        if let Some(seq) = value["seq"].as_u64() {
            *counts.entry(seq).or_default() += 1;
        }
    }
    counts
}
