//! Labeled datasets: Parquet, CSV or JSONL, chosen by the file's extension.
//!
//! Every error names the file and, where one is at fault, the row (0-based data
//! row index, which is also the sample's `sample_id`) and the column.
//! Labels are integers (used as class indices) or strings (mapped to class
//! indices in sorted byte order; the names are kept).

use std::path::{Path, PathBuf};

use arrow::array::ArrayRef;

use crate::{CartoError, Result};

mod csv;
mod jsonl;
mod labels;
mod parquet;
mod table;

pub use table::read_table;

/// Where the features of a row come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeatureSource {
    /// One text column (`--text-col`).
    Text(String),
    /// Several numeric columns (`--feature-cols a,b,c`).
    Columns(Vec<String>),
    /// One column holding a list of numbers per row (`--features-col`).
    List(String),
}

/// What to read from a dataset file.
#[derive(Debug, Clone)]
pub struct DatasetSpec {
    pub path: PathBuf,
    pub label_col: String,
    pub id_col: Option<String>,
    pub features: FeatureSource,
}

/// The features of all rows.
#[derive(Debug, Clone)]
pub enum Features {
    /// Row-major `rows × dim` values, as read (not standardised).
    Dense { dim: usize, values: Vec<f32> },
    /// One string per row.
    Text(Vec<String>),
}

/// A dataset in memory.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub path: PathBuf,
    /// Class index of every row.
    pub labels: Vec<i64>,
    /// Class names when the label column held strings; `label_names[k]` is class k.
    pub label_names: Option<Vec<String>>,
    /// Number of classes: max label + 1 for integer labels, distinct names for strings.
    pub num_classes: usize,
    /// The user's id column, with its original Arrow type, when one was named.
    pub ids: Option<ArrayRef>,
    pub features: Features,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// The file formats carto reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Csv,
    Jsonl,
}

impl Format {
    /// Extensions carto recognises, for error messages.
    pub const SUPPORTED: &'static str = ".parquet, .pq, .csv, .jsonl, .ndjson, .json";

    /// The format implied by a path's extension (`.parquet`/`.pq`, `.csv`, `.jsonl`/`.ndjson`/`.json`).
    pub fn from_path(path: &Path) -> Result<Format> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase());
        match ext.as_deref() {
            Some("parquet") | Some("pq") => Ok(Format::Parquet),
            Some("csv") => Ok(Format::Csv),
            Some("jsonl") | Some("ndjson") | Some("json") => Ok(Format::Jsonl),
            Some(other) => Err(CartoError::invalid(format!(
                "{}: unsupported file extension '.{other}' (supported: {})",
                path.display(),
                Format::SUPPORTED
            ))),
            None => Err(CartoError::invalid(format!(
                "{}: no file extension to tell the format (supported: {})",
                path.display(),
                Format::SUPPORTED
            ))),
        }
    }
}

/// Reads and validates a whole dataset.
///
/// Fails with [`crate::CartoError::InvalidInput`] (one line naming file, row and
/// column) on: missing file, unknown extension, missing column, no rows, a single
/// class, null or negative labels, null ids, non-numeric / null / NaN / infinite
/// features, list features of unequal length, null text.
pub fn load(spec: &DatasetSpec) -> Result<Dataset> {
    let path = &spec.path;
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(CartoError::invalid(format!(
                "{}: is a directory; expected a single .parquet, .csv or .jsonl file",
                path.display()
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CartoError::invalid(format!(
                "{}: no such file",
                path.display()
            )))
        }
        Err(e) => {
            return Err(CartoError::invalid(format!(
                "{}: cannot read: {e}",
                path.display()
            )))
        }
    }
    let format = Format::from_path(path)?;
    if let FeatureSource::Columns(cols) = &spec.features {
        if cols.is_empty() {
            return Err(CartoError::invalid(format!(
                "{}: no feature columns given",
                path.display()
            )));
        }
    }
    let raw = match format {
        Format::Parquet => parquet::read(spec)?,
        Format::Csv => csv::read(spec)?,
        Format::Jsonl => jsonl::read(spec)?,
    };
    let RawTable {
        loc,
        labels,
        ids,
        features,
    } = raw;
    let rows = labels.len();
    if rows == 0 {
        return Err(CartoError::invalid(format!("{}: no rows", path.display())));
    }
    let mapped = labels::finish(labels, &loc, &spec.label_col)?;
    debug_assert_eq!(mapped.labels.len(), rows);
    if let Some(ids) = &ids {
        debug_assert_eq!(ids.len(), rows);
    }
    match &features {
        Features::Dense { dim, values } => debug_assert_eq!(values.len(), dim * rows),
        Features::Text(t) => debug_assert_eq!(t.len(), rows),
    }
    tracing::debug!(
        path = %path.display(),
        rows,
        num_classes = mapped.num_classes,
        "loaded dataset"
    );
    Ok(Dataset {
        path: path.clone(),
        labels: mapped.labels,
        label_names: mapped.names,
        num_classes: mapped.num_classes,
        ids,
        features,
    })
}

