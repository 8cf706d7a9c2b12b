//! The agent against a central host made in the test: a small HTTP server serving
//! release directories the test makes and signs itself, recording what each poll
//! reports, and able to answer as a man in the middle would. A signed release is
//! applied; a release signed with another key, unsigned, for another group or older
//! than the running one is refused; the running release's parent is taken; a replaced
//! manifest, config, plugin or artifact is refused before it runs, reported on the next
//! poll, and the running release goes on. A restarted agent runs its release from disk
//! without the network, keeps its downgrade guard, and fetches a damaged file again.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use sluice::agent::{Agent, AgentOptions, Trust};
use sluice::release::{
    ENGINE, FileEntry, Manifest, SigningKey, TrustedKey, artifact_name, plugin_name,
};
use sluice::runtime::precompiled::TARGET;
use sluice::runtime::sha256_hex;
use tokio_util::sync::CancellationToken;

const GROUP: &str = "gateways";

// ---------------------------------------------------------------------------------------
// Releases, made as `sluice fleet release` makes them
// ---------------------------------------------------------------------------------------

#[derive(Clone)]
struct Release {
    id: String,
    manifest: Vec<u8>,
    signature: Option<Vec<u8>>,
    files: BTreeMap<String, Vec<u8>>,
}

fn keys() -> (SigningKey, TrustedKey) {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = SigningKey::generate().unwrap();
    std::fs::write(dir.path().join("fleet.key"), private).unwrap();
    std::fs::write(dir.path().join("fleet.pub"), public).unwrap();
    (
        SigningKey::load(&dir.path().join("fleet.key")).unwrap(),
        TrustedKey::load(&dir.path().join("fleet.pub")).unwrap(),
    )
}

/// The plugin compiled for this machine, once for every test (kept in the build tree).
fn artifact(wasm: &[u8]) -> Vec<u8> {
    let cached = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "agent-release-{}.{TARGET}.{ENGINE}.cwasm",
        sha256_hex(wasm)
    ));
    if let Ok(bytes) = std::fs::read(&cached) {
        return bytes;
    }
    let bytes = sluice::runtime::precompiled::precompile(wasm, TARGET, false).unwrap();
    let partial = cached.with_extension(format!("{}.partial", std::process::id()));
    std::fs::write(&partial, &bytes).unwrap();
    std::fs::rename(&partial, &cached).unwrap();
    bytes
}

fn wasm(plugin: &str) -> Vec<u8> {
    std::fs::read(common::plugin_path(plugin)).unwrap()
}

/// The release files of `plugin`: its Wasm and its artifact for this machine.
fn plugin_files(plugin: &str) -> (String, String) {
    let sha = sha256_hex(&wasm(plugin));
    (plugin_name(&sha), artifact_name(&sha, TARGET, false))
}

