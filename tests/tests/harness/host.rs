//! `sluice run` as a child process: started and waited for until ready, and the
//! pipelines the tests write around it (an HTTP ingest in front, or any stages), each
//! in a temporary directory of its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, http_get, http_post, sluice_binary, terminate};

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
