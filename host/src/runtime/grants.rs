//! What a stage grants its plugin beyond pure computation. Nothing is ambient: a
//! plugin sees only the directories and environment variables listed here, a wall and
//! a monotonic clock, and random numbers. Sockets are always denied.

use std::path::PathBuf;

use serde::Deserialize;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Host directories visible to the plugin, read-only unless `writable`.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Names of host environment variables the plugin may read.
    #[serde(default)]
    pub env: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    pub host: PathBuf,
    /// The path the plugin opens it under.
    pub guest: String,
    #[serde(default)]
    pub writable: bool,
}

impl Grants {
    /// A WASI context that carries exactly these grants.
    pub(crate) fn wasi_builder(&self) -> Result<WasiCtxBuilder, (String, String)> {
        let mut builder = WasiCtxBuilder::new();
        builder
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for dir in &self.dirs {
            let perms = if dir.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            builder
                .preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(|error| {
                    (
                        format!("directory {} as {}", dir.host.display(), dir.guest),
                        error.to_string(),
                    )
                })?;
        }
        for name in &self.env {
            if let Ok(value) = std::env::var(name) {
                builder.env(name, value);
            }
        }
        Ok(builder)
    }
}