/// A release of `group` at `version`: simulated sensors into the directory `out`
/// (through a filter plugin from version 2 on, so that a release brings a plugin the
/// device has not stored yet), with the plugins' artifacts for this machine when
/// `artifacts`; signed with `key` if given.
fn release(
    key: Option<&SigningKey>,
    group: &str,
    version: u64,
    parent: Option<u64>,
    out: &str,
    artifacts: bool,
) -> Release {
    let filtered = version >= 2;
    let plugin = |name: &str| {
        let sha = sha256_hex(&wasm(name));
        format!("[plugins.{name}]\npath = \"plugins/{sha}.wasm\"\nsha256 = \"{sha}\"\n")
    };
    let mut config = plugin("sensor-sim");
    if filtered {
        config += &plugin("filter");
    }
    config += &format!(
        r#"
[sources.devices]
type = "wasm"
plugin = "sensor-sim"
interval_ms = 100
config = {{ devices = 1 }}

[sinks.out]
type = "file"
inputs = ["{input}"]
path = "{out}"
"#,
        input = if filtered { "all" } else { "devices" }
    );
    if filtered {
        config += r#"
[transforms.all]
type = "wasm"
plugin = "filter"
inputs = ["devices"]
config = { when = { field = "temperature", gt = -1000.0 } }
"#;
    }
    let mut files = BTreeMap::from([("config.toml".to_owned(), config.into_bytes())]);
    let plugins: &[&str] = if filtered {
        &["sensor-sim", "filter"]
    } else {
        &["sensor-sim"]
    };
    for name in plugins {
        let (wasm_name, artifact_name) = plugin_files(name);
        let bytes = wasm(name);
        if artifacts {
            files.insert(artifact_name, artifact(&bytes));
        }
        files.insert(wasm_name, bytes);
    }
    let manifest = Manifest {
        group: group.to_owned(),
        version,
        parent,
        rollback_of: None,
        created_ms: 1_700_000_000_000 + version as i64,
        engine: ENGINE.to_owned(),
        targets: if artifacts {
            vec![TARGET.to_owned()]
        } else {
            Vec::new()
        },
        files: files
            .iter()
            .map(|(name, bytes)| {
                let entry = FileEntry {
                    sha256: sha256_hex(bytes),
                    bytes: bytes.len() as u64,
                };
                (name.clone(), entry)
            })
            .collect(),
    };
    let manifest = serde_json::to_vec_pretty(&manifest).unwrap();
    Release {
        id: sha256_hex(&manifest)[..24].to_owned(),
        signature: key.map(|key| key.sign(&manifest).to_vec()),
        manifest,
        files,
    }
}

impl Release {
    /// The same release with its manifest's bytes changed after signing.
    fn with_manifest(&self, manifest: Vec<u8>) -> Release {
        Release {
            id: sha256_hex(&manifest)[..24].to_owned(),
            manifest,
            ..self.clone()
        }
    }

    fn name(&self, prefix: &str) -> String {
        self.files
            .keys()
            .find(|name| name.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} file"))
            .clone()
    }
}

// ---------------------------------------------------------------------------------------
// The central host, and a man in the middle
// ---------------------------------------------------------------------------------------

/// What one poll reported.
#[derive(Debug, Clone)]
struct Poll {
    applied: Option<String>,
    error: Option<String>,
}

#[derive(Default)]
struct Central {
    offered: Option<String>,
    releases: HashMap<String, Release>,
    /// Files answered with other bytes, by name.
    replaced: HashMap<String, Vec<u8>>,
    polls: Vec<Poll>,
    /// The release files asked for, in order.
    fetched: Vec<String>,
}

#[derive(Clone)]
struct Server {
    url: String,
    central: Arc<Mutex<Central>>,
}

