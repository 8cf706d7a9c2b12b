//! Models run by ONNX Runtime (`ort`, the `inference` cargo feature): a pool of
//! sessions per model, and the contract's tensors converted to and from ONNX values.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorElementType as Ort;
use ort::value::{DynValue, Tensor as OrtTensor, ValueType};

use super::library;
use super::tensor::{ElementType, Tensor, TensorSpec};
use super::{ExecutionProvider, InferenceError, ModelDef, Opened, Optimization, RunError};

/// The sessions of one model: runs take a free one, else wait for the next in turn.
pub struct Sessions {
    pool: Vec<Mutex<Session>>,
    next: AtomicUsize,
}

impl Sessions {
    /// `def.sessions` sessions of model `name` from `bytes`, with the process's ONNX
    /// Runtime (loaded from `library` on first use).
    pub fn open(
        name: &str,
        def: &ModelDef,
        bytes: &[u8],
        library: Option<&Path>,
    ) -> Result<Opened, InferenceError> {
        let environment = library::environment(library)?;
        let pool = (0..def.sessions.max(1))
            .map(|_| session(environment, def, bytes).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| InferenceError::Load {
                model: name.to_owned(),
                path: def.path.clone(),
                reason: error.to_string(),
            })?;
        let (inputs, outputs) = {
            let session = pool[0].lock().unwrap();
            let specs = |outlets: &[ort::value::Outlet]| {
                outlets
                    .iter()
                    .map(|o| spec(o.name(), o.dtype()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|what| InferenceError::Mismatch {
                        model: name.to_owned(),
                        path: def.path.clone(),
                        what,
                    })
            };
            (specs(session.inputs())?, specs(session.outputs())?)
        };
        Ok(Opened {
            sessions: Sessions {
                pool,
                next: AtomicUsize::new(0),
            },
            inputs,
            outputs,
        })
    }

    pub fn len(&self) -> usize {
        self.pool.len()
    }

    /// Run on `inputs`, already checked against the model's inputs.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        let values = inputs
            .iter()
            .map(|t| to_ort(t).map(|value| (t.name.clone(), value)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(RunError::InvalidInput)?;
        let mut session = self.session();
        let outputs = session
            .run(values)
            .map_err(|error| RunError::Runtime(error.to_string()))?;
        outputs
            .iter()
            .map(|(name, value)| from_ort(name, &value))
            .collect::<Result<Vec<_>, _>>()
            .map_err(RunError::Runtime)
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.pool.len();
        (0..n)
            .find_map(|i| self.pool[(start + i) % n].try_lock().ok())
            .unwrap_or_else(|| {
                self.pool[start % n]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
            })
    }
}

/// One session of `def`'s model with its threads and optimisation level.
fn session(
    environment: &ort::environment::Environment,
    def: &ModelDef,
    bytes: &[u8],
) -> ort::Result<Session> {
    let providers: Vec<_> = def
        .execution_providers
        .iter()
        .map(|&provider| dispatch(provider))
        .collect();
    Session::builder(environment)?
        .with_execution_providers(providers)?
        .with_intra_threads(def.intra_threads.max(1))?
        .with_optimization_level(level(def.optimization))?
        .commit_from_memory(bytes)
}

fn dispatch(provider: ExecutionProvider) -> ort::ep::ExecutionProviderDispatch {
    match provider {
        ExecutionProvider::Cpu => ort::ep::CPU::default().build(),
        ExecutionProvider::Cuda => ort::ep::CUDA::default().build(),
        ExecutionProvider::Tensorrt => ort::ep::TensorRT::default().build(),
    }
}

fn level(optimization: Optimization) -> GraphOptimizationLevel {
    match optimization {
        Optimization::Disable => GraphOptimizationLevel::Disable,
        Optimization::Basic => GraphOptimizationLevel::Level1,
        Optimization::Extended => GraphOptimizationLevel::Level2,
        Optimization::All => GraphOptimizationLevel::All,
    }
}

/// The contract's type for an ONNX element type, if it carries it.
fn element_type(ty: Ort) -> Option<ElementType> {
    Some(match ty {
        Ort::Float32 => ElementType::F32,
        Ort::Float64 => ElementType::F64,
        Ort::Int32 => ElementType::I32,
        Ort::Int64 => ElementType::I64,
        Ort::Uint8 => ElementType::U8,
        Ort::Bool => ElementType::Bool,
        Ort::String => ElementType::String,
        _ => return None,
    })
}

/// The spec of a session input or output; `Err` names an unsupported type.
fn spec(name: &str, dtype: &ValueType) -> Result<TensorSpec, String> {
    match dtype {
        ValueType::Tensor { ty, shape, .. } => match element_type(*ty) {
            Some(element_type) => Ok(TensorSpec {
                name: name.to_owned(),
                element_type,
                shape: shape.to_vec(),
            }),
            None => Err(format!(
                "`{name}` is a tensor of {ty}, which Sluice cannot carry"
            )),
        },
        other => Err(format!(
            "`{name}` is a {other}, not a tensor (for scikit-learn classifiers, export with the option zipmap=False)"
        )),
    }
}

/// An ONNX Runtime value holding `tensor` (checked against its spec beforehand).
fn to_ort(tensor: &Tensor) -> Result<DynValue, String> {
    let shape: Vec<i64> = tensor.shape.iter().map(|&d| i64::from(d)).collect();
    let data = &tensor.data;
    let value = match tensor.element_type {
        ElementType::F32 => {
            OrtTensor::from_array((shape, le(data, f32::from_le_bytes))).map(|t| t.into_dyn())
        }
        ElementType::F64 => {
            OrtTensor::from_array((shape, le(data, f64::from_le_bytes))).map(|t| t.into_dyn())
        }
        ElementType::I32 => {
            OrtTensor::from_array((shape, le(data, i32::from_le_bytes))).map(|t| t.into_dyn())
        }
        ElementType::I64 => {
            OrtTensor::from_array((shape, le(data, i64::from_le_bytes))).map(|t| t.into_dyn())
        }
        ElementType::U8 => OrtTensor::from_array((shape, data.clone())).map(|t| t.into_dyn()),
        ElementType::Bool => {
            let values: Vec<bool> = data.iter().map(|&b| b != 0).collect();
            OrtTensor::from_array((shape, values)).map(|t| t.into_dyn())
        }
        ElementType::String => {
            let strings = unpack_strings(data, tensor.elements())
                .map_err(|error| format!("input `{}`: {error}", tensor.name))?;
            OrtTensor::from_string_array((shape, &strings[..])).map(|t| t.into_dyn())
        }
    };
    value.map_err(|error| format!("input `{}`: {error}", tensor.name))
}

fn to_bytes<T: Copy, const N: usize>(values: &[T], to: fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| to(v)).collect()
}

/// The contract's tensor for an output value.
fn from_ort(name: &str, value: &DynValue) -> Result<Tensor, String> {
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(format!("output `{name}` is not a tensor"));
    };
    let element_type = element_type(*ty)
        .ok_or_else(|| format!("output `{name}` is a tensor of {ty}, which Sluice cannot carry"))?;
    let failed = |error: ort::Error| format!("output `{name}`: {error}");
    let (shape, data) = match element_type {
        ElementType::F32 => value
            .try_extract_tensor::<f32>()
            .map(|(s, v)| (s.to_vec(), to_bytes(v, f32::to_le_bytes))),
        ElementType::F64 => value
            .try_extract_tensor::<f64>()
            .map(|(s, v)| (s.to_vec(), to_bytes(v, f64::to_le_bytes))),
        ElementType::I32 => value
            .try_extract_tensor::<i32>()
            .map(|(s, v)| (s.to_vec(), to_bytes(v, i32::to_le_bytes))),
        ElementType::I64 => value
            .try_extract_tensor::<i64>()
            .map(|(s, v)| (s.to_vec(), to_bytes(v, i64::to_le_bytes))),
        ElementType::U8 => value
            .try_extract_tensor::<u8>()
            .map(|(s, v)| (s.to_vec(), v.to_vec())),
        ElementType::Bool => value
            .try_extract_tensor::<bool>()
            .map(|(s, v)| (s.to_vec(), v.iter().map(|&b| u8::from(b)).collect())),
        ElementType::String => value
            .try_extract_strings()
            .map(|(s, v)| (s.to_vec(), pack_strings(&v))),
    }
    .map_err(failed)?;
    Ok(Tensor {
        name: name.to_owned(),
        element_type,
        shape: shape.iter().map(|&d| d.max(0) as u32).collect(),
        data,
    })
}

