//! Tensors as the plugin contract carries them (raw little-endian bytes, one buffer per
//! tensor); `session.rs` converts them to and from ONNX Runtime values.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;

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
