//! Arrow columns built straight from the rows the scan vouched for ([`scan::Cell`]):
//! each such payload is read once, by the scan, instead of a second time by
//! arrow-json's tape decoder. The scan converts each value by arrow-json's own rules,
//! so these record batches are the ones arrow-json makes of the same rows (see
//! `builds_the_record_batches_arrow_json_decodes` below), and the Parquet bytes are the
//! same.
//!
//! [`scan::Cell`]: super::scan::Cell

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_schema::{ArrowError, DataType, SchemaRef, TimeUnit};

use super::scan::Cell;

/// Rows of the declared schema gathered column by column.
pub struct Rows {
    schema: SchemaRef,
    columns: Vec<Column>,
    rows: usize,
    /// Payload bytes of the rows taken.
    bytes: usize,
}

/// One column's builder, by the cells the scan hands over for its type.
enum Column {
    Text(StringBuilder),
    Bool(BooleanBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    TimestampMs(TimestampMillisecondBuilder),
    TimestampUs(TimestampMicrosecondBuilder),
    /// A type the scan passes only nulls for (dates): a count, then an array of nulls.
    Nulls(DataType, usize),
}

/// Bytes reserved per row for a string column's text.
const TEXT_BYTES_PER_ROW: usize = 16;

impl Rows {
    /// Room for `capacity` rows of `schema`.
    pub fn new(schema: &SchemaRef, capacity: usize) -> Rows {
        let columns = schema
            .fields()
            .iter()
            .map(|field| Column::new(field.data_type(), capacity))
            .collect();
        Rows {
            schema: schema.clone(),
            columns,
            rows: 0,
            bytes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    /// Payload bytes of the rows taken.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Append the row `cells` (one per column, in the schema's order) that the scan read
    /// in `payload`.
    pub fn push(&mut self, payload: &[u8], cells: &[Cell]) -> Result<(), ArrowError> {
        for (column, cell) in self.columns.iter_mut().zip(cells) {
            column.push(payload, *cell)?;
        }
        self.rows += 1;
        self.bytes += payload.len();
        Ok(())
    }

    /// The rows as one record batch.
    pub fn finish(self) -> Result<RecordBatch, ArrowError> {
        let columns = self.columns.into_iter().map(Column::finish).collect();
        RecordBatch::try_new_with_options(
            self.schema,
            columns,
            &RecordBatchOptions::new().with_row_count(Some(self.rows)),
        )
    }
}

impl Column {
    fn new(data_type: &DataType, capacity: usize) -> Column {
        match data_type {
            DataType::Utf8 => Column::Text(StringBuilder::with_capacity(
                capacity,
                capacity * TEXT_BYTES_PER_ROW,
            )),
            DataType::Boolean => Column::Bool(BooleanBuilder::with_capacity(capacity)),
            DataType::Int32 => Column::Int32(Int32Builder::with_capacity(capacity)),
            DataType::Int64 => Column::Int64(Int64Builder::with_capacity(capacity)),
            DataType::Float32 => Column::Float32(Float32Builder::with_capacity(capacity)),
            DataType::Float64 => Column::Float64(Float64Builder::with_capacity(capacity)),
            DataType::Timestamp(TimeUnit::Millisecond, _) => Column::TimestampMs(
                TimestampMillisecondBuilder::with_capacity(capacity)
                    .with_data_type(data_type.clone()),
            ),
            DataType::Timestamp(TimeUnit::Microsecond, _) => Column::TimestampUs(
                TimestampMicrosecondBuilder::with_capacity(capacity)
                    .with_data_type(data_type.clone()),
            ),
            other => Column::Nulls(other.clone(), 0),
        }
    }

    fn push(&mut self, payload: &[u8], cell: Cell) -> Result<(), ArrowError> {
        match (self, cell) {
            (Column::Text(builder), Cell::Text(start, end)) => {
                let text = std::str::from_utf8(&payload[start..end])
                    .map_err(|error| ArrowError::JsonError(error.to_string()))?;
                builder.append_value(text);
            }
            (Column::Bool(builder), Cell::Bool(value)) => builder.append_value(value),
            (Column::Int32(builder), Cell::Int32(value)) => builder.append_value(value),
            (Column::Int64(builder), Cell::Int64(value)) => builder.append_value(value),
            (Column::TimestampMs(builder), Cell::Int64(value)) => builder.append_value(value),
            (Column::TimestampUs(builder), Cell::Int64(value)) => builder.append_value(value),
            (Column::Float32(builder), Cell::Float32(value)) => builder.append_value(value),
            (Column::Float64(builder), Cell::Float64(value)) => builder.append_value(value),
            (Column::Text(builder), Cell::Null) => builder.append_null(),
            (Column::Bool(builder), Cell::Null) => builder.append_null(),
            (Column::Int32(builder), Cell::Null) => builder.append_null(),
            (Column::Int64(builder), Cell::Null) => builder.append_null(),
            (Column::TimestampMs(builder), Cell::Null) => builder.append_null(),
            (Column::TimestampUs(builder), Cell::Null) => builder.append_null(),
            (Column::Float32(builder), Cell::Null) => builder.append_null(),
            (Column::Float64(builder), Cell::Null) => builder.append_null(),
            (Column::Nulls(_, count), Cell::Null) => *count += 1,
            (_, cell) => {
                return Err(ArrowError::JsonError(format!(
                    "the scan read {cell:?}, which is not a value of its column's type"
                )));
            }
        }
        Ok(())
    }

    fn finish(self) -> ArrayRef {
        match self {
            Column::Text(mut builder) => Arc::new(builder.finish()),
            Column::Bool(mut builder) => Arc::new(builder.finish()),
            Column::Int32(mut builder) => Arc::new(builder.finish()),
            Column::Int64(mut builder) => Arc::new(builder.finish()),
            Column::Float32(mut builder) => Arc::new(builder.finish()),
            Column::Float64(mut builder) => Arc::new(builder.finish()),
            Column::TimestampMs(mut builder) => Arc::new(builder.finish()),
            Column::TimestampUs(mut builder) => Arc::new(builder.finish()),
            Column::Nulls(data_type, count) => arrow_array::new_null_array(&data_type, count),
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow_json::ReaderBuilder;
    use arrow_schema::{Field, Schema};

    use super::super::scan::RowCheck;
    use super::*;
    use crate::event::Event;

    #[test]
    fn builds_the_record_batches_arrow_json_decodes() {
        let utc = |unit| DataType::Timestamp(unit, Some("+00:00".into()));
        // Not in the order the payloads hold their fields.
        let schema = Arc::new(Schema::new(vec![
            Field::new("ts", utc(TimeUnit::Millisecond), true),
            Field::new("site", DataType::Utf8, true),
            Field::new("device_id", DataType::Utf8, false),
            Field::new("seq", DataType::Int64, true),
            Field::new("small", DataType::Int32, true),
            Field::new("temperature", DataType::Float64, true),
            Field::new("ratio", DataType::Float32, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("day", DataType::Date32, true),
            Field::new("at_us", utc(TimeUnit::Microsecond), true),
        ]));
        let payloads: &[&str] = &[
            r#"{"device_id":"sensor-01","seq":1,"ts":1795948920000,"temperature":20.5,"site":"north"}"#,
            r#"{"ok":true,"device_id":"","small":-2147483648,"ratio":1.1,"day":null,"at_us":1795948920000123}"#,
            r#"{"device_id":"é ü","ts":"2026-11-29T10:42:00.123Z","temperature":-0,"ratio":null,"at_us":"2026-11-29T10:42:00.123456+01:00"}"#,
            r#"{"device_id":"a","seq":9223372036854775807,"ts":1500000000000.9,"temperature":-1.25,"small":2147483647}"#,
            r#"{"device_id":"a","seq":-9223372036854775808,"ts":-1500000000000.9,"temperature":12345678901234567890}"#,
            r#"{"device_id":"a","ts":18446744073709551616,"at_us":-1.5,"ratio":0.1,"temperature":0.30000000000000004}"#,
            r#"{"device_id":"a","ts":"2026-11-29","at_us":"2026-11-29 10:42:00","ratio":16777217}"#,
            r#"{"device_id":"a","ok":false,"site":null,"seq":null,"small":null,"ts":null,"temperature":null,"at_us":null}"#,
            r#"  {"site":"south","unknown":{"nested":[1,{"x":null}]},"device_id":"b"}  "#,
            r#"{"device_id":"c","ratio":340282346638528859811704183484516925440.0}"#,
            r#"{"device_id":"d","ratio":3.4028235677973366e38}"#,
        ];
        let check = RowCheck::new(&schema, false).unwrap();
        let mut rows = Rows::new(&schema, 4);
        let mut decoder = ReaderBuilder::new(schema.clone()).build_decoder().unwrap();
        let mut passed = 0;
        for payload in payloads {
            let event = Event::new(payload.to_string(), "t");
            let mut cells = Vec::new();
            if check.scan(&event, &[], &mut Vec::new(), &mut cells) {
                passed += 1;
                rows.push(&event.payload, &cells).unwrap();
                super::super::encode::one_row(&mut decoder, &event.payload).unwrap();
            }
        }
        // Every payload but the last (an exponent, which the scan leaves to arrow-json).
        assert_eq!(passed, payloads.len() - 1);
        assert_eq!(rows.len(), passed);
        let built = rows.finish().unwrap();
        let decoded = decoder.flush().unwrap().unwrap();
        assert_eq!(built.schema(), decoded.schema());
        for (index, field) in schema.fields().iter().enumerate() {
            assert_eq!(
                built.column(index).to_data(),
                decoded.column(index).to_data(),
                "column {}",
                field.name()
            );
        }
        assert_eq!(built, decoded);
    }
}
