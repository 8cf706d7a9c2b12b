//! `sluice fleet release`: make a group's next release. The group's config and plugins
//! are content-addressed ([`Bundle`]), each plugin is compiled for every target the
//! release is for (with the engine settings its config needs: fuel or not), and the
//! manifest listing every file is signed. The release is written under a temporary name,
//! every file fsynced, and renamed into place: a release directory is complete or
//! absent, and never changes afterwards.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::bundle::{self, Bundle, BundleError};
use super::dir::{self, DirError};
use super::{
    ENGINE, FileEntry, MANIFEST_FILE, Manifest, SIGNATURE_FILE, SigningKey, artifact_name,
    plugin_name,
};

/// What a release is made from.
pub enum Source<'a> {
    /// A group config (its plugins relative to it).
    Config(&'a Path),
    /// The content of an earlier release of the group: an operator's rollback.
    Rollback(u64),
}

pub struct Plan<'a> {
    pub group: &'a str,
    pub source: Source<'a>,
    /// Target triples to compile the plugins for.
    pub targets: &'a [String],
    pub key: &'a SigningKey,
    /// The releases directory: the release goes to `<releases>/<group>/<version>/`.
    pub releases: &'a Path,
}

#[derive(Debug, thiserror::Error)]
pub enum MakeError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Dir(#[from] DirError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin {plugin} for {target}: {reason}")]
    Compile {
        plugin: String,
        target: String,
        reason: String,
    },
    #[error("group `{group}` has no release {version} to roll back to (it has {have:?})")]
    NoSuchRelease {
        group: String,
        version: u64,
        have: Vec<u64>,
    },
    #[error("`{0}` cannot name a group's release directory")]
    GroupName(String),
}

/// What was made.
#[derive(Debug)]
pub struct Made {
    pub version: u64,
    pub dir: PathBuf,
    pub manifest: Manifest,
}

pub fn make(plan: &Plan<'_>) -> Result<Made, MakeError> {
    let group = plan.group;
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if group.is_empty() || group.starts_with('.') || !group.chars().all(plain) {
        return Err(MakeError::GroupName(group.to_owned()));
    }
    let group_dir = plan.releases.join(group);
    let existing = dir::versions(&group_dir)?;
    let parent = existing.last().copied();
    let version = parent.map_or(1, |latest| latest + 1);
    let mut targets = plan.targets.to_vec();
    // A rollback reuses the machine code it has (when made by this engine).
    let mut reusable = BTreeMap::new();
    let (mut config, plugins, rollback_of) = match plan.source {
        Source::Config(path) => {
            let bundle = Bundle::read(path)?;
            let plugins: BTreeMap<String, Vec<u8>> = bundle
                .plugins
                .iter()
                .map(|(sha256, file)| Ok((sha256.clone(), read(file)?)))
                .collect::<Result<_, MakeError>>()?;
            (bundle.config, plugins, None)
        }
        Source::Rollback(to) => {
            if !existing.contains(&to) {
                return Err(MakeError::NoSuchRelease {
                    group: group.to_owned(),
                    version: to,
                    have: existing,
                });
            }
            let earlier = dir::load(&group_dir.join(to.to_string()), None)?;
            let text = String::from_utf8_lossy(&earlier.files["config.toml"]).into_owned();
            let config: toml::Table =
                text.parse()
                    .map_err(|error: toml::de::Error| DirError::Invalid {
                        path: group_dir.join(to.to_string()),
                        problem: error.message().to_owned(),
                    })?;
            let plugins = earlier
                .files
                .iter()
                .filter_map(|(name, bytes)| {
                    let sha256 = name.strip_prefix("plugins/")?.strip_suffix(".wasm")?;
                    Some((sha256.to_owned(), bytes.to_vec()))
                })
                .collect();
            if targets.is_empty() {
                targets = earlier.manifest.targets.clone();
            }
            reusable = earlier.files;
            (config, plugins, Some(to))
        }
    };
    bundle::set_config_version(&mut config, &version.to_string());
    let fuel = bundle::uses_fuel(&config).map_err(|problem| DirError::Invalid {
        path: group_dir.clone(),
        problem,
    })?;

    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert("config.toml".into(), config.to_string().into_bytes());
    for (sha256, wasm) in &plugins {
        for target in &targets {
            let name = artifact_name(sha256, target, fuel);
            let compiled = match reusable.get(&name) {
                Some(bytes) => bytes.to_vec(),
                None => crate::runtime::precompiled::precompile(wasm, target, fuel).map_err(
                    |error| MakeError::Compile {
                        plugin: sha256.clone(),
                        target: target.clone(),
                        reason: error.to_string(),
                    },
                )?,
            };
            files.insert(name, compiled);
        }
        files.insert(plugin_name(sha256), wasm.clone());
    }
    let manifest = Manifest {
        group: group.to_owned(),
        version,
        parent,
        rollback_of,
        created_ms: crate::event::now_ms(),
        engine: ENGINE.to_owned(),
        targets,
        files: FileEntry::list(&files),
    };
    let manifest_bytes =
        serde_json::to_vec_pretty(&manifest).expect("a manifest serialises to JSON");
    let signature =
        base64::engine::general_purpose::STANDARD.encode(plan.key.sign(&manifest_bytes));
    files.insert(MANIFEST_FILE.into(), manifest_bytes);
    files.insert(SIGNATURE_FILE.into(), format!("{signature}\n").into_bytes());

    let temporary = group_dir.join(format!(".{version}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&temporary);
    for (name, bytes) in &files {
        write_synced(&temporary.join(name), bytes)?;
    }
    for sub in ["plugins", "artifacts", ""] {
        sync_dir(&temporary.join(sub))?;
    }
    let dir = group_dir.join(version.to_string());
    // Fails when another maker took this version meanwhile: no release is ever replaced.
    std::fs::rename(&temporary, &dir).map_err(|source| MakeError::Io {
        path: dir.clone(),
        source,
    })?;
    sync_dir(&group_dir)?;
    Ok(Made {
        version,
        dir,
        manifest,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, MakeError> {
    std::fs::read(path).map_err(|source| MakeError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), MakeError> {
    let io = |source| MakeError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut file = std::fs::File::create(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Make a directory's entries durable (a missing one has none).
fn sync_dir(path: &Path) -> Result<(), MakeError> {
    match std::fs::File::open(path) {
        Ok(dir) => dir.sync_all().map_err(|source| MakeError::Io {
            path: path.to_owned(),
            source,
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(MakeError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}
