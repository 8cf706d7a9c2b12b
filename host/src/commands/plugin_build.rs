//! `sluice plugin build [DIR]`: build a plugin folder into a component with its
//! language's toolchain, the way `spin build` does.
//!
//! The language comes from the folder's entry file: `Cargo.toml` (Rust), `app.py`
//! (Python, componentize-py), `app.js` (JavaScript, componentize-js) or `app.c` (C,
//! clang for wasm32-wasi and the WASI preview1 reactor adapter). The contract is the
//! folder's `wit/` when it has one, else the one this binary was built with; the Python,
//! JavaScript and C SDKs are this binary's copies unless the folder carries its own, so
//! a plugin folder builds offline with nothing but the toolchain.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::scaffold::Language;

const WIT: &str = include_str!("../../../wit/plugin.wit");
const PYTHON_SDK: &str = include_str!("../../../sdk/python/sluice_sdk.py");
const JS_SDK: &str = include_str!("../../../sdk/js/sluice.js");
const C_SDK: &str = include_str!("../../../sdk/c/sluice.h");

/// How `scripts/setup` provides each tool, for the error that names a missing one.
const SETUP: &str = "scripts/setup in the Sluice repository installs it";

/// The language of a plugin folder, from its entry file.
pub fn detect(dir: &Path) -> anyhow::Result<Language> {
    let candidates = [
        ("Cargo.toml", Language::Rust),
        ("app.py", Language::Python),
        ("app.js", Language::Js),
        ("app.c", Language::C),
    ];
    candidates
        .into_iter()
        .find(|(file, _)| dir.join(file).is_file())
        .map(|(_, language)| language)
        .with_context(|| {
            format!(
                "{} is not a plugin folder: it has none of Cargo.toml, app.py, app.js, app.c \
                 (`sluice plugin new NAME --lang rust|python|js|c` creates one)",
                dir.display()
            )
        })
}

/// Build the plugin in `dir`; the component's path (`output`, or a default: cargo's
/// artifact for Rust, `DIR/NAME.wasm` otherwise).
pub fn build(dir: &Path, output: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot open plugin folder {}", dir.display()))?;
    let language = detect(&dir)?;
    let name = dir.file_name().map_or_else(
        || "plugin".to_owned(),
        |n| n.to_string_lossy().replace('-', "_"),
    );
    let default = dir.join(format!("{name}.wasm"));
    let target = absolute(output.unwrap_or(&default))?;
    let scratch = tempfile::tempdir().context("cannot create a build directory")?;
    tracing::info!(dir = %dir.display(), ?language, "building plugin");
    let built = match language {
        Language::Rust => {
            let artifact = build_rust(&dir)?;
            match output {
                Some(_) => {
                    std::fs::copy(&artifact, &target)
                        .with_context(|| format!("cannot write {}", target.display()))?;
                    target
                }
                None => artifact,
            }
        }
        Language::Python => {
            build_python(
                &dir,
                &wit_dir(&dir, scratch.path())?,
                scratch.path(),
                &target,
            )?;
            target
        }
        Language::Js => {
            build_js(
                &dir,
                &wit_dir(&dir, scratch.path())?,
                scratch.path(),
                &target,
            )?;
            target
        }
        Language::C => {
            build_c(
                &dir,
                &wit_dir(&dir, scratch.path())?,
                scratch.path(),
                &target,
            )?;
            target
        }
    };
    tracing::info!(component = %built.display(), "plugin built");
    Ok(built)
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()?.join(path)
    })
}

/// The folder's own `wit/`, else this binary's contract written to `scratch/wit`.
fn wit_dir(dir: &Path, scratch: &Path) -> anyhow::Result<PathBuf> {
    let own = dir.join("wit");
    if own.is_dir() {
        return Ok(own);
    }
    let wit = scratch.join("wit");
    std::fs::create_dir_all(&wit)?;
    std::fs::write(wit.join("plugin.wit"), WIT)?;
    Ok(wit)
}

/// Run a build step; its stderr becomes the error when it fails.
fn run(command: &mut Command, what: &str) -> anyhow::Result<std::process::Output> {
    tracing::debug!(?command, "running");
    let output = command
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

/// The first of `candidates` that exists, else `name` on `PATH`.
fn find_tool(name: &str, candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        })
}

fn env_path(variable: &str) -> Vec<PathBuf> {
    std::env::var_os(variable)
        .map(PathBuf::from)
        .into_iter()
        .collect()
}

fn missing(tool: &str, language: &str, how: &str) -> anyhow::Error {
    anyhow::anyhow!("`{tool}` not found: {language} plugins need it. {how}; {SETUP}.")
}

