//! The fleet's ed25519 key pair (ring): `sluice fleet keygen` writes the signing key
//! (PKCS#8, PEM, readable by its owner only) and the public key that agents are given
//! with `--trust` (PEM, 32 bytes). A public key file may hold several keys, one per
//! PEM block, so that a key can be rotated: devices trust the old and the new key until
//! every release they may be sent is signed with the new one.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

const PRIVATE_LABEL: &str = "PRIVATE KEY";
const PUBLIC_LABEL: &str = "SLUICE FLEET PUBLIC KEY";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("cannot make a key pair: {0}")]
    Generate(String),
}

/// The key releases are signed with.
pub struct SigningKey(Ed25519KeyPair);

/// A public key devices verify releases with (one or more, for a rotation).
#[derive(Debug, Clone)]
pub struct TrustedKey(Vec<[u8; 32]>);

impl SigningKey {
    /// A new key pair: the signing key as PKCS#8 PEM, and the public key as PEM.
    pub fn generate() -> Result<(String, String), KeyError> {
        let random = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&random)
            .map_err(|error| KeyError::Generate(error.to_string()))?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|error| KeyError::Generate(error.to_string()))?;
        Ok((
            pem(PRIVATE_LABEL, pkcs8.as_ref()),
            pem(PUBLIC_LABEL, pair.public_key().as_ref()),
        ))
    }

    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let der = read_blocks(path, PRIVATE_LABEL)?
            .into_iter()
            .next()
            .expect("read_blocks finds at least one");
        Ed25519KeyPair::from_pkcs8(&der)
            .map(SigningKey)
            .map_err(|error| KeyError::Invalid {
                path: path.to_owned(),
                problem: format!("not an ed25519 signing key (PKCS#8): {error}"),
            })
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0
            .sign(message)
            .as_ref()
            .try_into()
            .expect("ed25519 signatures are 64 bytes")
    }

    /// The public key that verifies this key's signatures.
    pub fn public(&self) -> TrustedKey {
        let key: [u8; 32] = self.0.public_key().as_ref().try_into().expect("32 bytes");
        TrustedKey(vec![key])
    }
}

impl TrustedKey {
    pub fn load(path: &Path) -> Result<TrustedKey, KeyError> {
        let keys = read_blocks(path, PUBLIC_LABEL)?
            .into_iter()
            .map(|der| {
                <[u8; 32]>::try_from(der.as_slice()).map_err(|_| KeyError::Invalid {
                    path: path.to_owned(),
                    problem: format!("a public key is 32 bytes, not {}", der.len()),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedKey(keys))
    }

    /// Whether one of the keys signed `message` with `signature`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        self.0.iter().any(|key| {
            UnparsedPublicKey::new(&ED25519, key)
                .verify(message, signature)
                .is_ok()
        })
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(64)
        .map(|chunk| std::str::from_utf8(chunk).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The contents of every `label` PEM block of `path`; an error when there is none.
fn read_blocks(path: &Path, label: &str) -> Result<Vec<Vec<u8>>, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |problem: String| KeyError::Invalid {
        path: path.to_owned(),
        problem,
    };
    let (begin, end) = (
        format!("-----BEGIN {label}-----"),
        format!("-----END {label}-----"),
    );
    let mut blocks = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find(&begin) {
        let body = &rest[start + begin.len()..];
        let stop = body
            .find(&end)
            .ok_or_else(|| invalid(format!("`{begin}` without `{end}`")))?;
        let encoded: String = body[..stop].split_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|error| invalid(format!("bad base64 in a `{label}` block: {error}")))?;
        blocks.push(der);
        rest = &body[stop + end.len()..];
    }
    if blocks.is_empty() {
        return Err(invalid(format!("no `{begin}` block")));
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_signs_and_verifies_and_another_key_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = SigningKey::generate().unwrap();
        std::fs::write(dir.path().join("fleet.key"), &private).unwrap();
        std::fs::write(dir.path().join("fleet.pub"), &public).unwrap();
        let key = SigningKey::load(&dir.path().join("fleet.key")).unwrap();
        let trusted = TrustedKey::load(&dir.path().join("fleet.pub")).unwrap();
        let signature = key.sign(b"manifest");
        assert!(trusted.verifies(b"manifest", &signature));
        assert!(!trusted.verifies(b"manifest!", &signature));

        let (_, other) = SigningKey::generate().unwrap();
        std::fs::write(dir.path().join("other.pub"), &other).unwrap();
        let stranger = TrustedKey::load(&dir.path().join("other.pub")).unwrap();
        assert!(!stranger.verifies(b"manifest", &signature));

        // During a rotation a device trusts both keys.
        std::fs::write(dir.path().join("both.pub"), format!("{other}{public}")).unwrap();
        let both = TrustedKey::load(&dir.path().join("both.pub")).unwrap();
        assert!(both.verifies(b"manifest", &signature));
    }

    #[test]
    fn a_file_that_is_not_a_key_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.pub");
        std::fs::write(&path, "hello").unwrap();
        let error = TrustedKey::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("fleet.pub")
                && error.contains("no `-----BEGIN SLUICE FLEET PUBLIC KEY-----` block"),
            "{error}"
        );
    }
}
