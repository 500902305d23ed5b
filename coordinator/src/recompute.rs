//! `carto metrics`: per-sample metrics recomputed from stored dynamics alone,
//! optionally over a window of epochs (the paper's "burn-out"), without
//! retraining.

use std::fs::File;
use std::path::{Path, PathBuf};

use std::sync::mpsc::SyncSender;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, Float64Array, Int64Array, PrimitiveArray, RecordBatch,
};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int64Type, Schema};
use carto_common::dynamics;
use carto_common::metrics::{RowStats, SampleAccumulators};
use carto_common::{CartoError, Result};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use crate::outputs::{self, Recorded, SampleInfo, LABEL_NAMES_KEY};

pub use carto_common::epochs::EpochRange;

/// A whole metrics (or any small Parquet) file as one batch; errors name it.
pub fn read_metrics(path: &Path) -> Result<arrow::array::RecordBatch> {
    let what = path.display().to_string();
    let f = File::open(path).map_err(|e| CartoError::invalid(format!("{what}: {e}")))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| CartoError::invalid(format!("{what}: not a Parquet file: {e}")))?;
    let schema = b.schema().clone();
    let batches = b
        .build()
        .map_err(|e| CartoError::invalid(format!("{what}: {e}")))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| CartoError::invalid(format!("{what}: {e}")))?;
    arrow::compute::concat_batches(&schema, &batches).map_err(|e| CartoError::invalid(format!("{what}: {e}")))
}

/// The `epoch=K` partitions under `dir`, sorted by K.
pub fn list_epochs(dir: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        CartoError::invalid(format!("--dynamics {}: {}", dir.display(), e))
    })?;
    let mut epochs = Vec::new();
    for e in entries {
        let e = e.map_err(|e| CartoError::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(k) = name.strip_prefix("epoch=") {
            let k: u32 = k.parse().map_err(|_| {
                CartoError::invalid(format!("{}: partition '{name}' is not epoch=<integer>", dir.display()))
            })?;
            epochs.push((k, e.path()));
        }
    }
    if epochs.is_empty() {
        return Err(CartoError::invalid(format!(
            "--dynamics {}: no epoch=K partitions (expected OUT/dynamics of a carto job)",
            dir.display()
        )));
    }
    epochs.sort_by_key(|(k, _)| *k);
    Ok(epochs)
}

fn part_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| CartoError::io(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            name.ends_with(".parquet") && !name.starts_with('.') && !name.starts_with('_')
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Result of a recomputation.
pub struct Recomputed {
    pub acc: SampleAccumulators,
    pub info: SampleInfo,
    pub epochs: Vec<u32>,
}

/// Result of [`recompute_any`]: the accumulators (samples never observed
/// have no epochs and a label of -1), and which statistics every part file
/// provided.
pub struct Partial {
    pub recomputed: Recomputed,
    pub recorded: Recorded,
}

impl Partial {
    /// The `metrics.parquet` table, with nulls where the dynamics lack data
    /// (see [`outputs::metrics_table`]).
    pub fn metrics_batch(&self) -> Result<RecordBatch> {
        outputs::metrics_table(&self.recomputed.acc, &self.recomputed.info, self.recorded)
    }
}

/// How part files are read.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// carto's own jobs: carto's column types, every sample exactly once in
    /// every selected epoch.
    Strict,
    /// `carto metrics`: any [`Layout`]; a sample may miss epochs. Ids must
    /// be below `num_samples` when given.
    Lenient { num_samples: Option<usize> },
}

/// Without `--num-samples`, the largest sample_id `carto metrics` accepts:
/// ids are row indices, and a hashed id would size the tables to terabytes.
const MAX_IMPLIED_SAMPLE_ID: i64 = u32::MAX as i64;

/// The dynamics columns `carto metrics` reads.
const WANTED: [&str; 6] = [
    dynamics::SAMPLE_ID,
    dynamics::LABEL,
    dynamics::GOLD_PROB,
    dynamics::CORRECT,
    dynamics::MARGIN,
    dynamics::EL2N,
];

/// How one part file's columns become dynamics rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// carto's own schema (the [`WANTED`] columns with their contract types,
    /// no `logits`): typed columns decoded as they are, the fast path.
    Native,
    /// A `logits` column (whatever else the file has): every statistic
    /// computed with [`RowStats::from_logits`]; ids and labels widened to int64.
    Logits,
    /// `gold_prob` and whichever of these the file has, widened to
    /// float64/int64 (`correct` wins over `pred`); a statistic missing is
    /// zero, and its metrics are null.
    Columns { correct: bool, pred: bool, margin: bool, el2n: bool },
}

fn is_int(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64
            | DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64
    )
}

fn is_float(t: &DataType) -> bool {
    matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64)
}

fn is_logits(t: &DataType) -> bool {
    match t {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            matches!(f.data_type(), DataType::Float32 | DataType::Float64)
        }
        _ => false,
    }
}

