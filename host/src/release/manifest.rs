//! A release's manifest: which group and version it is, where it comes from, and every
//! file it holds with its sha256 and size. Devices check the signature over the
//! manifest's exact bytes, then each file's bytes against it before writing them, so
//! nothing the network or the central host changes is written or run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::TrustedKey;

/// The manifest's file in a release directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The signature over [`MANIFEST_FILE`]'s bytes (base64).
pub const SIGNATURE_FILE: &str = "manifest.sig";

/// The engine artifacts are made for: machine code from another wasmtime (or another
/// sluice, whose engine settings may differ) does not load, so it is named apart and
/// never offered. Kept equal to host/Cargo.toml's wasmtime pin by a test.
pub const ENGINE: &str = concat!("wasmtime-48.0.8+sluice-", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub group: String,
    /// 1, 2, 3...: a device never goes to a lower one (but to its release's `parent`).
    pub version: u64,
    /// The version this one follows (the group's latest when it was made).
    pub parent: Option<u64>,
    /// An operator's rollback: this release's content is that version's.
    #[serde(default)]
    pub rollback_of: Option<u64>,
    pub created_ms: i64,
    /// The engine its artifacts were made for ([`ENGINE`]).
    pub engine: String,
    /// The target triples its artifacts were made for.
    pub targets: Vec<String>,
    /// Every file of the release but the manifest and its signature, by relative path.
    pub files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub sha256: String,
    pub bytes: u64,
}

impl FileEntry {
    /// The entries of `files` (relative path to content).
    pub fn list<B: AsRef<[u8]>>(files: &BTreeMap<String, B>) -> BTreeMap<String, FileEntry> {
        files
            .iter()
            .map(|(name, bytes)| {
                let bytes = bytes.as_ref();
                let entry = FileEntry {
                    sha256: crate::runtime::sha256_hex(bytes),
                    bytes: bytes.len() as u64,
                };
                (name.clone(), entry)
            })
            .collect()
    }
}

/// A manifest as served: its exact bytes and their signature.
#[derive(Debug, Clone)]
pub struct SignedManifest {
    pub bytes: Vec<u8>,
    pub signature: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("the release is not signed, and this device trusts only signed releases")]
    Unsigned,
    #[error("the release's signature does not verify with the trusted key")]
    BadSignature,
    #[error("the manifest is not valid: {0}")]
    Manifest(String),
    #[error("the release is for group `{found}`, this device is in group `{expected}`")]
    OtherGroup { expected: String, found: String },
    #[error("`{0}` is not a file name a release may hold")]
    FileName(String),
    #[error("{file}: {problem}")]
    Content { file: String, problem: String },
}

impl SignedManifest {
    /// The manifest, if `trusted` signed these bytes (or, with no key, whatever they say:
    /// `--insecure-unsigned`).
    pub fn verify(&self, trusted: Option<&TrustedKey>) -> Result<Manifest, ReleaseError> {
        if let Some(trusted) = trusted {
            let signature = self.signature.as_ref().ok_or(ReleaseError::Unsigned)?;
            if !trusted.verifies(&self.bytes, signature) {
                return Err(ReleaseError::BadSignature);
            }
        }
        let manifest: Manifest = serde_json::from_slice(&self.bytes)
            .map_err(|error| ReleaseError::Manifest(error.to_string()))?;
        for name in manifest.files.keys() {
            check_file_name(name)?;
        }
        for entry in manifest.files.values() {
            if !is_sha256(&entry.sha256) {
                return Err(ReleaseError::Manifest(format!(
                    "`{}` is not a sha256",
                    entry.sha256
                )));
            }
        }
        Ok(manifest)
    }
}

impl Manifest {
    /// Check `bytes` as the release's file `name`: listed, of its size and sha256.
    pub fn check(&self, name: &str, bytes: &[u8]) -> Result<(), ReleaseError> {
        let problem = |problem: String| ReleaseError::Content {
            file: name.to_owned(),
            problem,
        };
        let entry = self
            .files
            .get(name)
            .ok_or_else(|| problem("not in the manifest".to_owned()))?;
        if bytes.len() as u64 != entry.bytes {
            return Err(problem(format!(
                "{} bytes, the manifest says {}",
                bytes.len(),
                entry.bytes
            )));
        }
        let sha256 = crate::runtime::sha256_hex(bytes);
        if sha256 != entry.sha256 {
            return Err(problem(format!(
                "sha256 {sha256}, the manifest says {}",
                entry.sha256
            )));
        }
        Ok(())
    }
}

