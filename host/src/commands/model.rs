//! `sluice model inspect`: what an ONNX model takes and returns, the operator sets it
//! needs and its sha256, with the `[models.NAME]` entry that pins it. `sluice model
//! versions` and `activate`: the versions a host keeps of a model (`model` jobs deploy
//! them), and a rollback to one of them.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use sluice::inference::{self, Model, ModelDef, TensorSpec, find_library, opsets};

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Print a model's inputs, outputs, operator sets and sha256.
    Inspect {
        /// The model (.onnx).
        model: PathBuf,
        /// The ONNX Runtime library (otherwise ORT_DYLIB_PATH or the onnxruntime Python
        /// package).
        #[arg(long)]
        library: Option<PathBuf>,
    },
    /// Print the versions of a model a host keeps in its data directory (as JSON: each
    /// version's number, sha256, source file, deployment time and origin, and the
    /// active one).
    Versions {
        /// The host's `data_dir`.
        data_dir: PathBuf,
        /// The model's name (`[models.NAME]`).
        name: String,
    },
    /// Make a kept version of a model the active one. A host running now keeps serving
    /// its version until it restarts (its admin API switches live).
    Activate {
        data_dir: PathBuf,
        name: String,
        version: u64,
    },
}

pub fn run(command: ModelCommand) -> anyhow::Result<()> {
    match command {
        ModelCommand::Inspect { model, library } => inspect(&model, library.as_deref()),
        ModelCommand::Versions { data_dir, name } => versions(&data_dir, &name),
        ModelCommand::Activate {
            data_dir,
            name,
            version,
        } => {
            let switch = inference::activate(&name, version, &data_dir)?;
            println!(
                "model `{name}`: version {} → version {} (sha256 {}); served from the next start",
                switch.from, switch.to, switch.sha256
            );
            Ok(())
        }
    }
}

fn inspect(path: &Path, library: Option<&Path>) -> anyhow::Result<()> {
    let bytes = std::fs::read(path)
        .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", path.display()))?;
    let opsets = opsets(&bytes).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
    let name = path.file_stem().map_or("model".into(), |stem| {
        stem.to_string_lossy().replace(['.', ' '], "_")
    });
    let def: ModelDef = toml::from_str(&format!("path = {:?}", path.display().to_string()))?;
    let model = Model::load(&name, &def, library)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "model:    {}", path.display())?;
    writeln!(out, "size:     {} bytes", bytes.len())?;
    writeln!(out, "sha256:   {}", model.sha256)?;
    let opsets: Vec<String> = opsets.iter().map(|(d, v)| format!("{d} {v}")).collect();
    writeln!(out, "opsets:   {}", opsets.join(", "))?;
    if let Ok(runtime) = find_library(library) {
        writeln!(out, "runtime:  {}", runtime.display())?;
    }
    writeln!(out, "inputs:")?;
    for spec in &model.inputs {
        writeln!(out, "  {}: {spec}", spec.name)?;
    }
    writeln!(out, "outputs:")?;
    for spec in &model.outputs {
        writeln!(out, "  {}: {spec}", spec.name)?;
    }
    writeln!(out, "\n# to use it in a pipeline config:")?;
    writeln!(out, "[models.{name}]")?;
    writeln!(out, "path = {:?}", path.display().to_string())?;
    writeln!(out, "sha256 = \"{}\"", model.sha256)?;
    writeln!(out, "inputs = [{}]", specs(&model.inputs))?;
    writeln!(out, "outputs = [{}]", specs(&model.outputs))?;
    Ok(())
}

fn versions(data_dir: &Path, name: &str) -> anyhow::Result<()> {
    let history = inference::versions(name, data_dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no versions of model `{name}` are kept in {}",
            data_dir.display()
        )
    })?;
    // As kept (`versions.json`): times are milliseconds since the epoch, for scripts.
    println!("{}", serde_json::to_string_pretty(&history)?);
    Ok(())
}

fn specs(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| {
            format!(
                "{{ name = {:?}, type = \"{}\", shape = {:?} }}",
                s.name, s.element_type, s.shape
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
