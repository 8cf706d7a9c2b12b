//! What the agent keeps on disk: release files by content (`files/<sha256>`), each
//! hashed again before it is used, and the release it runs (`state.json`), so that a
//! restart keeps the downgrade guard and starts that release without the network.
//!
//! Every file is written under a temporary name, fsynced, renamed into place, and its
//! directory fsynced: a power loss leaves the old file or the new one, and a file the
//! disk lost anyway (truncated, zeroed) fails its hash, is deleted and fetched again.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AgentError;
use crate::release::{FileEntry, SignedManifest};

const PARTIAL: &str = ".partial";

/// The agent's directory of release files and state.
pub struct Store {
    files: PathBuf,
    state: PathBuf,
}

/// The release the agent runs, as it verified it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub id: String,
    pub group: String,
    pub version: u64,
    pub parent: Option<u64>,
    /// The manifest's exact bytes, base64.
    pub manifest: String,
    /// Their signature, base64 (none for an `--insecure-unsigned` release).
    pub signature: Option<String>,
}

impl State {
    pub fn signed(&self) -> Result<SignedManifest, String> {
        let decode = |text: &str| base64::engine::general_purpose::STANDARD.decode(text);
        Ok(SignedManifest {
            bytes: decode(&self.manifest).map_err(|error| format!("manifest: {error}"))?,
            signature: self
                .signature
                .as_deref()
                .map(decode)
                .transpose()
                .map_err(|error| format!("signature: {error}"))?,
        })
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> AgentError {
    move |source| AgentError::Io { what, source }
}

impl Store {
    /// The store under `dir`, made if missing; partial writes a crash left are removed.
    pub fn open(dir: &Path) -> Result<Store, AgentError> {
        let files = dir.join("files");
        std::fs::create_dir_all(&files).map_err(io(format!("creating {}", files.display())))?;
        let entries =
            std::fs::read_dir(&files).map_err(io(format!("reading {}", files.display())))?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(PARTIAL) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Store {
            files,
            state: dir.join("state.json"),
        })
    }

    /// Where the file with `sha256` lives; `None` for a name that is not a sha256.
    fn path(&self, sha256: &str) -> Result<PathBuf, AgentError> {
        let valid = sha256.len() == 64
            && sha256
                .bytes()
                .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
        if !valid {
            return Err(AgentError::Invalid(format!(
                "`{sha256}` is not a sha256, it names no file"
            )));
        }
        Ok(self.files.join(sha256))
    }

    /// The file holding `entry`'s content, if it is here and intact. A file whose size
    /// or sha256 changed (a torn write, a disk error) is reported and deleted, so that
    /// it is fetched again.
    pub fn get(&self, entry: &FileEntry) -> Result<Option<PathBuf>, AgentError> {
        let path = self.path(&entry.sha256)?;
        let problem = match std::fs::File::open(&path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => format!("cannot be read: {error}"),
            Ok(mut file) => {
                let mut hasher = Sha256::new();
                match std::io::copy(&mut file, &mut hasher) {
                    Err(error) => format!("cannot be read: {error}"),
                    Ok(bytes) if bytes != entry.bytes => {
                        format!("{bytes} bytes, not {}", entry.bytes)
                    }
                    Ok(_) => {
                        let actual = hex::encode(hasher.finalize());
                        if actual == entry.sha256 {
                            return Ok(Some(path));
                        }
                        format!("sha256 {actual}")
                    }
                }
            }
        };
        tracing::warn!(
            file = %path.display(),
            "fleet: a stored release file is damaged ({problem}); deleting it to fetch it again"
        );
        std::fs::remove_file(&path).map_err(io(format!("deleting {}", path.display())))?;
        Ok(None)
    }

    /// Store `bytes`, which the caller checked are `entry`'s.
    pub fn put(&self, entry: &FileEntry, bytes: &[u8]) -> Result<PathBuf, AgentError> {
        let path = self.path(&entry.sha256)?;
        write_atomically(&path, bytes)?;
        Ok(path)
    }

    /// Delete every stored file but those with a sha256 in `keep`.
    pub fn retain(&self, keep: &BTreeSet<&str>) {
        let Ok(entries) = std::fs::read_dir(&self.files) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !keep.contains(name.to_string_lossy().as_ref()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// The release the agent ran last, if any.
    pub fn state(&self) -> Result<Option<State>, AgentError> {
        let text = match std::fs::read(&self.state) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            other => other.map_err(io(format!("reading {}", self.state.display())))?,
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|error| AgentError::Invalid(format!("{}: {error}", self.state.display())))
    }

    pub fn save_state(&self, state: &State) -> Result<(), AgentError> {
        let text = serde_json::to_vec_pretty(state).expect("a state serializes");
        write_atomically(&self.state, &text)
    }
}

/// Write `bytes` to `path` so that a crash leaves either the old file or the new one:
/// a temporary file, fsynced, renamed, and the directory fsynced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(PARTIAL);
    let partial = PathBuf::from(partial);
    let dir = path.parent().unwrap_or(Path::new("."));
    let written = (|| {
        let mut file = std::fs::File::create(&partial)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&partial, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written.map_err(io(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(bytes: &[u8]) -> FileEntry {
        FileEntry {
            sha256: crate::runtime::sha256_hex(bytes),
            bytes: bytes.len() as u64,
        }
    }

    #[test]
    fn a_stored_file_is_found_intact_and_a_damaged_one_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let content = b"machine code".repeat(100);
        let entry = entry(&content);
        assert_eq!(store.get(&entry).unwrap(), None, "not fetched yet");
        let path = store.put(&entry, &content).unwrap();
        assert_eq!(path, dir.path().join("files").join(&entry.sha256));
        assert_eq!(store.get(&entry).unwrap(), Some(path.clone()));

        // A power loss truncated it: detected, deleted, so the agent fetches it again.
        std::fs::write(&path, &content[..content.len() / 2]).unwrap();
        assert_eq!(store.get(&entry).unwrap(), None);
        assert!(!path.exists());
        store.put(&entry, &content).unwrap();
        assert_eq!(store.get(&entry).unwrap(), Some(path.clone()));

        // Same size, other bytes.
        let mut flipped = content.clone();
        flipped[7] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(store.get(&entry).unwrap(), None);
        assert!(!path.exists());
    }

    #[test]
    fn a_name_that_is_not_a_sha256_names_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for bad in [
            "../state.json",
            "../../etc/passwd",
            "",
            &"A".repeat(64),
            &format!("{}/x", "0".repeat(62)),
        ] {
            let entry = FileEntry {
                sha256: bad.to_owned(),
                bytes: 1,
            };
            assert!(store.get(&entry).is_err(), "{bad}");
            assert!(store.put(&entry, b"x").is_err(), "{bad}");
        }
        assert!(!dir.path().join("state.json").exists());
    }

    #[test]
    fn partial_writes_are_cleared_and_unkept_files_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (entry(b"a"), entry(b"b"));
        store.put(&a, b"a").unwrap();
        store.put(&b, b"b").unwrap();
        let partial = dir
            .path()
            .join("files")
            .join(format!("{}.partial", a.sha256));
        std::fs::write(&partial, b"torn").unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(!partial.exists());
        store.retain(&BTreeSet::from([a.sha256.as_str()]));
        assert!(store.get(&a).unwrap().is_some());
        assert!(!dir.path().join("files").join(&b.sha256).exists());
    }

    #[test]
    fn the_state_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.state().unwrap(), None);
        let state = State {
            id: "0123456789abcdef01234567".into(),
            group: "gateways".into(),
            version: 4,
            parent: Some(3),
            manifest: base64::engine::general_purpose::STANDARD.encode(b"{}"),
            signature: None,
        };
        store.save_state(&state).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.state().unwrap(), Some(state.clone()));
        assert_eq!(
            store.state().unwrap().unwrap().signed().unwrap().bytes,
            b"{}"
        );
    }
}