fn is_sha256(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

/// A release's id, what devices and the API call it: the first 24 hex digits of its
/// manifest's sha256.
pub fn release_id(manifest: &[u8]) -> String {
    crate::runtime::sha256_hex(manifest)[..24].to_owned()
}

/// The release file of the plugin with `sha256`.
pub fn plugin_name(sha256: &str) -> String {
    format!("plugins/{sha256}.wasm")
}

/// The release file of the plugin with `sha256` compiled for `target` (with fuel
/// metering or not) by [`ENGINE`].
pub fn artifact_name(sha256: &str, target: &str, fuel: bool) -> String {
    let fuel = if fuel { "fuel" } else { "nofuel" };
    format!("artifacts/{sha256}.{target}.{fuel}.{ENGINE}.cwasm")
}

/// Refuse a name a release cannot hold, before it names a file anywhere: only
/// `config.toml`, `plugins/<sha256>.wasm` and `artifacts/<sha256>.<...>.cwasm` with
/// plain characters, no separators or dot-dot.
pub fn check_file_name(name: &str) -> Result<(), ReleaseError> {
    let plain = |part: &str| {
        !part.is_empty()
            && !part.contains("..")
            && part.bytes().all(|byte| {
                byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_' | b'+')
            })
    };
    let valid = match name.split_once('/') {
        None => name == "config.toml",
        Some(("plugins", file)) => file.strip_suffix(".wasm").is_some_and(is_sha256),
        Some(("artifacts", file)) => {
            plain(file)
                && file.ends_with(".cwasm")
                && file
                    .split_once('.')
                    .is_some_and(|(sha256, _)| is_sha256(sha256))
        }
        Some(_) => false,
    };
    if valid {
        Ok(())
    } else {
        Err(ReleaseError::FileName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::SigningKey;

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn manifest() -> Manifest {
        Manifest {
            group: "gateways".into(),
            version: 3,
            parent: Some(2),
            rollback_of: None,
            created_ms: 0,
            engine: ENGINE.into(),
            targets: vec!["x86_64-unknown-linux-gnu".into()],
            files: BTreeMap::from([(
                "config.toml".to_owned(),
                FileEntry {
                    sha256: crate::runtime::sha256_hex(b"[sources]"),
                    bytes: 9,
                },
            )]),
        }
    }

    fn trusted_pair() -> (SigningKey, TrustedKey) {
        let dir = tempfile::tempdir().unwrap();
        let (private, _) = SigningKey::generate().unwrap();
        std::fs::write(dir.path().join("k"), private).unwrap();
        let key = SigningKey::load(&dir.path().join("k")).unwrap();
        let public = key.public();
        (key, public)
    }

    #[test]
    fn a_signed_manifest_verifies_and_a_changed_byte_does_not() {
        let (key, trusted) = trusted_pair();
        let bytes = serde_json::to_vec(&manifest()).unwrap();
        let signed = SignedManifest {
            signature: Some(key.sign(&bytes).to_vec()),
            bytes: bytes.clone(),
        };
        assert_eq!(signed.verify(Some(&trusted)).unwrap(), manifest());
        let mut flipped = signed.clone();
        let at = flipped.bytes.len() / 2;
        flipped.bytes[at] ^= 1;
        assert!(matches!(
            flipped.verify(Some(&trusted)),
            Err(ReleaseError::BadSignature)
        ));
        let unsigned = SignedManifest {
            bytes,
            signature: None,
        };
        assert!(matches!(
            unsigned.verify(Some(&trusted)),
            Err(ReleaseError::Unsigned)
        ));
        assert!(
            unsigned.verify(None).is_ok(),
            "--insecure-unsigned takes it as it is"
        );
    }

    #[test]
    fn a_file_is_checked_against_its_size_and_sha256() {
        let manifest = manifest();
        assert!(manifest.check("config.toml", b"[sources]").is_ok());
        let error = manifest
            .check("config.toml", b"[sinks]")
            .unwrap_err()
            .to_string();
        assert!(error.contains("7 bytes, the manifest says 9"), "{error}");
        let error = manifest
            .check("config.toml", b"[Sources]")
            .unwrap_err()
            .to_string();
        assert!(error.contains("sha256"), "{error}");
        assert!(manifest.check("plugins/x.wasm", b"").is_err());
    }

    #[test]
    fn only_plain_release_file_names_are_taken() {
        for good in [
            "config.toml".to_owned(),
            plugin_name(SHA),
            artifact_name(SHA, "aarch64-unknown-linux-gnu", true),
        ] {
            assert!(check_file_name(&good).is_ok(), "{good}");
        }
        for bad in [
            "../config.toml",
            "plugins/../../etc/passwd",
            "plugins/abc.wasm",
            "artifacts/x/../../y.cwasm",
            "artifacts/..cwasm",
            "/etc/passwd",
            "config.toml/",
            "other/file",
        ] {
            assert!(check_file_name(bad).is_err(), "{bad}");
        }
        assert!(check_file_name(&format!("artifacts/{SHA}.x86_64/../../z.cwasm")).is_err());
    }

    #[test]
    fn the_engine_name_follows_the_wasmtime_pin() {
        let cargo = include_str!("../../Cargo.toml");
        let pin = cargo
            .lines()
            .find(|line| line.starts_with("wasmtime = "))
            .and_then(|line| line.split("version = \"=").nth(1))
            .and_then(|rest| rest.split('"').next())
            .unwrap();
        assert!(
            ENGINE.starts_with(&format!("wasmtime-{pin}+")),
            "{ENGINE} vs {pin}"
        );
    }
}
