//! A real PostgreSQL server for the serving tests: Debian's `postgresql` package
//! (installed by `scripts/setup`), a throwaway cluster in a temporary directory, run
//! as the `postgres` user on a free loopback port with trust authentication.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until};

pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    /// `runuser`, whose child is the server.
    child: Child,
}

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
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        let init = as_postgres(&bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(init.success(), "initdb failed");
        let port = free_port();
        let child = as_postgres(&bin("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until(Duration::from_secs(30), "PostgreSQL to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Postgres { port, dir, child }
    }

    /// The libpq connection string of the `postgres` database.
    pub fn connection(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// One value from `psql -At -c query`.
    pub fn query(&self, query: &str) -> String {
        let output = Command::new("psql")
            .args([
                "-At",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-c",
                query,
            ])
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
        // `runuser` does not pass signals on: stop the server itself.
        let _ = as_postgres(&bin("pg_ctl"))
            .args(["-m", "immediate", "stop", "-D"])
            .arg(self.dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
