//! What the central host serves each group: its releases, each read from disk (and
//! checked) once, and kept in memory while devices may ask for it. A group with a
//! `config` is served that file as an unsigned release, rebuilt when it changes; other
//! groups are served their latest signed release from `[fleet] releases` (or the one
//! the group pins), and a release made while the host runs is picked up at the next
//! poll.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::FleetConfig;
use crate::release::bundle::{self, Bundle, BundleError};
use crate::release::dir::{self, DirError};
use crate::release::{
    ENGINE, FileEntry, KeyError, Manifest, SignedManifest, TrustedKey, plugin_name, release_id,
};

/// A release as served: its manifest's bytes and signature, and every file.
#[derive(Debug)]
pub struct Served {
    /// What devices and the API call it: the first 24 hex digits of the manifest's sha256.
    pub id: String,
    pub manifest: Manifest,
    pub signed: SignedManifest,
    pub files: BTreeMap<String, Bytes>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("fleet group `{group}`: {source}")]
    Bundle {
        group: String,
        #[source]
        source: BundleError,
    },
    #[error("fleet group `{group}`: {source}")]
    Dir {
        group: String,
        #[source]
        source: DirError,
    },
    #[error("fleet group `{group}` has no release in {dir}: make one with `sluice fleet release`")]
    NoRelease { group: String, dir: PathBuf },
    #[error("fleet group `{group}` pins release {version}, which {dir} does not hold")]
    NoPinned {
        group: String,
        version: u64,
        dir: PathBuf,
    },
    #[error("fleet group `{group}` has no `config`, and `[fleet]` names no `releases` directory")]
    NoSource { group: String },
    #[error("`[fleet] trust`: {0}")]
    Trust(#[from] KeyError),
}

/// How often a group's source is looked at again.
const RESCAN: Duration = Duration::from_secs(1);
/// Releases kept per group besides the current one (rollbacks, devices mid-download).
const KEEP: usize = 4;

pub struct Releases {
    config: FleetConfig,
    base: PathBuf,
    trusted: Option<TrustedKey>,
    groups: Mutex<BTreeMap<String, GroupState>>,
}

#[derive(Default)]
struct GroupState {
    current: Option<Arc<Served>>,
    recent: Vec<Arc<Served>>,
    scanned: Option<Instant>,
}

impl GroupState {
    /// Keep `served` among the recent releases, the oldest going past [`KEEP`].
    fn remember(&mut self, served: Arc<Served>) {
        self.recent.retain(|kept| kept.id != served.id);
        self.recent.push(served);
        if self.recent.len() > KEEP {
            self.recent.remove(0);
        }
    }
}

impl Releases {
    pub fn new(config: &FleetConfig, base: &Path) -> Result<Releases, ServeError> {
        let trusted = match &config.trust {
            Some(path) => Some(TrustedKey::load(&base.join(path))?),
            None => None,
        };
        Ok(Releases {
            config: config.clone(),
            base: base.to_owned(),
            trusted,
            groups: Mutex::default(),
        })
    }

    /// The release `group` runs now.
    pub fn current(&self, group: &str) -> Result<Arc<Served>, ServeError> {
        let mut groups = self.groups.lock().unwrap();
        let state = groups.entry(group.to_owned()).or_default();
        if let (Some(current), Some(at)) = (&state.current, state.scanned)
            && at.elapsed() < RESCAN
        {
            return Ok(current.clone());
        }
        let found = self.find(group, state)?;
        state.scanned = Some(Instant::now());
        let changed = state.current.as_ref().is_none_or(|c| c.id != found.id);
        if changed && let Some(previous) = state.current.replace(found.clone()) {
            state.remember(previous);
        }
        Ok(found)
    }

    /// A release of `group` the host serves or served lately, by id.
    pub fn by_id(&self, group: &str, id: &str) -> Option<Arc<Served>> {
        let groups = self.groups.lock().unwrap();
        let state = groups.get(group)?;
        state
            .current
            .iter()
            .chain(&state.recent)
            .find(|served| served.id == id)
            .cloned()
    }

