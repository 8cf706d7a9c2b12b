//! What a stage grants its plugin beyond pure computation. Nothing is ambient: a
//! plugin sees only the directories and environment variables listed here, a wall and
//! a monotonic clock, and random numbers, and can call only the host capabilities
//! listed here. Sockets are always denied.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Deserialize;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::capabilities::Capability;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Host directories visible to the plugin, read-only unless `writable`.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Names of host environment variables the plugin may read.
    #[serde(default)]
    pub env: Vec<String>,
    /// Host interfaces the plugin may import (`log`, `metrics`, `state`, `limits`;
    /// `inference` follows `models`);
    /// all of them unless the config narrows the list. A plugin that imports one more
    /// does not start.
    #[serde(default = "all_capabilities")]
    pub capabilities: BTreeSet<Capability>,
    /// ONNX models (`[models.NAME]`) the plugin may run through the `inference`
    /// capability; any other is denied. Listing one links the capability.
    #[serde(default)]
    pub models: Vec<String>,
}

fn all_capabilities() -> BTreeSet<Capability> {
    Capability::ALL.into()
}

impl Default for Grants {
    fn default() -> Self {
        Grants {
            dirs: Vec::new(),
            env: Vec::new(),
            capabilities: all_capabilities(),
            models: Vec::new(),
        }
    }
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
    /// The capabilities to link: those listed, with `inference` exactly when a model is
    /// granted (a plugin without models has nothing to run, and one with models needs
    /// no second grant).
    pub fn linked(&self) -> BTreeSet<Capability> {
        let mut linked = self.capabilities.clone();
        linked.remove(&Capability::Inference);
        if !self.models.is_empty() {
            linked.insert(Capability::Inference);
        }
        linked
    }

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
