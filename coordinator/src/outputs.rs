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
use carto_common::metrics::{SampleAccumulators, SampleMetrics};
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
    &[METRICS_FILE, DYNAMICS_DIR, JOB_FILE, MODEL_FILE, "datamap.png", "datamap.svg", "datamap.html", "suspects.csv", "threshold_runs"];
/// The trained parameters, with `--save-model` (written by rank 0).
pub const MODEL_FILE: &str = "model.safetensors";

/// What the per-sample rows of `metrics.parquet` need besides the accumulators.
#[derive(Debug, Clone)]
pub struct SampleInfo {
    /// Class index per sample; negative = unknown (a sample no dynamics row
    /// names, only in [`metrics_table`]'s input).
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
    epoch_dir(out, epoch).join(format!("part-{rank}.parquet"))
}

/// The committed partition of one epoch, `dynamics/epoch=K`.
pub fn epoch_dir(out: &Path, epoch: u32) -> PathBuf {
    out.join(DYNAMICS_DIR).join(format!("epoch={epoch}"))
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

/// Which per-row statistics the dynamics behind a metrics table recorded
/// (`gold_prob` always is). Dynamics written by other tools may lack some;
/// the metrics that need a missing one are null (see [`metrics_table`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// `correct` (or `pred`, or `logits`): correctness, correct_count,
    /// forgetting_events, first_learned_epoch.
    pub correct: bool,
    /// `margin` (or `logits`): aum.
    pub margin: bool,
    /// `el2n` (or `logits`): el2n.
    pub el2n: bool,
}

impl Recorded {
    /// Everything: carto's own dynamics.
    pub const ALL: Recorded = Recorded { correct: true, margin: true, el2n: true };

    /// What both `self` and `other` recorded.
    pub fn and(self, other: Recorded) -> Recorded {
        Recorded { correct: self.correct && other.correct, margin: self.margin && other.margin, el2n: self.el2n && other.el2n }
    }
}

/// Builds the `metrics.parquet` table (contract columns, in contract order).
/// Samples never observed are an error: every input row must have metrics.
pub fn metrics_batch(acc: &SampleAccumulators, info: &SampleInfo) -> Result<RecordBatch> {
    build_metrics(acc, info, Recorded::ALL, true)
}

/// [`metrics_batch`] for dynamics that may be partial (written by other
/// tools): a sample never observed keeps its row, with `epochs` = 0 and
/// every metric null (its `label` and `label_name` too when unknown, i.e.
/// negative in `info`), and the metrics that need a statistic `recorded`
/// lacks are null in every row. A column is marked nullable only when it
/// holds a null, so complete dynamics give exactly [`metrics_batch`]'s table.
pub fn metrics_table(acc: &SampleAccumulators, info: &SampleInfo, recorded: Recorded) -> Result<RecordBatch> {
    build_metrics(acc, info, recorded, false)
}

