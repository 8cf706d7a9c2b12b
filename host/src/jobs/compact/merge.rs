//! Parquet objects merged into one, their rows and values unchanged: the columns are
//! the union of the inputs' (a column an input lacks is null in its rows), in the order
//! they first appear. Inputs whose columns disagree in type (an object whose
//! `temperature` was inferred as integers beside one of floats) are not merged
//! together: making them agree would change the values a replay reads back.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use arrow_schema::{ArrowError, Field, Schema, SchemaRef};
use bytes::Bytes;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

/// One input object, read.
pub struct Decoded {
    pub path: Path,
    /// Its columns, without the metadata a writer attached.
    schema: Schema,
    batches: Vec<RecordBatch>,
}

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{path} is not a readable Parquet file: {source}")]
    Read {
        path: Path,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("the columns do not fit together: {0}")]
    Columns(#[from] ArrowError),
    #[error("writing Parquet: {0}")]
    Write(#[from] parquet::errors::ParquetError),
}

/// Read the object at `path`, stored as `data`.
pub fn decode(path: Path, data: Bytes) -> Result<Decoded, MergeError> {
    let failed = |source| MergeError::Read {
        path: path.clone(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(data).map_err(failed)?;
    let schema = plain(builder.schema());
    let reader = builder.build().map_err(failed)?;
    let batches = reader
        .collect::<Result<Vec<_>, ArrowError>>()
        .map_err(|error| failed(error.into()))?;
    Ok(Decoded {
        path,
        schema,
        batches,
    })
}

/// `inputs` in runs whose columns merge, in order.
pub fn group(inputs: Vec<Decoded>) -> Vec<Vec<Decoded>> {
    let mut groups: Vec<Vec<Decoded>> = Vec::new();
    for input in inputs {
        let fits = groups.last().is_some_and(|group| {
            let schemas: Vec<&Schema> = group.iter().chain([&input]).map(|d| &d.schema).collect();
            merged_schema(&schemas).is_ok()
        });
        match groups.last_mut() {
            Some(group) if fits => group.push(input),
            _ => groups.push(vec![input]),
        }
    }
    groups
}

/// `inputs` as one Parquet object (zstd), and its rows.
pub fn encode(inputs: &[Decoded]) -> Result<(Bytes, u64), MergeError> {
    let schemas: Vec<&Schema> = inputs.iter().map(|input| &input.schema).collect();
    let schema = Arc::new(merged_schema(&schemas)?);
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties))?;
    let mut rows = 0;
    for batch in inputs.iter().flat_map(|input| &input.batches) {
        writer.write(&conform(batch, &schema)?)?;
        rows += batch.num_rows() as u64;
    }
    Ok((Bytes::from(writer.into_inner()?), rows))
}

/// The union of `schemas`' columns; a column some lack may be null.
fn merged_schema(schemas: &[&Schema]) -> Result<Schema, ArrowError> {
    let merged = Schema::try_merge(schemas.iter().map(|schema| (*schema).clone()))?;
    let fields: Vec<Field> = merged
        .fields()
        .iter()
        .map(|field| {
            let everywhere = schemas
                .iter()
                .all(|schema| schema.field_with_name(field.name()).is_ok());
            field
                .as_ref()
                .clone()
                .with_nullable(field.is_nullable() || !everywhere)
        })
        .collect();
    Ok(Schema::new(fields))
}

/// `batch` with `schema`'s columns: a missing one all null, an all-null one typed.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| -> Result<ArrayRef, ArrowError> {
            match batch.column_by_name(field.name()) {
                Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
                Some(column) => arrow_cast::cast(column, field.data_type()),
                None => Ok(new_null_array(field.data_type(), batch.num_rows())),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

/// `schema` without the schema's and the fields' metadata (a writer's notes, which
/// would refuse to merge when two writers noted differently).
fn plain(schema: &Schema) -> Schema {
    Schema::new(
        schema
            .fields()
            .iter()
            .map(|field| field.as_ref().clone().with_metadata(std::collections::HashMap::new()))
            .collect::<Vec<_>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, Int64Array, StringArray};
    use arrow_schema::DataType;

    fn object(columns: Vec<(&str, ArrayRef)>) -> Decoded {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        decode(Path::from("x.parquet"), Bytes::from(writer.into_inner().unwrap())).unwrap()
    }

    #[test]
    fn columns_are_united_and_types_that_disagree_are_not_merged() {
        let ints = || -> ArrayRef { Arc::new(Int64Array::from(vec![1, 2])) };
        let a = object(vec![("seq", ints()), ("t", Arc::new(Float64Array::from(vec![0.5, 1.5])))]);
        let b = object(vec![("seq", ints()), ("device", Arc::new(StringArray::from(vec!["d", "e"])))]);
        let c = object(vec![("seq", ints()), ("t", ints())]);
        let groups = group(vec![a, b, c]);
        assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
        let (data, rows) = encode(&groups[0]).unwrap();
        assert_eq!(rows, 4);
        let merged = decode(Path::from("m.parquet"), data).unwrap();
        let names: Vec<&str> = merged.schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["seq", "t", "device"]);
        assert_eq!(merged.schema.field(1).data_type(), &DataType::Float64);
        assert!(merged.schema.field(2).is_nullable());
        let batch = &merged.batches[0];
        assert_eq!(batch.column(2).null_count(), 2, "a's rows have no device");
        assert_eq!(batch.column(1).null_count(), 2, "b's rows have no t");
    }
}
