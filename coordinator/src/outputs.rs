//! The output directory (contract): `metrics.parquet`, `dynamics/epoch=K/part-R.parquet`
//! and `job.json`. Files appear atomically (written beside, then renamed), so a
//! reader never sees half a file and a failed job never leaves one claiming success.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use carto_common::metrics::SampleAccumulators;
use carto_common::{CartoError, Result};
use parquet::arrow::arrow_writer::compute_leaves;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::file::metadata::KeyValue;

pub const METRICS_FILE: &str = "metrics.parquet";
pub const DYNAMICS_DIR: &str = "dynamics";
pub const JOB_FILE: &str = "job.json";
/// Parquet key-value metadata holding the class names (JSON array), so
/// `carto metrics` can restore `label_name` from the dynamics alone.
pub const LABEL_NAMES_KEY: &str = "carto.label_names";

/// Every file and folder a job writes into its output directory.
pub const OUTPUT_NAMES: &[&str] =
    &[METRICS_FILE, DYNAMICS_DIR, JOB_FILE, MODEL_FILE, "datamap.png", "datamap.svg", "suspects.csv"];
/// The trained parameters, with `--save-model` (written by rank 0).
pub const MODEL_FILE: &str = "model.safetensors";

/// What the per-sample rows of `metrics.parquet` need besides the accumulators.
#[derive(Debug, Clone)]
pub struct SampleInfo {
    pub labels: Vec<i64>,
    pub label_names: Option<Vec<String>>,
    pub ids: Option<ArrayRef>,
}

impl SampleInfo {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Path of one rank's dynamics partition for one epoch.
pub fn dynamics_part(out: &Path, epoch: u32, rank: u32) -> PathBuf {
    out.join(DYNAMICS_DIR).join(format!("epoch={epoch}")).join(format!("part-{rank}.parquet"))
}

/// Where an epoch's partition files gather until the epoch commits; the
/// commit renames this directory to `epoch=K` in one step, so an `epoch=K`
/// directory is always complete (readers skip dot-directories).
pub fn pending_dir(out: &Path, epoch: u32) -> PathBuf {
    out.join(DYNAMICS_DIR).join(format!(".epoch={epoch}.pending"))
}

/// Writer properties shared by all outputs: zstd level 1 (level 3 cost more
/// time for 1% smaller files), statistics on, dictionaries only for labels.
/// Floats stay PLAIN: BYTE_STREAM_SPLIT made files 7% smaller but
/// parquet-rs decodes it more slowly than zstd saves.
pub fn writer_props(label_names: Option<&[String]>) -> WriterProperties {
    props_builder(label_names).build()
}

/// Rows per row group of a rank's dynamics part: the writer buffers a row
/// group until it is full, so smaller groups encode as chunks arrive instead
/// of holding a rank's whole share (32 bytes/sample at 20M samples) until
/// the report ends.
pub const PART_ROW_GROUP_ROWS: usize = 128 * 1024;

/// [`writer_props`] for a rank's dynamics part, streamed chunk by chunk.
pub fn part_writer_props(label_names: Option<&[String]>) -> WriterProperties {
    props_builder(label_names).set_max_row_group_row_count(Some(PART_ROW_GROUP_ROWS)).build()
}

fn props_builder(label_names: Option<&[String]>) -> parquet::file::properties::WriterPropertiesBuilder {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid zstd level")))
        // Floats and ids never repeat: trying a dictionary first costs a
        // hash per value (perf: 5% of `carto metrics`) for nothing.
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled("label".into(), true)
        .set_column_dictionary_enabled("label_name".into(), true)
        .set_created_by(format!("carto {}", env!("CARGO_PKG_VERSION")));
    if let Some(names) = label_names {
        b = b.set_key_value_metadata(Some(vec![KeyValue::new(
            LABEL_NAMES_KEY.to_string(),
            serde_json::to_string(names).expect("strings serialise"),
        )]));
    }
    b
}

/// Builds the `metrics.parquet` table (contract columns, in contract order).
/// Samples never observed are an error: every input row must have metrics.
pub fn metrics_batch(acc: &SampleAccumulators, info: &SampleInfo) -> Result<RecordBatch> {
    let n = acc.len();
    if info.len() != n {
        return Err(CartoError::internal(format!("{} labels for {n} samples", info.len())));
    }
    let mut epochs = Vec::with_capacity(n);
    let mut conf = Vec::with_capacity(n);
    let mut var = Vec::with_capacity(n);
    let mut corr = Vec::with_capacity(n);
    let mut aum = Vec::with_capacity(n);
    let mut el2n = Vec::with_capacity(n);
    let mut tc = Vec::with_capacity(n);
    let mut cc = Vec::with_capacity(n);
    let mut fe = Vec::with_capacity(n);
    let mut fl = Vec::with_capacity(n);
    for s in 0..n {
        let m = acc.metrics(s).ok_or_else(|| {
            CartoError::invalid(format!("sample_id {s} has no recorded epochs: the dynamics are incomplete"))
        })?;
        epochs.push(m.epochs as i32);
        conf.push(m.confidence);
        var.push(m.variability);
        corr.push(m.correctness);
        aum.push(m.aum);
        el2n.push(m.el2n);
        tc.push(m.threshold_closeness);
        cc.push(m.correct_count as i32);
        fe.push(m.forgetting_events as i32);
        fl.push(m.first_learned_epoch);
    }
    let mut fields = vec![Field::new("sample_id", DataType::Int64, false)];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(0..n as i64))];
    if let Some(ids) = &info.ids {
        fields.push(Field::new("id", ids.data_type().clone(), ids.null_count() > 0));
        cols.push(ids.clone());
    }
    fields.push(Field::new("label", DataType::Int64, false));
    cols.push(Arc::new(Int64Array::from(info.labels.clone())));
    if let Some(names) = &info.label_names {
        fields.push(Field::new("label_name", DataType::Utf8, false));
        cols.push(Arc::new(StringArray::from_iter_values(
            info.labels.iter().map(|&l| names[l as usize].as_str()),
        )));
    }
    let f64_cols = [
        ("confidence", conf),
        ("variability", var),
        ("correctness", corr),
        ("aum", aum),
        ("el2n", el2n),
        ("threshold_closeness", tc),
    ];
    fields.push(Field::new("epochs", DataType::Int32, false));
    cols.push(Arc::new(Int32Array::from(epochs)));
    for (name, v) in f64_cols {
        fields.push(Field::new(name, DataType::Float64, false));
        cols.push(Arc::new(Float64Array::from(v)));
    }
    fields.push(Field::new("correct_count", DataType::Int32, false));
    cols.push(Arc::new(Int32Array::from(cc)));
    fields.push(Field::new("forgetting_events", DataType::Int32, false));
    cols.push(Arc::new(Int32Array::from(fe)));
    fields.push(Field::new("first_learned_epoch", DataType::Int32, true));
    cols.push(Arc::new(Int32Array::from(fl)));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
        .map_err(|e| CartoError::internal(format!("metrics table: {e}")))
}