impl Layout {
    /// The layout of a file with `schema`; errors name the file and column.
    fn of(schema: &Schema, what: &str) -> Result<Layout> {
        use dynamics::{CORRECT, EL2N, GOLD_PROB, LABEL, LOGITS, MARGIN, PRED, SAMPLE_ID};
        let field = |name: &str| schema.field_with_name(name).ok();
        let native = [DataType::Int64, DataType::Int64, DataType::Float64, DataType::Boolean, DataType::Float64, DataType::Float64];
        if field(LOGITS).is_none() && WANTED.iter().zip(&native).all(|(n, t)| field(n).is_some_and(|f| f.data_type() == t)) {
            return Ok(Layout::Native);
        }
        let has = |name: &str, ok: fn(&DataType) -> bool, expected: &str| -> Result<bool> {
            match field(name) {
                None => Ok(false),
                Some(f) if ok(f.data_type()) => Ok(true),
                Some(f) => Err(CartoError::invalid(format!(
                    "{what}: column '{name}' has type {}, expected {expected}",
                    f.data_type()
                ))),
            }
        };
        const INT: &str = "an integer type (int64 or int32)";
        const FLOAT: &str = "float64 or float32";
        for name in [SAMPLE_ID, LABEL] {
            if !has(name, is_int, INT)? {
                return Err(CartoError::invalid(format!(
                    "{what}: column '{name}' is missing (every part file needs sample_id, label, and gold_prob or logits)"
                )));
            }
        }
        if has(LOGITS, is_logits, "a list of float32 or float64, one value per class")? {
            return Ok(Layout::Logits);
        }
        if !has(GOLD_PROB, is_float, FLOAT)? {
            return Err(CartoError::invalid(format!(
                "{what}: column 'gold_prob' is missing and there is no 'logits' column: one of them is needed"
            )));
        }
        Ok(Layout::Columns {
            correct: has(CORRECT, |t| *t == DataType::Boolean, "bool")?,
            pred: has(PRED, is_int, INT)?,
            margin: has(MARGIN, is_float, FLOAT)?,
            el2n: has(EL2N, is_float, FLOAT)?,
        })
    }

    /// The statistics a file of this layout provides.
    fn recorded(self) -> Recorded {
        match self {
            Layout::Native | Layout::Logits => Recorded::ALL,
            Layout::Columns { correct, pred, margin, el2n } => Recorded { correct: correct || pred, margin, el2n },
        }
    }

    /// The top-level columns read from a file of this layout.
    fn columns(self) -> Vec<&'static str> {
        use dynamics::{CORRECT, EL2N, GOLD_PROB, LABEL, LOGITS, MARGIN, PRED, SAMPLE_ID};
        let mut names = vec![SAMPLE_ID, LABEL];
        match self {
            Layout::Native => names = WANTED.to_vec(),
            Layout::Logits => names.push(LOGITS),
            Layout::Columns { correct, pred, margin, el2n } => {
                names.push(GOLD_PROB);
                // `correct` wins over `pred` when a file has both.
                for (name, read) in [(CORRECT, correct), (PRED, pred && !correct), (MARGIN, margin), (EL2N, el2n)] {
                    if read {
                        names.push(name);
                    }
                }
            }
        }
        names
    }
}

/// One decoded batch of a part file, its columns checked. Statistics a
/// file lacks are zeros (their metrics are null in the output).
struct Rows {
    ids: Int64Array,
    labels: Int64Array,
    gold_prob: Float64Array,
    correct: BooleanArray,
    margin: Float64Array,
    el2n: Float64Array,
    /// With `logits`: (values per row, the batch's first row in its file).
    classes: Option<(usize, usize)>,
}

/// What a decoder thread sends for each part file, in order: `Opened`, the
/// file's batches, `End` (or one error).
enum Decoded {
    Opened { label_names: Option<Vec<String>>, recorded: Recorded },
    Batch(Rows),
    End,
}

fn invalid_at(what: &str, row: usize, msg: impl std::fmt::Display) -> CartoError {
    CartoError::invalid(format!("{what}: row {row}: {msg}"))
}

/// Errors on the first null of `c`, naming its row (`first_row` = the
/// batch's first row in the file).
fn no_nulls(c: &dyn Array, name: &str, first_row: usize, what: &str) -> Result<()> {
    match (0..c.len()).find(|&i| c.is_null(i)) {
        Some(i) if c.null_count() > 0 => Err(invalid_at(what, first_row + i, format_args!("column '{name}' is null"))),
        _ => Ok(()),
    }
}

/// Column `name` of `batch` widened to `to` (int64 or float64), checked for nulls.
fn widened(batch: &RecordBatch, name: &str, to: &DataType, first_row: usize, what: &str) -> Result<ArrayRef> {
    let c = batch.column_by_name(name).expect("projected");
    no_nulls(c, name, first_row, what)?;
    // Safe cast: a value that does not fit (a uint64 above i64::MAX) turns null.
    let wide = arrow::compute::cast(c, to).map_err(|e| CartoError::invalid(format!("{what}: column '{name}': {e}")))?;
    if let Some(i) = (0..wide.len()).find(|&i| wide.is_null(i)) {
        return Err(invalid_at(what, first_row + i, format_args!("column '{name}' does not fit {to}")));
    }
    Ok(wide)
}

fn int64(batch: &RecordBatch, name: &str, first_row: usize, what: &str) -> Result<Int64Array> {
    Ok(widened(batch, name, &DataType::Int64, first_row, what)?.as_primitive::<Int64Type>().clone())
}

