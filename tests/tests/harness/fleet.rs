//! Signed fleet releases from the outside: the fleet's keys and releases made with the
//! `sluice fleet` commands, a central host serving them, agents that verify them, the
//! central host's view of its devices and rollouts, and a man in the middle between an
//! agent and its central host that can rewrite any answer.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Agent, free_port, http_get_with, sluice_binary};

/// The admin token of [`central_config`]'s API.
pub const ADMIN_TOKEN: &str = "admin-secret";

/// The target triple releases are made for: this machine's.
pub fn host_target() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// Run `sluice ARGS`; its stdout, or a panic with its output when it fails.
pub fn sluice(args: &[&std::ffi::OsStr]) -> String {
    let output = Command::new(sluice_binary()).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "sluice {args:?}: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `sluice fleet keygen DIR`: the signing key's and the public key's paths.
pub fn keygen(dir: &Path) -> (PathBuf, PathBuf) {
    sluice(&["fleet".as_ref(), "keygen".as_ref(), dir.as_os_str()]);
    (dir.join("fleet.key"), dir.join("fleet.pub"))
}

/// `sluice fleet release CONFIG --group GROUP --key KEY --releases RELEASES --targets
/// <this machine>`: the new release's directory (`RELEASES/<group>/<version>`).
pub fn make_release(config: &Path, group: &str, key: &Path, releases: &Path) -> PathBuf {
    let target = host_target();
    let out = sluice(&[
        "fleet".as_ref(),
        "release".as_ref(),
        config.as_os_str(),
        "--group".as_ref(),
        group.as_ref(),
        "--key".as_ref(),
        key.as_os_str(),
        "--releases".as_ref(),
        releases.as_os_str(),
        "--targets".as_ref(),
        target.as_ref(),
    ]);
    // "release N of group `G` in DIR: ..."
    let version: u64 = out
        .strip_prefix("release ")
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no release version in {out:?}"));
    releases.join(group).join(version.to_string())
}

/// A release's id as the central host and the agents name it: the first 24 hex digits
/// of its manifest's sha256.
pub fn release_id(release: &Path) -> String {
    let output = Command::new("sha256sum")
        .arg(release.join("manifest.json"))
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout)[..24].to_owned()
}

/// A central host's config in `dir` (`central.toml`): its API on `api` with
/// [`ADMIN_TOKEN`], a small pipeline of its own, and `[fleet]` serving the signed
/// releases of `dir/releases` checked with `dir/keys/fleet.pub`, the group `edge`
/// (`group`: the body of its inline table) and `devices` (`(id, token)`).
pub fn central_config(dir: &Path, api: u16, group: &str, devices: &[(String, String)]) -> PathBuf {
    let devices: String = devices
        .iter()
        .map(|(id, token)| format!("devices.{id} = {{ group = \"edge\", token = \"{token}\" }}\n"))
        .collect();
    let path = dir.join("central.toml");
    std::fs::write(
        &path,
        format!(
            r#"data_dir = "{data}"
[api]
listen = "127.0.0.1:{api}"
admin_token = "{ADMIN_TOKEN}"

[sources.ingest]
type = "http"
listen = "127.0.0.1:{ingest}"

[sinks.out]
type = "file"
inputs = ["ingest"]
path = "out"

[fleet]
poll_secs = 1
releases = "releases"
trust = "keys/fleet.pub"
groups.edge = {{ {group} }}
{devices}"#,
            data = dir.join("data").display(),
            ingest = free_port(),
        ),
    )
    .unwrap();
    path
}

/// `sluice agent` asking `central` as `device` of group `edge`, verifying releases with
/// `trust`; its token file is written next to it.
pub fn start_agent(central: &str, device: &str, token: &str, trust: &Path) -> Agent {
    let tokens = trust.parent().unwrap().join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let token_file = tokens.join(device);
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    Agent::start_with(
        Command::new(sluice_binary()),
        central,
        device,
        &[
            "--token-file".as_ref(),
            token_file.as_os_str(),
            "--trust".as_ref(),
            trust.as_os_str(),
            "--group".as_ref(),
            "edge".as_ref(),
        ],
    )
}

/// `GET path` of the central host's admin API, as JSON.
pub fn admin_get(api: u16, path: &str) -> serde_json::Value {
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let (status, body) = http_get_with(api, path, &[&auth]).unwrap_or_else(|| panic!("{path}"));
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|error| panic!("{path}: {error}: {body}"))
}

/// Every device as the central host sees it (`GET /fleet/v1/devices`).
pub fn devices(api: u16) -> serde_json::Value {
    admin_get(api, "/fleet/v1/devices")
}

