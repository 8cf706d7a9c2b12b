//! The versions of a model, kept under the host's data directory so that a switch
//! survives a restart and an earlier version can be activated again (a rollback).
//!
//! `data_dir/models/NAME/` holds each version's ONNX file named by its content
//! (`SHA256.onnx`, so a file deployed twice is stored once) and `versions.json`: every
//! version in the order it came, which one is active, and the file the config named when
//! last looked at. Version 0 is the config's file when the model was first loaded. When
//! the config later names another file (another path, or new content at its path), that
//! file becomes the next version and is activated: an edited config wins over an earlier
//! deployment, as it would without versions.
//!
//! Every change of a history happens under one process-wide lock, and `versions.json` is
//! replaced whole (written aside, synced, renamed), so a crash leaves the old history or
//! the new one, never half of either.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{InferenceError, Model, ModelDef, read, sha256};

/// One version of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub version: u64,
    pub sha256: String,
    /// The file it was read from (the config's path, or the `model` job's).
    pub source: PathBuf,
    /// When it was added, in milliseconds since the epoch.
    pub deployed_ms: i64,
    /// What added it: `config`, or `job NAME`.
    pub origin: String,
}

/// A model's `versions.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub model: String,
    /// The version served.
    pub active: u64,
    /// The file the config named when last looked at: another one at the next load
    /// means the config changed.
    pub config: ConfigFile,
    /// Oldest first; a version's number is its index.
    pub versions: Vec<Version>,
}

/// A file the config names, and its content's sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub sha256: String,
}

impl History {
    fn new(model: &str, config: ConfigFile) -> History {
        History {
            model: model.to_owned(),
            active: 0,
            config,
            versions: Vec::new(),
        }
    }

    pub fn get(&self, version: u64) -> Option<&Version> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// The version served; a history naming none is damaged.
    pub(super) fn active_version(&self) -> Result<&Version, InferenceError> {
        self.get(self.active)
            .ok_or_else(|| InferenceError::Version {
                model: self.model.clone(),
                message: format!(
                    "versions.json makes version {} active, which it does not list",
                    self.active
                ),
            })
    }

    /// Add a version read from `source`; returns its number.
    pub(super) fn push(&mut self, sha256: &str, source: &Path, origin: &str) -> u64 {
        let version = self.versions.len() as u64;
        let deployed_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as i64);
        self.versions.push(Version {
            version,
            sha256: sha256.to_owned(),
            source: source.to_owned(),
            deployed_ms,
            origin: origin.to_owned(),
        });
        version
    }

    /// Look at the config's file again, so that what it holds now counts as seen: a
    /// deployment or rollback decided now is not undone at the next start by a change
    /// made before it (a training script that overwrote the configured file).
    pub(super) fn note_config(&mut self) {
        if let Ok(bytes) = std::fs::read(&self.config.path) {
            self.config.sha256 = sha256(&bytes);
        }
    }

    /// Numbers of the first and last versions, for messages.
    fn range(&self) -> String {
        match (self.versions.first(), self.versions.last()) {
            (Some(first), Some(last)) => format!("{}–{}", first.version, last.version),
            _ => "none".to_owned(),
        }
    }
}

/// Histories are read, changed and written under this lock.
static CHANGING: Mutex<()> = Mutex::new(());

pub(super) fn lock() -> MutexGuard<'static, ()> {
    CHANGING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where one model's versions are kept.
pub(super) struct Store<'a> {
    model: &'a str,
    dir: PathBuf,
}

impl<'a> Store<'a> {
    pub(super) fn new(model: &'a str, data_dir: &Path) -> Result<Store<'a>, InferenceError> {
        // The name becomes a directory: it must stay one, inside `models/`.
        if model.is_empty() || model.starts_with('.') || model.contains(['/', '\\']) {
            return Err(InferenceError::Version {
                model: model.to_owned(),
                message: "a model whose versions are kept needs a name that is a plain directory name (no `/`, not starting with `.`)".into(),
            });
        }
        Ok(Store {
            model,
            dir: data_dir.join("models").join(model),
        })
    }

    fn history_path(&self) -> PathBuf {
        self.dir.join("versions.json")
    }

    /// The stored file of `version`.
    pub(super) fn file(&self, version: &Version) -> PathBuf {
        self.dir.join(format!("{}.onnx", version.sha256))
    }

    fn failed(
        &self,
        what: &'static str,
        path: PathBuf,
    ) -> impl FnOnce(std::io::Error) -> InferenceError {
        let model = self.model.to_owned();
        move |source| InferenceError::Store {
            model,
            what,
            path,
            source,
        }
    }

    pub(super) fn read(&self) -> Result<Option<History>, InferenceError> {
        let path = self.history_path();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(self.failed("read", path)(error)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|error| InferenceError::Version {
                model: self.model.to_owned(),
                message: format!("{} is damaged: {error}", path.display()),
            })
    }

    pub(super) fn write(&self, history: &History) -> Result<(), InferenceError> {
        let json = serde_json::to_vec_pretty(history).expect("a history serializes");
        self.replace(&self.history_path(), &json)
    }

    /// Keep `bytes` (whose sha256 is `sha256`) as a version's file.
    pub(super) fn keep(&self, sha256: &str, bytes: &[u8]) -> Result<(), InferenceError> {
        let path = self.dir.join(format!("{sha256}.onnx"));
        if path.is_file() {
            return Ok(());
        }
        self.replace(&path, bytes)
    }

    /// The bytes of `version`'s file, checked against its sha256.
    pub(super) fn bytes(&self, version: &Version) -> Result<Vec<u8>, InferenceError> {
        let path = self.file(version);
        let bytes = read(self.model, &path)?;
        let actual = sha256(&bytes);
        if actual != version.sha256 {
            return Err(InferenceError::Version {
                model: self.model.to_owned(),
                message: format!(
                    "the file of version {} ({}) is damaged: its sha256 is {actual}",
                    version.version,
                    path.display()
                ),
            });
        }
        Ok(bytes)
    }

    /// Write `path` whole: aside first, synced, then renamed over it, then the directory
    /// synced so that the rename itself survives a crash.
    fn replace(&self, path: &Path, bytes: &[u8]) -> Result<(), InferenceError> {
        std::fs::create_dir_all(&self.dir).map_err(self.failed("create", self.dir.clone()))?;
        let aside = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&aside)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&aside, path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(self.failed("write", path.to_owned()))
    }
}

