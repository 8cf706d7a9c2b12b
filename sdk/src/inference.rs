//! Run the ONNX models the stage is granted (`[plugins.X] grants.models`), in the host,
//! with ONNX Runtime. Score a whole batch in one call: build one tensor whose rows are
//! the batch's events ([`Features::from_json`]), [`Model::run`] it, and read one output
//! row per event ([`Outputs::f32`]).
//!
//! ```ignore
//! let model = Model::open("anomaly")?;                 // once, in `Processor::new`
//! let events: Vec<Event<'_>> = batch.events().collect();
//! let features = Features::from_json(&events, &["temperature", "vibration"]);
//! let outputs = model.run(&[features.tensor("features")])?;
//! let (_, scores) = outputs.f32("probabilities")?;    // rows × 2
//! ```

use crate::__bindings::sluice::plugin::inference as wit;
use crate::{Error, Event};

pub use wit::{ElementType, Tensor, TensorSpec};

impl From<wit::Error> for Error {
    fn from(error: wit::Error) -> Self {
        // The host's message already names the stage and the model.
        Error::new(error.message)
    }
}

/// A granted model, opened by its name in the pipeline config.
pub struct Model {
    inner: wit::Model,
}

impl Model {
    /// Open the model `name`; fails unless the stage is granted it.
    pub fn open(name: &str) -> Result<Model, Error> {
        Ok(Model {
            inner: wit::Model::open(name)?,
        })
    }

    /// What [`Model::run`] expects: names, element types, shapes (-1: any size).
    pub fn inputs(&self) -> Vec<TensorSpec> {
        self.inner.inputs()
    }

    /// What [`Model::run`] returns.
    pub fn outputs(&self) -> Vec<TensorSpec> {
        self.inner.outputs()
    }

    /// Run the model once on all of its inputs.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Outputs, Error> {
        Ok(Outputs(self.inner.run(inputs)?))
    }
}

/// An f32 tensor of `shape`, row-major.
pub fn tensor_f32(name: &str, shape: &[u32], values: &[f32]) -> Tensor {
    Tensor {
        name: name.to_owned(),
        element_type: ElementType::F32,
        shape: shape.to_vec(),
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// One row of numeric features per usable event of a batch.
#[derive(Debug, Default, PartialEq)]
pub struct Features {
    /// Rows × columns, row-major.
    pub values: Vec<f32>,
    pub columns: usize,
    /// For each row, the position of its event in the events given.
    pub events: Vec<usize>,
    /// Events that yielded no row, by position, with the reason (a missing or
    /// non-numeric field, a payload that is not JSON): reject them.
    pub unusable: Vec<(usize, String)>,
}

impl Features {
    /// The `fields` (dotted paths) of each event's JSON payload, as numbers.
    pub fn from_json(events: &[Event<'_>], fields: &[impl AsRef<str>]) -> Features {
        let mut features = Features {
            columns: fields.len(),
            ..Features::default()
        };
        for (position, event) in events.iter().enumerate() {
            let start = features.values.len();
            match read_row(event, fields, &mut features.values) {
                Ok(()) => features.events.push(position),
                Err(reason) => {
                    features.values.truncate(start);
                    features.unusable.push((position, reason));
                }
            }
        }
        features
    }

    pub fn rows(&self) -> usize {
        self.events.len()
    }

    /// The features as one `rows × columns` f32 tensor named `name`.
    pub fn tensor(&self, name: &str) -> Tensor {
        tensor_f32(
            name,
            &[self.rows() as u32, self.columns as u32],
            &self.values,
        )
    }
}

/// One event's features, appended to `values`, read from its payload's own text: the
/// JSON is checked once and each field found by scanning, without building a document
/// (what a per-event `serde_json::Value` costs is most of a small model's time in a
/// pipeline). On an error, `values` may hold part of the row.
fn read_row(
    event: &Event<'_>,
    fields: &[impl AsRef<str>],
    values: &mut Vec<f32>,
) -> Result<(), String> {
    let text = event.text().map_err(|e| e.to_string())?;
    let payload = crate::json::RawObject::parse(text).map_err(|e| e.to_string())?;
    for field in fields {
        let field = field.as_ref();
        // A JSON number's text is one that `f64` parses; anything else (a string,
        // `null`, an object) is not a number.
        let value = payload
            .get(field)
            .and_then(|value| value.parse::<f64>().ok())
            .ok_or_else(|| format!("feature `{field}` is missing or not a number"))?;
        values.push(value as f32);
    }
    Ok(())
}

/// The WIT name of an element type, for messages.
pub fn type_name(ty: ElementType) -> &'static str {
    match ty {
        ElementType::F32 => "f32",
        ElementType::F64 => "f64",
        ElementType::I32 => "i32",
        ElementType::I64 => "i64",
        ElementType::U8 => "u8",
        ElementType::Bool => "bool",
        ElementType::String => "string",
    }
}

/// What a run returned.
#[derive(Debug)]
pub struct Outputs(pub Vec<Tensor>);

impl Outputs {
    fn get(&self, name: &str, ty: ElementType) -> Result<&Tensor, Error> {
        let tensor = self
            .0
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::new(format!("the model returned no output `{name}`")))?;
        if tensor.element_type != ty {
            return Err(Error::new(format!(
                "output `{name}` is {}, not {}",
                type_name(tensor.element_type),
                type_name(ty)
            )));
        }
        Ok(tensor)
    }

    /// The shape and elements of the f32 output `name`.
    pub fn f32(&self, name: &str) -> Result<(Vec<u32>, Vec<f32>), Error> {
        let tensor = self.get(name, ElementType::F32)?;
        let values = tensor
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        Ok((tensor.shape.clone(), values))
    }

    /// The shape and elements of the i64 output `name`.
    pub fn i64(&self, name: &str) -> Result<(Vec<u32>, Vec<i64>), Error> {
        let tensor = self.get(name, ElementType::I64)?;
        let values = tensor
            .data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        Ok((tensor.shape.clone(), values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Batch, NewEvent};

    #[test]
    fn features_are_rows_of_the_usable_events_and_the_rest_say_why() {
        let events = [
            r#"{"t":21.5,"v":{"x":1}}"#,
            r#"{"t":"hot","v":{"x":1}}"#,
            "not json",
            r#"{"t":90,"v":{"x":12.5}}"#,
        ]
        .map(|p| NewEvent {
            payload: p.as_bytes().to_vec(),
            ..NewEvent::default()
        });
        let batch = Batch::from_events(&events);
        let events: Vec<Event<'_>> = batch.events().collect();
        let features = Features::from_json(&events, &["t", "v.x"]);
        assert_eq!(features.values, [21.5, 1.0, 90.0, 12.5]);
        assert_eq!(features.events, [0, 3]);
        assert_eq!(
            features.unusable[0],
            (1, "feature `t` is missing or not a number".to_owned())
        );
        assert_eq!(features.unusable[1].0, 2);
        let tensor = features.tensor("features");
        assert_eq!(
            (tensor.shape.as_slice(), tensor.data.len()),
            (&[2, 2][..], 16)
        );
    }

    #[test]
    fn outputs_are_read_by_name_and_type() {
        let outputs = Outputs(vec![tensor_f32("p", &[1, 2], &[0.25, 0.75])]);
        assert_eq!(outputs.f32("p").unwrap(), (vec![1, 2], vec![0.25, 0.75]));
        assert_eq!(
            outputs.i64("p").unwrap_err().to_string(),
            "output `p` is f32, not i64"
        );
        assert_eq!(
            outputs.f32("q").unwrap_err().to_string(),
            "the model returned no output `q`"
        );
    }
}