/// A float column widened to float64, every value checked by `ok`
/// (`expected` says what it wants).
fn float64(batch: &RecordBatch, name: &str, ok: fn(f64) -> bool, expected: &str, first_row: usize, what: &str) -> Result<Float64Array> {
    let c = widened(batch, name, &DataType::Float64, first_row, what)?.as_primitive::<Float64Type>().clone();
    if let Some(i) = c.values().iter().position(|&v| !ok(v)) {
        return Err(invalid_at(what, first_row + i, format_args!("column '{name}' is {}, expected {expected}", c.value(i))));
    }
    Ok(c)
}

/// The statistics of every row of a `logits` column, from
/// [`RowStats::from_logits`], and the values per row.
fn logits_stats(col: &ArrayRef, labels: &[i64], first_row: usize, what: &str) -> Result<(Vec<RowStats>, Option<usize>)> {
    let name = dynamics::LOGITS;
    no_nulls(col.as_ref(), name, first_row, what)?;
    let n = col.len();
    // Row i's values are values[offsets[i]..offsets[i + 1]].
    let (values, offsets): (&ArrayRef, Vec<usize>) = match col.data_type() {
        DataType::List(_) => {
            let l = col.as_list::<i32>();
            (l.values(), l.value_offsets().iter().map(|&o| o as usize).collect())
        }
        DataType::LargeList(_) => {
            let l = col.as_list::<i64>();
            (l.values(), l.value_offsets().iter().map(|&o| o as usize).collect())
        }
        DataType::FixedSizeList(_, _) => {
            let l = col.as_fixed_size_list();
            let (start, k) = (if n > 0 { l.value_offset_at(0) as usize } else { 0 }, l.value_length() as usize);
            (l.values(), (0..=n).map(|i| start + i * k).collect())
        }
        t => return Err(CartoError::internal(format!("{what}: column '{name}' has type {t}"))),
    };
    fn rows<T>(values: &PrimitiveArray<T>, offsets: &[usize], labels: &[i64], first_row: usize, what: &str) -> Result<(Vec<RowStats>, Option<usize>)>
    where
        T: ArrowPrimitiveType,
        T::Native: Into<f64>,
    {
        let name = dynamics::LOGITS;
        let Some(k) = offsets.get(1).map(|&end| end - offsets[0]) else {
            return Ok((Vec::new(), None));
        };
        let z = values.values();
        let mut out = Vec::with_capacity(labels.len());
        for (i, w) in offsets.windows(2).enumerate() {
            let row = first_row + i;
            let (a, b) = (w[0], w[1]);
            if b - a != k {
                return Err(invalid_at(what, row, format_args!(
                    "column '{name}' has {} values, but row {first_row} has {k}: one value per class in every row",
                    b - a
                )));
            }
            if k < 2 {
                return Err(invalid_at(what, row, format_args!("column '{name}' has {k} value(s): at least 2 classes are needed")));
            }
            if values.null_count() > 0 && (a..b).any(|j| values.is_null(j)) {
                return Err(invalid_at(what, row, format_args!("column '{name}' holds a null")));
            }
            let zs = &z[a..b];
            if let Some(bad) = zs.iter().map(|&v| v.into()).find(|v: &f64| !v.is_finite()) {
                return Err(invalid_at(what, row, format_args!("column '{name}' holds {bad}: logits must be finite")));
            }
            let label = labels[i];
            if label as u64 >= k as u64 {
                return Err(invalid_at(what, row, format_args!(
                    "column 'label' is {label}, not a class index below {k} (the number of logits)"
                )));
            }
            out.push(RowStats::from_logits(zs, label as usize));
        }
        Ok((out, Some(k)))
    }
    match values.data_type() {
        DataType::Float32 => rows(values.as_primitive::<Float32Type>(), &offsets, labels, first_row, what),
        DataType::Float64 => rows(values.as_primitive::<Float64Type>(), &offsets, labels, first_row, what),
        t => Err(CartoError::internal(format!("{what}: column '{name}' holds {t}"))),
    }
}