/// The versions of model `name` kept in `data_dir`, if any: for a listing (an API route,
/// `sluice model versions`). Read without loading anything.
pub fn versions(name: &str, data_dir: &Path) -> Result<Option<History>, InferenceError> {
    Store::new(name, data_dir)?.read()
}

/// The history of `name` in `data_dir`, which must have one.
pub(super) fn existing(store: &Store<'_>, data_dir: &Path) -> Result<History, InferenceError> {
    store.read()?.ok_or_else(|| InferenceError::Version {
        model: store.model.to_owned(),
        message: format!(
            "no versions are kept in {} (a pipeline with this data directory keeps them once it has loaded the model)",
            data_dir.display()
        ),
    })
}

/// Version `number` of `history`, which must list it.
pub(super) fn listed(history: &History, number: u64) -> Result<&Version, InferenceError> {
    history.get(number).ok_or_else(|| InferenceError::Version {
        model: history.model.clone(),
        message: format!(
            "there is no version {number} (versions: {})",
            history.range()
        ),
    })
}

/// The version model `name` serves from `data_dir`, loaded, with its number: the
/// active one, unless the config names a file it did not name before, which becomes a
/// new version and the active one. The config's file is kept as a version either way.
pub(super) fn load_active(
    name: &str,
    def: &ModelDef,
    library: Option<&Path>,
    data_dir: &Path,
) -> Result<(u64, Model), InferenceError> {
    let _changing = lock();
    let store = Store::new(name, data_dir)?;
    let config_bytes = read(name, &def.path)?;
    let configured = ConfigFile {
        path: def.path.clone(),
        sha256: sha256(&config_bytes),
    };
    let mut history = match store.read()? {
        Some(history) if history.config == configured => {
            let active = history.active_version()?;
            let bytes = store.bytes(active)?;
            let model = Model::open(
                name,
                def,
                &store.file(active),
                &bytes,
                Some(&active.sha256),
                library,
            )?;
            return Ok((active.version, model));
        }
        Some(history) => history,
        None => History::new(name, configured.clone()),
    };
    let model = Model::open(
        name,
        def,
        &def.path,
        &config_bytes,
        def.sha256.as_deref(),
        library,
    )?;
    store.keep(&configured.sha256, &config_bytes)?;
    let serving = history
        .active_version()
        .is_ok_and(|active| active.sha256 == configured.sha256);
    if !serving {
        history.active = history.push(&configured.sha256, &def.path, "config");
        if history.active > 0 {
            tracing::info!(
                model = name,
                version = history.active,
                path = %def.path.display(),
                "the config names a new file for the model: it is the active version"
            );
        }
    }
    history.config = configured;
    store.write(&history)?;
    Ok((history.active, model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_lists_versions_in_order_and_survives_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new("anomaly", dir.path()).unwrap();
        assert_eq!(store.read().unwrap(), None);
        let config = ConfigFile {
            path: "m.onnx".into(),
            sha256: "aa".into(),
        };
        let mut history = History::new("anomaly", config);
        assert_eq!(history.push("aa", Path::new("m.onnx"), "config"), 0);
        assert_eq!(history.push("bb", Path::new("n.onnx"), "job nightly"), 1);
        history.active = 1;
        store.write(&history).unwrap();
        assert_eq!(store.read().unwrap(), Some(history.clone()));
        assert_eq!(history.active_version().unwrap().origin, "job nightly");
        assert_eq!(
            listed(&history, 7).unwrap_err().to_string(),
            "model `anomaly`: there is no version 7 (versions: 0–1)"
        );
        assert!(!dir.path().join("models/anomaly/versions.tmp").exists());
    }

    #[test]
    fn a_stored_file_that_changed_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new("anomaly", dir.path()).unwrap();
        let sha = sha256(b"model");
        store.keep(&sha, b"model").unwrap();
        let mut history = History::new(
            "anomaly",
            ConfigFile {
                path: "m.onnx".into(),
                sha256: sha.clone(),
            },
        );
        history.push(&sha, Path::new("m.onnx"), "config");
        let version = &history.versions[0];
        assert_eq!(store.bytes(version).unwrap(), b"model");
        std::fs::write(store.file(version), b"other").unwrap();
        assert!(
            store
                .bytes(version)
                .unwrap_err()
                .to_string()
                .contains("the file of version 0")
        );
    }

    #[test]
    fn a_name_that_is_not_a_plain_directory_name_keeps_no_versions() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["../x", "a/b", ".hidden", ""] {
            assert!(Store::new(name, dir.path()).is_err(), "{name}");
        }
    }
}