fn build_rust(dir: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let sysroot = Command::new("rustc").args(["--print", "sysroot"]).output();
    let sysroot = sysroot.map_err(|_| {
        missing(
            "rustc",
            "Rust",
            "Install Rust with rustup (https://rustup.rs)",
        )
    })?;
    let target_lib = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim())
        .join("lib/rustlib/wasm32-wasip2");
    if !target_lib.is_dir() {
        return Err(missing(
            "the wasm32-wasip2 target",
            "Rust",
            "Add it with `rustup target add wasm32-wasip2`",
        ));
    }
    let output = run(
        Command::new(cargo).current_dir(dir).args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format",
            "json-render-diagnostics",
        ]),
        "cargo build",
    )?;
    // The component is the `.wasm` file among the build's artifacts.
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .flat_map(|message| message["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|file| file.as_str().map(PathBuf::from))
        .rfind(|file| file.extension().is_some_and(|e| e == "wasm"))
        .context("cargo built no .wasm file: is the crate a `cdylib`?")
}

fn build_python(dir: &Path, wit: &Path, scratch: &Path, out: &Path) -> anyhow::Result<()> {
    let tool = find_tool("componentize-py", &env_path("COMPONENTIZE_PY")).ok_or_else(|| {
        missing(
            "componentize-py",
            "Python",
            "Install it with `pip install componentize-py==0.25.1`",
        )
    })?;
    // The folder comes first on the module path: a plugin may carry its own SDK copy.
    let sdk = scratch.join("python");
    std::fs::create_dir_all(&sdk)?;
    std::fs::write(sdk.join("sluice_sdk.py"), PYTHON_SDK)?;
    run(
        Command::new(tool)
            .current_dir(dir)
            .arg("-d")
            .arg(wit)
            .args(["-w", "processor", "componentize", "app", "-p", "."])
            .arg("-p")
            .arg(&sdk)
            .arg("-o")
            .arg(out),
        "componentize-py",
    )?;
    Ok(())
}

fn build_js(dir: &Path, wit: &Path, scratch: &Path, out: &Path) -> anyhow::Result<()> {
    // A development build also finds the copy scripts/setup keeps in the source tree.
    let dev = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.tools/node/node_modules/.bin/componentize-js");
    let mut candidates = env_path("COMPONENTIZE_JS");
    candidates.push(dir.join("node_modules/.bin/componentize-js"));
    candidates.push(dev);
    let tool = find_tool("componentize-js", &candidates).ok_or_else(|| {
        missing(
            "componentize-js",
            "JavaScript",
            "Install it with `npm install @bytecodealliance/componentize-js@0.23.0` in the \
             plugin folder, or point COMPONENTIZE_JS at it",
        )
    })?;
    // componentize-js reads modules only from the entry point's folder: stage the
    // plugin's sources there with the SDK beside them.
    let stage = scratch.join("js");
    copy_sources(dir, &stage)?;
    if !stage.join("sluice.js").exists() {
        std::fs::write(stage.join("sluice.js"), JS_SDK)?;
    }
    // `-d http fetch-event` leaves out wasi:http, which the host does not grant.
    run(
        Command::new(tool)
            .current_dir(&stage)
            .arg("app.js")
            .arg("--wit")
            .arg(wit)
            .args(["--world-name", "processor", "-o"])
            .arg(out)
            .args(["-d", "http", "fetch-event"]),
        "componentize-js",
    )?;
    Ok(())
}

/// Copy a JavaScript plugin's sources, without dependencies, hidden files and builds.
fn copy_sources(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        if name_text.starts_with('.') || name_text == "node_modules" || name_text == "wit" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_sources(&path, &to.join(&name))?;
        } else if path
            .extension()
            .is_some_and(|e| e == "js" || e == "mjs" || e == "json")
        {
            std::fs::copy(&path, to.join(&name))?;
        }
    }
    Ok(())
}

fn build_c(dir: &Path, wit: &Path, scratch: &Path, out: &Path) -> anyhow::Result<()> {
    let clang = find_tool("clang", &env_path("CC_WASM")).ok_or_else(|| {
        missing(
            "clang",
            "C",
            "Install it with `apt-get install clang lld wasi-libc libclang-rt-dev-wasm32`",
        )
    })?;
    // The helper tool sits next to `sluice` when both come from one cargo build.
    let mut candidates = env_path("SLUICE_C_PLUGIN_TOOL");
    if let Some(bin) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
    {
        candidates.push(bin.join("sluice-c-plugin-tool"));
    }
    let tool = find_tool("sluice-c-plugin-tool", &candidates).ok_or_else(|| {
        missing(
            "sluice-c-plugin-tool",
            "C",
            "Build it with `cargo install --path tools/c-plugin` (or `cargo build -p \
             sluice-c-plugin-tool`, which scripts/build-plugins runs), or point \
             SLUICE_C_PLUGIN_TOOL at it",
        )
    })?;
    let generated = scratch.join("c");
    run(
        Command::new(&tool)
            .arg("bindings")
            .arg(wit)
            .arg("processor")
            .arg(&generated),
        "sluice-c-plugin-tool bindings",
    )?;
    // After the folder's own include path: a plugin may carry its own sluice.h.
    std::fs::write(generated.join("sluice.h"), C_SDK)?;
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "c"))
        .collect();
    sources.sort();
    let core = scratch.join("core.wasm");
    run(
        Command::new(clang)
            .current_dir(dir)
            .args([
                "--target=wasm32-wasi",
                "-O2",
                "-mexec-model=reactor",
                "-Wall",
            ])
            .arg("-I.")
            .arg(format!("-I{}", generated.display()))
            .arg("-o")
            .arg(&core)
            .args(&sources)
            .arg(generated.join("processor.c"))
            .arg(generated.join("processor_component_type.o")),
        "clang",
    )?;
    run(
        Command::new(&tool).arg("componentize").arg(&core).arg(out),
        "sluice-c-plugin-tool componentize",
    )?;
    Ok(())
}
