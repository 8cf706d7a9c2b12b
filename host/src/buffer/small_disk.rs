//! A 64 KiB tmpfs for tests: a real full disk (ENOSPC from the kernel, short writes and
//! all), for the buffer and the file sink.

use std::path::Path;

pub struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    /// Mount one at a new temporary folder for the test's life. `None`, with a line
    /// saying the test is skipped, only where mounting is not permitted (it needs root,
    /// as the test suite runs in CI).
    pub fn mount() -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount runs");
        if output.status.success() {
            return Some(SmallDisk(dir));
        }
        let why = String::from_utf8_lossy(&output.stderr).to_lowercase();
        let refused = [
            "permission denied",
            "not permitted",
            "superuser",
            "only root",
        ];
        assert!(
            refused.iter().any(|r| why.contains(r)),
            "mounting a small tmpfs failed: {why}"
        );
        eprintln!(
            "skipped: mounting a 64 KiB tmpfs is not permitted here ({})",
            why.trim()
        );
        None
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}
