//! A group's config as a release holds it: every plugin's `path` replaced by its
//! content address (`plugins/<sha256>.wasm`) and pinned by that sha256, and the
//! release's version written into its `uplink` sinks (`config_version`), so that
//! heartbeats say what a device runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::plugin_name;
use crate::runtime::Limits;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid config: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A group config with its plugins content-addressed.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub config: toml::Table,
    /// The plugin files, by sha256.
    pub plugins: BTreeMap<String, PathBuf>,
}

impl Bundle {
    /// Read the group config at `path` and hash the plugins it names (relative to it).
    pub fn read(path: &Path) -> Result<Bundle, BundleError> {
        let dir = path.parent().map(Path::to_owned).unwrap_or_default();
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| BundleError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let invalid = |message: String| BundleError::Invalid {
            path: path.to_owned(),
            message,
        };
        let text = String::from_utf8(read(path)?).map_err(|error| invalid(error.to_string()))?;
        let mut config: toml::Table = text
            .parse()
            .map_err(|error: toml::de::Error| invalid(error.message().to_owned()))?;
        let mut plugins = BTreeMap::new();
        if let Some(toml::Value::Table(defined)) = config.get_mut("plugins") {
            for (name, plugin) in defined.iter_mut() {
                let Some(plugin) = plugin.as_table_mut() else {
                    return Err(invalid(format!("`plugins.{name}` is not a table")));
                };
                let Some(file) = plugin.get("path").and_then(toml::Value::as_str) else {
                    return Err(invalid(format!("`plugins.{name}` has no `path`")));
                };
                let file = dir.join(file);
                let sha256 = crate::runtime::sha256_hex(&read(&file)?);
                plugin.insert("path".into(), plugin_name(&sha256).into());
                plugin.insert("sha256".into(), sha256.clone().into());
                plugins.insert(sha256, file);
            }
        }
        uses_fuel(&config).map_err(invalid)?;
        Ok(Bundle { config, plugins })
    }
}

/// Write `version` into the config's `uplink` sinks as their `config_version`.
pub fn set_config_version(config: &mut toml::Table, version: &str) {
    let sinks = config.get_mut("sinks").and_then(toml::Value::as_table_mut);
    for sink in sinks
        .into_iter()
        .flat_map(|sinks| sinks.iter_mut().map(|(_, sink)| sink))
        .filter_map(toml::Value::as_table_mut)
    {
        if sink.get("type").and_then(toml::Value::as_str) == Some("uplink") {
            sink.insert("config_version".into(), version.into());
        }
    }
}

/// Whether a config's runtime meters fuel (one of its plugins has a fuel limit): its
/// plugins' machine code is made for that engine.
pub fn uses_fuel(config: &toml::Table) -> Result<bool, String> {
    let plugins = config.get("plugins").and_then(toml::Value::as_table);
    for (name, plugin) in plugins.into_iter().flatten() {
        if let Some(limits) = plugin.get("limits") {
            let limits: Limits = limits
                .clone()
                .try_into()
                .map_err(|error: toml::de::Error| {
                    format!("`plugins.{name}.limits`: {}", error.message())
                })?;
            if limits.fuel.is_some() {
                return Ok(true);
            }
        }
    }
    Ok(false)
}
