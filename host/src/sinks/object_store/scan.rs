//! One pass over each payload before it is grouped and encoded: it reads the fields the
//! partition template names and, under a declared schema, tells whether arrow-json is
//! certain to take the payload as one row.
//!
//! Arrow-json finds most problems (a value of the wrong type, a missing required field,
//! an unknown field in strict mode) only when its buffered rows are flushed into
//! arrays, and a failed flush loses every row buffered with the culprit. So without
//! knowing beforehand, every group of events had to be flushed on its own to keep the
//! dead-letter guarantee: dozens of tiny record batches per batch of events, then a
//! concatenation. An event this check passes is instead decoded into its object's
//! long-lived decoder, flushed thousands of rows at a time. An event it does not pass
//! takes the exact path (decoded and flushed with its group, and on failure one by one,
//! so that only the culprits are dead-lettered, with arrow-json's own reason).
//!
//! The check is conservative: it passes only shapes arrow-json accepts without doubt (a
//! string for a string column, an integer in range for an integer column, a number or
//! a string it parses itself for a timestamp, ...) and leaves anything else to the exact
//! path, including valid events it does not vouch for: a date column's value, a number
//! given as a string, a payload with an escape (`\`) or invalid UTF-8. The same pass
//! reads the partition fields, so that partitioning costs no second parse.

use arrow_array::timezone::Tz;
use arrow_schema::{DataType, Schema, TimeUnit};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::event::Event;
use crate::template;

/// What one pass over a payload found.
pub struct Scanned {
    /// The payload's fields the partition template reads, as [`template::payload_fields`]
    /// returns them.
    pub fields: Option<serde_json::Value>,
    /// Arrow-json is certain to decode the payload as exactly one row of the schema.
    pub fits: bool,
}

/// The declared schema, as the check reads it.
#[derive(Debug)]
pub struct RowCheck {
    columns: Vec<CheckedColumn>,
    /// Bit `i` set: column `i` is required (not nullable).
    required: u128,
    reject_unknown_fields: bool,
    /// The zone arrow-json parses timestamp strings in (the schema's `+00:00`).
    utc: Tz,
}

#[derive(Debug)]
struct CheckedColumn {
    name: String,
    expect: Expect,
    nullable: bool,
}

/// The JSON values a column takes for sure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Text,
    Bool,
    Int32,
    Int64,
    Float32,
    Float64,
    Timestamp,
    /// A type whose values the check leaves to arrow-json (dates): only null passes.
    NullOnly,
}

/// Beyond this, a value may round to infinity as a 32-bit float.
const FLOAT32_LIMIT: f64 = 3.0e38;

impl RowCheck {
    /// The check for `schema`; none for a schema too wide to track its columns in one
    /// word (such objects take the exact path always).
    pub fn new(schema: &Schema, reject_unknown_fields: bool) -> Option<RowCheck> {
        if schema.fields().len() > 128 {
            return None;
        }
        let mut required = 0u128;
        let mut columns = Vec::with_capacity(schema.fields().len());
        for (index, field) in schema.fields().iter().enumerate() {
            let expect = match field.data_type() {
                DataType::Utf8 => Expect::Text,
                DataType::Boolean => Expect::Bool,
                DataType::Int32 => Expect::Int32,
                DataType::Int64 => Expect::Int64,
                DataType::Float32 => Expect::Float32,
                DataType::Float64 => Expect::Float64,
                DataType::Timestamp(TimeUnit::Millisecond | TimeUnit::Microsecond, Some(zone))
                    if zone.as_ref() == "+00:00" =>
                {
                    Expect::Timestamp
                }
                _ => Expect::NullOnly,
            };
            if !field.is_nullable() {
                required |= 1 << index;
            }
            columns.push(CheckedColumn {
                name: field.name().clone(),
                expect,
                nullable: field.is_nullable(),
            });
        }
        Some(RowCheck {
            columns,
            required,
            reject_unknown_fields,
            utc: "+00:00".parse().expect("a fixed offset parses"),
        })
    }

    /// Read `event`'s payload once: the top-level fields `wanted` (for partitioning)
    /// and whether it fits the schema for sure.
    pub fn scan(&self, event: &Event, wanted: &[String]) -> Scanned {
        let payload = &event.payload;
        // Escapes and invalid UTF-8 are where serde_json and arrow-json's tape may
        // disagree (a lone surrogate in a skipped string): left to the exact path.
        if !payload.contains(&b'\\') && std::str::from_utf8(payload).is_ok() {
            let mut deserializer = serde_json::Deserializer::from_slice(payload);
            let row = Row {
                check: self,
                wanted,
            };
            if let Ok((fields, fits)) = row.deserialize(&mut deserializer)
                && deserializer.end().is_ok()
            {
                return Scanned {
                    fields: Some(serde_json::Value::Object(fields)),
                    fits,
                };
            }
        }
        // Not an object this pass can read: the fields as partitioning reads them
        // anywhere else, and the exact path decides.
        Scanned {
            fields: unchecked_fields(event, wanted),
            fits: false,
        }
    }

    fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|column| column.name == name)
    }
}

/// The fields `wanted` of `event`'s payload without a schema check.
pub fn unchecked_fields(event: &Event, wanted: &[String]) -> Option<serde_json::Value> {
    if wanted.is_empty() {
        None
    } else {
        template::payload_fields(event, wanted)
    }
}

/// The top-level object: the wanted fields, and whether it fits.
#[derive(Clone, Copy)]
struct Row<'a> {
    check: &'a RowCheck,
    wanted: &'a [String],
}

impl<'de> DeserializeSeed<'de> for Row<'_> {
    type Value = (serde_json::Map<String, serde_json::Value>, bool);

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Row<'_> {
    type Value = (serde_json::Map<String, serde_json::Value>, bool);

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let check = self.check;
        let mut fields = serde_json::Map::new();
        let mut fits = true;
        let mut seen = 0u128;
        while let Some(key) = map.next_key_seed(Key(self))? {
            if let Some(column) = key.column {
                // A repeated column: arrow-json keeps the last, the check does not try.
                fits &= seen & (1 << column) == 0;
                seen |= 1 << column;
            } else if check.reject_unknown_fields {
                fits = false;
            }
            match (key.wanted, key.column) {
                (Some(wanted), column) => {
                    let value: serde_json::Value = map.next_value()?;
                    if let Some(column) = column {
                        fits &= value_fits(check, &check.columns[column], &value);
                    }
                    fields.insert(self.wanted[wanted].clone(), value);
                }
                (None, Some(column)) => {
                    fits &= map.next_value_seed(Fits {
                        check,
                        column: &check.columns[column],
                    })?;
                }
                (None, None) => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        fits &= seen & check.required == check.required;
        Ok((fields, fits))
    }
}

/// A key: which wanted field and which column it names, compared without allocating.
struct Key<'a>(Row<'a>);

struct Named {
    wanted: Option<usize>,
    column: Option<usize>,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Named;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Named, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Named;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Named, E> {
        Ok(Named {
            wanted: self.0.wanted.iter().position(|name| name == key),
            column: self.0.check.column(key),
        })
    }
}

/// Whether an already parsed `value` fits `column` for sure.
fn value_fits(check: &RowCheck, column: &CheckedColumn, value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Null => column.nullable,
        Value::Bool(_) => column.expect == Expect::Bool,
        Value::String(text) => text_fits(check, column, text),
        Value::Number(number) => match (number.as_i64(), number.as_u64(), number.as_f64()) {
            (Some(integer), ..) => integer_fits(column, integer),
            (None, Some(large), _) => large_integer_fits(column, large),
            (None, None, Some(float)) => float_fits(column, float),
            (None, None, None) => false,
        },
        Value::Array(_) | Value::Object(_) => false,
    }
}

fn text_fits(check: &RowCheck, column: &CheckedColumn, text: &str) -> bool {
    match column.expect {
        Expect::Text => true,
        // Arrow-json's own parser, in the schema's zone.
        Expect::Timestamp => arrow_cast::parse::string_to_datetime(&check.utc, text).is_ok(),
        _ => false,
    }
}

fn integer_fits(column: &CheckedColumn, integer: i64) -> bool {
    match column.expect {
        Expect::Int32 => i32::try_from(integer).is_ok(),
        Expect::Int64 | Expect::Float32 | Expect::Float64 | Expect::Timestamp => true,
        _ => false,
    }
}

/// An integer above `i64::MAX`.
fn large_integer_fits(column: &CheckedColumn, _: u64) -> bool {
    // Arrow-json reads it as a float for float and timestamp columns; it overflows
    // integer ones.
    matches!(
        column.expect,
        Expect::Float32 | Expect::Float64 | Expect::Timestamp
    )
}

fn float_fits(column: &CheckedColumn, float: f64) -> bool {
    match column.expect {
        Expect::Float64 | Expect::Timestamp => true,
        Expect::Float32 => float.abs() < FLOAT32_LIMIT,
        _ => false,
    }
}

/// A column's value read without building it: whether it fits.
struct Fits<'a> {
    check: &'a RowCheck,
    column: &'a CheckedColumn,
}

