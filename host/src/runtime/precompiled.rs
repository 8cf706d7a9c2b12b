//! Components compiled ahead of time. A device's build has no compiler (no Cranelift:
//! a smaller binary, less memory, no compile on a slow CPU), so the central host
//! compiles each plugin for the device's target and the device loads the machine code.
//!
//! An artifact is native code: wasmtime checks that it was made for this engine's
//! settings and this CPU, but cannot check that it is the plugin it claims to be. So it
//! is taken only from a trusted source (the central host, over the device's token), and
//! always next to the plugin's Wasm, whose sha256 pin still holds.

use std::path::Path;

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
}

/// Load the artifact at `path`, if wasmtime finds it compatible with `engine`.
pub(crate) fn load(engine: &Engine, path: &Path) -> Result<Component, PrecompileError> {
    // SAFETY: see the module docs: artifacts come from the operator's config or the
    // central host; wasmtime rejects those made for other settings or CPUs.
    unsafe { Component::deserialize_file(engine, path) }
        .map_err(|error| PrecompileError::Component(format!("{error:#}")))
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