impl Server {
    async fn start() -> Server {
        let central = Arc::new(Mutex::new(Central::default()));
        let app = Router::new()
            .route("/fleet/v1/release", get(serve_manifest))
            .route("/fleet/v1/release/{id}/{*file}", get(serve_file))
            .with_state(central.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server { url, central }
    }

    fn offer(&self, release: &Release) {
        let mut central = self.central.lock().unwrap();
        central.releases.insert(release.id.clone(), release.clone());
        central.offered = Some(release.id.clone());
    }

    fn replace(&self, file: &str, bytes: Option<Vec<u8>>) {
        let mut central = self.central.lock().unwrap();
        central.replaced.clear();
        if let Some(bytes) = bytes {
            central.replaced.insert(file.to_owned(), bytes);
        }
    }

    fn polls(&self) -> usize {
        self.central.lock().unwrap().polls.len()
    }

    fn fetched(&self) -> Vec<String> {
        self.central.lock().unwrap().fetched.clone()
    }

    /// The first poll after the `from`th one that `check` accepts.
    async fn wait_poll(&self, from: usize, what: &str, check: impl Fn(&Poll) -> bool) -> Poll {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let polls = self.central.lock().unwrap().polls.clone();
            let after = &polls[from.min(polls.len())..];
            if let Some(poll) = after.iter().find(|poll| check(poll)) {
                return poll.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; polls: {:#?}",
                &polls[from.min(polls.len())..]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until the agent reports running `release`.
    async fn wait_applied(&self, release: &Release) {
        let from = self.polls();
        self.wait_poll(from, &format!("release {} applied", release.id), |poll| {
            poll.applied.as_deref() == Some(release.id.as_str()) && poll.error.is_none()
        })
        .await;
    }

    /// Wait until a poll reports a refusal containing `expected`, and check that the
    /// release `running` still runs then and on the poll after.
    async fn wait_refused(&self, expected: &str, running: &Release) -> String {
        let from = self.polls();
        let poll = self
            .wait_poll(from, &format!("a refusal with `{expected}`"), |poll| {
                poll.error.as_deref().is_some_and(|e| e.contains(expected))
            })
            .await;
        assert_eq!(
            poll.applied.as_deref(),
            Some(running.id.as_str()),
            "{poll:?}"
        );
        let next = self.polls();
        let after = self.wait_poll(next, "the next poll", |_| true).await;
        assert_eq!(
            after.applied.as_deref(),
            Some(running.id.as_str()),
            "{after:?}"
        );
        poll.error.unwrap()
    }
}

fn text(headers: &HeaderMap, name: &str) -> Option<String> {
    Some(headers.get(name)?.to_str().ok()?.to_owned())
}

async fn serve_manifest(
    State(central): State<Arc<Mutex<Central>>>,
    headers: HeaderMap,
) -> Response {
    let mut central = central.lock().unwrap();
    central.polls.push(Poll {
        applied: text(&headers, "x-sluice-applied"),
        error: text(&headers, "x-sluice-error"),
    });
    assert_eq!(text(&headers, "x-sluice-device").as_deref(), Some("dev-1"));
    assert_eq!(
        text(&headers, "authorization").as_deref(),
        Some("Bearer token-1")
    );
    let Some(id) = central.offered.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let release = &central.releases[&id];
    let etag = format!("\"{id}\"");
    let mut out = HeaderMap::new();
    out.insert(header::ETAG, etag.parse().unwrap());
    out.insert("x-sluice-poll-secs", "0".parse().unwrap());
    if text(&headers, "if-none-match").as_deref() == Some(etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    if let Some(signature) = &release.signature {
        let encoded = base64::engine::general_purpose::STANDARD.encode(signature);
        out.insert("x-sluice-signature", encoded.parse().unwrap());
    }
    (StatusCode::OK, out, release.manifest.clone()).into_response()
}

async fn serve_file(
    State(central): State<Arc<Mutex<Central>>>,
    UrlPath((id, file)): UrlPath<(String, String)>,
) -> Response {
    let mut central = central.lock().unwrap();
    central.fetched.push(file.clone());
    let bytes = central.replaced.get(&file).cloned().or_else(|| {
        central
            .releases
            .get(&id)
            .and_then(|release| release.files.get(&file).cloned())
    });
    match bytes {
        Some(bytes) => bytes.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

// ---------------------------------------------------------------------------------------
// The agent, in process
// ---------------------------------------------------------------------------------------

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn options(central: &str, dir: &Path, trust: Trust, group: Option<&str>) -> AgentOptions {
    AgentOptions {
        central: central.to_owned(),
        device_id: "dev-1".into(),
        token: Some("token-1".into()),
        ca_file: None,
        identity: None,
        dir: dir.to_owned(),
        poll: Duration::from_secs(1),
        trust,
        group: group.map(str::to_owned),
    }
}

fn start(central: &str, dir: &Path, trusted: &TrustedKey) -> Running {
    run(options(
        central,
        dir,
        Trust::Key(trusted.clone()),
        Some(GROUP),
    ))
}

fn run(options: AgentOptions) -> Running {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("sluice=info")
        .with_test_writer()
        .try_init();
    let agent = Agent::new(options).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(agent.run(stop.clone()));
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the agent stops")
            .unwrap();
    }
}

/// Lines the agent's pipeline wrote to the directory `out`.
fn lines(dir: &Path, out: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir.join("run").join(out)) else {
        return 0;
    };
    entries
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default())
        .map(|text| text.lines().count())
        .sum()
}

async fn wait_lines(dir: &Path, out: &str, more_than: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines(dir, out) <= more_than {
        assert!(
            Instant::now() < deadline,
            "{out}: no more than {more_than} lines"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stored(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("files"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_release_is_applied_and_whatever_is_not_the_signed_release_is_refused() {
    let (key, trusted) = keys();
    let (stranger, _) = keys();
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    let v1 = release(Some(&key), GROUP, 1, None, "out-v1", true);
    server.offer(&v1);
    let agent = start(&server.url, dir, &trusted);
    server.wait_applied(&v1).await;
    wait_lines(dir, "out-v1", 0).await;
    let artifact = v1.name("artifacts/");
    assert!(
        server.fetched().contains(&artifact),
        "the artifact for this target is used: {:?}",
        server.fetched()
    );

    // A man in the middle: the manifest's bytes changed after signing.
    let v2 = release(Some(&key), GROUP, 2, Some(1), "out-v2", true);
    let text = String::from_utf8(v2.manifest.clone()).unwrap();
    let forged = v2.with_manifest(text.replace("\"gateways\"", "\"gateways \"").into_bytes());
    let fetched = server.fetched().len();
    server.offer(&forged);
    let error = server.wait_refused("signature", &v1).await;
    assert!(
        error.contains("does not verify with the trusted key"),
        "{error}"
    );
    assert_eq!(server.fetched().len(), fetched, "nothing is fetched for it");

    // ... then each file of a signed release replaced in turn: the config, the plugin,
    // the artifact. Nothing of it runs, the running release goes on.
    let before = stored(dir);
    server.offer(&v2);
    let (filter_wasm, filter_artifact) = plugin_files("filter");
    let replacements = [
        (
            "config.toml".to_owned(),
            b"[sinks.x]\ntype = \"console\"\n".to_vec(),
        ),
        (filter_wasm, wasm("map")),
        (filter_artifact.clone(), {
            let mut bytes = v2.files[&filter_artifact].clone();
            let at = bytes.len() / 2;
            bytes[at] ^= 0x55;
            bytes
        }),
    ];
    for (file, bytes) in replacements {
        server.replace(&file, Some(bytes));
        let error = server.wait_refused(&format!("{file}:"), &v1).await;
        assert!(
            error.contains(&v2.id) && (error.contains("sha256") || error.contains("bytes")),
            "{error}"
        );
        assert_eq!(lines(dir, "out-v2"), 0, "v2 never ran");
        let partial = stored(dir)
            .into_iter()
            .filter(|path| !before.contains(path))
            .filter(|path| {
                let sha = path.file_name().unwrap().to_string_lossy().into_owned();
                !v2.files.values().any(|bytes| sha256_hex(bytes) == sha)
            })
            .collect::<Vec<_>>();
        assert!(
            partial.is_empty(),
            "only checked files are stored: {partial:?}"
        );
    }
    // Answered truly, it is taken.
    server.replace("", None);
    server.wait_applied(&v2).await;
    wait_lines(dir, "out-v2", 0).await;

    // Signed with another key, not signed, signed for another group: refused.
    let v3 = release(Some(&key), GROUP, 3, Some(2), "out-v3", true);
    let cases = [
        (
            release(Some(&stranger), GROUP, 3, Some(2), "out-v3", true),
            "does not verify with the trusted key",
        ),
        (
            // (Another release than the one above: that one's refusal holds.)
            release(None, GROUP, 3, Some(2), "out-v3-unsigned", true),
            "the release is not signed",
        ),
        (
            release(Some(&key), "cameras", 3, Some(2), "out-v3", true),
            "the release is for group `cameras`, this device is in group `gateways`",
        ),
    ];
    for (refused, expected) in cases {
        server.offer(&refused);
        server.wait_refused(expected, &v2).await;
    }
    assert_eq!(lines(dir, "out-v3"), 0);
    server.offer(&v3);
    server.wait_applied(&v3).await;

    // An older release is refused, but the running release's parent is taken (a halted
    // rollout sends its devices back one step).
    server.offer(&v1);
    server
        .wait_refused("version 1 is older than the running version 3", &v3)
        .await;
    server.offer(&v2);
    server.wait_applied(&v2).await;
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["id"], v2.id.as_str());
    assert_eq!(state["version"], 2);

    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_runs_its_release_from_disk_and_fetches_a_damaged_file_again() {
    let (key, trusted) = keys();
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let v1 = release(Some(&key), GROUP, 1, None, "out-v1", true);
    let v3 = release(Some(&key), GROUP, 3, Some(2), "out-v3", true);
    server.offer(&v1);
    let agent = start(&server.url, dir, &trusted);
    server.wait_applied(&v1).await;
    server.offer(&v3);
    server.wait_applied(&v3).await;
    agent.stop().await;

    // No central host: the release runs from disk.
    let written = lines(dir, "out-v3");
    let offline = start("http://127.0.0.1:9", dir, &trusted);
    wait_lines(dir, "out-v3", written + 5).await;
    offline.stop().await;

    // A power loss truncated the artifact: it is found, deleted and fetched again; the
    // downgrade guard held across the restart.
    let artifact = v3.name("artifacts/");
    let stored_artifact = dir.join("files").join(sha256_hex(&v3.files[&artifact]));
    let bytes = std::fs::read(&stored_artifact).unwrap();
    std::fs::write(&stored_artifact, &bytes[..bytes.len() / 3]).unwrap();
    server.offer(&v1);
    let fetched = server.fetched().len();
    let agent = start(&server.url, dir, &trusted);
    server
        .wait_refused("version 1 is older than the running version 3", &v3)
        .await;
    assert_eq!(
        server.fetched()[fetched..],
        [artifact],
        "only the damaged file is fetched again"
    );
    assert_eq!(std::fs::read(&stored_artifact).unwrap(), bytes);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_only_an_explicit_insecure_agent_runs_live_unsigned_releases() {
    let (_, trusted) = keys();
    let dir = tempfile::tempdir().unwrap();
    let error = Agent::new(options(
        "http://127.0.0.1:9",
        dir.path(),
        Trust::Key(trusted),
        None,
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(error.contains("needs its group"), "{error}");

    // A live group: version 0, no signature, no artifacts (this build compiles).
    let server = Server::start().await;
    let live = release(None, GROUP, 0, None, "live-a", false);
    server.offer(&live);
    let agent = run(options(
        &server.url,
        dir.path(),
        Trust::InsecureUnsigned,
        None,
    ));
    server.wait_applied(&live).await;
    wait_lines(dir.path(), "live-a", 0).await;
    let edited = release(None, GROUP, 0, None, "live-b", false);
    server.offer(&edited);
    server.wait_applied(&edited).await;
    agent.stop().await;
}

#[test]
fn the_agent_command_asks_for_a_key_or_an_explicit_insecure_flag() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let agent = |extra: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args([
                "agent",
                "--central",
                "http://127.0.0.1:9",
                "--device-id",
                "d",
            ])
            .arg("--token-file")
            .arg(&token)
            .arg("--dir")
            .arg(dir.path().join("agent"))
            .args(extra)
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let error = agent(&[]);
    assert!(
        error.contains("--trust FILE") && error.contains("--insecure-unsigned"),
        "{error}"
    );
    let key = dir.path().join("fleet.pub");
    std::fs::write(&key, SigningKey::generate().unwrap().1).unwrap();
    let error = agent(&["--trust", key.to_str().unwrap()]);
    assert!(error.contains("`--trust` needs `--group NAME`"), "{error}");
    let error = agent(&["--trust", key.to_str().unwrap(), "--insecure-unsigned"]);
    assert!(error.contains("cannot be used with"), "{error}");
}
