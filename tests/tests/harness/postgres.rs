//! A real PostgreSQL server for the serving tests: Debian's `postgresql` package
//! (installed by `scripts/setup`), a throwaway cluster in a temporary directory, run
//! as the `postgres` user on a free loopback port with trust authentication, or
//! ([`Postgres::start_tls`]) with `ssl = on` taking TCP connections only over TLS and
//! with a password. The harness's own queries go over the Unix socket.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    /// `runuser`, whose child is the server.
    child: Child,
    /// The `postgres` user's password, when TCP connections need one.
    password: Option<&'static str>,
}

/// The `postgres` user's password on a [`Postgres::start_tls`] cluster.
pub const PASSWORD: &str = "s3cret-over-tls";

fn bin(name: &str) -> PathBuf {
    let root = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run scripts/setup")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .max()
        .expect("a PostgreSQL version");
    root.join("bin").join(name)
}

/// Run `command` as the `postgres` user (the server refuses to run as root).
fn as_postgres(command: &PathBuf) -> Command {
    let mut runuser = Command::new("runuser");
    runuser.args(["-u", "postgres", "--"]).arg(command);
    runuser
}

impl Postgres {
    pub fn start() -> Postgres {
        Postgres::start_with(None)
    }

    /// A cluster with `ssl = on`, serving the certificate `cert_pem` (PEM, the server's
    /// first) with its key `key_pem`, whose pg_hba.conf takes TCP connections over TLS
    /// only (`hostssl`), with the password [`PASSWORD`] (scram-sha-256): a client without
    /// TLS is refused.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Postgres {
        Postgres::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, PASSWORD).unwrap();
        let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
        if let Some((cert_pem, key_pem)) = tls {
            std::fs::write(&cert, cert_pem).unwrap();
            std::fs::write(&key, key_pem).unwrap();
            // The server refuses a key others can read.
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        let init = as_postgres(&bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--pwfile"])
            .arg(&password_file)
            .arg("-D")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(init.success(), "initdb failed");
        if tls.is_some() {
            // The Unix socket for the harness; TCP over TLS with a password only.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
            )
            .unwrap();
        }
        // A port another process took is tried again.
        let (port, child) = (0..5)
            .find_map(|_| {
                let port = free_port();
                serve(dir.path(), port, tls.is_some()).map(|child| (port, child))
            })
            .expect("PostgreSQL could not take a free port in 5 tries");
        Postgres {
            port,
            dir,
            child,
            password: tls.map(|_| PASSWORD),
        }
    }

    /// Stop the server (fast: sessions are ended) and start it again on its port, as an
    /// operator restarting the database does.
    pub fn restart(&mut self) {
        self.stop("fast");
        self.child = serve(self.dir.path(), self.port, self.password.is_some())
            .expect("PostgreSQL could not take its port again");
    }

    fn stop(&mut self, mode: &str) {
        // `runuser` does not pass signals on: stop the server itself.
        let _ = as_postgres(&bin("pg_ctl"))
            .args(["-m", mode, "stop", "-D"])
            .arg(self.dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The libpq connection string of the `postgres` database (with the password when
    /// the cluster wants one; no `sslmode`).
    pub fn connection(&self) -> String {
        let password = self
            .password
            .map_or(String::new(), |p| format!(" password={p}"));
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres{password}",
            self.port
        )
    }

    /// One value from `psql -At -c query`, over the Unix socket.
    pub fn query(&self, query: &str) -> String {
        let output = Command::new("psql")
            .arg("-At")
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-c", query])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop("immediate");
    }
}

/// Run the cluster in `dir` (`data/`, and `server.crt` and `server.key` with `tls`) on
/// `port`; `None` when it exits before it is ready (another process took the port).
/// The names of `server.crt` and `server.key` are those `start_with` writes.
///
/// Another test may take the port between `free_port` and the server's bind: then this
/// server exits, and a connection to the port would reach the other one. So it is
/// ready only when the pid file of its own data directory says so (with its port).
fn serve(dir: &std::path::Path, port: u16, tls: bool) -> Option<Child> {
    let data = dir.join("data");
    let mut server = as_postgres(&bin("postgres"));
    server
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
        .arg(dir);
    if tls {
        server
            .args(["-c", "ssl=on", "-c"])
            .arg(format!(
                "ssl_cert_file={}",
                dir.join("server.crt").display()
            ))
            .arg("-c")
            .arg(format!("ssl_key_file={}", dir.join("server.key").display()));
    }
    let mut child = server
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        let pid_file = std::fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
        let own = pid_file.lines().nth(3) == Some(&port.to_string());
        if own && pid_file.contains("ready") {
            return Some(child);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "PostgreSQL did not get ready within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
