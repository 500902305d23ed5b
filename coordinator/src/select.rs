//! `carto select`: a subset of the dataset by a training-dynamics metric, in
//! the orders of the paper's code — ascending for confidence, correctness and
//! aum (hardest first), descending for variability, forgetting_events,
//! threshold_closeness and el2n. `--worst` flips the order. So:
//! hard-to-learn = `--metric confidence`, ambiguous = `--metric variability`,
//! easy-to-learn = `--metric confidence --worst`.
//!
//! Exact rules (tested on hand-made files):
//! - Ties break by `sample_id`, ascending, in either direction.
//! - k = ⌊fraction · n + 0.5⌋ (round half up, computed in float64), where n is
//!   the number of samples — or, with `--per-class`, each class's own count,
//!   so every class contributes the same fraction of itself.
//! - `--both-ends`: ⌈k/2⌉ from the head of the order and ⌊k/2⌋ from its tail.
//! - Output rows are in selection order (the head first; with `--both-ends`,
//!   the head then the tail from its extreme inwards; with `--per-class`,
//!   classes interleaved by the global order), with a 0-based `select_rank`.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Field, Schema};
use carto_common::{CartoError, Result};

/// The metrics a subset can be selected by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Confidence,
    Variability,
    Correctness,
    ForgettingEvents,
    Aum,
    ThresholdCloseness,
    El2n,
}

impl Metric {
    pub const ALL: [Metric; 7] = [
        Metric::Confidence,
        Metric::Variability,
        Metric::Correctness,
        Metric::ForgettingEvents,
        Metric::Aum,
        Metric::ThresholdCloseness,
        Metric::El2n,
    ];

    pub fn column(self) -> &'static str {
        match self {
            Metric::Confidence => "confidence",
            Metric::Variability => "variability",
            Metric::Correctness => "correctness",
            Metric::ForgettingEvents => "forgetting_events",
            Metric::Aum => "aum",
            Metric::ThresholdCloseness => "threshold_closeness",
            Metric::El2n => "el2n",
        }
    }

    /// The paper's code's default direction.
    pub fn ascending(self) -> bool {
        matches!(self, Metric::Confidence | Metric::Correctness | Metric::Aum)
    }
}