fn build_metrics(acc: &SampleAccumulators, info: &SampleInfo, recorded: Recorded, strict: bool) -> Result<RecordBatch> {
    use arrow::buffer::{NullBuffer, ScalarBuffer};
    /// The values under a never-observed sample's nulls.
    const UNOBSERVED: SampleMetrics = SampleMetrics {
        epochs: 0,
        confidence: 0.0,
        variability: 0.0,
        correctness: 0.0,
        aum: 0.0,
        el2n: 0.0,
        threshold_closeness: 0.0,
        correct_count: 0,
        forgetting_events: 0,
        first_learned_epoch: None,
    };
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
    // Which samples were observed: only built once one was not.
    let mut observed: Option<Vec<bool>> = None;
    for s in 0..n {
        let m = match acc.metrics(s) {
            Some(m) => m,
            None if strict => {
                return Err(CartoError::invalid(format!(
                    "sample_id {s} has no recorded epochs: the dynamics are incomplete"
                )))
            }
            None => {
                observed.get_or_insert_with(|| vec![true; s]);
                UNOBSERVED
            }
        };
        if let Some(o) = observed.as_mut() {
            o.push(m.epochs > 0);
        }
        epochs.push(m.epochs as i32);
        conf.push(m.confidence);
        var.push(m.variability);
        corr.push(m.correctness);
        aum.push(m.aum);
        el2n.push(m.el2n);
        tc.push(m.threshold_closeness);
        cc.push(m.correct_count as i32);
        fe.push(m.forgetting_events as i32);
        fl.push(if recorded.correct { m.first_learned_epoch } else { None });
    }
    let observed = observed.map(NullBuffer::from);
    // The validity of a metric column: null where unobserved, or everywhere
    // when the statistic it needs was not recorded.
    let nulls = |have: bool| if have { observed.clone() } else { Some(NullBuffer::new_null(n)) };
    let labels_valid = (!strict && info.labels.iter().any(|&l| l < 0))
        .then(|| NullBuffer::from_iter(info.labels.iter().map(|&l| l >= 0)));
    let mut fields = vec![Field::new("sample_id", DataType::Int64, false)];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(0..n as i64))];
    if let Some(ids) = &info.ids {
        fields.push(Field::new("id", ids.data_type().clone(), ids.null_count() > 0));
        cols.push(ids.clone());
    }
    fields.push(Field::new("label", DataType::Int64, labels_valid.is_some()));
    cols.push(Arc::new(Int64Array::new(ScalarBuffer::from(info.labels.clone()), labels_valid.clone())));
    if let Some(names) = &info.label_names {
        fields.push(Field::new("label_name", DataType::Utf8, labels_valid.is_some()));
        cols.push(Arc::new(StringArray::from_iter(
            info.labels.iter().map(|&l| usize::try_from(l).ok().map(|l| names[l].as_str())),
        )));
    }
    let f64_cols = [
        ("confidence", conf, nulls(true)),
        ("variability", var, nulls(true)),
        ("correctness", corr, nulls(recorded.correct)),
        ("aum", aum, nulls(recorded.margin)),
        ("el2n", el2n, nulls(recorded.el2n)),
        ("threshold_closeness", tc, nulls(true)),
    ];
    fields.push(Field::new("epochs", DataType::Int32, false));
    cols.push(Arc::new(Int32Array::from(epochs)));
    for (name, v, valid) in f64_cols {
        fields.push(Field::new(name, DataType::Float64, valid.is_some()));
        cols.push(Arc::new(Float64Array::new(ScalarBuffer::from(v), valid)));
    }
    for (name, v) in [("correct_count", cc), ("forgetting_events", fe)] {
        let valid = nulls(recorded.correct);
        fields.push(Field::new(name, DataType::Int32, valid.is_some()));
        cols.push(Arc::new(Int32Array::new(ScalarBuffer::from(v), valid)));
    }
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

/// Writes `batch` to `path` atomically: written beside, fsynced, renamed,
/// and the directory fsynced, so after a crash `path` is the old file or
/// the whole new one.
pub fn write_parquet_atomic(path: &Path, batch: &RecordBatch, label_names: Option<&[String]>) -> Result<()> {
    write_parquet_atomic_with(path, batch, label_names, vec![])
}

/// [`write_parquet_atomic`] with more key-value metadata in the file's footer.
pub fn write_parquet_atomic_with(path: &Path, batch: &RecordBatch, label_names: Option<&[String]>, metadata: Vec<KeyValue>) -> Result<()> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir).map_err(|e| CartoError::io(dir, e))?;
    let tmp = in_progress_path(path);
    let file = File::create(&tmp).map_err(|e| CartoError::io(&tmp, e))?;
    let bad = |e: parquet::errors::ParquetError| CartoError::internal(format!("{}: {e}", path.display()));
    let written = (|| {
        let mut props = props_builder(label_names);
        if !metadata.is_empty() {
            let mut kv: Vec<KeyValue> = label_names
                .map(|names| KeyValue::new(LABEL_NAMES_KEY.to_string(), serde_json::to_string(names).expect("strings serialise")))
                .into_iter()
                .collect();
            kv.extend(metadata.iter().cloned());
            props = props.set_key_value_metadata(Some(kv));
        }
        let w = ArrowWriter::try_new(file, batch.schema(), Some(props.build())).map_err(bad)?;
        let file = write_columns_parallel(w, batch).map_err(bad)?;
        file.sync_all().map_err(|e| CartoError::io(&tmp, e))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| CartoError::io(path, e))?;
    sync_dir(dir)
}

