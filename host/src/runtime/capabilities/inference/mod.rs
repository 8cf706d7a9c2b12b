//! The `inference` capability (since contract 0.1.2): plugins run the ONNX models their
//! stage is granted (`grants.models`), by name, on tensors they build from their
//! events. The host owns the models (`crate::inference`); a plugin holds only handles.
//!
//! Models are live (a `model` job may switch one at any time): a call into the plugin
//! runs each model at the version served when the call first used it, so that one batch
//! is scored by one version, and the next call takes up a newer one.
//!
//! Quotas, per call into the plugin: the bytes of tensors sent and received
//! (`inference_bytes_per_call`, checked on the inputs before a run and on the outputs
//! before they reach the guest) and the number of runs (`inference_runs_per_call`), so
//! that a plugin cannot make the host compute or hold without bound. Handles are capped
//! at [`MAX_OPEN_MODELS`] per instance. A tensor that does not fit the model is not a
//! quota: it is the plugin's error to handle, returned as `invalid-input`.

pub mod quotas;

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::inference::{self as models, Model, RunError, StageModels};
use crate::runtime::bindings::ModelHandle;
use crate::runtime::bindings::inference::{
    self, ElementType, Error, ErrorCode, Tensor, TensorSpec,
};
use crate::runtime::error::{LimitExceeded, Refused};
use quotas::InferenceQuotas;
use super::StageContext;

/// Model handles one instance may hold open at once.
pub const MAX_OPEN_MODELS: usize = 16;

/// One instance's side of the `inference` capability.
pub struct InferenceCtx {
    stage: Arc<str>,
    models: StageModels,
    handles: ResourceTable,
    open: usize,
    bytes_per_call: u64,
    runs_per_call: u32,
    /// Spent in the current call.
    bytes: u64,
    runs: u32,
    /// The version of each model the current call runs, taken when it first uses it
    /// (an idle instance holds them until its next call).
    pinned: BTreeMap<String, Arc<Model>>,
}

impl InferenceCtx {
    pub fn new(stage: Arc<str>, models: StageModels, quotas: &InferenceQuotas) -> Self {
        InferenceCtx {
            stage,
            models,
            handles: ResourceTable::new(),
            open: 0,
            bytes_per_call: quotas.bytes_per_call,
            runs_per_call: quotas.runs_per_call,
            bytes: 0,
            runs: 0,
            pinned: BTreeMap::new(),
        }
    }

    /// Start a call's quotas afresh, and let it take up the models' current versions.
    pub fn new_call(&mut self) {
        self.bytes = 0;
        self.runs = 0;
        self.pinned.clear();
    }

    /// The version of `handle`'s model that this call runs.
    fn model(&mut self, handle: &Resource<ModelHandle>) -> wasmtime::Result<Arc<Model>> {
        let live = &self.handles.get(handle)?.model;
        Ok(self
            .pinned
            .entry(live.name().to_owned())
            .or_insert_with(|| live.current())
            .clone())
    }

    fn error(&self, code: ErrorCode, model: &str, message: impl std::fmt::Display) -> Error {
        Error {
            code,
            message: format!("stage `{}`, model `{model}`: {message}", self.stage),
        }
    }

    /// Count `bytes` of tensors against the call's quota, trapping past it.
    fn spend(&mut self, bytes: u64, what: &str) -> wasmtime::Result<()> {
        self.bytes += bytes;
        if self.bytes > self.bytes_per_call {
            return Err(wasmtime::Error::new(LimitExceeded::new(
                "inference_bytes_per_call",
                format!("{} bytes of tensors in one call ({what})", self.bytes),
                self.bytes_per_call,
            )));
        }
        Ok(())
    }
}

fn tensor_bytes(tensors: &[Tensor]) -> u64 {
    tensors
        .iter()
        .map(|t| (t.data.len() + t.name.len() + 4 * t.shape.len()) as u64)
        .sum()
}

impl super::HostState for InferenceCtx {
    type Shared = ();
    fn shared(_: &StageContext<'_>) {}
    fn new(spec: &StageContext<'_>, (): &()) -> Self {
        InferenceCtx::new(spec.stage.clone(), spec.models.clone(), &spec.limits.inference)
    }
}

/// Gives the `inference` host functions their state, as `WasiView` does for WASI.
pub trait InferenceView {
    fn inference(&mut self) -> &mut InferenceCtx;
}

struct HasInference;

impl HasData for HasInference {
    type Data<'a> = &'a mut InferenceCtx;
}

pub fn add_to_linker<T: InferenceView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    inference::add_to_linker::<T, HasInference>(linker, T::inference)
}

