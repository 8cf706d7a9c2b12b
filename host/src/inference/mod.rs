//! ONNX models served where the data flows. `[models.NAME]` entries are loaded once at
//! startup (file read, sha256 pin checked, inputs and outputs compared with what the
//! config expects) into a small pool of ONNX Runtime sessions that every stage granted
//! the model shares. Plugins reach them through the `inference` capability
//! (`runtime/capabilities/inference.rs`).
//!
//! A pipeline's model is live ([`live`]): a new version can replace it while stages run,
//! and the versions are kept in the data directory ([`versions`]) so that a restart
//! serves the one deployed last and an earlier one can be activated again.

#[cfg(not(feature = "inference"))]
mod absent;
#[cfg(feature = "inference")]
mod library;
mod live;
mod opset;
#[cfg(feature = "inference")]
mod session;
mod tensor;
mod versions;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::Digest as _;

#[cfg(not(feature = "inference"))]
use absent::Sessions;
#[cfg(feature = "inference")]
pub use library::{environment, find as find_library};
pub use live::{LiveModel, Switch, activate, deploy};
pub use opset::opsets;
#[cfg(feature = "inference")]
use session::Sessions;
pub use tensor::{ElementType, Tensor, TensorSpec};
pub use versions::{ConfigFile, History, Version, versions};

/// `[inference]`: where ONNX Runtime comes from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceConfig {
    /// The ONNX Runtime shared library; otherwise `ORT_DYLIB_PATH` or the onnxruntime
    /// Python package.
    pub library: Option<PathBuf>,
}

/// `[models.NAME]`: an ONNX model and how to run it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDef {
    pub path: PathBuf,
    /// Optional pin: another file never loads.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The inputs the config expects (name, `type`, shape with -1 for any size); the
    /// model must declare exactly these, so a model swapped for an incompatible one
    /// fails at startup rather than on the first batch.
    #[serde(default)]
    pub inputs: Vec<TensorSpec>,
    #[serde(default)]
    pub outputs: Vec<TensorSpec>,
    /// Sessions in the pool: how many runs of this model may go on at once.
    #[serde(default = "one")]
    pub sessions: usize,
    /// Threads one run may use inside an operator.
    #[serde(default = "one")]
    pub intra_threads: usize,
    #[serde(default)]
    pub optimization: Optimization,
    /// Where runs execute, in order of preference. A provider the ONNX Runtime library
    /// was not built with is skipped with a warning, so one config serves a GPU host and
    /// a CPU-only one; the CPU is always the last resort.
    #[serde(default = "cpu_only")]
    pub execution_providers: Vec<ExecutionProvider>,
}

fn one() -> usize {
    1
}

fn cpu_only() -> Vec<ExecutionProvider> {
    vec![ExecutionProvider::Cpu]
}

/// An ONNX Runtime execution provider a model may run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    Cpu,
    Cuda,
    Tensorrt,
}

/// ONNX Runtime's graph optimisation level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimization {
    Disable,
    Basic,
    Extended,
    #[default]
    All,
}

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("{0}")]
    Library(String),
    #[error("model `{model}`: cannot read {path}: {source}")]
    Read {
        model: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model `{model}` ({path}): sha256 is {actual} but the config pins {expected}")]
    PinMismatch {
        model: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("model `{model}` ({path}): ONNX Runtime cannot load it: {reason}")]
    Load {
        model: String,
        path: PathBuf,
        reason: String,
    },
    #[error("model `{model}` ({path}): {what}")]
    Mismatch {
        model: String,
        path: PathBuf,
        what: String,
    },
    #[error("stage `{stage}` is granted model `{model}`, which no `[models.{model}]` defines")]
    NotConfigured { stage: String, model: String },
    #[error("model `{model}`: cannot {what} {path}: {source}")]
    Store {
        model: String,
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model `{model}`: {message}")]
    Version { model: String, message: String },
}

/// Why one run failed; the capability hands it to the plugin as a typed error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    InvalidInput(String),
    #[error("ONNX Runtime failed: {0}")]
    Runtime(String),
}

/// A model's sessions, with the inputs and outputs it declares.
struct Opened {
    sessions: Sessions,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
}

/// A loaded model: its sessions and what it takes and returns.
pub struct Model {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    sessions: Sessions,
}

impl Model {
    /// Load `def` as model `name`, with the process's ONNX Runtime (from `library`).
    pub fn load(
        name: &str,
        def: &ModelDef,
        library: Option<&Path>,
    ) -> Result<Model, InferenceError> {
        let bytes = read(name, &def.path)?;
        Model::open(name, def, &def.path, &bytes, def.sha256.as_deref(), library)
    }