fn le<const N: usize, T>(data: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|bytes| from(bytes.try_into().unwrap()))
        .collect()
}

/// Strings packed as (u32 little-endian length, UTF-8 bytes) each.
fn unpack_strings(data: &[u8], count: u64) -> Result<Vec<String>, String> {
    let mut strings = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or("a string's length prefix is cut short")?;
        let len = u32::from_le_bytes(*len) as usize;
        let bytes = tail.get(..len).ok_or("a string is cut short")?;
        strings.push(String::from_utf8(bytes.to_vec()).map_err(|_| "a string is not UTF-8")?);
        rest = &tail[len..];
    }
    if strings.len() as u64 != count {
        return Err(format!(
            "{} strings for a shape of {count} elements",
            strings.len()
        ));
    }
    Ok(strings)
}

fn pack_strings(strings: &[String]) -> Vec<u8> {
    let mut data = Vec::with_capacity(strings.iter().map(|s| s.len() + 4).sum());
    for string in strings {
        data.extend_from_slice(&(string.len() as u32).to_le_bytes());
        data.extend_from_slice(string.as_bytes());
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_bad_packing_is_refused() {
        let strings = vec!["a".to_owned(), String::new(), "żółw".to_owned()];
        assert_eq!(unpack_strings(&pack_strings(&strings), 3).unwrap(), strings);
        assert_eq!(
            unpack_strings(&pack_strings(&strings), 2).unwrap_err(),
            "3 strings for a shape of 2 elements"
        );
        assert_eq!(
            unpack_strings(&[9, 0, 0, 0, b'x'], 1).unwrap_err(),
            "a string is cut short"
        );
    }
}