    /// A signed release of `group` by version, read if it is not in memory.
    pub fn version(&self, group: &str, version: u64) -> Result<Arc<Served>, ServeError> {
        {
            let groups = self.groups.lock().unwrap();
            if let Some(state) = groups.get(group) {
                let known = state.current.iter().chain(&state.recent);
                if let Some(served) = known.clone().find(|s| s.manifest.version == version) {
                    return Ok(served.clone());
                }
            }
        }
        let group_dir = self.group_dir(group)?;
        let served = self.load(group, &group_dir, version)?;
        let mut groups = self.groups.lock().unwrap();
        groups
            .entry(group.to_owned())
            .or_default()
            .remember(served.clone());
        Ok(served)
    }

    fn find(&self, group: &str, state: &GroupState) -> Result<Arc<Served>, ServeError> {
        let definition = &self.config.groups[group];
        if let Some(config) = &definition.config {
            let served = live(group, &self.base.join(config))?;
            // Unchanged: keep the one in memory (its bytes are the same).
            return Ok(match &state.current {
                Some(current) if current.id == served.id => current.clone(),
                _ => Arc::new(served),
            });
        }
        let group_dir = self.group_dir(group)?;
        let version = match definition.release {
            Some(pinned) => pinned,
            None => {
                let versions = dir::versions(&group_dir).map_err(|source| ServeError::Dir {
                    group: group.to_owned(),
                    source,
                })?;
                *versions.last().ok_or_else(|| ServeError::NoRelease {
                    group: group.to_owned(),
                    dir: group_dir.clone(),
                })?
            }
        };
        let known = state.current.iter().chain(&state.recent);
        if let Some(served) = known.clone().find(|s| s.manifest.version == version) {
            return Ok(served.clone());
        }
        self.load(group, &group_dir, version)
    }

    fn group_dir(&self, group: &str) -> Result<PathBuf, ServeError> {
        let root = self
            .config
            .releases
            .as_ref()
            .ok_or_else(|| ServeError::NoSource {
                group: group.to_owned(),
            })?;
        Ok(self.base.join(root).join(group))
    }

    fn load(&self, group: &str, group_dir: &Path, version: u64) -> Result<Arc<Served>, ServeError> {
        let dir = group_dir.join(version.to_string());
        if !dir.is_dir() {
            return Err(ServeError::NoPinned {
                group: group.to_owned(),
                version,
                dir: group_dir.to_owned(),
            });
        }
        let loaded = dir::load(&dir, self.trusted.as_ref()).map_err(|source| ServeError::Dir {
            group: group.to_owned(),
            source,
        })?;
        if loaded.manifest.group != group {
            return Err(ServeError::Dir {
                group: group.to_owned(),
                source: DirError::Invalid {
                    path: dir,
                    problem: format!("it is a release of group `{}`", loaded.manifest.group),
                },
            });
        }
        tracing::info!(group, version, "fleet: serving a signed release");
        Ok(Arc::new(Served {
            id: release_id(&loaded.signed.bytes),
            manifest: loaded.manifest,
            signed: loaded.signed,
            files: loaded.files,
        }))
    }
}

/// A group config served as it is on disk: an unsigned release (version 0, no
/// artifacts: the agent compiles its plugins itself).
fn live(group: &str, config: &Path) -> Result<Served, ServeError> {
    let failed = |source| ServeError::Bundle {
        group: group.to_owned(),
        source,
    };
    let mut bundle = Bundle::read(config).map_err(failed)?;
    let mut files = BTreeMap::new();
    for (sha256, path) in &bundle.plugins {
        let bytes = std::fs::read(path).map_err(|source| {
            failed(BundleError::Read {
                path: path.clone(),
                source,
            })
        })?;
        files.insert(plugin_name(sha256), Bytes::from(bytes));
    }
    // The version heartbeats report: the config's own hash, as before releases.
    let content = hex::encode(&Sha256::digest(bundle.config.to_string().as_bytes())[..12]);
    bundle::set_config_version(&mut bundle.config, &content);
    files.insert(
        "config.toml".to_owned(),
        Bytes::from(bundle.config.to_string()),
    );
    let manifest = Manifest {
        group: group.to_owned(),
        version: 0,
        parent: None,
        rollback_of: None,
        created_ms: 0,
        engine: ENGINE.to_owned(),
        targets: Vec::new(),
        files: FileEntry::list(&files),
    };
    let bytes = serde_json::to_vec(&manifest).expect("a manifest serialises to JSON");
    Ok(Served {
        id: release_id(&bytes),
        manifest,
        signed: SignedManifest {
            bytes,
            signature: None,
        },
        files,
    })
}
