//! The operator sets an ONNX file imports (`ModelProto.opset_import`), which ONNX
//! Runtime's API does not expose: read from the protobuf directly, top-level fields
//! only, so that `sluice model inspect` can say which runtime versions a model needs.

/// `ModelProto` field 8: `repeated OperatorSetIdProto opset_import`.
const OPSET_IMPORT: u64 = 8;

/// The bytes are not a protobuf message, so not an ONNX model.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("not an ONNX model (malformed protobuf)")]
pub struct MalformedModel;

/// `(domain, version)` of every imported operator set; the default domain is shown as
/// `ai.onnx`. Duplicates (skl2onnx writes some) are removed.
pub fn opsets(model: &[u8]) -> Result<Vec<(String, i64)>, MalformedModel> {
    let mut found = Vec::new();
    for (field, value) in Fields(model) {
        if let (OPSET_IMPORT, Value::Bytes(entry)) = (field?, value) {
            let (mut domain, mut version) = (String::new(), 0);
            for (field, value) in Fields(entry) {
                match (field?, value) {
                    (1, Value::Bytes(bytes)) => {
                        domain = String::from_utf8_lossy(bytes).into_owned()
                    }
                    (2, Value::Varint(v)) => version = v as i64,
                    _ => {}
                }
            }
            if domain.is_empty() {
                domain = "ai.onnx".to_owned();
            }
            if !found.contains(&(domain.clone(), version)) {
                found.push((domain, version));
            }
        }
    }
    Ok(found)
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of one protobuf message; a malformed one ends the walk with an error.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = (Result<u64, MalformedModel>, Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let malformed = || Some((Err(MalformedModel), Value::Fixed));
        let Some(key) = varint(&mut self.0) else {
            self.0 = &[];
            return malformed();
        };
        let value = match key & 7 {
            0 => varint(&mut self.0).map(Value::Varint),
            1 | 5 => {
                let width = if key & 7 == 1 { 8 } else { 4 };
                self.0.get(width..).map(|rest| {
                    self.0 = rest;
                    Value::Fixed
                })
            }
            2 => varint(&mut self.0).and_then(|len| {
                let len = usize::try_from(len).ok()?;
                let bytes = self.0.get(..len)?;
                self.0 = &self.0[len..];
                Some(Value::Bytes(bytes))
            }),
            _ => None,
        };
        match value {
            Some(value) => Some((Ok(key >> 3), value)),
            None => {
                self.0 = &[];
                malformed()
            }
        }
    }
}

fn varint(data: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = data.split_first()?;
        *data = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_opsets_of_the_anomaly_model() {
        let model = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/anomaly.onnx"
        ))
        .unwrap();
        assert_eq!(
            opsets(&model).unwrap(),
            [("ai.onnx.ml".to_owned(), 1), ("ai.onnx".to_owned(), 17)]
        );
        assert_eq!(opsets(b"\x0a\xff").unwrap_err(), MalformedModel);
    }
}
