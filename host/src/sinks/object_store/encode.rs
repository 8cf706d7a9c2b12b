//! What an object holds: JSON lines (optionally gzip or zstd) or Parquet.
//!
//! Parquet columns come from the events' JSON payloads, either by a schema declared in
//! the config or inferred per object. A declared schema is checked as events arrive,
//! so an event that cannot fit it (not a JSON object, a value of the wrong type, a
//! missing required field, an unknown field when `reject_unknown_fields`) is rejected
//! with the reason and goes to the sink's dead-letter route; the rest of its batch is
//! kept. An inferred schema takes the union of the fields the object's events hold and
//! promotes conflicting types by one documented rule (arrow-json's): integers and
//! floats make a float, a scalar and a list make a list, any other mix makes a string
//! column holding each value's JSON text. Each object carries its own schema, so a new
//! field shows up as a new nullable column in the objects written after it appears.

use std::io::Write;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_json::ReaderBuilder;
use arrow_json::reader::Decoder;
use arrow_json::reader::infer_json_schema;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as ParquetCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Deserialize;

use super::columns::Rows;
use super::scan::{self, Cell, Fields, RowCheck};
use crate::event::Event;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Parquet,
    Jsonl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Snappy,
}

/// One declared Parquet column.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    /// `string`, `bool`, `int32`, `int64`, `float32`, `float64`, `date`,
    /// `timestamp_ms` or `timestamp_us` (from epoch numbers in that unit or RFC 3339 text).
    #[serde(rename = "type")]
    pub kind: String,
    /// An event without this field is rejected.
    #[serde(default)]
    pub required: bool,
}

