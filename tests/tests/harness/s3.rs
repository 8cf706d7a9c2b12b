//! A real S3-protocol server for the object-store tests: s3s-fs (installed by
//! `scripts/setup` under `~/.cargo/bin`), serving a temporary directory where bucket
//! `B` is the directory `B` and an object is a file, with signature checks on.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until};

pub const ACCESS_KEY: &str = "sluice-test-key";
pub const SECRET_KEY: &str = "sluice-test-secret";

pub struct S3 {
    pub port: u16,
    pub root: tempfile::TempDir,
    child: Child,
}

fn binary() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let path = home.join(".cargo/bin/s3s-fs");
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup",
        path.display()
    );
    path
}

impl S3 {
    /// Start s3s-fs with the buckets `buckets`.
    pub fn start(buckets: &[&str]) -> S3 {
        let root = tempfile::tempdir().unwrap();
        for bucket in buckets {
            std::fs::create_dir(root.path().join(bucket)).unwrap();
        }
        let port = free_port();
        let child = Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until(Duration::from_secs(10), "s3s-fs to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        S3 { port, root, child }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The directory holding `bucket`'s objects.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.path().join(bucket)
    }

    /// `options = {...}` for a sink on this server. Requests time out after 3 s, so
    /// that an outage shows as failed requests, which are retried.
    pub fn sink_options(&self) -> String {
        format!(
            "options = {{ endpoint = \"{}\", region = \"us-east-1\", allow_http = \"true\", \
             access_key_id = \"{ACCESS_KEY}\", secret_access_key = \"{SECRET_KEY}\", timeout = \"3s\" }}",
            self.endpoint()
        )
    }

    /// The environment that points object_store (`s3://` URLs without `options`) and
    /// pyarrow at this server: `AWS_ENDPOINT_URL`, the keys, a region, plain HTTP.
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// Freeze the server (SIGSTOP): requests stall as in an outage.
    pub fn pause(&self) {
        signal(&self.child, "-STOP");
    }

    pub fn resume(&self) {
        signal(&self.child, "-CONT");
    }
}

fn signal(child: &Child, signal: &str) {
    Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What pyarrow (an independent Parquet reader) finds in the `.parquet` files under
/// `dir`, read as one Hive-partitioned dataset.
pub fn read_back(dir: &Path) -> serde_json::Value {
    let script = r#"
import json, sys, collections
import pyarrow.dataset as ds
dataset = ds.dataset(sys.argv[1], format="parquet", partitioning="hive")
table = dataset.to_table()
seqs = table.column("seq").to_pylist()
temps = table.column("temperature").to_pylist()
devices = table.column("device_id").to_pylist()
partitions = sorted({f[len(sys.argv[1]):].rsplit("/", 1)[0].strip("/") for f in dataset.files})
print(json.dumps({
    "rows": table.num_rows,
    "distinct": len(set(seqs)),
    "types": {f.name: str(f.type) for f in dataset.schema},
    "partitions": partitions,
    "files": len(dataset.files),
    "wrong_values": sum(1 for s, t, d in zip(seqs, temps, devices) if t != s * 0.25 or d != "d%d" % (s % 4)),
    "max_seq": max(seqs) if seqs else None,
}))
"#;
    pyarrow(script, dir, &[])
}

/// Run a pyarrow `script` on `dir` (its `sys.argv[1]`, `args` after it) and parse the
/// JSON it prints.
fn pyarrow(script: &str, dir: &Path, args: &[&str]) -> serde_json::Value {
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .args(args)
        .output()
        .expect("python3 with pyarrow: run scripts/setup");
    assert!(
        output.status.success(),
        "pyarrow failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The `seq` of every row of the `.parquet` files under `dir`, file after file.
pub fn stored_seqs(dir: &Path) -> Vec<u64> {
    let script = r#"
import json, sys, pathlib
import pyarrow.parquet as pq
seqs = []
for path in sorted(pathlib.Path(sys.argv[1]).rglob("*.parquet")):
    seqs += pq.read_table(path, columns=["seq"]).column("seq").to_pylist()
print(json.dumps(seqs))
"#;
    serde_json::from_value(pyarrow(script, dir, &[])).unwrap()
}

/// Each `.parquet` file under `dir` in name order: its column types and row count.
pub fn file_schemas(dir: &Path) -> Vec<serde_json::Value> {
    let script = r#"
import json, sys, pathlib
import pyarrow.parquet as pq
files = []
for path in sorted(pathlib.Path(sys.argv[1]).rglob("*.parquet")):
    table = pq.read_table(path)
    files.append({"rows": table.num_rows, "types": {f.name: str(f.type) for f in table.schema}})
print(json.dumps(files))
"#;
    serde_json::from_value(pyarrow(script, dir, &[])).unwrap()
}

/// Every row of the `.parquet` files under `dir`, file after file, as a JSON object of
/// its `columns`.
pub fn rows(dir: &Path, columns: &[&str]) -> Vec<serde_json::Value> {
    let script = r#"
import json, sys, pathlib
import pyarrow.parquet as pq
rows = []
for path in sorted(pathlib.Path(sys.argv[1]).rglob("*.parquet")):
    rows += pq.read_table(path, columns=sys.argv[2:]).to_pylist()
print(json.dumps(rows, default=str))
"#;
    serde_json::from_value(pyarrow(script, dir, columns)).unwrap()
}