/// Checks of every lenient layout: ids non-negative and below
/// `--num-samples` (or [`MAX_IMPLIED_SAMPLE_ID`]), labels non-negative.
fn check_ids(ids: &[i64], labels: &[i64], num_samples: Option<usize>, first_row: usize, what: &str) -> Result<()> {
    let limit = num_samples.map_or(MAX_IMPLIED_SAMPLE_ID + 1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    if let Some(i) = ids.iter().position(|&s| s < 0 || s >= limit) {
        let s = ids[i];
        let why = if s < 0 {
            "negative: ids are 0-based row indices".to_string()
        } else if let Some(n) = num_samples {
            format!("not below --num-samples {n}")
        } else {
            format!("above {MAX_IMPLIED_SAMPLE_ID}: ids are 0-based row indices (pass --num-samples N if there are more samples)")
        };
        return Err(invalid_at(what, first_row + i, format_args!("column 'sample_id' is {s}, {why}")));
    }
    if let Some(i) = labels.iter().position(|&l| l < 0) {
        return Err(invalid_at(what, first_row + i, format_args!(
            "column 'label' is {}, not a class index (negative)",
            labels[i]
        )));
    }
    Ok(())
}

/// Dynamics rows from a batch of a file in a non-native `layout`.
fn foreign_rows(batch: &RecordBatch, layout: Layout, first_row: usize, what: &str) -> Result<Rows> {
    use dynamics::{CORRECT, EL2N, GOLD_PROB, LABEL, LOGITS, MARGIN, PRED, SAMPLE_ID};
    let n = batch.num_rows();
    let ids = int64(batch, SAMPLE_ID, first_row, what)?;
    let labels = int64(batch, LABEL, first_row, what)?;
    let zeros = || Float64Array::from(vec![0.0; n]);
    match layout {
        Layout::Logits => {
            let col = batch.column_by_name(LOGITS).expect("projected");
            let (stats, k) = logits_stats(col, labels.values(), first_row, what)?;
            Ok(Rows {
                gold_prob: stats.iter().map(|r| r.gold_prob).collect::<Vec<_>>().into(),
                correct: BooleanArray::from(stats.iter().map(|r| r.correct).collect::<Vec<_>>()),
                margin: stats.iter().map(|r| r.margin).collect::<Vec<_>>().into(),
                el2n: stats.iter().map(|r| r.el2n).collect::<Vec<_>>().into(),
                ids,
                labels,
                classes: k.map(|k| (k, first_row)),
            })
        }
        Layout::Columns { correct, pred, margin, el2n } => {
            let gold_prob = float64(batch, GOLD_PROB, |p| (0.0..=1.0).contains(&p), "a probability in [0, 1]", first_row, what)?;
            let correct = if correct {
                let c = batch.column_by_name(CORRECT).expect("projected");
                no_nulls(c, CORRECT, first_row, what)?;
                c.as_boolean().clone()
            } else if pred {
                let p = int64(batch, PRED, first_row, what)?;
                BooleanArray::from(p.values().iter().zip(labels.values()).map(|(p, l)| p == l).collect::<Vec<_>>())
            } else {
                BooleanArray::from(vec![false; n])
            };
            Ok(Rows {
                gold_prob,
                correct,
                margin: if margin { float64(batch, MARGIN, |v| v.is_finite(), "a finite number", first_row, what)? } else { zeros() },
                el2n: if el2n { float64(batch, EL2N, |v| v >= 0.0 && v.is_finite(), "a finite number ≥ 0", first_row, what)? } else { zeros() },
                ids,
                labels,
                classes: None,
            })
        }
        Layout::Native => Err(CartoError::internal("native layout in the conversion path")),
    }
}

/// Decodes one part file into `tx`; returns false when the receiver is gone.
fn decode_file(file: &Path, mode: Mode, tx: &SyncSender<Result<Decoded>>) -> Result<bool> {
    let what = file.display().to_string();
    let f = File::open(file).map_err(|e| CartoError::io(file, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| CartoError::invalid(format!("{what}: not a Parquet file: {e}")))?;
    let label_names = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == LABEL_NAMES_KEY))
        .and_then(|k| k.value.as_deref())
        .and_then(|v| serde_json::from_str(v).ok());
    let (layout, num_samples) = match mode {
        Mode::Strict => (Layout::Native, None),
        Mode::Lenient { num_samples } => (Layout::of(builder.schema(), &what)?, num_samples),
    };
    let lenient = matches!(mode, Mode::Lenient { .. });
    if tx.send(Ok(Decoded::Opened { label_names, recorded: layout.recorded() })).is_err() {
        return Ok(false);
    }
    let schema = builder.parquet_schema();
    let mask = if !lenient {
        let mut indices = Vec::new();
        for name in WANTED {
            let idx = schema
                .columns()
                .iter()
                .position(|c| c.name() == name)
                .ok_or_else(|| CartoError::invalid(format!("{what}: column '{name}' is missing")))?;
            indices.push(idx);
        }
        ProjectionMask::leaves(schema, indices)
    } else {
        // By top-level field: a nested leaf of the same name cannot be taken.
        let arrow_schema = builder.schema();
        let roots = layout.columns().into_iter().map(|n| arrow_schema.index_of(n).expect("in the layout"));
        ProjectionMask::roots(schema, roots)
    };
    let reader = builder
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| CartoError::invalid(format!("{what}: {e}")))?;
    let mut first_row = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| CartoError::invalid(format!("{what}: {e}")))?;
        let rows = if layout == Layout::Native {
            native_rows(&batch, &what)?
        } else {
            foreign_rows(&batch, layout, first_row, &what)?
        };
        if lenient {
            check_ids(rows.ids.values(), rows.labels.values(), num_samples, first_row, &what)?;
        } else if rows.ids.values().iter().any(|&s| s < 0) {
            return Err(CartoError::invalid(format!("{what}: negative sample_id")));
        }
        first_row += batch.num_rows();
        if tx.send(Ok(Decoded::Batch(rows))).is_err() {
            return Ok(false);
        }
    }
    Ok(tx.send(Ok(Decoded::End)).is_ok())
}