fn data_type(name: &str) -> Result<DataType, String> {
    Ok(match name {
        "string" => DataType::Utf8,
        "bool" => DataType::Boolean,
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "float32" => DataType::Float32,
        "float64" => DataType::Float64,
        "date" => DataType::Date32,
        // An offset, not a zone name: zone names need the chrono-tz tables in arrow.
        "timestamp_ms" => DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
        "timestamp_us" => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        other => {
            return Err(format!(
                "unknown column type `{other}`; use string, bool, int32, int64, float32, \
                 float64, date, timestamp_ms or timestamp_us"
            ));
        }
    })
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("JSON to Arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("compressing: {0}")]
    Io(#[from] std::io::Error),
}

/// How every object of one sink is encoded.
#[derive(Debug)]
pub struct Encoder {
    format: Format,
    compression: Compression,
    schema: Option<SchemaRef>,
    reject_unknown_fields: bool,
    row_group_rows: usize,
    /// Under a declared schema: which payloads arrow-json takes for sure, and their
    /// rows ([`scan`]).
    check: Option<RowCheck>,
}

/// An object being filled.
pub enum Body {
    /// JSON lines, or Parquet whose schema is inferred when the object is finished.
    Lines(Vec<u8>),
    /// Parquet under a declared schema, encoded as events arrive.
    Parquet(Box<ParquetBody>),
}

/// An object's Parquet writer, and the rows made for it but not yet written: each
/// `write` and each record batch costs per column, so rows are gathered into writes of
/// [`WRITE_ROWS`]. The rows of events the schema check passes are built into `rows`
/// until then; the record batches of events that took the exact path wait in
/// `pending`.
pub struct ParquetBody {
    schema: SchemaRef,
    writer: ArrowWriter<Vec<u8>>,
    rows: Option<Rows>,
    /// The exact path's decoder, kept between groups (building one costs more than a
    /// small group's rows).
    decoder: Option<Decoder>,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
}

const WRITE_ROWS: usize = 8192;
/// Payload bytes `rows` takes at most before it is flushed: keeps its 32-bit string
/// offsets far from overflowing whatever the event sizes.
const BUFFER_BYTES: usize = 32 << 20;

impl ParquetBody {
    /// Add the rows [`Encoder::scan`] passed, as (payload, the row's cells), to the
    /// object's columns, flushing them every [`WRITE_ROWS`] rows.
    pub fn push_scanned<'a>(
        &mut self,
        scanned: impl IntoIterator<Item = (&'a [u8], &'a [Cell])>,
    ) -> Result<(), EncodeError> {
        for (payload, cells) in scanned {
            let rows = self
                .rows
                .get_or_insert_with(|| Rows::new(&self.schema, WRITE_ROWS));
            rows.push(payload, cells)?;
            if rows.len() >= WRITE_ROWS || rows.bytes() >= BUFFER_BYTES {
                self.flush_rows()?;
            }
        }
        Ok(())
    }

    /// The rows built so far into `pending`.
    fn flush_rows(&mut self) -> Result<(), EncodeError> {
        match self.rows.take() {
            Some(rows) => self.add(rows.finish()?),
            None => Ok(()),
        }
    }

    fn add(&mut self, batch: RecordBatch) -> Result<(), EncodeError> {
        self.pending_rows += batch.num_rows();
        self.pending.push(batch);
        if self.pending_rows >= WRITE_ROWS {
            self.write_pending()?;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> Result<(), EncodeError> {
        match self.pending.as_slice() {
            [] => {}
            [rows] => self.writer.write(rows)?,
            [first, ..] => {
                let rows = arrow_select::concat::concat_batches(&first.schema(), &self.pending)?;
                self.writer.write(&rows)?;
            }
        }
        self.pending.clear();
        self.pending_rows = 0;
        Ok(())
    }
}

impl Encoder {
    pub fn new(
        format: Format,
        compression: Option<Compression>,
        schema: Option<&[Column]>,
        reject_unknown_fields: bool,
        row_group_rows: usize,
    ) -> Result<Self, String> {
        let compression = match (format, compression) {
            (Format::Parquet, None) => Compression::Zstd,
            (Format::Jsonl, None) => Compression::None,
            (Format::Jsonl, Some(Compression::Snappy)) => {
                return Err("JSON lines take `compression` none, gzip or zstd".into());
            }
            (Format::Parquet, Some(Compression::Gzip)) => {
                return Err("Parquet takes `compression` none, zstd or snappy".into());
            }
            (_, Some(chosen)) => chosen,
        };
        let row_group_rows = row_group_rows.max(1);
        if format == Format::Jsonl && schema.is_some() {
            return Err("`schema` applies to Parquet only".into());
        }
        let schema = schema
            .map(|columns| -> Result<SchemaRef, String> {
                let fields = columns
                    .iter()
                    .map(|c| Ok(Field::new(&c.name, data_type(&c.kind)?, !c.required)))
                    .collect::<Result<Vec<_>, String>>()?;
                Ok(Arc::new(Schema::new(fields)))
            })
            .transpose()?;
        let check = schema
            .as_deref()
            .and_then(|schema| RowCheck::new(schema, reject_unknown_fields));
        Ok(Encoder {
            format,
            compression,
            schema,
            reject_unknown_fields,
            row_group_rows,
            check,
        })
    }

    /// Read `event` once for the partition fields `wanted` (into `fields`) and, under
    /// a declared schema, whether it fits for sure: then its row is appended to `rows`
    /// (what [`ParquetBody::push_scanned`] takes), else it takes [`Encoder::append`].
    pub fn scan(
        &self,
        event: &Event,
        wanted: &[String],
        fields: &mut Fields,
        rows: &mut Vec<Cell>,
    ) -> bool {
        match &self.check {
            Some(check) => check.scan(event, wanted, fields, rows),
            None => {
                scan::unchecked_fields(event, wanted, fields);
                false
            }
        }
    }

    /// The cells of one row [`Encoder::scan`] reads.
    pub fn row_width(&self) -> usize {
        self.schema
            .as_ref()
            .map_or(0, |schema| schema.fields().len())
    }

    /// The object name's extension.
    pub fn extension(&self) -> &'static str {
        match (self.format, self.compression) {
            (Format::Parquet, _) => "parquet",
            (Format::Jsonl, Compression::Gzip) => "jsonl.gz",
            (Format::Jsonl, Compression::Zstd) => "jsonl.zst",
            (Format::Jsonl, _) => "jsonl",
        }
    }

    pub fn body(&self) -> Result<Body, EncodeError> {
        Ok(match &self.schema {
            Some(schema) => Body::Parquet(Box::new(ParquetBody {
                schema: schema.clone(),
                writer: ArrowWriter::try_new(Vec::new(), schema.clone(), Some(self.properties()))?,
                rows: None,
                decoder: None,
                pending: Vec::new(),
                pending_rows: 0,
            })),
            None => Body::Lines(Vec::new()),
        })
    }

    fn properties(&self) -> WriterProperties {
        let compression = match self.compression {
            Compression::Zstd => ParquetCompression::ZSTD(ZstdLevel::default()),
            Compression::Snappy => ParquetCompression::SNAPPY,
            _ => ParquetCompression::UNCOMPRESSED,
        };
        WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(self.row_group_rows))
            .build()
    }

    /// Add `events` to `body`, by the exact path. Returns the events that cannot be
    /// stored, by index into `events`, with why; the others are in `body`.
    pub fn append(
        &self,
        body: &mut Body,
        events: &[&Event],
    ) -> Result<Vec<(usize, String)>, EncodeError> {
        match body {
            Body::Lines(lines) if self.format == Format::Jsonl => {
                for event in events {
                    crate::sinks::file::line(lines, event, crate::sinks::file::Format::Payload);
                }
                Ok(Vec::new())
            }
            Body::Lines(lines) => {
                let mut rejected = Vec::new();
                for (index, event) in events.iter().enumerate() {
                    if is_json_object(&event.payload) {
                        lines.extend_from_slice(&event.payload);
                        lines.push(b'\n');
                    } else {
                        rejected.push((index, "payload is not a JSON object".to_owned()));
                    }
                }
                Ok(rejected)
            }
            Body::Parquet(parquet) => {
                let schema = parquet.schema.clone();
                // Rows keep their order: the rows built before go first.
                parquet.flush_rows()?;
                let (batch, rejected) = match self.decode_reusing(parquet, &schema, events) {
                    Ok(batch) => (batch, Vec::new()),
                    Err(_) => {
                        // Find the culprits one by one, then take the rest together.
                        let mut rejected = Vec::new();
                        let mut fit = Vec::with_capacity(events.len());
                        let mut fit_indices = Vec::with_capacity(events.len());
                        for (index, event) in events.iter().enumerate() {
                            match self.decode(&schema, &[*event]) {
                                Ok(_) => {
                                    fit.push(*event);
                                    fit_indices.push(index);
                                }
                                Err(error) => rejected.push((index, reason(error))),
                            }
                        }
                        match self.decode(&schema, &fit) {
                            Ok(batch) => (batch, rejected),
                            // Rows that fit one by one but not together: refuse them
                            // rather than retry a batch that can never be encoded.
                            Err(error) => {
                                let why = reason(error);
                                rejected.extend(fit_indices.into_iter().map(|i| (i, why.clone())));
                                (None, rejected)
                            }
                        }
                    }
                };
                if let Some(batch) = batch {
                    parquet.add(batch)?;
                }
                Ok(rejected)
            }
        }
    }

    fn decoder(
        &self,
        schema: &SchemaRef,
        rows: usize,
    ) -> Result<Decoder, arrow_schema::ArrowError> {
        ReaderBuilder::new(schema.clone())
            .with_batch_size(rows.max(1))
            .with_strict_mode(self.reject_unknown_fields)
            .build_decoder()
    }

    /// Decode `events` with the object's own decoder when they fit it (building a
    /// decoder costs more than a small batch's rows); one that failed is replaced, as
    /// its state is then unknown.
    fn decode_reusing(
        &self,
        parquet: &mut ParquetBody,
        schema: &SchemaRef,
        events: &[&Event],
    ) -> Result<Option<RecordBatch>, arrow_schema::ArrowError> {
        if events.len() > WRITE_ROWS {
            return self.decode(schema, events);
        }
        let decoder = match &mut parquet.decoder {
            Some(decoder) => decoder,
            empty => empty.insert(self.decoder(schema, WRITE_ROWS)?),
        };
        let decoded = decode_into(decoder, events);
        if decoded.is_err() {
            parquet.decoder = None;
        }
        decoded
    }

    fn decode(
        &self,
        schema: &SchemaRef,
        events: &[&Event],
    ) -> Result<Option<RecordBatch>, arrow_schema::ArrowError> {
        decode_into(&mut self.decoder(schema, events.len())?, events)
    }
}

/// Decode each event's payload as exactly one JSON object into `decoder`, then flush.
fn decode_into(
    decoder: &mut Decoder,
    events: &[&Event],
) -> Result<Option<RecordBatch>, arrow_schema::ArrowError> {
    for event in events {
        one_row(decoder, &event.payload)?;
    }
    decoder.flush()
}

/// Decode `payload` into `decoder`, which must take it as exactly one JSON object.
pub(super) fn one_row(
    decoder: &mut Decoder,
    payload: &[u8],
) -> Result<(), arrow_schema::ArrowError> {
    // The decoder reads a stream: a payload holding half an object, or two, would
    // shift every row after it.
    let before = decoder.len();
    let read = decoder.decode(payload)?;
    if read != payload.len() || decoder.has_partial_record() || decoder.len() != before + 1 {
        return Err(arrow_schema::ArrowError::JsonError(
            "payload is not one JSON object".into(),
        ));
    }
    Ok(())
}

impl Encoder {
    /// The finished object's bytes.
    pub fn finish(&self, body: Body) -> Result<Bytes, EncodeError> {
        let bytes = match body {
            Body::Parquet(mut parquet) => {
                parquet.flush_rows()?;
                parquet.write_pending()?;
                parquet.writer.into_inner()?
            }
            Body::Lines(lines) if self.format == Format::Parquet => self.infer_and_write(&lines)?,
            Body::Lines(lines) => match self.compression {
                Compression::Gzip => {
                    let mut encoder =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                    encoder.write_all(&lines)?;
                    encoder.finish()?
                }
                Compression::Zstd => zstd::encode_all(lines.as_slice(), 3)?,
                _ => lines,
            },
        };
        Ok(Bytes::from(bytes))
    }

    fn infer_and_write(&self, lines: &[u8]) -> Result<Vec<u8>, EncodeError> {
        let (inferred, _) = infer_json_schema(lines, None)?;
        // Inference walks a hash map; name order keeps one object's columns stable.
        let mut fields: Vec<_> = inferred.fields().iter().cloned().collect();
        fields.sort_by(|a, b| a.name().cmp(b.name()));
        let schema = Arc::new(Schema::new(fields));
        let mut decoder = ReaderBuilder::new(schema.clone())
            .with_batch_size(self.row_group_rows)
            .with_coerce_primitive(true)
            .build_decoder()?;
        let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(self.properties()))?;
        let mut rest = lines;
        while !rest.is_empty() {
            let read = decoder.decode(rest)?;
            rest = &rest[read..];
            if let Some(batch) = decoder.flush()? {
                writer.write(&batch)?;
            }
        }
        if let Some(batch) = decoder.flush()? {
            writer.write(&batch)?;
        }
        Ok(writer.into_inner()?)
    }
}

fn is_json_object(payload: &[u8]) -> bool {
    payload.trim_ascii_start().first() == Some(&b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok()
}

/// An Arrow error as a dead letter's reason, without the crate's prefix.
fn reason(error: arrow_schema::ArrowError) -> String {
    match error {
        arrow_schema::ArrowError::JsonError(text) => text,
        other => other.to_string(),
    }
}
