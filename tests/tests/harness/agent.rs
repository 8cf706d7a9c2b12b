//! `sluice agent` as a child process, the way a device runs it, and the device
//! pipeline the fleet tests give it: simulated sensors into an uplink.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{plugin, read_lines, sluice_binary};

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