/// A batch of carto's own layout: the typed columns as they are.
fn native_rows(batch: &RecordBatch, what: &str) -> Result<Rows> {
    let col = |name: &str| -> Result<&ArrayRef> {
        let c = batch.column_by_name(name).expect("projected");
        if c.null_count() > 0 {
            return Err(CartoError::invalid(format!("{what}: column '{name}' has nulls")));
        }
        Ok(c)
    };
    fn typed<T: Array + Clone + 'static>(c: &ArrayRef, what: &str, name: &str) -> Result<T> {
        c.as_any()
            .downcast_ref::<T>()
            .cloned()
            .ok_or_else(|| CartoError::invalid(format!("{what}: column '{name}' has the wrong type")))
    }
    Ok(Rows {
        ids: typed(col(dynamics::SAMPLE_ID)?, what, dynamics::SAMPLE_ID)?,
        labels: typed(col(dynamics::LABEL)?, what, dynamics::LABEL)?,
        gold_prob: typed(col(dynamics::GOLD_PROB)?, what, dynamics::GOLD_PROB)?,
        correct: typed(col(dynamics::CORRECT)?, what, dynamics::CORRECT)?,
        margin: typed(col(dynamics::MARGIN)?, what, dynamics::MARGIN)?,
        el2n: typed(col(dynamics::EL2N)?, what, dynamics::EL2N)?,
        classes: None,
    })
}

const SEEN: u8 = 1;
const CORRECT: u8 = 2;

/// One sample's row of one epoch, 32 bytes: one cache line holds two.
#[derive(Clone, Copy, Default)]
struct StagedRow {
    gold_prob: f64,
    margin: f64,
    label: i64,
    el2n: f32,
    /// Which of the epoch's part files the row came from (saturating), to
    /// name it in errors; fills what would be padding.
    part: u16,
    /// SEEN | CORRECT; SEEN catches a sample listed twice.
    flags: u8,
}

/// One epoch's rows scattered by sample id as its part files arrive, then
/// folded into the accumulators in sample order. Each rank's rows skip
/// through the sample range at random strides: folding them as they come
/// costs a cache miss per row on the 40-byte slots (perf: the largest item
/// of `carto metrics`), while scattering touches one prefetched 32-byte row
/// and the fold then streams. The array is reused from epoch to epoch.
#[derive(Default)]
struct EpochRows {
    rows: Vec<StagedRow>,
}

impl EpochRows {
    fn with_capacity(n: usize) -> Self {
        let mut e = EpochRows::default();
        carto_common::memory::reserve_huge(&mut e.rows, n);
        e
    }

    /// Starts an epoch over `n` samples (what the previous epochs saw).
    fn begin(&mut self, n: usize) {
        self.rows.clear();
        self.rows.resize(n, StagedRow::default());
    }

    /// Stages `batch`, rows of the epoch's part file number `part`.
    fn scatter(&mut self, epoch: u32, part: usize, batch: &Rows, what: &str) -> Result<()> {
        let part = u16::try_from(part).unwrap_or(u16::MAX);
        let ids = batch.ids.values();
        let max_id = ids.iter().copied().max().unwrap_or(-1);
        if max_id >= 0 && max_id as usize >= self.rows.len() {
            self.rows.resize(max_id as usize + 1, StagedRow::default());
        }
        let (lab, gp, mar, el) = (batch.labels.values(), batch.gold_prob.values(), batch.margin.values(), batch.el2n.values());
        let correct = batch.correct.values();
        for (i, &s) in ids.iter().enumerate() {
            if let Some(&ahead) = ids.get(i + carto_common::memory::PREFETCH_AHEAD) {
                carto_common::memory::prefetch(&self.rows, ahead as usize);
            }
            let row = &mut self.rows[s as usize];
            if row.flags & SEEN != 0 {
                return Err(CartoError::invalid(format!(
                    "{what}: sample_id {s} appears twice in epoch {epoch}"
                )));
            }
            *row = StagedRow {
                gold_prob: gp[i],
                margin: mar[i],
                label: lab[i],
                el2n: el[i] as f32,
                part,
                flags: SEEN | if correct.value(i) { CORRECT } else { 0 },
            };
        }
        Ok(())
    }

    /// Folds the epoch into `acc` (sample order), checking every sample
    /// keeps its label, and has a row unless `allow_missing` (then a sample
    /// without one skips this epoch). `parts` are the epoch's part files.
    fn fold(
        &self,
        acc: &mut SampleAccumulators,
        labels: &mut Vec<i64>,
        epoch: u32,
        dir: &Path,
        parts: &[(u32, PathBuf)],
        allow_missing: bool,
    ) -> Result<()> {
        let n = self.rows.len();
        acc.grow(n);
        if labels.len() < n {
            labels.resize(n, -1);
        }
        for (s, row) in self.rows.iter().enumerate() {
            if row.flags & SEEN == 0 {
                if allow_missing {
                    continue;
                }
                return Err(CartoError::invalid(format!(
                    "{}: epoch {epoch} has no row for sample_id {s} ({n} samples); the dynamics are incomplete",
                    dir.display()
                )));
            }
            if labels[s] != row.label {
                if labels[s] != -1 {
                    let file = parts.get(row.part as usize).filter(|_| row.part != u16::MAX).map_or(dir, |(_, f)| f.as_path());
                    return Err(CartoError::invalid(format!(
                        "{}: sample_id {s} has label {} in epoch {epoch} but {} in an earlier epoch",
                        file.display(),
                        row.label,
                        labels[s]
                    )));
                }
                labels[s] = row.label;
            }
            acc.observe(s, epoch, row.gold_prob, row.flags & CORRECT != 0, row.margin, row.el2n as f64)
                .map_err(|e| CartoError::invalid(format!("{}: {e}", dir.display())))?;
        }
        Ok(())
    }
}