/// An answer passing through the [`Proxy`].
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Every header but the framing ones (`content-length`, `connection`...).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Set header `name` to `value`, or remove it (`None`).
    pub fn set_header(&mut self, name: &str, value: Option<&str>) {
        self.headers
            .retain(|(key, _)| !key.eq_ignore_ascii_case(name));
        if let Some(value) = value {
            self.headers.push((name.to_owned(), value.to_owned()));
        }
    }
}

type Rewrite = Arc<dyn Fn(&str, &mut Response) + Send + Sync>;

/// A man in the middle: an HTTP proxy on a free loopback port in front of the API on
/// `upstream`, passing every request on and every answer back, through the rewrite
/// set with [`Proxy::rewrite`] (its arguments: the request's path, the answer).
pub struct Proxy {
    pub port: u16,
    rewrite: Arc<Mutex<Option<Rewrite>>>,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Proxy {
            port,
            rewrite: Arc::default(),
            requests: Arc::default(),
            stop: Arc::default(),
        };
        let (rewrite, requests, stop) = (
            proxy.rewrite.clone(),
            proxy.requests.clone(),
            proxy.stop.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let rewrite = rewrite.lock().unwrap().clone();
                let requests = requests.clone();
                std::thread::spawn(move || {
                    let _ = relay(client, upstream, rewrite, &requests);
                });
            }
        });
        proxy
    }

    /// The URL agents are given as their central host.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Rewrite every answer from now on with `rewrite(path, &mut answer)`.
    pub fn rewrite(&self, rewrite: impl Fn(&str, &mut Response) + Send + Sync + 'static) {
        *self.rewrite.lock().unwrap() = Some(Arc::new(rewrite));
    }

    /// Pass answers on unchanged from now on.
    pub fn pass(&self) {
        *self.rewrite.lock().unwrap() = None;
    }

    /// The paths asked so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One request from `client`, passed to `upstream` (HTTP/1.0, the connection closed
/// after it), its answer through `rewrite` and back.
fn relay(
    mut client: TcpStream,
    upstream: u16,
    rewrite: Option<Rewrite>,
    requests: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = client.read(&mut chunk)?;
        if read == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..read]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default().to_owned(),
    );
    requests.lock().unwrap().push(path.clone());
    let mut forwarded = format!("{method} {path} HTTP/1.0\r\n");
    for line in lines.take_while(|line| !line.is_empty()) {
        let name = line.split(':').next().unwrap_or_default();
        if !name.eq_ignore_ascii_case("connection") {
            forwarded.push_str(line);
            forwarded.push_str("\r\n");
        }
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    let mut server = TcpStream::connect(("127.0.0.1", upstream))?;
    server.set_read_timeout(Some(Duration::from_secs(30)))?;
    server.write_all(forwarded.as_bytes())?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer)?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(answer.len());
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let body = answer.get(split + 4..).unwrap_or_default().to_vec();
    let mut head_lines = head.split("\r\n");
    let status = head_lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(502);
    let headers = head_lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .filter(|(name, _)| {
            !["content-length", "connection", "transfer-encoding"]
                .iter()
                .any(|framing| name.eq_ignore_ascii_case(framing))
        })
        .collect();
    let mut response = Response {
        status,
        headers,
        body,
    };
    if let Some(rewrite) = rewrite {
        rewrite(&path, &mut response);
    }
    let mut out = format!("HTTP/1.1 {} Rewritten\r\n", response.status);
    for (name, value) in &response.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        response.body.len()
    ));
    client.write_all(out.as_bytes())?;
    client.write_all(&response.body)?;
    client.flush()
}

/// `sluice fleet keygen DIR`: the fleet's signing key pair, `(DIR/fleet.key,
/// DIR/fleet.pub)`.
pub fn fleet_keygen(dir: &Path) -> (PathBuf, PathBuf) {
    let output = Command::new(sluice_binary())
        .args(["fleet", "keygen"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "sluice fleet keygen: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (dir.join("fleet.key"), dir.join("fleet.pub"))
}

/// `sluice fleet release CONFIG --group GROUP --key KEY --releases RELEASES --targets
/// T,...`: the group's next signed release, with its plugins compiled for `targets`;
/// what it printed.
pub fn fleet_release(
    config: &Path,
    group: &str,
    key: &Path,
    releases: &Path,
    targets: &[&str],
) -> String {
    let output = Command::new(sluice_binary())
        .args(["fleet", "release"])
        .arg(config)
        .args(["--group", group, "--key"])
        .arg(key)
        .arg("--releases")
        .arg(releases)
        .args(["--targets", &targets.join(",")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "sluice fleet release: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
