//! The fleet: devices managed from the central host's one config.
//!
//! The central config's `[fleet]` names device groups (each with the agent pipeline it
//! runs, a config file next to the central one) and devices (each in a group, with its
//! token). The central host serves each device its group's config and plugins over its
//! API ([`routes`]); `sluice agent` ([`crate::agent`]) polls for them and applies each new
//! version atomically.
//!
//! What a device gets is a [`Bundle`]: the group's config with every plugin path
//! replaced by a content address (`plugins/<sha256>.wasm`, pinned by the same sha256),
//! the plugins' bytes by address, and a version (a sha256 over the rewritten config),
//! which is also written into the config's `uplink` sinks so that heartbeats report it.

pub mod heartbeats;
pub mod registry;
pub mod routes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use crate::config::fleet::{DeviceConfig, FleetConfig, GroupConfig, HeartbeatsConfig};

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(
        "fleet: device `{device}` is in group `{group}`, which `[fleet.groups]` does not define"
    )]
    UnknownGroup { device: String, group: String },
    #[error("fleet group `{group}`: cannot read {path}: {source}")]
    Read {
        group: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fleet group `{group}`: {path} is not a valid config: {message}")]
    Invalid {
        group: String,
        path: PathBuf,
        message: String,
    },
}

/// What one device group runs, ready to serve.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub version: String,
    pub config: String,
    /// Plugin files by sha256.
    pub plugins: BTreeMap<String, PathBuf>,
}

impl FleetConfig {
    /// Check that every device's group exists and every group's config builds into a
    /// bundle, so that a broken fleet section fails the central host's start.
    pub fn check(&self, base: &Path) -> Result<(), FleetError> {
        for (device, config) in &self.devices {
            if !self.groups.contains_key(&config.group) {
                return Err(FleetError::UnknownGroup {
                    device: device.clone(),
                    group: config.group.clone(),
                });
            }
        }
        for group in self.groups.keys() {
            self.bundle(base, group)?;
        }
        Ok(())
    }

    /// The bundle of `group`, read afresh: editing a group's config (or a plugin) on
    /// the central host is all a rollout takes.
    pub fn bundle(&self, base: &Path, group: &str) -> Result<Bundle, FleetError> {
        let definition = &self.groups[group];
        let path = base.join(&definition.config);
        let dir = path.parent().map(Path::to_owned).unwrap_or_default();
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| FleetError::Read {
                group: group.to_owned(),
                path: path.to_owned(),
                source,
            })
        };
        let invalid = |message: String| FleetError::Invalid {
            group: group.to_owned(),
            path: path.clone(),
            message,
        };
        let text = String::from_utf8(read(&path)?).map_err(|error| invalid(error.to_string()))?;
        let mut table: toml::Table = text
            .parse()
            .map_err(|error: toml::de::Error| invalid(error.message().to_owned()))?;
        let mut plugins = BTreeMap::new();
        if let Some(toml::Value::Table(defined)) = table.get_mut("plugins") {
            for (name, plugin) in defined.iter_mut() {
                let Some(plugin) = plugin.as_table_mut() else {
                    return Err(invalid(format!("`plugins.{name}` is not a table")));
                };
                let Some(file) = plugin.get("path").and_then(toml::Value::as_str) else {
                    return Err(invalid(format!("`plugins.{name}` has no `path`")));
                };
                let file = dir.join(file);
                let sha256 = crate::runtime::sha256_hex(&read(&file)?);
                plugin.insert("path".into(), format!("plugins/{sha256}.wasm").into());
                plugin.insert("sha256".into(), sha256.clone().into());
                plugins.insert(sha256, file);
            }
        }
        let version = hex::encode(&Sha256::digest(table.to_string().as_bytes())[..12]);
        for sink in table
            .get_mut("sinks")
            .and_then(toml::Value::as_table_mut)
            .into_iter()
            .flat_map(|sinks| sinks.iter_mut().map(|(_, sink)| sink))
            .filter_map(toml::Value::as_table_mut)
        {
            if sink.get("type").and_then(toml::Value::as_str) == Some("uplink") {
                sink.insert("config_version".into(), version.clone().into());
            }
        }
        Ok(Bundle {
            version,
            config: table.to_string(),
            plugins,
        })
    }
}
