//! Finding and loading ONNX Runtime. The library is never downloaded at build time: it
//! comes from a package on the machine, found at run time in this order: the config's
//! `[inference] library`, the `ORT_DYLIB_PATH` environment variable, then the
//! `onnxruntime` Python package (`capi/libonnxruntime.so.*`), which `scripts/setup`
//! installs. Without this lookup, `ort` would panic on first use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::InferenceError;

/// The environment variable that names the library (the one `ort` reads too).
pub const ENV_VAR: &str = "ORT_DYLIB_PATH";

/// The process's one ONNX Runtime environment: the library can be loaded only once.
static ENVIRONMENT: OnceLock<Result<(PathBuf, ort::environment::Environment), String>> =
    OnceLock::new();

/// The ONNX Runtime environment, loading the library found from `configured` on first
/// use. Later calls reuse it whatever they pass (a process holds one library).
pub fn environment(
    configured: Option<&Path>,
) -> Result<&'static ort::environment::Environment, InferenceError> {
    let loaded = ENVIRONMENT.get_or_init(|| {
        let path = find(configured)?;
        let environment = ort::init_from(&path)
            .map_err(|error| error.to_string())?
            .with_name("sluice")
            .build()
            .map_err(|error| format!("{}: {error}", path.display()))?;
        tracing::info!(library = %path.display(), "ONNX Runtime loaded");
        Ok((path, environment))
    });
    match loaded {
        Ok((_, environment)) => Ok(environment),
        Err(message) => Err(InferenceError::Library(message.clone())),
    }
}

/// Where the library is, or a message that says where it was looked for and how to
/// install it.
pub fn find(configured: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = configured {
        return existing(path, "the config's `[inference] library`");
    }
    if let Some(path) = std::env::var_os(ENV_VAR) {
        return existing(Path::new(&path), ENV_VAR);
    }
    if let Some(path) = from_python_package() {
        return Ok(path);
    }
    Err(format!(
        "ONNX Runtime not found: set `[inference] library` in the config or {ENV_VAR}, or install the \
         onnxruntime Python package (`python3 -m pip install onnxruntime`, as scripts/setup does), \
         whose capi/libonnxruntime.so.* is used"
    ))
}

fn existing(path: &Path, source: &str) -> Result<PathBuf, String> {
    if path.is_file() {
        Ok(path.to_owned())
    } else {
        Err(format!(
            "ONNX Runtime library {} (from {source}) does not exist",
            path.display()
        ))
    }
}

/// `capi/libonnxruntime.so.*` of the `onnxruntime` package that `python3` imports.
fn from_python_package() -> Option<PathBuf> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('onnxruntime').origin))",
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let package = PathBuf::from(String::from_utf8(output.stdout).ok()?.trim());
    let mut found: Vec<PathBuf> = std::fs::read_dir(package.join("capi"))
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("libonnxruntime.so"))
        })
        .collect();
    // The longest name is the fully versioned file (`.so.1.32.0`), not a symlink.
    found.sort_by_key(|path| path.as_os_str().len());
    found.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_path_that_does_not_exist_is_named() {
        let error = find(Some(Path::new("/nowhere/libonnxruntime.so"))).unwrap_err();
        assert_eq!(
            error,
            "ONNX Runtime library /nowhere/libonnxruntime.so (from the config's `[inference] library`) does not exist"
        );
    }
}
