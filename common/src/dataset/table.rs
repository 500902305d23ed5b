//! A dataset file read whole, every column in its original type — for
//! outputs that hand rows back to the user (`carto select`, `carto suspects`).
//! Parquet columns keep their types; CSV and JSONL types are inferred from the
//! whole file by arrow's readers.

use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::Format;
use crate::{CartoError, Result};

fn concat(schema: SchemaRef, batches: Vec<RecordBatch>, what: &str) -> Result<RecordBatch> {
    concat_batches(&schema, &batches).map_err(|e| CartoError::invalid(format!("{what}: {e}")))
}

/// Reads every row and column of a Parquet, CSV or JSONL file.
pub fn read_table(path: &Path) -> Result<RecordBatch> {
    let what = path.display().to_string();
    if !path.exists() {
        return Err(CartoError::invalid(format!("{what}: no such file")));
    }
    let open = || File::open(path).map_err(|e| CartoError::invalid(format!("{what}: cannot open: {e}")));
    let bad = |e: &dyn std::fmt::Display| CartoError::invalid(format!("{what}: {e}"));
    match Format::from_path(path)? {
        Format::Parquet => {
            let builder = ParquetRecordBatchReaderBuilder::try_new(open()?).map_err(|e| bad(&e))?;
            let schema = builder.schema().clone();
            let batches = builder.build().map_err(|e| bad(&e))?.collect::<std::result::Result<Vec<_>, _>>().map_err(|e| bad(&e))?;
            concat(schema, batches, &what)
        }
        Format::Csv => {
            let mut file = open()?;
            let format = arrow::csv::reader::Format::default().with_header(true);
            let (schema, _) = format.infer_schema(&mut file, None).map_err(|e| bad(&e))?;
            file.rewind().map_err(|e| CartoError::io(path, e))?;
            let schema = Arc::new(schema);
            let reader = arrow::csv::ReaderBuilder::new(schema.clone())
                .with_format(format)
                .with_batch_size(64 * 1024)
                .build(BufReader::new(file))
                .map_err(|e| bad(&e))?;
            let batches = reader.collect::<std::result::Result<Vec<_>, _>>().map_err(|e| bad(&e))?;
            concat(schema, batches, &what)
        }
        Format::Jsonl => {
            let mut file = BufReader::new(open()?);
            let (schema, _) = arrow::json::reader::infer_json_schema_from_seekable(&mut file, None).map_err(|e| bad(&e))?;
            file.rewind().map_err(|e| CartoError::io(path, e))?;
            let schema = Arc::new(schema);
            let reader = arrow::json::ReaderBuilder::new(schema.clone())
                .with_batch_size(64 * 1024)
                .build(file)
                .map_err(|e| bad(&e))?;
            let batches = reader.collect::<std::result::Result<Vec<_>, _>>().map_err(|e| bad(&e))?;
            concat(schema, batches, &what)
        }
    }
}
