//! Stored objects back into event payloads: a Parquet row becomes one JSON object, a
//! JSON-lines line its exact bytes again.

use std::io::Read;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// How an object is stored, as the `object_store` sink names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    JsonLines,
    JsonLinesGzip,
    JsonLinesZstd,
}

impl Format {
    /// The format of an object called `name`; `None` for other files (`_SUCCESS`,
    /// checksums, a reader's metadata), which a replay passes over.
    pub fn of(name: &str) -> Option<Format> {
        let formats = [
            (".parquet", Format::Parquet),
            (".jsonl", Format::JsonLines),
            (".jsonl.gz", Format::JsonLinesGzip),
            (".jsonl.zst", Format::JsonLinesZstd),
        ];
        formats
            .into_iter()
            .find(|(extension, _)| name.ends_with(extension))
            .map(|(_, format)| format)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a readable Parquet file: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("cannot turn Parquet rows into JSON: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("cannot decompress: {0}")]
    Decompress(#[from] std::io::Error),
}

/// Decode `data` and hand its payloads to `emit` in chunks of up to `rows`, in stored
/// order. Stops early, without error, when `emit` returns false (the reader is gone).
pub fn decode(
    format: Format,
    data: Bytes,
    rows: usize,
    mut emit: impl FnMut(Vec<Bytes>) -> bool,
) -> Result<(), DecodeError> {
    match format {
        Format::Parquet => {
            let reader = ParquetRecordBatchReaderBuilder::try_new(data)?
                .with_batch_size(rows)
                .build()?;
            for batch in reader {
                if !emit(json_rows(&batch?)?) {
                    break;
                }
            }
            Ok(())
        }
        Format::JsonLines => {
            emit_lines(data, rows, emit);
            Ok(())
        }
        Format::JsonLinesGzip => {
            let mut text = Vec::new();
            flate2::read::MultiGzDecoder::new(&data[..]).read_to_end(&mut text)?;
            emit_lines(Bytes::from(text), rows, emit);
            Ok(())
        }
        Format::JsonLinesZstd => {
            let text = zstd::stream::decode_all(&data[..])?;
            emit_lines(Bytes::from(text), rows, emit);
            Ok(())
        }
    }
}

/// Lines of `text` as slices of it (no copy), without blank lines.
fn emit_lines(text: Bytes, rows: usize, mut emit: impl FnMut(Vec<Bytes>) -> bool) {
    let mut chunk = Vec::with_capacity(rows);
    let mut start = 0;
    while start < text.len() {
        let end = text[start..]
            .iter()
            .position(|&byte| byte == b'\n')
            .map_or(text.len(), |at| start + at);
        let line = text.slice(start..end);
        let line = match line.last() {
            Some(b'\r') => line.slice(..line.len() - 1),
            _ => line,
        };
        if !line.is_empty() {
            chunk.push(line);
        }
        if chunk.len() == rows && !emit(std::mem::replace(&mut chunk, Vec::with_capacity(rows))) {
            return;
        }
        start = end + 1;
    }
    if !chunk.is_empty() {
        emit(chunk);
    }
}

/// Each row of `batch` as one JSON object, fields in column order, nulls left out.
/// Timestamps become the integers the columns hold (epoch milliseconds for
/// `timestamp_ms`), as the events carried them before they were stored.
fn json_rows(batch: &RecordBatch) -> Result<Vec<Bytes>, arrow_schema::ArrowError> {
    let batch = timestamps_as_integers(batch)?;
    let mut writer = arrow_json::LineDelimitedWriter::new(Vec::new());
    writer.write(&batch)?;
    writer.finish()?;
    let text = Bytes::from(writer.into_inner());
    let mut rows = Vec::with_capacity(batch.num_rows());
    // JSON text escapes newlines inside strings, so every `\n` ends a row.
    emit_lines(text, batch.num_rows().max(1), |chunk| {
        rows.extend(chunk);
        true
    });
    Ok(rows)
}

fn timestamps_as_integers(batch: &RecordBatch) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let schema = batch.schema();
    if !schema
        .fields()
        .iter()
        .any(|field| matches!(field.data_type(), DataType::Timestamp(..)))
    {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if matches!(field.data_type(), DataType::Timestamp(..)) {
            fields.push(Field::new(field.name(), DataType::Int64, field.is_nullable()));
            columns.push(arrow_cast::cast(column, &DataType::Int64)?);
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
    use parquet::arrow::ArrowWriter;

    fn collect(format: Format, data: Bytes, rows: usize) -> Vec<Vec<String>> {
        let mut chunks = Vec::new();
        decode(format, data, rows, |chunk| {
            chunks.push(
                chunk
                    .iter()
                    .map(|row| String::from_utf8(row.to_vec()).unwrap())
                    .collect(),
            );
            true
        })
        .unwrap();
        chunks
    }

    #[test]
    fn formats_follow_the_sinks_extensions() {
        assert_eq!(Format::of("a/b.parquet"), Some(Format::Parquet));
        assert_eq!(Format::of("a/b.jsonl"), Some(Format::JsonLines));
        assert_eq!(Format::of("a/b.jsonl.gz"), Some(Format::JsonLinesGzip));
        assert_eq!(Format::of("a/b.jsonl.zst"), Some(Format::JsonLinesZstd));
        assert_eq!(Format::of("a/_SUCCESS"), None);
    }

    #[test]
    fn json_lines_come_back_as_their_exact_bytes_in_chunks() {
        let text = "{\"a\":1}\n\n{\"a\": 2}\r\nnot json\n{\"a\":3}";
        let chunks = collect(Format::JsonLines, Bytes::from(text), 2);
        assert_eq!(chunks, [vec!["{\"a\":1}", "{\"a\": 2}"], vec!["not json", "{\"a\":3}"]]);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gzip, text.as_bytes()).unwrap();
        let gzipped = Bytes::from(gzip.finish().unwrap());
        assert_eq!(collect(Format::JsonLinesGzip, gzipped, 10)[0].len(), 4);
        let zstd = Bytes::from(zstd::stream::encode_all(text.as_bytes(), 1).unwrap());
        assert_eq!(collect(Format::JsonLinesZstd, zstd, 10)[0].len(), 4);
    }

    #[test]
    fn parquet_rows_become_json_objects_with_integer_timestamps() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("device_id", DataType::Utf8, false),
            Field::new("temperature", DataType::Float64, true),
            Field::new("seq", DataType::Int64, false),
            Field::new(
                "ts",
                DataType::Timestamp(arrow_schema::TimeUnit::Millisecond, Some("+00:00".into())),
                true,
            ),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["d1", "d\n2", "d3"])),
                Arc::new(Float64Array::from(vec![Some(20.5), None, Some(-1.0)])),
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(
                    TimestampMillisecondArray::from(vec![Some(1_795_948_920_000), None, Some(5)])
                        .with_timezone("+00:00"),
                ),
            ],
        )
        .unwrap();
        let mut writer = ArrowWriter::try_new(Vec::new(), schema, None).unwrap();
        writer.write(&batch).unwrap();
        let data = Bytes::from(writer.into_inner().unwrap());
        let rows: Vec<serde_json::Value> = collect(Format::Parquet, data, 2)
            .concat()
            .iter()
            .map(|row| serde_json::from_str(row).unwrap())
            .collect();
        assert_eq!(
            rows,
            [
                serde_json::json!({"device_id": "d1", "temperature": 20.5, "seq": 1, "ts": 1_795_948_920_000_i64}),
                serde_json::json!({"device_id": "d\n2", "seq": 2}),
                serde_json::json!({"device_id": "d3", "temperature": -1.0, "seq": 3, "ts": 5}),
            ]
        );
    }

    #[test]
    fn a_corrupt_object_is_an_error_not_a_panic() {
        let error = decode(Format::Parquet, Bytes::from_static(b"PAR1 nonsense"), 10, |_| true)
            .unwrap_err();
        assert!(error.to_string().contains("Parquet"), "{error}");
        assert!(decode(Format::JsonLinesGzip, Bytes::from_static(b"no gzip"), 10, |_| true).is_err());
    }
}