/// The directory `path` is in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes the entries of directory `path` durable (files created, renamed or
/// removed in it): opens the directory and fsyncs it. Filesystems that
/// cannot fsync a directory (EINVAL, ENOTSUP) are taken as having nothing
/// to sync.
pub fn sync_dir(path: &Path) -> Result<()> {
    let synced = File::open(path).and_then(|d| d.sync_all());
    match synced {
        Err(e) if matches!(e.kind(), std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported) => Ok(()),
        r => r.map_err(|e| CartoError::io(path, e)),
    }
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

/// Writes `text` to `path` atomically (written beside, fsynced, renamed,
/// the directory fsynced).
pub fn write_text_atomic(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let tmp = in_progress_path(path);
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(text.as_bytes())?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(CartoError::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| CartoError::io(path, e))?;
    sync_dir(parent_dir(path))
}

/// Where `carto run` keeps a job's state while it runs (`OUT/.carto`).
pub const STATE_DIR: &str = ".carto";

/// Whether `name`, an entry of an output directory, is one carto writes:
/// an output ([`OUTPUT_NAMES`]), the state directory, or an output's
/// temporary name while it is being written (see [`in_progress_path`]).
pub fn is_carto_output(name: &str) -> bool {
    if OUTPUT_NAMES.contains(&name) || name == STATE_DIR {
        return true;
    }
    OUTPUT_NAMES.iter().any(|n| {
        let p = Path::new(n);
        let tmp = in_progress_path(p);
        // Written as is, or (the data maps) with the output's extension
        // put back so the image encoder picks the format.
        let with_ext = tmp.with_extension(p.extension().unwrap_or_default());
        tmp.as_os_str() == name || with_ext.as_os_str() == name
    })
}

/// Whether `name`, an entry of `OUT/dynamics`, is one carto writes: a
/// committed partition `epoch=K` or a pending one `.epoch=K.pending`.
pub fn is_carto_dynamics_entry(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(k) = name.strip_prefix("epoch=") {
        return digits(k);
    }
    name.strip_prefix(".epoch=").and_then(|k| k.strip_suffix(".pending")).is_some_and(digits)
}

/// Checks that `out` can take a new job's outputs: it is absent or empty,
/// or `overwrite` is given, and then carto's own entries in it (see
/// [`is_carto_output`], and inside `dynamics/` the `epoch=K` partitions)
/// are removed and every other entry is left as it is. Without
/// `overwrite`, a directory with anything in it is refused and nothing is
/// touched. Messages never list the directory (a remote caller may name
/// any directory the coordinator can read).
pub fn prepare_out_dir(out: &Path, overwrite: bool) -> Result<()> {
    match std::fs::metadata(out) {
        Ok(m) if !m.is_dir() => {
            return Err(CartoError::invalid(format!("out {}: exists and is not a directory", out.display())));
        }
        Ok(_) => {
            let entries = std::fs::read_dir(out).map_err(|e| CartoError::io(out, e))?.count();
            if entries > 0 {
                if !overwrite {
                    let what = if entries == 1 { "1 entry".to_string() } else { format!("{entries} entries") };
                    return Err(CartoError::invalid(format!(
                        "out {}: is not empty ({what}); choose another directory, or pass --overwrite, \
                         which removes carto's own outputs there and nothing else",
                        out.display()
                    )));
                }
                remove_carto_outputs(out)?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(CartoError::io(out, e)),
    }
    std::fs::create_dir_all(out).map_err(|e| CartoError::io(out, e))
}

/// Removes what carto wrote into `out` (an earlier job's outputs), and
/// nothing else. Symbolic links are removed, never followed.
fn remove_carto_outputs(out: &Path) -> Result<()> {
    for entry in std::fs::read_dir(out).map_err(|e| CartoError::io(out, e))? {
        let entry = entry.map_err(|e| CartoError::io(out, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if name == DYNAMICS_DIR && entry.file_type().is_ok_and(|t| t.is_dir()) {
            // Only the partitions: a file someone put beside them stays,
            // and then so does the directory.
            for e in std::fs::read_dir(&path).map_err(|e| CartoError::io(&path, e))? {
                let e = e.map_err(|e| CartoError::io(&path, e))?;
                if e.file_name().to_str().is_some_and(is_carto_dynamics_entry) {
                    remove_entry(&e.path())?;
                }
            }
            match std::fs::remove_dir(&path) {
                Ok(()) => {}
                Err(_) if std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_some()) => {}
                Err(e) => return Err(CartoError::io(&path, e)),
            }
        } else if is_carto_output(name) {
            remove_entry(&path)?;
        }
    }
    Ok(())
}

/// Removes a file, a link (not its target) or a whole directory.
fn remove_entry(path: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| CartoError::io(path, e))?;
    let r = if meta.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    r.map_err(|e| CartoError::io(path, e))
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
        assert!(err.contains("--overwrite") && err.contains("1 entry"), "{err}");
        assert_eq!(std::fs::read(out.join(METRICS_FILE)).unwrap(), b"old");
        prepare_out_dir(&out, true).unwrap();
        assert!(!out.join(METRICS_FILE).exists());
        assert!(std::fs::read_dir(&out).unwrap().next().is_none());
    }

    /// Hole 5: a remote SubmitJob naming any directory got its listing back.
    #[test]
    fn refusing_a_directory_never_lists_it() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        for name in ["secret-plans.txt", "id_rsa", METRICS_FILE] {
            std::fs::write(out.join(name), b"x").unwrap();
        }
        std::fs::create_dir(out.join(".ssh")).unwrap();
        let err = prepare_out_dir(out, false).unwrap_err().to_string();
        for name in ["secret-plans", "id_rsa", METRICS_FILE, ".ssh"] {
            assert!(!err.contains(name), "{name} echoed: {err}");
        }
        assert!(err.contains("4 entries") && err.contains("--overwrite"), "{err}");
        let file = out.join("id_rsa");
        let err = prepare_out_dir(&file, true).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }

    /// Hole 11: `--overwrite` removed hidden entries (`.git`) it had not
    /// written and refused directories holding anything else.
    #[test]
    fn overwrite_removes_only_what_carto_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let write = |rel: &str| {
            let p = out.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        };
        let theirs = [".git/HEAD", "notes.txt", ".env", "dynamics/README.md", "data/train.csv"];
        let ours = [
            METRICS_FILE,
            JOB_FILE,
            "datamap.png",
            "suspects.csv",
            ".metrics.parquet.inprogress",
            ".datamap.png.png",
            ".job.json.inprogress",
            ".carto/jobs/job-1/job.json",
            "dynamics/epoch=0/part-0.parquet",
            "dynamics/epoch=12/part-3.parquet",
            "dynamics/.epoch=1.pending/.part-0.g1.0.parquet.inprogress",
        ];
        for rel in theirs.iter().chain(&ours) {
            write(rel);
        }
        // A link named like an output is removed, never followed.
        let target = tempfile::tempdir().unwrap();
        std::fs::write(target.path().join("keep.txt"), b"x").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(target.path(), out.join("datamap.svg")).unwrap();
        prepare_out_dir(out, true).unwrap();
        for rel in theirs {
            assert!(out.join(rel).exists(), "{rel} was removed");
        }
        for rel in ours {
            assert!(!out.join(rel).exists(), "{rel} was kept");
        }
        assert!(!out.join(".carto").exists() && !out.join("dynamics/epoch=0").exists());
        assert!(std::fs::symlink_metadata(out.join("datamap.svg")).is_err());
        assert!(target.path().join("keep.txt").exists());
        // With only carto's partitions in it, `dynamics/` goes too.
        write("dynamics/epoch=0/part-0.parquet");
        std::fs::remove_file(out.join("dynamics/README.md")).unwrap();
        prepare_out_dir(out, true).unwrap();
        assert!(!out.join(DYNAMICS_DIR).exists());
        assert!(out.join(".git/HEAD").exists() && out.join("notes.txt").exists());
    }

    #[test]
    fn atomic_writes_leave_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOB_FILE);
        write_text_atomic(&path, "{}").unwrap();
        write_text_atomic(&path, "{\"a\": 1}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\": 1}");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [JOB_FILE]);
        sync_dir(dir.path()).unwrap();
        assert!(sync_dir(&dir.path().join("absent")).is_err());
        // A bare file name syncs the current directory.
        assert_eq!(parent_dir(Path::new("x.json")), Path::new("."));
    }
}