/// Folds the selected epochs of `dir` into per-sample accumulators. Every
/// sample must appear exactly once in every selected epoch, in carto's own
/// dynamics schema: what a job's recovery reads back.
pub fn recompute(dir: &Path, range: EpochRange) -> Result<Recomputed> {
    fold_epochs(dir, range, Mode::Strict).map(|(r, _)| r)
}

/// [`recompute`] for dynamics written by any training loop (`carto
/// metrics`). Besides carto's own schema, a part file may hold only
/// `sample_id` and `label` (any integer type) and either `logits` (a list of
/// float32/float64, one value per class: every statistic is computed with
/// [`RowStats::from_logits`]) or `gold_prob` (float32/float64) with any of
/// `correct` (or `pred`), `margin` and `el2n`. A statistic is used only if
/// every selected part file provides it ([`Partial::recorded`]); the metrics
/// needing one that is missing are null. A sample may lack rows in some
/// epochs (its metrics are over the epochs it has) or in all (its metrics
/// are null). There are `num_samples` samples, or max sample_id + 1.
pub fn recompute_any(dir: &Path, range: EpochRange, num_samples: Option<usize>) -> Result<Partial> {
    let (mut r, recorded) = fold_epochs(dir, range, Mode::Lenient { num_samples })?;
    if let Some(n) = num_samples {
        r.acc.grow(n);
        r.info.labels.resize(n, -1);
    }
    if let Some(names) = &r.info.label_names {
        if let Some(s) = r.info.labels.iter().position(|&l| l >= names.len() as i64) {
            return Err(CartoError::invalid(format!(
                "{}: sample_id {s} has label {}, but the files' {LABEL_NAMES_KEY} metadata names {} classes",
                dir.display(),
                r.info.labels[s],
                names.len()
            )));
        }
    }
    Ok(Partial { recomputed: r, recorded })
}