impl FromStr for Metric {
    type Err = CartoError;
    fn from_str(s: &str) -> Result<Metric> {
        Metric::ALL.into_iter().find(|m| m.column() == s).ok_or_else(|| {
            CartoError::invalid(format!(
                "--metric '{s}': expected one of {}",
                Metric::ALL.map(|m| m.column()).join(", ")
            ))
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Selection {
    pub metric: Metric,
    pub fraction: f64,
    pub worst: bool,
    pub per_class: bool,
    pub both_ends: bool,
}

/// k = ⌊fraction · n + 0.5⌋.
pub fn count_for(fraction: f64, n: usize) -> usize {
    ((fraction * n as f64 + 0.5).floor() as usize).min(n)
}

/// The selected sample ids, in selection order.
pub fn select(values: &[f64], labels: &[i64], sel: &Selection) -> Result<Vec<usize>> {
    if !(0.0..=1.0).contains(&sel.fraction) || sel.fraction.is_nan() {
        return Err(CartoError::invalid(format!("--fraction {} must be between 0 and 1", sel.fraction)));
    }
    if let Some(i) = values.iter().position(|v| v.is_nan()) {
        return Err(CartoError::invalid(format!("sample_id {i}: {} is NaN", sel.metric.column())));
    }
    let ascending = sel.metric.ascending() != sel.worst;
    // The full order: by value in the chosen direction, ties by sample_id.
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| {
        let by_value = if ascending { values[a].total_cmp(&values[b]) } else { values[b].total_cmp(&values[a]) };
        by_value.then(a.cmp(&b))
    });
    // Head and tail picks from an ordered list of members.
    let pick = |members: &[usize]| -> (Vec<usize>, Vec<usize>) {
        let k = count_for(sel.fraction, members.len());
        let (head, tail) = if sel.both_ends { (k.div_ceil(2), k / 2) } else { (k, 0) };
        (members[..head].to_vec(), members[members.len() - tail..].iter().rev().copied().collect())
    };
    let (mut head, mut tail) = if sel.per_class {
        let classes: std::collections::BTreeSet<i64> = labels.iter().copied().collect();
        let mut head = Vec::new();
        let mut tail = Vec::new();
        for c in classes {
            let members: Vec<usize> = order.iter().copied().filter(|&s| labels[s] == c).collect();
            let (h, t) = pick(&members);
            head.extend(h);
            tail.extend(t);
        }
        (head, tail)
    } else {
        pick(&order)
    };
    // Interleave classes by the global order: the head from the front, the
    // tail from the back.
    let mut position = vec![0; order.len()];
    for (rank, &s) in order.iter().enumerate() {
        position[s] = rank;
    }
    head.sort_by_key(|&s| position[s]);
    tail.sort_by_key(|&s| std::cmp::Reverse(position[s]));
    head.extend(tail);
    Ok(head)
}

/// One metric column of a metrics table as f64, plus the labels.
pub fn metric_values(metrics: &RecordBatch, metric: Metric, what: &str) -> Result<(Vec<f64>, Vec<i64>)> {
    let col = |name: &str| {
        metrics
            .column_by_name(name)
            .ok_or_else(|| CartoError::invalid(format!("{what}: column '{name}' not found")))
    };
    let v = cast(col(metric.column())?, &DataType::Float64).map_err(|e| CartoError::invalid(format!("{what}: {e}")))?;
    let v: &Float64Array = v.as_primitive();
    let l = col("label")?;
    let l = l
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| CartoError::invalid(format!("{what}: column 'label' is not int64")))?;
    if v.null_count() > 0 {
        return Err(CartoError::invalid(format!("{what}: column '{}' has nulls", metric.column())));
    }
    Ok((v.values().to_vec(), l.values().to_vec()))
}

/// The job's dataset, from the `job.json` beside a metrics file.
pub fn job_dataset(metrics_path: &Path) -> Result<PathBuf> {
    let job = metrics_path.parent().unwrap_or(Path::new(".")).join(crate::outputs::JOB_FILE);
    if !job.exists() {
        return Err(CartoError::invalid(format!(
            "--data is required: no {} beside {} to find the job's dataset",
            crate::outputs::JOB_FILE,
            metrics_path.display()
        )));
    }
    let rec = crate::record::JobRecord::read(&job)?;
    if rec.dataset.path.is_empty() {
        return Err(CartoError::invalid(format!("{}: no dataset.path; pass --data", job.display())));
    }
    Ok(PathBuf::from(rec.dataset.path))
}

/// The dataset's selected rows, every original column, then the metrics
/// (a metric whose name the dataset already uses is prefixed `carto_`).
pub fn selected_rows(data: &RecordBatch, metrics: &RecordBatch, chosen: &[usize], data_name: &str) -> Result<RecordBatch> {
    if data.num_rows() != metrics.num_rows() {
        return Err(CartoError::invalid(format!(
            "{data_name}: {} rows, but the metrics have {}: is this the job's dataset?",
            data.num_rows(),
            metrics.num_rows()
        )));
    }
    let idx = UInt32Array::from_iter_values(chosen.iter().map(|&s| s as u32));
    let mut fields: Vec<Field> = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    let taken = |a: &ArrayRef| take(a.as_ref(), &idx, None).map_err(|e| CartoError::internal(format!("take: {e}")));
    for (f, c) in data.schema().fields().iter().zip(data.columns()) {
        fields.push(f.as_ref().clone());
        cols.push(taken(c)?);
    }
    let taken_names: std::collections::HashSet<String> = fields.iter().map(|f| f.name().clone()).collect();
    for (f, c) in metrics.schema().fields().iter().zip(metrics.columns()) {
        let name = if taken_names.contains(f.name()) { format!("carto_{}", f.name()) } else { f.name().clone() };
        fields.push(Field::new(name, f.data_type().clone(), f.is_nullable()));
        cols.push(taken(c)?);
    }
    let name = if taken_names.contains("select_rank") { "carto_select_rank" } else { "select_rank" };
    fields.push(Field::new(name, DataType::Int64, false));
    cols.push(Arc::new(Int64Array::from_iter_values(0..chosen.len() as i64)));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).map_err(|e| CartoError::internal(format!("selection: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(metric: Metric, fraction: f64) -> Selection {
        Selection { metric, fraction, worst: false, per_class: false, both_ends: false }
    }

    #[test]
    fn rounding_is_half_up() {
        assert_eq!(count_for(0.5, 3), 2);
        assert_eq!(count_for(0.33, 10), 3);
        assert_eq!(count_for(0.25, 10), 3); // 2.5 → 3
        assert_eq!(count_for(0.24, 10), 2);
        assert_eq!(count_for(1.0, 7), 7);
        assert_eq!(count_for(0.0, 7), 0);
    }

    #[test]
    fn orders_follow_the_papers_code_and_ties_break_by_sample_id() {
        let v = [0.5, 0.1, 0.5, 0.9, 0.1];
        let l = [0; 5];
        // confidence: ascending (hard first); ties 1 before 4, 0 before 2.
        assert_eq!(select(&v, &l, &sel(Metric::Confidence, 1.0)).unwrap(), vec![1, 4, 0, 2, 3]);
        // variability: descending; ties still by sample_id ascending.
        assert_eq!(select(&v, &l, &sel(Metric::Variability, 1.0)).unwrap(), vec![3, 0, 2, 1, 4]);
        let worst = Selection { worst: true, ..sel(Metric::Confidence, 0.4) };
        assert_eq!(select(&v, &l, &worst).unwrap(), vec![3, 0]);
        assert_eq!(select(&v, &l, &sel(Metric::Aum, 0.5)).unwrap(), vec![1, 4, 0]); // 2.5 → 3
    }

    #[test]
    fn per_class_takes_the_same_fraction_of_every_class() {
        let v = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.05, 0.95];
        let l = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1];
        let s = Selection { per_class: true, ..sel(Metric::Confidence, 0.25) };
        // class 0: 8 → 2 (0, 1); class 1: 2 → ⌊0.5 + 0.5⌋ = 1 (8). Global order: 8, 0, 1.
        assert_eq!(select(&v, &l, &s).unwrap(), vec![8, 0, 1]);
        let plain = sel(Metric::Confidence, 0.3);
        assert_eq!(select(&v, &l, &plain).unwrap(), vec![8, 0, 1]);
    }

    #[test]
    fn both_ends_split_k_with_the_odd_one_at_the_head() {
        let v = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7];
        let l = [0; 7];
        let s = Selection { both_ends: true, ..sel(Metric::Confidence, 0.5) }; // k = 4 (3.5 → 4)
        assert_eq!(select(&v, &l, &s).unwrap(), vec![0, 1, 6, 5]);
        let s = Selection { both_ends: true, ..sel(Metric::Confidence, 3.0 / 7.0) }; // k = 3
        assert_eq!(select(&v, &l, &s).unwrap(), vec![0, 1, 6]);
    }

    #[test]
    fn per_class_both_ends_interleaves_classes_by_the_global_order() {
        let v = [0.1, 0.2, 0.3, 0.4, 0.15, 0.25, 0.35, 0.45];
        let l = [0, 0, 0, 0, 1, 1, 1, 1];
        let s = Selection { per_class: true, both_ends: true, ..sel(Metric::Confidence, 0.5) };
        assert_eq!(select(&v, &l, &s).unwrap(), vec![0, 4, 7, 3]);
    }

    #[test]
    fn bad_requests_are_clear() {
        assert!(select(&[0.1], &[0], &sel(Metric::Confidence, 1.5)).unwrap_err().to_string().contains("--fraction"));
        assert!("loss".parse::<Metric>().unwrap_err().to_string().contains("confidence, variability"));
    }
}
