//! Tensors as the plugin contract carries them (raw little-endian bytes, one buffer per
//! tensor) and their conversion to and from ONNX Runtime values.

use std::fmt;

use ort::value::TensorElementType as Ort;
use ort::value::{DynValue, Tensor as OrtTensor, ValueType};
use serde::Deserialize;

/// The element types the contract carries (the WIT `element-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElementType {
    F32,
    F64,
    I32,
    I64,
    U8,
    Bool,
    String,
}

impl ElementType {
    /// Bytes per element; `None` for strings, which are length-prefixed.
    pub fn size(self) -> Option<usize> {
        match self {
            ElementType::F32 | ElementType::I32 => Some(4),
            ElementType::F64 | ElementType::I64 => Some(8),
            ElementType::U8 | ElementType::Bool => Some(1),
            ElementType::String => None,
        }
    }

    /// The contract's type for an ONNX element type, if it carries it.
    pub fn from_ort(ty: Ort) -> Option<ElementType> {
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
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ElementType::F32 => "f32",
            ElementType::F64 => "f64",
            ElementType::I32 => "i32",
            ElementType::I64 => "i64",
            ElementType::U8 => "u8",
            ElementType::Bool => "bool",
            ElementType::String => "string",
        })
    }
}

/// One named tensor: row-major elements, little-endian, packed in `data`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub element_type: ElementType,
    pub shape: Vec<u32>,
    pub data: Vec<u8>,
}

impl Tensor {
    /// An f32 tensor, as tests and benchmarks build them.
    pub fn f32(name: &str, shape: &[u32], values: &[f32]) -> Tensor {
        Tensor {
            name: name.to_owned(),
            element_type: ElementType::F32,
            shape: shape.to_vec(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// The elements of an f32 tensor.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        (self.element_type == ElementType::F32).then(|| {
            self.data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        })
    }

    /// The elements of an i64 tensor.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        (self.element_type == ElementType::I64).then(|| {
            self.data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                .collect()
        })
    }

    /// How many elements the shape holds.
    pub fn elements(&self) -> u64 {
        self.shape.iter().map(|&d| u64::from(d)).product()
    }
}

/// A model's input or output as declared: -1 is a dimension of any size.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub element_type: ElementType,
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// The spec of a session input or output; `Err` names an unsupported type.
    pub fn from_ort(name: &str, dtype: &ValueType) -> Result<TensorSpec, String> {
        match dtype {
            ValueType::Tensor { ty, shape, .. } => match ElementType::from_ort(*ty) {
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

    /// Whether a spec the config declares (where -1 accepts any size, fixed or not)
    /// agrees with the model's own.
    pub fn accepts(&self, actual: &TensorSpec) -> bool {
        self.name == actual.name
            && self.element_type == actual.element_type
            && self.shape.len() == actual.shape.len()
            && self
                .shape
                .iter()
                .zip(&actual.shape)
                .all(|(&want, &have)| want == -1 || want == have)
    }

    /// Why `tensor` does not fit this input, if it does not.
    pub fn mismatch(&self, tensor: &Tensor) -> Option<String> {
        if tensor.element_type != self.element_type {
            return Some(format!(
                "input `{}` is {}, but the model takes {}",
                self.name, tensor.element_type, self.element_type
            ));
        }
        let fits = tensor.shape.len() == self.shape.len()
            && self
                .shape
                .iter()
                .zip(&tensor.shape)
                .all(|(&want, &have)| want < 0 || want == i64::from(have));
        if !fits {
            return Some(format!(
                "input `{}` has shape {:?}, but the model takes {} (-1: any size)",
                self.name, tensor.shape, self
            ));
        }
        if let Some(size) = self.element_type.size() {
            let expected = tensor.elements() * size as u64;
            if tensor.data.len() as u64 != expected {
                return Some(format!(
                    "input `{}` of shape {:?} needs {expected} bytes of {}, but has {}",
                    self.name,
                    tensor.shape,
                    self.element_type,
                    tensor.data.len()
                ));
            }
        }
        None
    }
}

impl fmt::Display for TensorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.element_type, self.shape)
    }
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

/// An ONNX Runtime value holding `tensor` (checked against its spec beforehand).
pub(super) fn to_ort(tensor: &Tensor) -> Result<DynValue, String> {
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
pub(super) fn from_ort(name: &str, value: &DynValue) -> Result<Tensor, String> {
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(format!("output `{name}` is not a tensor"));
    };
    let element_type = ElementType::from_ort(*ty)
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

    #[test]
    fn a_tensor_that_does_not_fit_its_input_says_why() {
        let spec = TensorSpec {
            name: "features".into(),
            element_type: ElementType::F32,
            shape: vec![-1, 3],
        };
        assert_eq!(
            spec.mismatch(&Tensor::f32("features", &[2, 3], &[0.0; 6])),
            None
        );
        assert_eq!(
            spec.mismatch(&Tensor::f32("features", &[2, 4], &[0.0; 8]))
                .unwrap(),
            "input `features` has shape [2, 4], but the model takes f32 [-1, 3] (-1: any size)"
        );
        let mut short = Tensor::f32("features", &[2, 3], &[0.0; 6]);
        short.data.pop();
        assert_eq!(
            spec.mismatch(&short).unwrap(),
            "input `features` of shape [2, 3] needs 24 bytes of f32, but has 23"
        );
        short.element_type = ElementType::F64;
        assert_eq!(
            spec.mismatch(&short).unwrap(),
            "input `features` is f64, but the model takes f32"
        );
    }
}