/// Part files are decoded by one thread per core, file i by thread i mod n,
/// while this thread scatters them strictly in file order into one epoch's
/// [`EpochRows`] and folds each epoch when its files are read: decoding
/// (zstd, Parquet) runs in parallel, folding stays sequential. Returns what
/// every file recorded too.
fn fold_epochs(dir: &Path, range: EpochRange, mode: Mode) -> Result<(Recomputed, Recorded)> {
    let selected: Vec<(u32, PathBuf)> =
        list_epochs(dir)?.into_iter().filter(|(k, _)| range.contains(*k)).collect();
    if selected.is_empty() {
        return Err(CartoError::invalid(format!(
            "--epochs selects none of the epochs stored in {}",
            dir.display()
        )));
    }
    let mut files: Vec<(u32, PathBuf)> = Vec::new();
    for (epoch, part_dir) in &selected {
        let parts = part_files(part_dir)?;
        if parts.is_empty() {
            return Err(CartoError::invalid(format!("{}: no part files", part_dir.display())));
        }
        files.extend(parts.into_iter().map(|f| (*epoch, f)));
    }
    let decoders = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8).min(files.len());
    let (allow_missing, num_samples) = match mode {
        Mode::Strict => (false, None),
        Mode::Lenient { num_samples } => (true, num_samples),
    };

    // Size the tables once from the first epoch's row count (footers only):
    // a complete epoch holds every sample once.
    let first = selected[0].0;
    let hint: usize = files
        .iter()
        .filter(|(k, _)| *k == first)
        .filter_map(|(_, f)| {
            use parquet::file::reader::{FileReader, SerializedFileReader};
            let r = SerializedFileReader::new(File::open(f).ok()?).ok()?;
            usize::try_from(r.metadata().file_metadata().num_rows()).ok()
        })
        .sum::<usize>()
        .max(num_samples.unwrap_or(0));
    let mut acc = SampleAccumulators::new(0);
    acc.reserve(hint);
    let mut labels: Vec<i64> = Vec::new();
    carto_common::memory::reserve_huge(&mut labels, hint);
    let mut stage = EpochRows::with_capacity(hint);
    let mut label_names: Option<Vec<String>> = None;
    let mut recorded = Recorded::ALL;
    // The first file lacking each statistic, for the warning below.
    let mut lacking: Vec<(&str, String)> = Vec::new();
    // The number of logits per row, and the first file that had logits.
    let mut classes: Option<(usize, String)> = None;
    std::thread::scope(|scope| -> Result<()> {
        // Receivers live in this closure: an early error drops them, which
        // stops the decoders before the scope joins them.
        let mut inboxes = Vec::new();
        for k in 0..decoders {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Decoded>>(2);
            inboxes.push(rx);
            let mine: Vec<&Path> = files.iter().skip(k).step_by(decoders).map(|(_, f)| f.as_path()).collect();
            scope.spawn(move || {
                for file in mine {
                    match decode_file(file, mode, &tx) {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
            });
        }
        // The index in `files` of the current epoch's first part file.
        let mut epoch_start = 0;
        for (i, (epoch, file)) in files.iter().enumerate() {
            if i == 0 || files[i - 1].0 != *epoch {
                stage.begin(acc.len());
                epoch_start = i;
            }
            let what = file.display().to_string();
            loop {
                let msg = inboxes[i % decoders]
                    .recv()
                    .map_err(|_| CartoError::internal(format!("{what}: decoder stopped")))??;
                match msg {
                    Decoded::Opened { label_names: names, recorded: r } => {
                        if label_names.is_none() {
                            label_names = names;
                        }
                        for (stat, have) in [(dynamics::CORRECT, r.correct), (dynamics::MARGIN, r.margin), (dynamics::EL2N, r.el2n)] {
                            if !have && !lacking.iter().any(|(s, _)| *s == stat) {
                                lacking.push((stat, what.clone()));
                            }
                        }
                        recorded = recorded.and(r);
                    }
                    Decoded::Batch(rows) => {
                        if let Some((k, row)) = rows.classes {
                            match &classes {
                                None => classes = Some((k, what.clone())),
                                Some((k0, first)) if *k0 != k => {
                                    return Err(CartoError::invalid(format!(
                                        "{what}: row {row}: column '{}' has {k} values per row, but {first} has {k0}: one value per class in every file",
                                        dynamics::LOGITS
                                    )));
                                }
                                Some(_) => {}
                            }
                        }
                        stage.scatter(*epoch, i - epoch_start, &rows, &what)?
                    }
                    Decoded::End => break,
                }
            }
            if files.get(i + 1).is_none_or(|(next, _)| next != epoch) {
                stage.fold(&mut acc, &mut labels, *epoch, dir, &files[epoch_start..=i], allow_missing)?;
            }
        }
        Ok(())
    })?;

    if !allow_missing {
        let want = selected.len() as u32;
        if let Some(s) = (0..acc.len()).find(|&s| acc.epochs(s) != want) {
            return Err(CartoError::invalid(format!(
                "{}: sample_id {s} appears in {} of the {want} selected epochs; the dynamics are incomplete",
                dir.display(),
                acc.epochs(s)
            )));
        }
    }
    for (stat, file) in &lacking {
        let needs = match *stat {
            dynamics::CORRECT => "correctness, correct_count, forgetting_events and first_learned_epoch are",
            dynamics::MARGIN => "aum is",
            _ => "el2n is",
        };
        let how = if *stat == dynamics::CORRECT { "'correct', 'pred' or 'logits'" } else if *stat == dynamics::MARGIN { "'margin' or 'logits'" } else { "'el2n' or 'logits'" };
        tracing::warn!("{file} has no {how} column: {needs} null for every sample");
    }
    Ok((
        Recomputed {
            acc,
            info: SampleInfo { labels, label_names, ids: None },
            epochs: selected.iter().map(|(k, _)| *k).collect(),
        },
        recorded,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use carto_common::dynamics::DynamicsColumns;
    use carto_common::metrics::RowStats;

    /// Writes epoch `epoch`'s part `rank` holding `rows` (id, label, logits).
    fn part(dir: &Path, epoch: u32, rank: u32, rows: &[(i64, i64, [f64; 2])]) {
        let mut cols = DynamicsColumns::with_capacity(rows.len());
        for (id, label, z) in rows {
            cols.push(*id, *label, &RowStats::from_logits(z, *label as usize));
        }
        crate::outputs::write_parquet_atomic(&crate::outputs::dynamics_part(dir, epoch, rank), &cols.to_batch(), None)
            .unwrap();
    }

    #[test]
    fn parts_scattered_across_ranks_fold_like_rows_in_sample_order() {
        let tmp = tempfile::tempdir().unwrap();
        let z = |e: u32, s: i64| [s as f64 * 0.3 - e as f64, (e as f64 - 1.0) * 0.7];
        let label = |s: i64| s % 2;
        // 7 samples, 3 epochs, each epoch split over 2 ranks differently.
        let mut reference = SampleAccumulators::new(7);
        for e in 0..3u32 {
            let (a, b): (Vec<i64>, Vec<i64>) = (0..7).partition(|s| (s + e as i64) % 3 == 0);
            for (rank, ids) in [a, b].iter().enumerate() {
                let rows: Vec<_> = ids.iter().map(|&s| (s, label(s), z(e, s))).collect();
                part(tmp.path(), e, rank as u32, &rows);
            }
            for s in 0..7 {
                let r = RowStats::from_logits(&z(e, s), label(s) as usize);
                reference.observe(s as usize, e, r.gold_prob, r.correct, r.margin, r.el2n).unwrap();
            }
        }
        let dir = tmp.path().join("dynamics");
        let got = recompute(&dir, EpochRange::ALL).unwrap();
        assert_eq!(got.epochs, vec![0, 1, 2]);
        assert_eq!(got.info.labels, (0..7).map(label).collect::<Vec<_>>());
        for s in 0..7 {
            assert_eq!(got.acc.metrics(s), reference.metrics(s), "sample {s}");
        }
        // A window: epochs 1..3 only.
        let w = recompute(&dir, "1..".parse().unwrap()).unwrap();
        assert_eq!(w.epochs, vec![1, 2]);
        assert_eq!(w.acc.metrics(3).unwrap().epochs, 2);
    }

    #[test]
    fn duplicate_missing_and_relabelled_samples_are_named() {
        let z = [0.5, -0.5];
        let run = |epochs: &[&[&[(i64, i64)]]]| -> String {
            let tmp = tempfile::tempdir().unwrap();
            for (e, parts) in epochs.iter().enumerate() {
                for (r, rows) in parts.iter().enumerate() {
                    let rows: Vec<_> = rows.iter().map(|&(s, l)| (s, l, z)).collect();
                    part(tmp.path(), e as u32, r as u32, &rows);
                }
            }
            match recompute(&tmp.path().join("dynamics"), EpochRange::ALL) {
                Ok(_) => "ok".into(),
                Err(e) => e.to_string(),
            }
        };
        assert_eq!(run(&[&[&[(0, 0), (2, 1)], &[(1, 0)]], &[&[(1, 0)], &[(0, 0), (2, 1)]]]), "ok");
        let dup = run(&[&[&[(0, 0), (1, 1)], &[(1, 1)]]]);
        assert!(dup.contains("part-1.parquet") && dup.contains("sample_id 1 appears twice in epoch 0"), "{dup}");
        let missing = run(&[&[&[(0, 0), (1, 1), (2, 0)]], &[&[(0, 0), (2, 0)]]]);
        assert!(missing.contains("epoch 1 has no row for sample_id 1"), "{missing}");
        let relabelled = run(&[&[&[(0, 0), (1, 1)]], &[&[(0, 0), (1, 0)]]]);
        assert!(relabelled.contains("sample_id 1 has label 0 in epoch 1 but 1"), "{relabelled}");
        // A sample first seen in a later epoch lacks the earlier ones.
        let late = run(&[&[&[(0, 0)]], &[&[(0, 0), (1, 1)]]]);
        assert!(late.contains("sample_id 1 appears in 1 of the 2 selected epochs"), "{late}");
    }

    #[test]
    fn carto_dynamics_give_the_same_table_strict_or_lenient() {
        let tmp = tempfile::tempdir().unwrap();
        let z = |e: u32, s: i64| [s as f64 * 0.3 - e as f64, (e as f64 - 1.0) * 0.7];
        for e in 0..3u32 {
            let (a, b): (Vec<i64>, Vec<i64>) = (0..7).partition(|s| (s + e as i64) % 2 == 0);
            for (rank, ids) in [a, b].iter().enumerate() {
                part(tmp.path(), e, rank as u32, &ids.iter().map(|&s| (s, s % 2, z(e, s))).collect::<Vec<_>>());
            }
        }
        let dir = tmp.path().join("dynamics");
        let strict = recompute(&dir, EpochRange::ALL).unwrap();
        let lenient = recompute_any(&dir, EpochRange::ALL, None).unwrap();
        assert_eq!(lenient.recorded, Recorded::ALL);
        assert_eq!(lenient.recomputed.epochs, strict.epochs);
        let table = outputs::metrics_batch(&strict.acc, &strict.info).unwrap();
        assert_eq!(lenient.metrics_batch().unwrap(), table, "same schema (no nullable metric) and values");
        assert_eq!(recompute_any(&dir, EpochRange::ALL, Some(7)).unwrap().metrics_batch().unwrap(), table);
    }

    #[test]
    fn lenient_reading_allows_missing_rows_but_not_duplicates_or_relabelling() {
        let z = [0.5, -0.5];
        let tmp = tempfile::tempdir().unwrap();
        part(tmp.path(), 0, 0, &[(0, 0, z), (2, 1, z)]);
        part(tmp.path(), 1, 0, &[(0, 0, z)]);
        part(tmp.path(), 1, 1, &[(2, 1, z), (3, 0, z)]);
        let dir = tmp.path().join("dynamics");
        let got = recompute_any(&dir, EpochRange::ALL, None).unwrap().recomputed;
        assert_eq!((0..4).map(|s| got.acc.epochs(s)).collect::<Vec<_>>(), [2, 0, 2, 1]);
        assert_eq!(got.info.labels, [0, -1, 1, 0]);
        part(tmp.path(), 2, 0, &[(3, 1, z)]);
        let err = recompute_any(&dir, EpochRange::ALL, None).err().unwrap().to_string();
        assert!(err.contains("epoch=2/part-0.parquet: sample_id 3 has label 1 in epoch 2 but 0"), "{err}");
        part(tmp.path(), 2, 0, &[(3, 0, z), (3, 0, z)]);
        let err = recompute_any(&dir, EpochRange::ALL, None).err().unwrap().to_string();
        assert!(err.contains("epoch=2/part-0.parquet: sample_id 3 appears twice in epoch 2"), "{err}");
    }

    #[test]
    fn a_staged_row_stays_32_bytes() {
        assert_eq!(std::mem::size_of::<StagedRow>(), 32);
    }

    #[test]
    fn epoch_ranges_parse_like_rust_ranges() {
        let r = |s: &str| s.parse::<EpochRange>().unwrap();
        assert_eq!(r("0..3"), EpochRange { start: 0, end: Some(3) });
        assert_eq!(r("1..=3"), EpochRange { start: 1, end: Some(4) });
        assert_eq!(r("2.."), EpochRange { start: 2, end: None });
        assert_eq!(r("..2"), EpochRange { start: 0, end: Some(2) });
        assert_eq!(r("4"), EpochRange { start: 4, end: Some(5) });
        assert!(r("0..3").contains(2) && !r("0..3").contains(3));
        for bad in ["3..3", "a..b", "-1..2", "5..2", ""] {
            let err = bad.parse::<EpochRange>().unwrap_err().to_string();
            assert!(err.contains("--epochs"), "{bad}: {err}");
        }
    }
}