impl inference::Host for InferenceCtx {}

impl inference::HostModel for InferenceCtx {
    fn open(&mut self, name: String) -> wasmtime::Result<Result<Resource<ModelHandle>, Error>> {
        let Some(model) = self.models.get(&name).cloned() else {
            let granted: Vec<&str> = self.models.keys().map(String::as_str).collect();
            return Ok(Err(self.error(
                ErrorCode::NotGranted,
                &name,
                format!(
                    "not granted to this stage (granted: {}); add it to grants.models",
                    granted.join(", ")
                ),
            )));
        };
        if self.open >= MAX_OPEN_MODELS {
            return Err(wasmtime::Error::new(Refused(format!(
                "more than {MAX_OPEN_MODELS} model handles open in one instance; keep one per model"
            ))));
        }
        let handle = self.handles.push(ModelHandle { model })?;
        self.open += 1;
        Ok(Ok(handle))
    }

    fn inputs(&mut self, handle: Resource<ModelHandle>) -> wasmtime::Result<Vec<TensorSpec>> {
        Ok(self
            .model(&handle)?
            .inputs
            .iter()
            .map(to_wit_spec)
            .collect())
    }

    fn outputs(&mut self, handle: Resource<ModelHandle>) -> wasmtime::Result<Vec<TensorSpec>> {
        Ok(self
            .model(&handle)?
            .outputs
            .iter()
            .map(to_wit_spec)
            .collect())
    }

    fn run(
        &mut self,
        handle: Resource<ModelHandle>,
        inputs: Vec<Tensor>,
    ) -> wasmtime::Result<Result<Vec<Tensor>, Error>> {
        let model = self.model(&handle)?;
        self.runs += 1;
        if self.runs > self.runs_per_call {
            return Err(wasmtime::Error::new(LimitExceeded::new(
                "inference_runs_per_call",
                format!(
                    "{} runs of model `{}` and others in one call",
                    self.runs, model.name
                ),
                self.runs_per_call.into(),
            )));
        }
        self.spend(tensor_bytes(&inputs), "inputs")?;
        let inputs: Vec<models::Tensor> = inputs.into_iter().map(from_wit).collect();
        let outputs = match model.run(&inputs) {
            Ok(outputs) => outputs,
            Err(error) => {
                let code = match error {
                    RunError::InvalidInput(_) => ErrorCode::InvalidInput,
                    RunError::Runtime(_) => ErrorCode::RuntimeFailure,
                };
                tracing::debug!(stage = %self.stage, model = %model.name, "inference failed: {error}");
                return Ok(Err(self.error(code, &model.name, error)));
            }
        };
        let outputs: Vec<Tensor> = outputs.into_iter().map(to_wit).collect();
        self.spend(tensor_bytes(&outputs), "outputs")?;
        Ok(Ok(outputs))
    }

    fn drop(&mut self, handle: Resource<ModelHandle>) -> wasmtime::Result<()> {
        self.handles.delete(handle)?;
        self.open -= 1;
        Ok(())
    }
}

fn to_wit_type(ty: models::ElementType) -> ElementType {
    match ty {
        models::ElementType::F32 => ElementType::F32,
        models::ElementType::F64 => ElementType::F64,
        models::ElementType::I32 => ElementType::I32,
        models::ElementType::I64 => ElementType::I64,
        models::ElementType::U8 => ElementType::U8,
        models::ElementType::Bool => ElementType::Bool,
        models::ElementType::String => ElementType::String,
    }
}

fn from_wit_type(ty: ElementType) -> models::ElementType {
    match ty {
        ElementType::F32 => models::ElementType::F32,
        ElementType::F64 => models::ElementType::F64,
        ElementType::I32 => models::ElementType::I32,
        ElementType::I64 => models::ElementType::I64,
        ElementType::U8 => models::ElementType::U8,
        ElementType::Bool => models::ElementType::Bool,
        ElementType::String => models::ElementType::String,
    }
}

fn to_wit_spec(spec: &models::TensorSpec) -> TensorSpec {
    TensorSpec {
        name: spec.name.clone(),
        element_type: to_wit_type(spec.element_type),
        shape: spec.shape.clone(),
    }
}

fn from_wit(tensor: Tensor) -> models::Tensor {
    models::Tensor {
        name: tensor.name,
        element_type: from_wit_type(tensor.element_type),
        shape: tensor.shape,
        data: tensor.data,
    }
}

fn to_wit(tensor: models::Tensor) -> Tensor {
    Tensor {
        name: tensor.name,
        element_type: to_wit_type(tensor.element_type),
        shape: tensor.shape,
        data: tensor.data,
    }
}
