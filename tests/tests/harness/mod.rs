//! Real services for end-to-end tests: a Mosquitto broker (Debian's), the `sluice`
//! binary as a child process, an MQTT publisher, and readers of what came out.
#![allow(dead_code)]

pub mod browser;
pub mod fleet;
pub mod jobs;
pub mod kafka;
pub mod postgres;
pub mod readings;
pub mod receiver;
pub mod s3;
pub mod tls;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

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

/// A Mosquitto broker on a free loopback port, persisting to a temporary directory so
/// that a graceful restart keeps queued messages and sessions.
pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Mosquitto::with_inflight_window(1000)
    }

    /// A broker that sends each client up to `window` unacknowledged QoS 1 messages
    /// ahead (0: no limit, as brokers with large receive windows behave).
    pub fn with_inflight_window(window: u32) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::write(
            dir.path().join("mosquitto.conf"),
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
                 autosave_interval 1\nmax_queued_messages 0\nmax_inflight_messages {window}\nlog_dest file {}/mosquitto.log\nuser root\n",
                dir.path().display(),
                dir.path().display()
            ),
        )
        .unwrap();
        let mut broker = Mosquitto {
            port,
            dir,
            child: None,
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("mosquitto is not installed: run scripts/setup");
        let child = Command::new(binary)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        wait_until(Duration::from_secs(10), "mosquitto to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The broker's process id, for its CPU time and memory in /proc.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Freeze the broker (SIGSTOP): connections stall as in a network outage, and
    /// sessions stay as they are.
    pub fn pause(&self) {
        signal(self.child.as_ref().unwrap(), "-STOP");
    }

    pub fn resume(&self) {
        signal(self.child.as_ref().unwrap(), "-CONT");
    }

    /// Stop gracefully (SIGTERM: it saves its state) and start again on the same port.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            child.wait().unwrap();
        }
        self.spawn();
    }
}