/// What a format reader hands back: the raw columns, before labels are mapped.
pub(crate) struct RawTable {
    pub loc: Loc,
    pub labels: labels::RawLabels,
    pub ids: Option<ArrayRef>,
    pub features: Features,
}

/// Formats error locations: the file, and for text formats the physical line of each row.
pub(crate) struct Loc {
    pub path: String,
    /// 1-based physical line where each data row starts (CSV, JSONL); `None` for Parquet.
    pub lines: Option<Vec<u64>>,
}

impl Loc {
    pub fn new(path: &Path, lines: Option<Vec<u64>>) -> Loc {
        Loc {
            path: path.display().to_string(),
            lines,
        }
    }

    /// `PATH: row R (line L)` or `PATH: row R`.
    pub fn row(&self, row: usize) -> String {
        row_prefix(
            &self.path,
            row,
            self.lines.as_ref().and_then(|l| l.get(row).copied()),
        )
    }

    /// `PATH: row R (line L), column 'C': MSG` as an InvalidInput error.
    pub fn cell(&self, row: usize, col: &str, msg: impl std::fmt::Display) -> CartoError {
        CartoError::invalid(format!("{}, column '{col}': {msg}", self.row(row)))
    }

    /// `PATH: column 'C': MSG` as an InvalidInput error.
    pub fn column(&self, col: &str, msg: impl std::fmt::Display) -> CartoError {
        CartoError::invalid(format!("{}: column '{col}': {msg}", self.path))
    }
}

/// `PATH: row R (line L)`, or `PATH: row R` when the line is not known.
pub(crate) fn row_prefix(path: &str, row: usize, line: Option<u64>) -> String {
    match line {
        Some(l) => format!("{path}: row {row} (line {l})"),
        None => format!("{path}: row {row}"),
    }
}

/// `PATH: column 'C' not found (columns: a, b, c)`.
pub(crate) fn column_not_found<S: AsRef<str>>(
    path: &str,
    col: &str,
    available: &[S],
) -> CartoError {
    let list: Vec<&str> = available.iter().map(|s| s.as_ref()).collect();
    let list = if list.is_empty() {
        "none".to_string()
    } else {
        list.join(", ")
    };
    CartoError::invalid(format!(
        "{path}: column '{col}' not found (columns: {list})"
    ))
}

/// Converts one parsed feature value to f32, rejecting NaN, infinities and values beyond f32.
pub(crate) fn finite_f32(v: f64) -> std::result::Result<f32, String> {
    if v.is_nan() {
        return Err("NaN feature value".to_string());
    }
    if v.is_infinite() {
        return Err(format!("infinite feature value ({v})"));
    }
    let f = v as f32;
    if f.is_infinite() {
        return Err(format!(
            "feature value {} is out of the f32 range",
            fmt_f64(v)
        ));
    }
    Ok(f)
}

/// A number for a message: plain when short, scientific when huge or tiny.
pub(crate) fn fmt_f64(v: f64) -> String {
    let a = v.abs();
    if a.is_finite() && (a >= 1e16 || (a != 0.0 && a < 1e-6)) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// Shortens a cell's text for an error message.
pub(crate) fn snippet(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}…")
    }
}
