//! `sluice plugin new`: a plugin project that builds and passes `plugin test` as it is.

use std::path::Path;

use anyhow::{Context, bail};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Language {
    Rust,
    Python,
    Js,
    C,
}

/// Template files, with `{{name}}`, `{{crate}}` and `{{sdk}}` placeholders.
const RUST_FILES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/rust/Cargo.toml.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../../templates/rust/lib.rs.tmpl"),
    ),
    (
        "README.md",
        include_str!("../../templates/rust/README.md.tmpl"),
    ),
    SAMPLE,
];

const SAMPLE: (&str, &str) = ("sample.jsonl", include_str!("../../templates/sample.jsonl"));

const PYTHON_FILES: &[(&str, &str)] = &[
    ("app.py", include_str!("../../templates/python/app.py.tmpl")),
    (
        "README.md",
        include_str!("../../templates/python/README.md.tmpl"),
    ),
    SAMPLE,
];

const JS_FILES: &[(&str, &str)] = &[
    ("app.js", include_str!("../../templates/js/app.js.tmpl")),
    (
        "package.json",
        include_str!("../../templates/js/package.json.tmpl"),
    ),
    (
        "README.md",
        include_str!("../../templates/js/README.md.tmpl"),
    ),
    SAMPLE,
];

const C_FILES: &[(&str, &str)] = &[
    ("app.c", include_str!("../../templates/c/app.c.tmpl")),
    (
        "README.md",
        include_str!("../../templates/c/README.md.tmpl"),
    ),
    SAMPLE,
];

/// How the generated Cargo.toml finds the SDK: this source tree's copy when it is
/// there (a development build), the published crate otherwise.
fn sdk_dependency() -> String {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    match local.canonicalize() {
        Ok(path) => format!(
            "{{ path = {:?}, features = [\"processor\"] }}",
            path.display().to_string()
        ),
        Err(_) => format!(
            "{{ version = \"{}\", features = [\"processor\"] }}",
            env!("CARGO_PKG_VERSION")
        ),
    }
}

pub fn create(name: &str, language: Language, parent: &Path) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("plugin name `{name}` must be letters, digits, `-` and `_` only");
    }
    let root = parent.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    let files = match language {
        Language::Rust => RUST_FILES,
        Language::Python => PYTHON_FILES,
        Language::Js => JS_FILES,
        Language::C => C_FILES,
    };
    let crate_name = name.replace('-', "_");
    for (relative, template) in files {
        let text = template
            .replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{sdk}}", &sdk_dependency());
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    tracing::info!(path = %root.display(), "created plugin `{name}`; `sluice plugin build` builds it, its README.md tells more");
    Ok(())
}
