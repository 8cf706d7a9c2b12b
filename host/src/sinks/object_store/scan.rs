//! One pass over each payload before it is grouped and encoded: it reads the fields the
//! partition template names and, under a declared schema, tells whether arrow-json is
//! certain to take the payload as one row, and if so hands over that row's values as
//! arrow-json would convert them ([`Cell`]), from which the columns are built
//! ([`super::columns`]): such a payload is read once, not once here and once more by
//! arrow-json's tape decoder.
//!
//! Arrow-json finds most problems (a value of the wrong type, a missing required field,
//! an unknown field in strict mode) only when its buffered rows are flushed into
//! arrays, and a failed flush loses every row buffered with the culprit. So without
//! knowing beforehand, every group of events had to be flushed on its own to keep the
//! dead-letter guarantee: dozens of tiny record batches per batch of events, then a
//! concatenation. An event this check passes is instead added to its object's
//! columns, flushed thousands of rows at a time. An event it does not pass
//! takes the exact path (decoded and flushed with its group, and on failure one by one,
//! so that only the culprits are dead-lettered, with arrow-json's own reason).
//!
//! The check is conservative: it passes only shapes arrow-json accepts without doubt (a
//! string for a string column, an integer in range for an integer column, a number or
//! a string it parses itself for a timestamp, ...) and leaves anything else to the exact
//! path, including valid events it does not vouch for: a date column's value, a number
//! given as a string, a payload with an escape (`\`), a number with an exponent, or
//! invalid UTF-8. It is a byte scanner of JSON's grammar rather than a serde_json
//! parse: a serde_json pass cost as much as the flushes it saved. The same pass
//! finds the partition fields, so that partitioning costs no second parse.

use arrow_array::timezone::Tz;
use arrow_schema::{DataType, Schema, TimeUnit};

use super::cursor::{Cursor, Value};
use crate::event::Event;
use crate::template;

/// A payload's top-level fields that partitioning reads, in the order of the names it
/// asked for (none for one the payload lacks, or every one when the payload is not a
/// JSON object). Refilled per event: a buffer, not a map per event.
pub type Fields = Vec<Option<FieldValue>>;

/// A partition field's value as a payload holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// A string without escapes, by where its contents are in the payload: the usual
    /// partition field (a device id) costs no copy.
    Text(usize, usize),
    /// Any other value.
    Json(serde_json::Value),
}