    /// `bytes`, read from `path`, as a version of model `name`: its sha256 must be `pin`
    /// (if any) and its inputs and outputs those `def` declares; `def` says how to run it.
    fn open(
        name: &str,
        def: &ModelDef,
        path: &Path,
        bytes: &[u8],
        pin: Option<&str>,
        library: Option<&Path>,
    ) -> Result<Model, InferenceError> {
        let sha256 = sha256(bytes);
        if let Some(pin) = pin
            && !pin.eq_ignore_ascii_case(&sha256)
        {
            return Err(InferenceError::PinMismatch {
                model: name.to_owned(),
                path: path.to_owned(),
                expected: pin.to_owned(),
                actual: sha256,
            });
        }
        // Errors name the file this version came from, not the config's.
        let def = &ModelDef {
            path: path.to_owned(),
            ..def.clone()
        };
        let opened = Sessions::open(name, def, bytes, library)?;
        let (inputs, outputs) = (opened.inputs, opened.outputs);
        let mismatch = |what: String| InferenceError::Mismatch {
            model: name.to_owned(),
            path: path.to_owned(),
            what,
        };
        check_declared("inputs", &def.inputs, &inputs).map_err(mismatch)?;
        check_declared("outputs", &def.outputs, &outputs).map_err(mismatch)?;
        tracing::info!(model = name, path = %path.display(), sha256, sessions = opened.sessions.len(), "model loaded");
        Ok(Model {
            name: name.to_owned(),
            path: path.to_owned(),
            sha256,
            inputs,
            outputs,
            sessions: opened.sessions,
        })
    }

    /// Run the model on `inputs`, which must be exactly its inputs, and return every
    /// output. Runs use a free session of the pool, else wait for the next in turn.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        for tensor in inputs {
            let Some(spec) = self.inputs.iter().find(|spec| spec.name == tensor.name) else {
                return Err(RunError::InvalidInput(format!(
                    "the model has no input `{}`; its inputs are {}",
                    tensor.name,
                    describe(&self.inputs)
                )));
            };
            if let Some(why) = spec.mismatch(tensor) {
                return Err(RunError::InvalidInput(why));
            }
        }
        if let Some(missing) = self
            .inputs
            .iter()
            .find(|spec| !inputs.iter().any(|t| t.name == spec.name))
        {
            return Err(RunError::InvalidInput(format!(
                "input `{}` ({missing}) is missing",
                missing.name
            )));
        }
        self.sessions.run(inputs)
    }
}

/// The bytes of model `name`'s file `path`.
fn read(name: &str, path: &Path) -> Result<Vec<u8>, InferenceError> {
    std::fs::read(path).map_err(|source| InferenceError::Read {
        model: name.to_owned(),
        path: path.to_owned(),
        source,
    })
}

/// A model file's sha256, in lowercase hex. The runtime pins plugins the same way;
/// models sit below it, so spelt out here.
fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// `name (type shape), ...` for messages.
fn describe(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("`{}` ({s})", s.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Fail unless the model's `actual` inputs (or outputs) are those the config declares;
/// an empty declaration accepts any.
fn check_declared(
    what: &str,
    declared: &[TensorSpec],
    actual: &[TensorSpec],
) -> Result<(), String> {
    let agrees = declared.len() == actual.len()
        && declared.iter().all(|d| actual.iter().any(|a| d.accepts(a)));
    if declared.is_empty() || agrees {
        return Ok(());
    }
    Err(format!(
        "the config expects {what} {} but the model has {}",
        describe(declared),
        describe(actual)
    ))
}

/// Every model of a pipeline, loaded once and shared by the stages granted them.
#[derive(Default)]
pub struct Models {
    models: BTreeMap<String, Arc<LiveModel>>,
}

/// The models one stage is granted, by name: each is live, so a stage reads the
/// version to run when it runs it.
pub type StageModels = Arc<BTreeMap<String, Arc<LiveModel>>>;

impl Models {
    /// Load every model of `defs`. ONNX Runtime is looked for only if there is one.
    ///
    /// With `data_dir` (a pipeline's models), each model serves its active version kept
    /// under `data_dir/models/NAME/` (the config's file until a `model` job deploys
    /// another, see [`versions`]), and a model another pipeline of this process already
    /// loaded from the same `[models.NAME]` is shared with it, so that a switch reaches
    /// both. Without (`validate`, `plugin test`), the files the config names are loaded
    /// for this caller alone and nothing is written.
    pub fn load(
        defs: &BTreeMap<String, ModelDef>,
        config: &InferenceConfig,
        data_dir: Option<&Path>,
    ) -> Result<Models, InferenceError> {
        let models = defs
            .iter()
            .map(|(name, def)| {
                live::open(name, def, config.library.as_deref(), data_dir)
                    .map(|model| (name.clone(), model))
            })
            .collect::<Result<_, _>>()?;
        Ok(Models { models })
    }

    /// The models `stage` is granted; each must be configured.
    pub fn grant(&self, stage: &str, names: &[String]) -> Result<StageModels, InferenceError> {
        names
            .iter()
            .map(|name| {
                self.models
                    .get(name)
                    .map(|model| (name.clone(), model.clone()))
                    .ok_or_else(|| InferenceError::NotConfigured {
                        stage: stage.to_owned(),
                        model: name.clone(),
                    })
            })
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map(Arc::new)
    }
}
