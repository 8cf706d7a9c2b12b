//! Components compiled ahead of time. A device's build has no compiler (no Cranelift:
//! a smaller binary, less memory, no compile on a slow CPU), so a fleet release carries
//! each plugin compiled for the device's target and the device loads the machine code.
//!
//! An artifact is native code: wasmtime checks that it was made for this engine's
//! settings and this CPU, but cannot check that it is the plugin it claims to be. So it
//! is taken only from a trusted source (a signed fleet release, or the operator's own
//! config), always next to the plugin's Wasm, whose sha256 pin still holds, and with a
//! pin of its own (`precompiled_sha256`) its bytes are hashed before each load and
//! refused if they changed.

use std::path::Path;

use sha2::Digest as _;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The target this sluice was built for (`x86_64-unknown-linux-gnu`, ...): what an agent
/// asks its central host to compile for.
pub const TARGET: &str = env!("SLUICE_TARGET");

/// Why an artifact could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum PrecompileError {
    /// wasmtime cannot compile for this target triple (unknown, or not built in).
    #[error("target `{target}`: {reason}")]
    Target { target: String, reason: String },
    /// The Wasm does not compile, or the artifact does not load on this engine.
    #[error("{0}")]
    Component(String),
    /// The artifact's bytes are not those its pin names.
    #[error("sha256 {actual}, but the config pins {expected}")]
    Mismatch { expected: String, actual: String },
}

/// A plugin's artifact as a config names it.
#[derive(Debug, Clone, Copy)]
pub struct Precompiled<'a> {
    pub path: &'a Path,
    /// The sha256 its bytes must have (`precompiled_sha256`).
    pub sha256: Option<&'a str>,
}

/// Load the artifact, if its bytes match its pin and wasmtime finds it compatible with
/// `engine`.
pub(crate) fn load(
    engine: &Engine,
    artifact: Precompiled<'_>,
) -> Result<Component, PrecompileError> {
    let loaded = match artifact.sha256 {
        // SAFETY: see the module docs: the operator's config names this artifact;
        // wasmtime rejects those made for other settings or CPUs.
        None => unsafe { Component::deserialize_file(engine, artifact.path) },
        Some(expected) => {
            let bytes = std::fs::read(artifact.path)
                .map_err(|error| PrecompileError::Component(format!("cannot read it: {error}")))?;
            let actual = hex::encode(sha2::Sha256::digest(&bytes));
            if !expected.eq_ignore_ascii_case(&actual) {
                return Err(PrecompileError::Mismatch {
                    expected: expected.to_owned(),
                    actual,
                });
            }
            // SAFETY: as above, and these are the very bytes just hashed against the
            // pin (the file is not read again, so it cannot change in between).
            unsafe { Component::deserialize(engine, &bytes) }
        }
    };
    loaded.map_err(|error| PrecompileError::Component(format!("{error:#}")))
}

/// Compile `wasm` for `target` with the engine settings of a runtime with (or without)
/// `fuel`, as a device running that target loads it.
#[cfg(feature = "cross-compile")]
pub fn precompile(wasm: &[u8], target: &str, fuel: bool) -> Result<Vec<u8>, PrecompileError> {
    let unusable = |reason: String| PrecompileError::Target {
        target: target.to_owned(),
        reason,
    };
    let mut config = super::engine::engine_config(fuel);
    config
        .target(target)
        .map_err(|error| unusable(error.to_string()))?;
    let engine = Engine::new(&config).map_err(|error| unusable(format!("{error:#}")))?;
    engine
        .precompile_component(wasm)
        .map_err(|error| PrecompileError::Component(format!("{error:#}")))
}
