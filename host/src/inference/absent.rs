//! A build without ONNX Runtime (no `inference` cargo feature, as on devices): the
//! config's models are refused at startup with the reason, and no model can exist.

use std::path::Path;

use super::tensor::Tensor;
use super::{InferenceError, ModelDef, Opened, RunError};

/// No sessions can be opened, so there are none: a `Model` cannot be built.
pub enum Sessions {}

impl Sessions {
    pub fn open(
        name: &str,
        def: &ModelDef,
        _bytes: &[u8],
        _library: Option<&Path>,
    ) -> Result<Opened, InferenceError> {
        Err(InferenceError::Library(format!(
            "model `{name}` ({}): this sluice is built without ONNX Runtime (cargo feature `inference`)",
            def.path.display()
        )))
    }

    pub fn len(&self) -> usize {
        match *self {}
    }

    pub fn run(&self, _inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        match *self {}
    }
}