impl<'de> DeserializeSeed<'de> for Fits<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Fits<'_> {
    type Value = bool;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(self.column.nullable)
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(self.column.expect == Expect::Bool)
    }

    fn visit_i64<E>(self, integer: i64) -> Result<bool, E> {
        Ok(integer_fits(self.column, integer))
    }

    fn visit_u64<E>(self, integer: u64) -> Result<bool, E> {
        Ok(match i64::try_from(integer) {
            Ok(integer) => integer_fits(self.column, integer),
            Err(_) => large_integer_fits(self.column, integer),
        })
    }

    fn visit_f64<E>(self, float: f64) -> Result<bool, E> {
        Ok(float_fits(self.column, float))
    }

    fn visit_str<E>(self, text: &str) -> Result<bool, E> {
        Ok(text_fits(self.check, self.column, text))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_json::ReaderBuilder;
    use arrow_schema::{Field, Schema};

    use super::*;

    fn schema(strict: bool) -> (Arc<Schema>, RowCheck) {
        let utc = || DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("device_id", DataType::Utf8, false),
            Field::new("seq", DataType::Int64, true),
            Field::new("small", DataType::Int32, true),
            Field::new("ts", utc(), true),
            Field::new("temperature", DataType::Float64, true),
            Field::new("ratio", DataType::Float32, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("day", DataType::Date32, true),
        ]));
        let check = RowCheck::new(&schema, strict).unwrap();
        (schema, check)
    }

    /// Whether arrow-json decodes `payload` as exactly one row of `schema`.
    fn arrow_takes(schema: &Arc<Schema>, strict: bool, payload: &[u8]) -> bool {
        let mut decoder = ReaderBuilder::new(schema.clone())
            .with_strict_mode(strict)
            .build_decoder()
            .unwrap();
        super::super::encode::one_row(&mut decoder, payload).is_ok()
            && matches!(decoder.flush(), Ok(Some(batch)) if batch.num_rows() == 1)
    }

    const PAYLOADS: &[&[u8]] = &[
        br#"{"device_id":"a","seq":1,"ts":1795948920000,"temperature":20.5,"site":"n"}"#,
        br#"  {"device_id":"a","small":-2147483648,"ratio":1.5,"ok":true,"day":null}  "#,
        br#"{"device_id":"a","ts":"2026-11-29T10:42:00Z","temperature":-0,"ratio":null}"#,
        br#"{"device_id":"a","seq":9223372036854775807,"ts":1.5e12,"temperature":1e300}"#,
        br#"{"device_id":"a","unknown":{"nested":[1,{"x":null}]},"ok":false}"#,
        br#"{"device_id":"a","seq":9223372036854775808}"#,
        br#"{"device_id":"a","seq":-9223372036854775809}"#,
        br#"{"device_id":"a","seq":1.0}"#,
        br#"{"device_id":"a","seq":"1"}"#,
        br#"{"device_id":"a","small":2147483648}"#,
        br#"{"device_id":"a","ratio":3.5e38}"#,
        br#"{"device_id":"a","temperature":1e400}"#,
        br#"{"device_id":"a","temperature":"20.5"}"#,
        br#"{"device_id":"a","ts":"yesterday"}"#,
        br#"{"device_id":"a","ts":"2026-11-29"}"#,
        br#"{"device_id":"a","ts":18446744073709551616}"#,
        br#"{"device_id":"a","day":"2026-11-29"}"#,
        br#"{"device_id":"a","day":20000}"#,
        br#"{"device_id":"a","ok":1}"#,
        br#"{"device_id":"a","ok":"true"}"#,
        br#"{"device_id":7}"#,
        br#"{"device_id":null}"#,
        br#"{"device_id":["a"]}"#,
        br#"{"seq":1}"#,
        br#"{}"#,
        br#"{"device_id":"a","device_id":"b"}"#,
        br#"{"device_id":"a","seq":1,"seq":null}"#,
        br#"{"device_id":"a\"b"}"#,
        br#"{"device_id":"a","other":"\ud800"}"#,
        b"{\"device_id\":\"a\",\"other\":\"\xff\"}",
        br#"{"device_id":"a"} {"device_id":"b"}"#,
        br#"{"device_id":"a"}x"#,
        br#"{"device_id":"a""#,
        br#"[{"device_id":"a"}]"#,
        br#"null"#,
        b"",
        b"   ",
        br#""text""#,
    ];

    #[test]
    fn passes_only_payloads_arrow_json_takes_as_one_row_and_reads_fields_as_partitioning_does() {
        let wanted = crate::template::top_level_names(["device_id", "ts"]);
        for strict in [false, true] {
            let (schema, check) = schema(strict);
            let mut passed = Vec::new();
            for (index, payload) in PAYLOADS.iter().enumerate() {
                let event = Event::new(payload.to_vec(), "t");
                let scanned = check.scan(&event, &wanted);
                let shown = String::from_utf8_lossy(payload);
                if scanned.fits {
                    passed.push(index);
                    assert!(
                        arrow_takes(&schema, strict, payload),
                        "passed, but arrow-json refuses it (strict {strict}): {shown}"
                    );
                }
                assert_eq!(
                    scanned.fields,
                    template::payload_fields(&event, &wanted),
                    "{shown}"
                );
            }
            // The everyday shapes pass (the first five, but those with a field the schema
            // does not declare when strict),
            // and a date or a number beyond 64 bits for a timestamp, which arrow-json reads
            // as midnight and as a float.
            let everyday: &[usize] = if strict { &[1, 2, 3] } else { &[0, 1, 2, 3, 4] };
            assert_eq!(passed, [everyday, &[14, 15]].concat(), "strict {strict}");
        }
    }
}
