//! `carto metrics`: per-sample metrics recomputed from stored dynamics alone,
//! optionally over a window of epochs (the paper's "burn-out"), without
//! retraining.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use std::sync::mpsc::SyncSender;

use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array};
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

/// The dynamics columns `carto metrics` reads.
const WANTED: [&str; 6] = [
    dynamics::SAMPLE_ID,
    dynamics::LABEL,
    dynamics::GOLD_PROB,
    dynamics::CORRECT,
    dynamics::MARGIN,
    dynamics::EL2N,
];

/// One decoded batch of a part file, its columns checked.
struct Rows {
    ids: Int64Array,
    labels: Int64Array,
    gold_prob: Float64Array,
    correct: BooleanArray,
    margin: Float64Array,
    el2n: Float64Array,
}

/// What a decoder thread sends for each part file, in order: `Opened`, the
/// file's batches, `End` (or one error).
enum Decoded {
    Opened { label_names: Option<Vec<String>> },
    Batch(Rows),
    End,
}

/// Decodes one part file into `tx`; returns false when the receiver is gone.
fn decode_file(file: &Path, tx: &SyncSender<Result<Decoded>>) -> Result<bool> {
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
    if tx.send(Ok(Decoded::Opened { label_names })).is_err() {
        return Ok(false);
    }
    let schema = builder.parquet_schema();
    let mut indices = Vec::new();
    for name in WANTED {
        let idx = schema
            .columns()
            .iter()
            .position(|c| c.name() == name)
            .ok_or_else(|| CartoError::invalid(format!("{what}: column '{name}' is missing")))?;
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
        let rows = Rows {
            ids: typed(col(dynamics::SAMPLE_ID)?, &what, dynamics::SAMPLE_ID)?,
            labels: typed(col(dynamics::LABEL)?, &what, dynamics::LABEL)?,
            gold_prob: typed(col(dynamics::GOLD_PROB)?, &what, dynamics::GOLD_PROB)?,
            correct: typed(col(dynamics::CORRECT)?, &what, dynamics::CORRECT)?,
            margin: typed(col(dynamics::MARGIN)?, &what, dynamics::MARGIN)?,
            el2n: typed(col(dynamics::EL2N)?, &what, dynamics::EL2N)?,
        };
        if rows.ids.values().iter().any(|&s| s < 0) {
            return Err(CartoError::invalid(format!("{what}: negative sample_id")));
        }
        if tx.send(Ok(Decoded::Batch(rows))).is_err() {
            return Ok(false);
        }
    }
    Ok(tx.send(Ok(Decoded::End)).is_ok())
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

    fn scatter(&mut self, epoch: u32, batch: &Rows, what: &str) -> Result<()> {
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
                flags: SEEN | if correct.value(i) { CORRECT } else { 0 },
            };
        }
        Ok(())
    }

    /// Folds the epoch into `acc` (sample order), checking every sample has
    /// a row and keeps its label.
    fn fold(&self, acc: &mut SampleAccumulators, labels: &mut Vec<i64>, epoch: u32, dir: &Path) -> Result<()> {
        let n = self.rows.len();
        acc.grow(n);
        if labels.len() < n {
            labels.resize(n, -1);
        }
        for (s, row) in self.rows.iter().enumerate() {
            if row.flags & SEEN == 0 {
                return Err(CartoError::invalid(format!(
                    "{}: epoch {epoch} has no row for sample_id {s} ({n} samples); the dynamics are incomplete",
                    dir.display()
                )));
            }
            if labels[s] != row.label {
                if labels[s] != -1 {
                    return Err(CartoError::invalid(format!(
                        "{}: sample_id {s} has label {} in epoch {epoch} but {} in an earlier epoch",
                        dir.display(),
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
/// sample must appear exactly once in every selected epoch.
///
/// Part files are decoded by one thread per core, file i by thread i mod n,
/// while this thread scatters them strictly in file order into one epoch's
/// [`EpochRows`] and folds each epoch when its files are read: decoding
/// (zstd, Parquet) runs in parallel, folding stays sequential.
pub fn recompute(dir: &Path, range: EpochRange) -> Result<Recomputed> {
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
        .sum();
    let mut acc = SampleAccumulators::new(0);
    acc.reserve(hint);
    let mut labels: Vec<i64> = Vec::new();
    carto_common::memory::reserve_huge(&mut labels, hint);
    let mut stage = EpochRows::with_capacity(hint);
    let mut label_names: Option<Vec<String>> = None;
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
                    match decode_file(file, &tx) {
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
        for (i, (epoch, file)) in files.iter().enumerate() {
            if i == 0 || files[i - 1].0 != *epoch {
                stage.begin(acc.len());
            }
            let what = file.display().to_string();
            loop {
                let msg = inboxes[i % decoders]
                    .recv()
                    .map_err(|_| CartoError::internal(format!("{what}: decoder stopped")))??;
                match msg {
                    Decoded::Opened { label_names: names } => {
                        if label_names.is_none() {
                            label_names = names;
                        }
                    }
                    Decoded::Batch(rows) => stage.scatter(*epoch, &rows, &what)?,
                    Decoded::End => break,
                }
            }
            if files.get(i + 1).is_none_or(|(next, _)| next != epoch) {
                stage.fold(&mut acc, &mut labels, *epoch, dir)?;
            }
        }
        Ok(())
    })?;

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
