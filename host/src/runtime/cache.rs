//! Compiled components cached on disk by content hash, so that a restart (or a second
//! stage using the same plugin) loads machine code instead of recompiling.
//!
//! The key is the wasm's sha256 plus a hash of the engine's compilation settings:
//! an engine configured differently (fuel on, another wasmtime) compiles afresh.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

pub struct ComponentCache {
    dir: Option<PathBuf>,
    engine_tag: String,
}

impl ComponentCache {
    /// A cache in `dir`, or none (always compile) when `dir` is `None`.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        ComponentCache {
            dir,
            engine_tag: format!("{:016x}", hasher.finish()),
        }
    }

    /// The default location: `$SLUICE_CACHE_DIR`, else `$XDG_CACHE_HOME/sluice/components`,
    /// else `~/.cache/sluice/components`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("SLUICE_CACHE_DIR") {
            return Some(PathBuf::from(dir));
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
        Some(base.join("sluice").join("components"))
    }

    fn entry(&self, sha256: &str) -> Option<PathBuf> {
        Some(
            self.dir
                .as_ref()?
                .join(format!("{sha256}-{}.cwasm", self.engine_tag)),
        )
    }

    /// The component for `bytes`, from the cache when present. Returns whether it was a hit.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
    ) -> Result<(Component, bool), String> {
        if let Some(path) = self.entry(sha256).filter(|path| path.exists()) {
            // SAFETY: the cache directory belongs to this user and holds only artifacts
            // this code wrote with `precompile_component` for the same engine settings;
            // wasmtime still checks the header and rejects incompatible artifacts.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, true)),
                Err(error) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable cached component: {error}")
                }
            }
        }
        let compiled = engine
            .precompile_component(bytes)
            .map_err(|error| format!("{error:?}"))?;
        if let Some(path) = self.entry(sha256)
            && let Err(error) = write_atomically(&path, &compiled)
        {
            tracing::warn!(path = %path.display(), "cannot cache compiled component: {error}");
        }
        // SAFETY: `compiled` was produced just now by this engine.
        let component = unsafe { Component::deserialize(engine, &compiled) }
            .map_err(|error| format!("{error:?}"))?;
        Ok((component, false))
    }
}

/// Write to a temporary file and rename, so a concurrent reader never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .expect("cache entries live in the cache directory");
    std::fs::create_dir_all(dir)?;
    let temp = dir.join(format!(
        ".{}.{}",
        std::process::id(),
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&temp, bytes)?;
    std::fs::rename(&temp, path)
}