/// A [`FieldValue`] read in its payload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldRef<'a> {
    Text(&'a str),
    Json(&'a serde_json::Value),
}

impl FieldValue {
    /// The value in `payload`, the payload it was read from.
    pub fn get<'a>(&'a self, payload: &'a [u8]) -> FieldRef<'a> {
        match self {
            FieldValue::Text(start, end) => FieldRef::Text(
                std::str::from_utf8(&payload[*start..*end]).expect("scanned as UTF-8"),
            ),
            FieldValue::Json(value) => FieldRef::Json(value),
        }
    }
}

/// A value of a row the check passed, converted by arrow-json's rules for its column:
/// what that column's builder appends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    /// Null, or a field the payload lacks.
    Null,
    Bool(bool),
    /// A string's contents in the payload (it holds no escape).
    Text(usize, usize),
    Int32(i32),
    /// An `int64`, or a timestamp in the column's unit.
    Int64(i64),
    Float32(f32),
    Float64(f64),
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
    Timestamp(TimeUnit),
    /// A type whose values the check leaves to arrow-json (dates): only null passes.
    NullOnly,
}

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
                DataType::Timestamp(
                    unit @ (TimeUnit::Millisecond | TimeUnit::Microsecond),
                    Some(zone),
                ) if zone.as_ref() == "+00:00" => Expect::Timestamp(*unit),
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
    /// into `fields`, and whether it fits the schema for sure. If it does, its row (a
    /// cell per column, in the schema's order) is appended to `row`s.
    pub fn scan(
        &self,
        event: &Event,
        wanted: &[String],
        fields: &mut Fields,
        rows: &mut Vec<Cell>,
    ) -> bool {
        let payload = &event.payload;
        let before = rows.len();
        // Invalid UTF-8 is left to the exact path, which names it.
        if std::str::from_utf8(payload).is_ok()
            && let Some(fits) = self.scan_object(payload, wanted, fields, rows)
        {
            if !fits {
                rows.truncate(before);
            }
            return fits;
        }
        rows.truncate(before);
        // Not a payload this pass reads (not an object, an escape, an exponent, ...):
        // the fields as partitioning reads them anywhere else, and the exact path
        // decides.
        unchecked_fields(event, wanted, fields);
        false
    }

    /// [`RowCheck::scan`] of a UTF-8 payload, or none to leave it to serde_json and
    /// the exact path.
    fn scan_object(
        &self,
        payload: &[u8],
        wanted: &[String],
        fields: &mut Fields,
        rows: &mut Vec<Cell>,
    ) -> Option<bool> {
        let mut cursor = Cursor::new(payload);
        // The value of each wanted field (the last, as a JSON object reader keeps it).
        let mut found: [Option<(usize, usize, Value)>; MAX_WANTED] = [None; MAX_WANTED];
        if wanted.len() > MAX_WANTED {
            return None;
        }
        let mut fits = true;
        let mut seen = 0u128;
        let row = rows.len();
        rows.resize(row + self.columns.len(), Cell::Null);
        let mut next_column = 0;
        cursor.skip_whitespace();
        cursor.expect(b'{')?;
        cursor.skip_whitespace();
        if cursor.peek() == Some(b'}') {
            cursor.at += 1;
        } else {
            loop {
                let (key_start, key_end) = cursor.string()?;
                let key = &payload[key_start..key_end];
                cursor.skip_whitespace();
                cursor.expect(b':')?;
                cursor.skip_whitespace();
                let value_start = cursor.at;
                let value = cursor.value(0)?;
                if let Some(index) = wanted.iter().position(|name| name.as_bytes() == key) {
                    found[index] = Some((value_start, cursor.at, value));
                }
                // Payloads mostly hold the columns in the schema's order: the one after
                // the last found is tried first.
                let column = match self.columns.get(next_column) {
                    Some(column) if column.name.as_bytes() == key => Some(next_column),
                    _ => self.columns.iter().position(|c| c.name.as_bytes() == key),
                };
                match column {
                    Some(index) => {
                        next_column = index + 1;
                        // A repeated column: arrow-json keeps the last, the check does
                        // not try.
                        fits &= seen & (1 << index) == 0;
                        seen |= 1 << index;
                        if fits {
                            match self.cell(&self.columns[index], value, payload) {
                                Some(cell) => rows[row + index] = cell,
                                None => fits = false,
                            }
                        }
                    }
                    None => fits &= !self.reject_unknown_fields,
                }
                cursor.skip_whitespace();
                match cursor.next()? {
                    b',' => cursor.skip_whitespace(),
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        cursor.skip_whitespace();
        if cursor.at != payload.len() {
            return None;
        }
        fits &= seen & self.required == self.required;
        fields.clear();
        for value in &found[..wanted.len()] {
            fields.push(match *value {
                Some((_, _, Value::Text(start, end))) => Some(FieldValue::Text(start, end)),
                Some((start, end, _)) => Some(FieldValue::Json(
                    serde_json::from_slice(&payload[start..end]).ok()?,
                )),
                None => None,
            });
        }
        Some(fits)
    }

    /// `value` as arrow-json converts it for `column`, if it takes it for sure. The
    /// conversions are arrow-json's own (`lexical_core` for numbers, with a timestamp
    /// from a fractional number truncated; `string_to_datetime` in the schema's zone
    /// for timestamp text).
    fn cell(&self, column: &CheckedColumn, value: Value, payload: &[u8]) -> Option<Cell> {
        let text = |start: usize, end: usize| {
            std::str::from_utf8(&payload[start..end]).expect("checked as UTF-8")
        };
        match (value, column.expect) {
            (Value::Null, _) => column.nullable.then_some(Cell::Null),
            (Value::Bool(value), Expect::Bool) => Some(Cell::Bool(value)),
            (Value::Text(start, end), Expect::Text) => Some(Cell::Text(start, end)),
            (Value::Text(start, end), Expect::Timestamp(unit)) => {
                let time =
                    arrow_cast::parse::string_to_datetime(&self.utc, text(start, end)).ok()?;
                Some(Cell::Int64(match unit {
                    TimeUnit::Millisecond => time.timestamp_millis(),
                    _ => time.timestamp_micros(),
                }))
            }
            // Arrow-json reads any number for a timestamp (as a float beyond 64 bits).
            (Value::Number { start, end, .. }, Expect::Timestamp(_)) => {
                let number = &payload[start..end];
                lexical_core::parse::<i64>(number)
                    .or_else(|_| lexical_core::parse::<f64>(number).map(|float| float as i64))
                    .ok()
                    .map(Cell::Int64)
            }
            (Value::Number { start, end, .. }, Expect::Float64) => {
                lexical_core::parse::<f64>(&payload[start..end])
                    .ok()
                    .map(Cell::Float64)
            }
            // Arrow-json takes a value beyond a 32-bit float's range too (as infinity, or
            // refuses it): the check leaves it to arrow-json.
            (Value::Number { start, end, .. }, Expect::Float32) => {
                lexical_core::parse::<f32>(&payload[start..end])
                    .ok()
                    .filter(|float| float.is_finite())
                    .map(Cell::Float32)
            }
            // Arrow-json reads an integer that does not fit as a float first: the check
            // passes only integers that fit.
            (
                Value::Number {
                    start,
                    end,
                    integer: true,
                },
                Expect::Int64,
            ) => lexical_core::parse::<i64>(&payload[start..end])
                .ok()
                .map(Cell::Int64),
            (
                Value::Number {
                    start,
                    end,
                    integer: true,
                },
                Expect::Int32,
            ) => lexical_core::parse::<i32>(&payload[start..end])
                .ok()
                .map(Cell::Int32),
            _ => None,
        }
    }
}

/// Wanted fields a payload is scanned for at most (more: serde_json reads them).
const MAX_WANTED: usize = 8;
/// The fields `wanted` of `event`'s payload into `fields`, without a schema check.
pub fn unchecked_fields(event: &Event, wanted: &[String], fields: &mut Fields) {
    fields.clear();
    let mut object = match wanted.is_empty() {
        true => None,
        false => template::payload_fields(event, wanted),
    };
    let object = object.as_mut().and_then(serde_json::Value::as_object_mut);
    match object {
        Some(object) => fields.extend(
            wanted
                .iter()
                .map(|name| object.remove(name).map(FieldValue::Json)),
        ),
        None => fields.resize(wanted.len(), None),
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

    /// Fields as the JSON values they stand for, wherever they were read.
    fn as_json(fields: &Fields, payload: &[u8]) -> Vec<Option<serde_json::Value>> {
        let json = |field: &FieldValue| match field.get(payload) {
            FieldRef::Text(text) => serde_json::Value::String(text.to_owned()),
            FieldRef::Json(value) => value.clone(),
        };
        fields
            .iter()
            .map(|field| field.as_ref().map(json))
            .collect()
    }

    const PAYLOADS: &[&[u8]] = &[
        br#"{"device_id":"a","seq":1,"ts":1795948920000,"temperature":20.5,"site":"n"}"#,
        br#"  {"device_id":"a","small":-2147483648,"ratio":1.5,"ok":true,"day":null}  "#,
        br#"{"device_id":"a","ts":"2026-11-29T10:42:00Z","temperature":-0,"ratio":null}"#,
        br#"{"device_id":"a","seq":9223372036854775807,"ts":1500000000000.5,"temperature":-1.25}"#,
        br#"{"device_id":"a","unknown":{"nested":[1,{"x":null}]},"ok":false}"#,
        br#"{"device_id":"a","seq":9223372036854775808}"#,
        br#"{"device_id":"a","seq":-9223372036854775809}"#,
        br#"{"device_id":"a","seq":1.0}"#,
        br#"{"device_id":"a","seq":"1"}"#,
        br#"{"device_id":"a","small":2147483648}"#,
        br#"{"device_id":"a","ratio":3.5e38}"#,
        br#"{"device_id":"a","temperature":1e400}"#,
        br#"{"device_id":"a","temperature":1.5e3}"#,
        br#"{"device_id":"a","seq":01}"#,
        br#"{"device_id":"a","seq":1.}"#,
        br#"{"device_id":"a","seq":-}"#,
        b"{\"device_id\":\"a\",\"site\":\"tab\there\"}",
        br#"{"device_id":"a","x":[1,]}"#,
        br#"{"device_id":"a",}"#,
        br#"{"device_id":"a" "seq":1}"#,
        br#"{"device_id":"a","x":tru}"#,
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
                let mut fields = Vec::new();
                // A row from before stays; this payload's is added only if it fits.
                let mut rows = vec![Cell::Bool(true)];
                let fits = check.scan(&event, &wanted, &mut fields, &mut rows);
                let shown = String::from_utf8_lossy(payload);
                let width = if fits { schema.fields().len() } else { 0 };
                assert_eq!(rows.len(), 1 + width, "{shown}");
                assert_eq!(rows[0], Cell::Bool(true), "{shown}");
                if fits {
                    passed.push(index);
                    assert!(
                        arrow_takes(&schema, strict, payload),
                        "passed, but arrow-json refuses it (strict {strict}): {shown}"
                    );
                }
                let mut read_alone = Vec::new();
                unchecked_fields(&event, &wanted, &mut read_alone);
                assert_eq!(
                    as_json(&fields, payload),
                    as_json(&read_alone, payload),
                    "{shown}"
                );
            }
            // The everyday shapes pass (the first five, but those with a field the schema
            // does not declare when strict),
            // and a date or a number beyond 64 bits for a timestamp, which arrow-json reads
            // as midnight and as a float.
            let everyday: &[usize] = if strict { &[1, 2, 3] } else { &[0, 1, 2, 3, 4] };
            let as_timestamps = [&br#""ts":"2026-11-29"}"#[..], &br#"709551616}"#[..]]
                .map(|end| PAYLOADS.iter().position(|p| p.ends_with(end)).unwrap());
            assert_eq!(
                passed,
                [everyday, &as_timestamps[..]].concat(),
                "strict {strict}"
            );
        }
    }
}
