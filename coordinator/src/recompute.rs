//! `carto metrics`: per-sample metrics recomputed from stored dynamics alone,
//! optionally over a window of epochs (the paper's "burn-out"), without
//! retraining.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use arrow::array::{Array, BooleanArray, Float64Array, Int64Array};
use carto_common::dynamics;
use carto_common::metrics::SampleAccumulators;
use carto_common::{CartoError, Result};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use crate::outputs::{SampleInfo, LABEL_NAMES_KEY};

/// A window of epochs: `A..B` (B excluded, like Rust and Python ranges),
/// `A..=B` (B included), `A..`, `..B`, `..=B`, or one epoch `K`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochRange {
    pub start: u32,
    /// Exclusive end; `None` = no upper bound.
    pub end: Option<u32>,
}

impl EpochRange {
    pub const ALL: EpochRange = EpochRange { start: 0, end: None };

    pub fn contains(&self, epoch: u32) -> bool {
        epoch >= self.start && self.end.is_none_or(|e| epoch < e)
    }
}

impl FromStr for EpochRange {
    type Err = CartoError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            CartoError::invalid(format!(
                "--epochs '{s}': expected A..B (B excluded), A..=B, A.., ..B or K with non-negative integers"
            ))
        };
        let num = |t: &str| t.trim().parse::<u32>().map_err(|_| bad());
        let range = if let Some((a, b)) = s.split_once("..") {
            let start = if a.trim().is_empty() { 0 } else { num(a)? };
            let end = if let Some(b) = b.strip_prefix('=') {
                Some(num(b)?.checked_add(1).ok_or_else(bad)?)
            } else if b.trim().is_empty() {
                None
            } else {
                Some(num(b)?)
            };
            EpochRange { start, end }
        } else {
            let k = num(s)?;
            EpochRange { start: k, end: Some(k + 1) }
        };
        if range.end.is_some_and(|e| e <= range.start) {
            return Err(CartoError::invalid(format!("--epochs '{s}' selects no epoch")));
        }
        Ok(range)
    }
}

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

/// Folds the selected epochs of `dir` into per-sample accumulators. Every
/// sample must appear exactly once in every selected epoch.
pub fn recompute(dir: &Path, range: EpochRange) -> Result<Recomputed> {
    let selected: Vec<(u32, PathBuf)> =
        list_epochs(dir)?.into_iter().filter(|(k, _)| range.contains(*k)).collect();
    if selected.is_empty() {
        return Err(CartoError::invalid(format!(
            "--epochs selects none of the epochs stored in {}",
            dir.display()
        )));
    }
    let mut acc = SampleAccumulators::new(0);
    let mut labels: Vec<i64> = Vec::new();
    let mut label_names: Option<Vec<String>> = None;
    for (epoch, part_dir) in &selected {
        let files = part_files(part_dir)?;
        if files.is_empty() {
            return Err(CartoError::invalid(format!("{}: no part files", part_dir.display())));
        }
        for file in files {
            let what = file.display().to_string();
            let f = File::open(&file).map_err(|e| CartoError::io(&file, e))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(f)
                .map_err(|e| CartoError::invalid(format!("{what}: not a Parquet file: {e}")))?;
            if label_names.is_none() {
                label_names = builder
                    .metadata()
                    .file_metadata()
                    .key_value_metadata()
                    .and_then(|kv| kv.iter().find(|k| k.key == LABEL_NAMES_KEY))
                    .and_then(|k| k.value.as_deref())
                    .and_then(|v| serde_json::from_str(v).ok());
            }
            let wanted = [
                dynamics::SAMPLE_ID,
                dynamics::LABEL,
                dynamics::GOLD_PROB,
                dynamics::CORRECT,
                dynamics::MARGIN,
                dynamics::EL2N,
            ];
            let schema = builder.parquet_schema();
            let mut indices = Vec::new();
            for name in wanted {
                let idx = schema.columns().iter().position(|c| c.name() == name).ok_or_else(|| {
                    CartoError::invalid(format!("{what}: column '{name}' is missing"))
                })?;
                indices.push(idx);
            }
            let mask = ProjectionMask::leaves(schema, indices);
            let reader = builder
                .with_projection(mask)
                .with_batch_size(64 * 1024)
                .build()
                .map_err(|e| CartoError::invalid(format!("{what}: {e}")))?;
            for batch in reader {
                let batch = batch.map_err(|e| CartoError::invalid(format!("{what}: {e}")))?;
                let col = |name: &str| batch.column_by_name(name).expect("projected");
                let typed = |name: &str| -> Result<()> {
                    if col(name).null_count() > 0 {
                        return Err(CartoError::invalid(format!("{what}: column '{name}' has nulls")));
                    }
                    Ok(())
                };
                for n in wanted {
                    typed(n)?;
                }
                let err = |name: &str| CartoError::invalid(format!("{what}: column '{name}' has the wrong type"));
                let ids = col(dynamics::SAMPLE_ID).as_any().downcast_ref::<Int64Array>().ok_or_else(|| err(dynamics::SAMPLE_ID))?;
                let lab = col(dynamics::LABEL).as_any().downcast_ref::<Int64Array>().ok_or_else(|| err(dynamics::LABEL))?;
                let gp = col(dynamics::GOLD_PROB).as_any().downcast_ref::<Float64Array>().ok_or_else(|| err(dynamics::GOLD_PROB))?;
                let cor = col(dynamics::CORRECT).as_any().downcast_ref::<BooleanArray>().ok_or_else(|| err(dynamics::CORRECT))?;
                let mar = col(dynamics::MARGIN).as_any().downcast_ref::<Float64Array>().ok_or_else(|| err(dynamics::MARGIN))?;
                let el = col(dynamics::EL2N).as_any().downcast_ref::<Float64Array>().ok_or_else(|| err(dynamics::EL2N))?;
                let max_id = ids.values().iter().copied().max().unwrap_or(-1);
                if ids.values().iter().any(|&s| s < 0) {
                    return Err(CartoError::invalid(format!("{what}: negative sample_id")));
                }
                if max_id >= 0 && max_id as usize >= acc.len() {
                    acc.grow(max_id as usize + 1);
                    labels.resize(max_id as usize + 1, -1);
                }
                for i in 0..ids.len() {
                    let s = ids.value(i) as usize;
                    let l = lab.value(i);
                    if labels[s] == -1 {
                        labels[s] = l;
                    } else if labels[s] != l {
                        return Err(CartoError::invalid(format!(
                            "{what}: sample_id {s} has label {l} here but {} in an earlier file",
                            labels[s]
                        )));
                    }
                    acc.observe(s, *epoch, gp.value(i), cor.value(i), mar.value(i), el.value(i))
                        .map_err(|e| CartoError::invalid(format!("{what}: {e}")))?;
                }
            }
        }
    }
    let want = selected.len() as u32;
    if let Some(s) = (0..acc.len()).find(|&s| acc.epochs(s) != want) {
        return Err(CartoError::invalid(format!(
            "{}: sample_id {s} appears in {} of the {want} selected epochs; the dynamics are incomplete",
            dir.display(),
            acc.epochs(s)
        )));
    }
    Ok(Recomputed {
        acc,
        info: SampleInfo { labels, label_names, ids: None },
        epochs: selected.iter().map(|(k, _)| *k).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
