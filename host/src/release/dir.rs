//! Releases on disk: `RELEASES/<group>/<version>/`, each with its manifest, signature
//! and files. A release is read whole and checked against its manifest (and, given the
//! fleet's public key, its signature) before it is served, so the central host never
//! hands out a release that a device would refuse.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use bytes::Bytes;

use super::{MANIFEST_FILE, Manifest, ReleaseError, SIGNATURE_FILE, SignedManifest, TrustedKey};

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("release {path}: {source}")]
    Release {
        path: PathBuf,
        #[source]
        source: ReleaseError,
    },
    #[error("release {path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

/// A release read from disk, every file checked.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub signed: SignedManifest,
    pub manifest: Manifest,
    pub files: BTreeMap<String, Bytes>,
}

/// The versions under a group's release directory, in order; none when it does not exist.
/// Other entries (a release being made, `.tmp-...`) are skipped.
pub fn versions(group_dir: &Path) -> Result<Vec<u64>, DirError> {
    let entries = match std::fs::read_dir(group_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(DirError::Io {
                path: group_dir.to_owned(),
                source,
            });
        }
    };
    let mut versions: Vec<u64> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    Ok(versions)
}

/// Read the release in `dir`: its manifest, its signature (verified when `trusted` is
/// given) and every file it lists, each checked against the manifest.
pub fn load(dir: &Path, trusted: Option<&TrustedKey>) -> Result<Loaded, DirError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| DirError::Io { path, source })
    };
    let release = |source| DirError::Release {
        path: dir.to_owned(),
        source,
    };
    let signature = read(SIGNATURE_FILE)?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(String::from_utf8_lossy(&signature).trim())
        .map_err(|error| DirError::Invalid {
            path: dir.join(SIGNATURE_FILE),
            problem: format!("not base64: {error}"),
        })?;
    let signed = SignedManifest {
        bytes: read(MANIFEST_FILE)?,
        signature: Some(signature),
    };
    let manifest = signed.verify(trusted).map_err(release)?;
    let named = dir.file_name().and_then(|name| name.to_str());
    if named != Some(manifest.version.to_string().as_str()) {
        return Err(DirError::Invalid {
            path: dir.to_owned(),
            problem: format!(
                "its manifest says version {}, its directory another",
                manifest.version
            ),
        });
    }
    let mut files = BTreeMap::new();
    for name in manifest.files.keys() {
        let bytes = read(name)?;
        manifest.check(name, &bytes).map_err(release)?;
        files.insert(name.clone(), Bytes::from(bytes));
    }
    Ok(Loaded {
        signed,
        manifest,
        files,
    })
}
