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
        data: le_bytes(values),
    }
}

/// The little-endian bytes of `values`, into a buffer sized once (collecting a
/// `flat_map` grows it step by step: its length is not known up front).
fn le_bytes(values: &[f32]) -> Vec<u8> {
    let mut data = Vec::with_capacity(values.len() * 4);
    for value in values {
        data.extend_from_slice(&value.to_le_bytes());
    }
    data
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
            values: Vec::with_capacity(events.len() * fields.len()),
            columns: fields.len(),
            events: Vec::with_capacity(events.len()),
            unusable: Vec::new(),
        };
        // Member names are read in the pass that checks the JSON; a dotted path goes
        // through the indexed object.
        let members = fields.iter().all(|field| !field.as_ref().contains('.'));
        let mut found = vec![None; fields.len()];
        for (position, event) in events.iter().enumerate() {
            let start = features.values.len();
            if members && read_members(event, fields, &mut found, &mut features.values) {
                features.events.push(position);
                continue;
            }
            features.values.truncate(start);
            // The indexed read also says why a row is unusable, in the same words
            // whichever way the row was tried first.
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

/// One event's features, the payload's top-level members `fields`, appended to `values`;
/// false when the payload is not a JSON object holding them all as numbers (`values` may
/// then hold part of the row). `found` is scratch space, one slot per field.
fn read_members<'a>(
    event: &Event<'a>,
    fields: &[impl AsRef<str>],
    found: &mut [Option<&'a str>],
    values: &mut Vec<f32>,
) -> bool {
    let Ok(text) = std::str::from_utf8(event.payload()) else {
        return false;
    };
    if crate::json::top_level_fields(text, fields, found).is_err() {
        return false;
    }
    for value in found.iter() {
        match value.and_then(number) {
            Some(value) => values.push(value as f32),
            None => return false,
        }
    }
    true
}

/// The JSON text `text` as a number, exactly as `str::parse::<f64>` reads it (`None` for
/// a string, `null` or anything else that is not a number).
///
/// Telemetry's numbers are mostly short decimals (`21.5`, `-0.25`): those with at most
/// 15 digits are an integer below 2^53 divided by a power of ten up to 10^22, both exact
/// in an f64, so one division rounds correctly (Clinger's fast path, which the standard
/// parser also takes, but only after a general scan that costs more than the division
/// in a Wasm guest). Anything else (an exponent, more digits) goes to the standard
/// parser.
fn number(text: &str) -> Option<f64> {
    const POWERS: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    let bytes = text.as_bytes();
    let (negative, digits) = match bytes {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, bytes),
    };
    let mut mantissa = 0u64;
    let mut count = 0usize;
    let mut fraction: Option<usize> = None;
    for &byte in digits {
        match byte {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(byte - b'0');
                count += 1;
                if count > 15 {
                    return text.parse().ok();
                }
            }
            b'.' if fraction.is_none() => fraction = Some(count),
            _ => return text.parse().ok(),
        }
    }
    let scale = count - fraction.unwrap_or(count);
    if count == 0 || fraction == Some(count) {
        return text.parse().ok();
    }
    let magnitude = mantissa as f64 / POWERS[scale];
    Some(if negative { -magnitude } else { magnitude })
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
    fn numbers_read_as_the_standard_parser_reads_them() {
        let mut texts: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "-0.0",
            "1",
            "21.5",
            "-0.25",
            "95.5",
            "0.1",
            "0.3",
            "1.7976931348623157",
            "123456789012345",
            "1234567890123456",
            "0.000000000000001",
            "9007199254740993",
            "1e2",
            "-1.5E-3",
            "1.",
            ".5",
            "-",
            "",
            "\"1\"",
            "null",
            "true",
            "1.2.3",
            "12a",
        ]
        .map(String::from)
        .to_vec();
        // Every split of some digit strings into whole and fraction, either sign.
        for digits in [
            "1",
            "15",
            "9999999999999999",
            "123456789012345",
            "100000000000000",
        ] {
            for at in 0..=digits.len() {
                for sign in ["", "-"] {
                    texts.push(format!("{sign}{}.{}", &digits[..at], &digits[at..]));
                    texts.push(format!("{sign}{digits}"));
                }
            }
        }
        for text in &texts {
            let expected = text.parse::<f64>().ok();
            let ours = number(text);
            assert_eq!(
                ours.map(f64::to_bits),
                expected.map(f64::to_bits),
                "{text:?}"
            );
        }
    }

    #[test]
    fn dotted_and_flat_fields_read_the_same_rows_and_reasons() {
        let events = [
            r#"{"t":21.5,"v":-3,"n":{"t":2}}"#,
            r#"{"t":1e400,"v":0.1,"t":7}"#,
            r#"{"t":null,"v":1}"#,
            r#"{"v":1}"#,
            r#"{"t":1,"v":1,}"#,
            "[1]",
        ]
        .map(|p| NewEvent {
            payload: p.as_bytes().to_vec(),
            ..NewEvent::default()
        });
        let batch = Batch::from_events(&events);
        let events: Vec<Event<'_>> = batch.events().collect();
        let flat = Features::from_json(&events, &["t", "v"]);
        assert_eq!(flat.values, [21.5, -3.0, 7.0, 0.1]);
        assert_eq!(flat.events, [0, 1]);
        let reasons: Vec<&str> = flat.unusable.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "feature `t` is missing or not a number",
                "feature `t` is missing or not a number",
                "invalid JSON: expected a string, found `}` at byte 13",
                "expected a JSON object, found array",
            ]
        );
        let dotted = Features::from_json(&events, &["n.t", "v"]);
        assert_eq!(dotted.values, [2.0, -3.0]);
        assert_eq!(dotted.unusable.len(), 5);
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