/// A temporary name beside `path` that dataset readers skip (leading dot).
pub fn in_progress_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.inprogress"))
}

/// Writes `batch` to `path` atomically (write beside, fsync, rename).
pub fn write_parquet_atomic(path: &Path, batch: &RecordBatch, label_names: Option<&[String]>) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| CartoError::io(dir, e))?;
    }
    let tmp = in_progress_path(path);
    let file = File::create(&tmp).map_err(|e| CartoError::io(&tmp, e))?;
    let bad = |e: parquet::errors::ParquetError| CartoError::internal(format!("{}: {e}", path.display()));
    let w = ArrowWriter::try_new(file, batch.schema(), Some(writer_props(label_names))).map_err(bad)?;
    let file = write_columns_parallel(w, batch).map_err(bad)?;
    file.sync_all().map_err(|e| CartoError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| CartoError::io(path, e))
}

/// Rows per row group of files written whole (ArrowWriter's default).
const ROW_GROUP_ROWS: usize = 1024 * 1024;

/// Encodes `batch` with its columns spread over one thread per core (the
/// metrics table of 2M samples: 0.75 s on one thread, compression and page
/// statistics dominating), then writes the footer. Same file as
/// `ArrowWriter::write`, column chunks in schema order.
fn write_columns_parallel<W: std::io::Write + Send>(
    w: ArrowWriter<W>,
    batch: &RecordBatch,
) -> parquet::errors::Result<W> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(batch.num_columns()).max(1);
    let (mut file, factory) = w.into_serialized_writer()?;
    let schema = batch.schema();
    let mut start = 0;
    let mut index = 0;
    while start < batch.num_rows() {
        let part = batch.slice(start, ROW_GROUP_ROWS.min(batch.num_rows() - start));
        let mut jobs = Vec::new();
        let mut writers = factory.create_column_writers(index)?.into_iter();
        for (field, column) in schema.fields().iter().zip(part.columns()) {
            for leaf in compute_leaves(field, column)? {
                let writer = writers.next().expect("one writer per leaf");
                jobs.push((jobs.len(), writer, leaf));
            }
        }
        let mut per_thread: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
        for job in jobs {
            let t = job.0 % threads;
            per_thread[t].push(job);
        }
        let mut chunks = std::thread::scope(|scope| {
            let handles: Vec<_> = per_thread
                .into_iter()
                .map(|mine| {
                    scope.spawn(move || {
                        mine.into_iter()
                            .map(|(k, mut writer, leaf)| {
                                writer.write(&leaf)?;
                                Ok((k, writer.close()?))
                            })
                            .collect::<parquet::errors::Result<Vec<_>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("column encoder panicked"))
                .collect::<parquet::errors::Result<Vec<_>>>()
        })?
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
        chunks.sort_by_key(|(k, _)| *k);
        let mut row_group = file.next_row_group()?;
        for (_, chunk) in chunks {
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
        start += part.num_rows();
        index += 1;
    }
    file.into_inner()
}

/// Writes `text` to `path` atomically.
pub fn write_text_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = in_progress_path(path);
    std::fs::write(&tmp, text).map_err(|e| CartoError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| CartoError::io(path, e))
}

/// Checks that `out` can take a new job's outputs: it is absent, empty, or
/// (with `overwrite`) holds only carto outputs, which are then removed.
/// Without `overwrite`, earlier results are never touched.
pub fn prepare_out_dir(out: &Path, overwrite: bool) -> Result<()> {
    if out.exists() {
        if !out.is_dir() {
            return Err(CartoError::invalid(format!("out {}: exists and is not a directory", out.display())));
        }
        let present: Vec<String> = std::fs::read_dir(out)
            .map_err(|e| CartoError::io(out, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if !present.is_empty() {
            if !overwrite {
                return Err(CartoError::invalid(format!(
                    "out {}: already holds {}; choose another directory or pass --overwrite",
                    out.display(),
                    present.join(", ")
                )));
            }
            let foreign: Vec<&String> =
                present.iter().filter(|p| !OUTPUT_NAMES.contains(&p.as_str()) && !p.starts_with('.')).collect();
            if !foreign.is_empty() {
                return Err(CartoError::invalid(format!(
                    "out {}: holds files carto did not write ({}); refusing to overwrite",
                    out.display(),
                    foreign.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
            for name in &present {
                let p = out.join(name);
                let r = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
                r.map_err(|e| CartoError::io(&p, e))?;
            }
        }
    }
    std::fs::create_dir_all(out).map_err(|e| CartoError::io(out, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_table_has_the_contract_columns_in_order() {
        let mut acc = SampleAccumulators::new(2);
        acc.observe(0, 0, 0.9, true, 2.0, 0.1).unwrap();
        acc.observe(1, 0, 0.2, false, -1.0, 0.9).unwrap();
        let info = SampleInfo {
            labels: vec![1, 0],
            label_names: Some(vec!["neg".into(), "pos".into()]),
            ids: Some(Arc::new(StringArray::from(vec!["a", "b"]))),
        };
        let b = metrics_batch(&acc, &info).unwrap();
        let names: Vec<String> = b.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(
            names,
            [
                "sample_id", "id", "label", "label_name", "epochs", "confidence", "variability",
                "correctness", "aum", "el2n", "threshold_closeness", "correct_count",
                "forgetting_events", "first_learned_epoch"
            ]
        );
        let ln = b.column_by_name("label_name").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!((ln.value(0), ln.value(1)), ("pos", "neg"));
        let fl = b.column_by_name("first_learned_epoch").unwrap();
        assert!(fl.is_valid(0) && fl.is_null(1));
    }

    #[test]
    fn unobserved_samples_are_an_error() {
        let acc = SampleAccumulators::new(1);
        let info = SampleInfo { labels: vec![0], label_names: None, ids: None };
        assert!(metrics_batch(&acc, &info).unwrap_err().to_string().contains("sample_id 0"));
    }

    #[test]
    fn out_dir_is_never_clobbered_without_consent() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        prepare_out_dir(&out, false).unwrap();
        std::fs::write(out.join(METRICS_FILE), b"old").unwrap();
        let err = prepare_out_dir(&out, false).unwrap_err().to_string();
        assert!(err.contains("--overwrite") && err.contains(METRICS_FILE), "{err}");
        assert_eq!(std::fs::read(out.join(METRICS_FILE)).unwrap(), b"old");
        std::fs::write(out.join("notes.txt"), b"mine").unwrap();
        assert!(prepare_out_dir(&out, true).unwrap_err().to_string().contains("notes.txt"));
        assert!(out.join(METRICS_FILE).exists());
        std::fs::remove_file(out.join("notes.txt")).unwrap();
        prepare_out_dir(&out, true).unwrap();
        assert!(!out.join(METRICS_FILE).exists());
    }
}