fn signal(child: &Child, signal: &str) {
    Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "-CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
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

/// A device's pipeline: `sensors` simulated sensors named `DEVICE-sensor-N`, each
/// reading every `interval_ms`, into an uplink to `url` as `device_id` (a name, or
/// `${SLUICE_DEVICE_ID}` in a fleet group's config), its buffer `buffer` (an inline
/// table's body).
pub fn sensors_to_uplink(
    url: &str,
    device_id: &str,
    sensors: u32,
    interval_ms: u64,
    buffer: &str,
) -> String {
    format!(
        r#"
[plugins.sensor-sim]
path = "{plugin}"

[sources.sensors]
type = "wasm"
plugin = "sensor-sim"
interval_ms = {interval_ms}
config = {{ devices = {sensors}, device_prefix = "{device_id}-sensor-" }}

[sinks.uplink]
type = "uplink"
inputs = ["sensors"]
url = "{url}"
topic = "sensors/{{device_id}}/telemetry"
device_id = "{device_id}"
heartbeat_secs = 1
buffer = {{ {buffer} }}
"#,
        plugin = plugin("sensor-sim")
    )
}

/// A `sluice run` process.
pub struct Host {
    pub child: Child,
    pub api_port: u16,
    pub log: PathBuf,
}

impl Host {
    /// Start `sluice run CONFIG` and wait until it is ready. `stdout` is where the
    /// console sink writes.
    pub fn start(config: &Path, api_port: u16, stdout: Stdio) -> Host {
        Host::start_env(config, api_port, stdout, &[])
    }

    /// [`Host::start`] with `env` set in the host's environment.
    pub fn start_env(
        config: &Path,
        api_port: u16,
        stdout: Stdio,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Host {
        Host::start_probed_env(config, api_port, stdout, env, |port| {
            http_get(port, "/ready").is_some_and(|(status, _)| status == 200)
        })
    }

    /// [`Host::start`], asking `ready(api_port)` whether it is ready (an API over TLS
    /// is asked over TLS).
    pub fn start_probed(
        config: &Path,
        api_port: u16,
        stdout: Stdio,
        ready: impl Fn(u16) -> bool,
    ) -> Host {
        Host::start_probed_env(config, api_port, stdout, &[], ready)
    }

    /// [`Host::start_probed`] with `env` set in the host's environment (the `${VAR}`s
    /// its config names).
    pub fn start_probed_env(
        config: &Path,
        api_port: u16,
        stdout: Stdio,
        env: &[(&str, &std::ffi::OsStr)],
        ready: impl Fn(u16) -> bool,
    ) -> Host {
        Host::launch(&sluice_binary(), config, api_port, stdout, env, ready)
    }

    /// [`Host::start`] through another program that runs `sluice` (a wrapper such as
    /// `taskset`), given as `binary`.
    pub fn start_binary(binary: &Path, config: &Path, api_port: u16, stdout: Stdio) -> Host {
        Host::launch(binary, config, api_port, stdout, &[], |port| {
            http_get(port, "/ready").is_some_and(|(status, _)| status == 200)
        })
    }

    fn launch(
        binary: &Path,
        config: &Path,
        api_port: u16,
        stdout: Stdio,
        env: &[(&str, &std::ffi::OsStr)],
        ready: impl Fn(u16) -> bool,
    ) -> Host {
        // Logs go to the temporary directory, never next to a checked-in config.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let log =
            std::env::temp_dir().join(format!("sluice-e2e-{}-{nanos}.log", std::process::id()));
        let child = Command::new(binary)
            .arg("run")
            .arg(config)
            .envs(env.iter().copied())
            .env("SLUICE_LOG", "info")
            .stdout(stdout)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut host = Host {
            child,
            api_port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = host.child.try_wait().unwrap() {
                panic!(
                    "sluice exited with {status} before ready:\n{}",
                    host.log_text()
                );
            }
            if ready(api_port) {
                return host;
            }
            assert!(
                Instant::now() < deadline,
                "sluice not ready:\n{}",
                host.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The host's log so far, without terminal colours.
    pub fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut plain = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(start) = rest.find("\x1b[") {
            plain.push_str(&rest[..start]);
            rest = &rest[start..];
            rest = rest.find('m').map_or("", |end| &rest[end + 1..]);
        }
        plain.push_str(rest);
        plain
    }

    pub fn metrics(&self) -> String {
        http_get(self.api_port, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// Resident memory in bytes, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap();
        kb * 1024
    }

    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then wait for the drain to finish.
    pub fn stop(mut self) -> std::process::ExitStatus {
        terminate(&self.child);
        self.child.wait().unwrap()
    }

    /// SIGINT (Ctrl-C), then wait for the drain to finish; the exit status and the log.
    pub fn interrupt(mut self) -> (std::process::ExitStatus, String) {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        (status, self.log_text())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test's log stays for reading; a passing one's goes.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A `sluice agent` process (run by `program`: the binary, or an emulator with its
/// arguments) asking the central host as `device` with a token, taking the unsigned
/// releases of a live group ([`Agent::start`]), or with other credentials and trust
/// ([`Agent::start_with`]); its directory and log in a temporary directory.
pub struct Agent {
    pub child: Child,
    pub dir: tempfile::TempDir,
    central: String,
    device: String,
    /// How it proves who it is (`--token-file`, `--cert-file`...) and which releases it
    /// takes (`--trust` and `--group`, or `--insecure-unsigned`).
    credentials: Vec<std::ffi::OsString>,
}

impl Agent {
    /// An agent of a live group (`config = "..."`, served unsigned): it runs with
    /// `--insecure-unsigned`, as development setups do.
    pub fn start(program: Command, api: u16, device: &str, token: &str) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
        let credentials = vec![
            "--token-file".into(),
            dir.path().join("token").into(),
            "--insecure-unsigned".into(),
        ];
        Agent::start_in(
            dir,
            program,
            &format!("http://127.0.0.1:{api}"),
            device,
            credentials,
        )
    }

    /// An agent asking `central` (a URL) as `device`, with `credentials` as its
    /// arguments (`--cert-file`, `--key-file`, `--ca-file`, a `--token-file`...; and
    /// `--trust FILE --group NAME` or `--insecure-unsigned`).
    pub fn start_with(
        program: Command,
        central: &str,
        device: &str,
        credentials: &[&std::ffi::OsStr],
    ) -> Agent {
        let credentials = credentials.iter().map(|&arg| arg.to_owned()).collect();
        Agent::start_in(
            tempfile::tempdir().unwrap(),
            program,
            central,
            device,
            credentials,
        )
    }

    /// [`Agent::start_with`], with `env` in the agent's environment (the `${VAR}`s its
    /// group's config names).
    pub fn start_with_env(
        mut program: Command,
        central: &str,
        device: &str,
        credentials: &[&std::ffi::OsStr],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Agent {
        program.envs(env.iter().copied());
        Agent::start_with(program, central, device, credentials)
    }

    fn start_in(
        dir: tempfile::TempDir,
        program: Command,
        central: &str,
        device: &str,
        credentials: Vec<std::ffi::OsString>,
    ) -> Agent {
        let child = Self::spawn(program, dir.path(), central, device, &credentials);
        Agent {
            child,
            dir,
            central: central.to_owned(),
            device: device.to_owned(),
            credentials,
        }
    }

    fn spawn(
        mut program: Command,
        dir: &Path,
        central: &str,
        device: &str,
        credentials: &[std::ffi::OsString],
    ) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("agent.log"))
            .unwrap();
        program
            .args(["agent", "--central", central])
            .args(["--device-id", device, "--poll-secs", "1"])
            .args(credentials)
            .arg("--dir")
            .arg(dir.join("agent"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// SIGKILL the agent, as a power cut or a crash would.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Start the agent again on its directory (after [`Agent::kill_9`]).
    pub fn restart(&mut self) {
        self.child = Self::spawn(
            Command::new(sluice_binary()),
            self.dir.path(),
            &self.central,
            &self.device,
            &self.credentials,
        );
    }

    /// Lines the agent's pipeline wrote to `path` (inside its data directory).
    pub fn lines(&self, path: &str) -> usize {
        read_lines(&self.dir.path().join("agent/run").join(path)).len()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pipeline whose source is `[sources.ingest]` of type `http` (plus `source` lines),
/// followed by `stages`, running from a temporary directory with its data in `data/`.
pub struct HttpPipeline {
    // Declared first so that it is dropped (killed) before its directory goes.
    pub host: Host,
    pub ingest: u16,
    pub dir: tempfile::TempDir,
}

impl HttpPipeline {
    pub fn start(source: &str, stages: &str, stdout: Stdio) -> HttpPipeline {
        HttpPipeline::start_env(source, stages, stdout, &[])
    }

    /// [`HttpPipeline::start`] with `env` in the host's environment (the `${VAR}`s its
    /// config names).
    pub fn start_env(
        source: &str,
        stages: &str,
        stdout: Stdio,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> HttpPipeline {
        let dir = tempfile::tempdir().unwrap();
        let (api, ingest) = (free_port(), free_port());
        let config = dir.path().join("pipeline.toml");
        let text = format!(
            "data_dir = \"{}\"\n[api]\nlisten = \"127.0.0.1:{api}\"\n\
             [sources.ingest]\ntype = \"http\"\nlisten = \"127.0.0.1:{ingest}\"\n{source}\n{stages}",
            dir.path().join("data").display()
        );
        std::fs::write(&config, text).unwrap();
        let host = Host::start_probed_env(&config, api, stdout, env, |port| {
            http_get(port, "/ready").is_some_and(|(status, _)| status == 200)
        });
        HttpPipeline { host, ingest, dir }
    }

    /// A path inside the pipeline's data directory.
    pub fn data(&self, path: &str) -> PathBuf {
        self.dir.path().join("data").join(path)
    }

    /// POST to the ingest source.
    pub fn post(&self, path: &str, headers: &[&str], body: &[u8]) -> (u16, String) {
        http_post(self.ingest, path, headers, body)
    }
}

/// A pipeline of any stages (`text`), running from a temporary directory with its data
/// in `data/`. `restart` runs the same config again, as after a crash or a deploy.
pub struct Pipeline {
    pub host: Host,
    pub dir: tempfile::TempDir,
    config: PathBuf,
}

impl Pipeline {
    pub fn start(text: &str) -> Pipeline {
        let dir = tempfile::tempdir().unwrap();
        let api = free_port();
        let config = dir.path().join("pipeline.toml");
        let text = format!(
            "data_dir = \"{}\"\n[api]\nlisten = \"127.0.0.1:{api}\"\n{text}",
            dir.path().join("data").display()
        );
        std::fs::write(&config, text).unwrap();
        let host = Host::start(&config, api, Stdio::null());
        Pipeline { host, dir, config }
    }

    /// A path inside the pipeline's data directory.
    pub fn data(&self, path: &str) -> PathBuf {
        self.dir.path().join("data").join(path)
    }

    /// SIGKILL the host, as a crash would.
    pub fn kill_9(&mut self) {
        self.host.child.kill().unwrap();
        self.host.child.wait().unwrap();
    }

    /// SIGTERM the host and wait for its drain.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        terminate(&self.host.child);
        self.host.child.wait().unwrap()
    }

    /// Start the config again (the previous process must have ended).
    pub fn restart(&mut self) {
        let api = self.host.api_port;
        self.host = Host::start(&self.config, api, Stdio::null());
    }
}

/// A bare HTTP/1.0 GET on loopback: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_with(port, path, &[])
}

/// A bare HTTP/1.0 GET with extra header lines (`"Authorization: Bearer x"`).
pub fn http_get_with(port: u16, path: &str, headers: &[&str]) -> Option<(u16, String)> {
    http_get_headers(port, path, headers).map(|(status, _, body)| (status, body))
}

/// [`http_get_with`], with the response's headers (names in lower case).
pub fn http_get_headers(
    port: u16,
    path: &str,
    headers: &[&str],
) -> Option<(u16, HashMap<String, String>, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\n{extra}\r\n"
    )
    .ok()?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).ok()?;
    // A binary body (a plugin) comes back lossily: its status is what tests read.
    let response = String::from_utf8_lossy(&bytes).into_owned();
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect();
    Some((status, headers, body.to_owned()))
}

/// The `config_version` a release's `config.toml` gives its uplinks: what the device's
/// heartbeats report while it runs that release.
pub fn config_version(config: &str) -> Option<String> {
    config.lines().find_map(|line| {
        let value = line.trim().strip_prefix("config_version")?;
        let value = value.trim_start().strip_prefix('=')?.trim();
        Some(value.strip_prefix('"')?.strip_suffix('"')?.to_owned())
    })
}

/// A bare HTTP/1.0 POST on loopback with extra header lines: (status, body). A
/// server that answers before reading the whole body (413) is fine.
pub fn http_post(port: u16, path: &str, headers: &[&str], body: &[u8]) -> (u16, String) {
    http_send("POST", port, path, headers, body)
}

/// A bare HTTP/1.0 PUT of a JSON body on loopback: (status, body).
pub fn http_put(port: u16, path: &str, headers: &[&str], body: &[u8]) -> (u16, String) {
    let mut headers = headers.to_vec();
    headers.push("Content-Type: application/json");
    http_send("PUT", port, path, &headers, body)
}

fn http_send(method: &str, port: u16, path: &str, headers: &[&str], body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .unwrap();
    let _ = stream.write_all(body);
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The telemetry payload of event `seq`, padded to about `size` bytes.
pub fn payload(seq: u64, size: usize) -> Vec<u8> {
    let head = format!(
        r#"{{"device_id":"d{:02}","seq":{seq},"temperature":{},"battery":80.5,"pad":""#,
        seq % 16,
        20 + seq % 70
    );
    let mut text = head;
    while text.len() + 2 < size {
        text.push('x');
    }
    text.push_str("\"}");
    text.into_bytes()
}

/// Publish `make(seq)` for every seq with QoS 1 to `topic` and return once the broker
/// has acknowledged every one (retransmitting across broker restarts). `during` runs
/// once `at` messages have gone out.
pub fn publish(
    port: u16,
    topic: &str,
    seqs: std::ops::Range<u64>,
    make: impl Fn(u64) -> Vec<u8> + Send + 'static,
    at: u64,
    during: impl FnOnce(),
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut during = Some(during);
    runtime.block_on(async {
        let mut options =
            MqttOptions::new(format!("e2e-publisher-{}", free_port()), "127.0.0.1", port);
        options.set_clean_session(false);
        options.set_inflight(200);
        options.set_keep_alive(Duration::from_secs(5));
        // Whatever size a test publishes; the host's limits are what is tested.
        options.set_max_packet_size(16 << 20, 16 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let total = seqs.end - seqs.start;
        let topic = topic.to_owned();
        let sender = tokio::spawn(async move {
            for seq in seqs {
                client
                    .publish(topic.clone(), QoS::AtLeastOnce, false, make(seq))
                    .await
                    .unwrap();
            }
            client
        });
        let mut acked = 0u64;
        let mut sent = 0u64;
        while acked < total {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) => {
                    sent += 1;
                    if sent == at
                        && let Some(action) = during.take()
                    {
                        action();
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let client = sender.await.unwrap();
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
    });
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

/// How the tests run Debian's Chromium.
pub const HEADLESS: [&str; 5] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
];

/// Debian's Chromium, headless, on `url` (JavaScript runs for 4 s of virtual time).
pub fn chromium(args: &[&str], url: &str) -> std::process::Output {
    Command::new("chromium")
        .args(HEADLESS)
        .arg("--virtual-time-budget=4000")
        .args(args)
        .arg(url)
        .output()
        .expect("chromium: run scripts/setup")
}

/// The `data-stage` names and the `data-rate` figures of the admin page's DOM.
pub fn admin_page(dom: &str) -> (Vec<String>, Vec<f64>) {
    let attribute = |name: &str| -> Vec<String> {
        dom.split(&format!("{name}=\""))
            .skip(1)
            .filter_map(|rest| rest.split('"').next().map(str::to_owned))
            .collect()
    };
    let rates = attribute("data-rate")
        .iter()
        .filter_map(|r| r.parse().ok())
        .collect();
    (attribute("data-stage"), rates)
}
