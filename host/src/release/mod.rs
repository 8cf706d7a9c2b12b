//! Fleet releases: what a device group runs, as an immutable, signed set of files.
//!
//! A release is a directory `RELEASES/<group>/<version>/` holding the group's config
//! (`config.toml`, plugin paths replaced by content addresses), its plugins
//! (`plugins/<sha256>.wasm`), each plugin compiled ahead of time for the group's targets
//! (`artifacts/...`, named with the engine they were made by), and a [`Manifest`] that
//! lists every file with its sha256 and size, signed with the fleet's ed25519 key
//! ([`keys`]). The signing key need not be on the central host: the central host serves
//! releases, devices verify them against the fleet's public key before anything is
//! written or runs.
//!
//! Versions only go up. A device refuses an older version than the one it runs, except
//! the signed parent of the release it runs (a halted rollout sends its devices back one
//! step); an operator's rollback is a new release with a higher version whose content is
//! an earlier one's (`rollback_of`).

pub mod bundle;
pub mod dir;
pub mod keys;
#[cfg(feature = "cross-compile")]
pub mod make;
mod manifest;

pub use keys::{KeyError, SigningKey, TrustedKey};
pub use manifest::{
    ENGINE, FileEntry, MANIFEST_FILE, Manifest, ReleaseError, SIGNATURE_FILE, SignedManifest,
    artifact_name, check_file_name, plugin_name, release_id,
};
