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
//!
//! `--strategy coverage` is coverage-centric coreset selection (CCS; Zheng et
//! al. 2023, "Coverage-centric Coreset Selection for High Pruning Rates",
//! ICLR 2023, Algorithm 1), by the same metric (default `aum`):
//! 1. prune the hardest p = ⌊β · n + 0.5⌋ samples (`--hard-prune` β, default
//!    0.1): the head of the order above (lowest aum, confidence, correctness;
//!    highest el2n, variability, forgetting_events, threshold_closeness),
//!    ties by sample_id;
//! 2. split the remaining samples' value range [lo, hi] into K equal-width
//!    strata (`--strata` K, default 50): stratum ⌊K · (v − lo)/(hi − lo)⌋,
//!    the maximum in the last one (all in one when hi = lo);
//! 3. the budget m = ⌊fraction · n + 0.5⌋ (n before pruning) is shared
//!    evenly: repeatedly take the non-empty stratum with the fewest samples
//!    (ties: the lower values first), give it min(its size, ⌊m' / r⌋) with m'
//!    the budget left and r the strata left; this always spends exactly m;
//! 4. each stratum's share is drawn uniformly at random without replacement
//!    (a SplitMix64 stream seeded by `--seed`, stratum by stratum from the low
//!    values up, class by class with `--per-class`).
//!
//! With `--per-class` every class does this on its own (its own n, pruning,
//! value range and budget). Rows come in the paper's order (the hardest kept
//! sample first), ties by sample_id. A budget larger than what pruning
//! leaves is an error, never a silent shortfall.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Field, Schema};
use carto_common::sampler::SplitMix64;
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

/// How `carto select` chooses: the head of the paper's order (`top`, the
/// default) or coverage-centric selection (`coverage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Top,
    Coverage,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Top => "top",
            Strategy::Coverage => "coverage",
        }
    }
}

impl FromStr for Strategy {
    type Err = CartoError;
    fn from_str(s: &str) -> Result<Strategy> {
        match s {
            "top" => Ok(Strategy::Top),
            "coverage" => Ok(Strategy::Coverage),
            _ => Err(CartoError::invalid(format!("--strategy '{s}': expected top or coverage"))),
        }
    }
}

/// Coverage-centric selection's parameters (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Coverage {
    pub metric: Metric,
    pub fraction: f64,
    /// β: the fraction of the hardest samples pruned before stratifying.
    pub hard_prune: f64,
    /// K: the number of equal-width strata.
    pub strata: usize,
    pub seed: u64,
    pub per_class: bool,
}

impl Coverage {
    /// The metric when `--metric` is not given: AUM, the paper's score for
    /// both the hard cut and the strata (its code always prunes by AUM).
    pub const DEFAULT_METRIC: Metric = Metric::Aum;
    /// β when `--hard-prune` is not given.
    pub const DEFAULT_HARD_PRUNE: f64 = 0.1;
    /// K when `--strata` is not given: the paper's 50.
    pub const DEFAULT_STRATA: usize = 50;
    /// The seed when `--seed` is not given: `carto run`'s default.
    pub const DEFAULT_SEED: u64 = carto_common::spec::defaults::SEED;
}


/// The strata of `members` (sample ids) by their values: K equal-width bins
/// over [min, max] of those values, each bin's members in the order given.
pub fn strata_of(values: &[f64], members: &[usize], k: usize) -> Vec<Vec<usize>> {
    let mut bins = vec![Vec::new(); k];
    if members.is_empty() || k == 0 {
        return bins;
    }
    let lo = members.iter().map(|&s| values[s]).fold(f64::INFINITY, f64::min);
    let hi = members.iter().map(|&s| values[s]).fold(f64::NEG_INFINITY, f64::max);
    for &s in members {
        let j = if hi > lo { ((k as f64 * (values[s] - lo) / (hi - lo)).floor() as usize).min(k - 1) } else { 0 };
        bins[j].push(s);
    }
    bins
}

/// How many samples each stratum gives, for a budget of `budget`: the
/// smallest non-empty stratum first (ties: the lower index), each given
/// min(its size, ⌊budget left / strata left⌋). Spends exactly
/// min(budget, Σ sizes).
pub fn allocate(sizes: &[usize], budget: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sizes.len()).filter(|&j| sizes[j] > 0).collect();
    order.sort_by_key(|&j| (sizes[j], j)); // stable: ties by index
    let mut out = vec![0; sizes.len()];
    let mut left = budget;
    for (i, &j) in order.iter().enumerate() {
        let take = sizes[j].min(left / (order.len() - i));
        out[j] = take;
        left -= take;
    }
    out
}

/// Coverage-centric selection: the selected sample ids, in the paper's order
/// (hardest kept first, ties by sample_id).
pub fn select_coverage(values: &[f64], labels: &[i64], cov: &Coverage) -> Result<Vec<usize>> {
    if !(0.0..=1.0).contains(&cov.fraction) {
        return Err(CartoError::invalid(format!("--fraction {} must be between 0 and 1", cov.fraction)));
    }
    if !(0.0..1.0).contains(&cov.hard_prune) {
        return Err(CartoError::invalid(format!(
            "--hard-prune {} must be at least 0 and below 1 (the fraction of the hardest samples dropped first)",
            cov.hard_prune
        )));
    }
    if cov.strata == 0 {
        return Err(CartoError::invalid("--strata 0: coverage selection needs at least 1 stratum"));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(CartoError::invalid(format!(
            "sample_id {i}: {} is {}; coverage strata need finite values",
            cov.metric.column(),
            values[i]
        )));
    }
    let ascending = cov.metric.ascending();
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| {
        let by_value = if ascending { values[a].total_cmp(&values[b]) } else { values[b].total_cmp(&values[a]) };
        by_value.then(a.cmp(&b))
    });
    let mut rng = SplitMix64(cov.seed);
    let groups: Vec<(Option<i64>, Vec<usize>)> = if cov.per_class {
        let classes: std::collections::BTreeSet<i64> = labels.iter().copied().collect();
        classes.into_iter().map(|c| (Some(c), order.iter().copied().filter(|&s| labels[s] == c).collect())).collect()
    } else {
        vec![(None, order.clone())]
    };
    let mut chosen = Vec::new();
    for (class, members) in groups {
        let n = members.len();
        let pruned = count_for(cov.hard_prune, n);
        let budget = count_for(cov.fraction, n);
        if budget > n - pruned {
            let scope = class.map(|c| format!(" in class {c}")).unwrap_or_default();
            return Err(CartoError::invalid(format!(
                "--fraction {} asks for {budget} of {n} samples{scope}, but --hard-prune {} leaves {}: lower --hard-prune or --fraction",
                cov.fraction,
                cov.hard_prune,
                n - pruned
            )));
        }
        // Strata over the kept samples, each in sample_id order so the draw
        // does not depend on the direction of the metric.
        let mut kept = members[pruned..].to_vec();
        kept.sort_unstable();
        let strata = strata_of(values, &kept, cov.strata);
        let sizes: Vec<usize> = strata.iter().map(Vec::len).collect();
        let shares = allocate(&sizes, budget);
        debug_assert_eq!(shares.iter().sum::<usize>(), budget);
        for (mut stratum, share) in strata.into_iter().zip(shares) {
            // A partial Fisher–Yates shuffle: the first `share` are a uniform sample.
            for i in 0..share {
                let j = i + rng.below_unbiased((stratum.len() - i) as u64) as usize;
                stratum.swap(i, j);
            }
            chosen.extend_from_slice(&stratum[..share]);
        }
    }
    let mut position = vec![0; order.len()];
    for (rank, &s) in order.iter().enumerate() {
        position[s] = rank;
    }
    chosen.sort_by_key(|&s| position[s]);
    Ok(chosen)
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

    fn cov(metric: Metric, fraction: f64, hard_prune: f64, strata: usize, seed: u64) -> Coverage {
        Coverage { metric, fraction, hard_prune, strata, seed, per_class: false }
    }

    /// How many of `chosen` fall in each of the given groups of sample ids.
    fn counts(chosen: &[usize], groups: &[&[usize]]) -> Vec<usize> {
        groups.iter().map(|g| chosen.iter().filter(|s| g.contains(s)).count()).collect()
    }

    #[test]
    fn coverage_allocation_gives_the_smallest_stratum_first_an_even_share() {
        // Non-empty strata: sizes 1, 5, 2, 10 (index 4 is empty); budget 10.
        // Smallest first: index 0 gets min(1, ⌊10/4⌋ = 2) = 1, 9 left;
        // index 2 gets min(2, ⌊9/3⌋ = 3) = 2, 7 left; index 1 gets
        // min(5, ⌊7/2⌋ = 3) = 3, 4 left; index 3 gets min(10, 4) = 4.
        assert_eq!(allocate(&[1, 5, 2, 10, 0], 10), vec![1, 3, 2, 4, 0]);
        // Equal sizes: ties go to the lower index first, so the remainder
        // lands on the last: ⌊10/3⌋ = 3, ⌊7/2⌋ = 3, then 4.
        assert_eq!(allocate(&[4, 4, 4], 10), vec![3, 3, 4]);
        // A budget of everything takes everything; 0 takes nothing.
        assert_eq!(allocate(&[3, 0, 7], 10), vec![3, 0, 7]);
        assert_eq!(allocate(&[3, 0, 7], 0), vec![0, 0, 0]);
        // Small strata are taken whole, the rest shared evenly by the big ones.
        assert_eq!(allocate(&[1, 1, 100, 100], 20), vec![1, 1, 9, 9]);
        // It always spends the whole budget (when the strata hold enough).
        for sizes in [vec![1, 2, 3, 50], vec![7, 7, 7, 7, 7], vec![0, 1, 0, 2, 90], vec![13]] {
            let total: usize = sizes.iter().sum();
            for budget in 0..=total {
                let a = allocate(&sizes, budget);
                assert_eq!(a.iter().sum::<usize>(), budget, "{sizes:?} {budget}");
                assert!(a.iter().zip(&sizes).all(|(a, s)| a <= s));
            }
        }
    }

    #[test]
    fn coverage_strata_are_equal_width_over_the_kept_range() {
        let v: Vec<f64> = (0..=9).map(f64::from).collect();
        let members: Vec<usize> = (0..10).collect();
        // [0, 9] in 3 strata: ⌊3v/9⌋ = ⌊v/3⌋, the maximum 9 in the last.
        assert_eq!(strata_of(&v, &members, 3), vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8, 9]]);
        // Skewed values: equal width, not equal count.
        let v = [0.0, 0.01, 0.02, 0.03, 0.5, 1.0];
        assert_eq!(strata_of(&v, &[0, 1, 2, 3, 4, 5], 2), vec![vec![0, 1, 2, 3], vec![4, 5]]);
        // One value everywhere: one stratum.
        assert_eq!(strata_of(&[2.0, 2.0], &[0, 1], 4), vec![vec![0, 1], vec![], vec![], vec![]]);
    }

    #[test]
    fn coverage_prunes_the_hard_end_of_each_metrics_order() {
        // 11 samples, value = sample_id. p = ⌊0.1 · 11 + 0.5⌋ = 1 pruned;
        // m = ⌊0.5 · 11 + 0.5⌋ = 6 kept.
        let v: Vec<f64> = (0..=10).map(f64::from).collect();
        let l = [0; 11];
        // el2n: high = hard, so 10 goes. Strata of 0..=9 in 3:
        // {0,1,2} {3,4,5} {6,7,8,9} → shares 2, 2, 2.
        // aum: low = hard, so 0 goes. Strata of 1..=10: {1,2,3} {4,5,6} {7,8,9,10}.
        for (metric, hard, groups) in [
            (Metric::El2n, 10, [&[0, 1, 2][..], &[3, 4, 5], &[6, 7, 8, 9]]),
            (Metric::ForgettingEvents, 10, [&[0, 1, 2][..], &[3, 4, 5], &[6, 7, 8, 9]]),
            (Metric::Variability, 10, [&[0, 1, 2][..], &[3, 4, 5], &[6, 7, 8, 9]]),
            (Metric::Aum, 0, [&[1, 2, 3][..], &[4, 5, 6], &[7, 8, 9, 10]]),
            (Metric::Confidence, 0, [&[1, 2, 3][..], &[4, 5, 6], &[7, 8, 9, 10]]),
            (Metric::Correctness, 0, [&[1, 2, 3][..], &[4, 5, 6], &[7, 8, 9, 10]]),
        ] {
            for seed in 0..50 {
                let chosen = select_coverage(&v, &l, &cov(metric, 0.5, 0.1, 3, seed)).unwrap();
                assert_eq!(chosen.len(), 6);
                assert!(!chosen.contains(&hard), "{metric:?} seed {seed}: {chosen:?}");
                assert_eq!(counts(&chosen, &groups), vec![2, 2, 2], "{metric:?} seed {seed}: {chosen:?}");
                // Rows in the paper's order: hardest kept first.
                let mut expect = chosen.clone();
                if metric.ascending() {
                    expect.sort();
                } else {
                    expect.sort_by(|a, b| b.cmp(a));
                }
                assert_eq!(chosen, expect);
            }
        }
        // No pruning: the hard end can be drawn.
        let seen_hard = (0..50).any(|seed| select_coverage(&v, &l, &cov(Metric::El2n, 0.5, 0.0, 3, seed)).unwrap().contains(&10));
        assert!(seen_hard);
    }

    #[test]
    fn coverage_covers_sparse_strata_that_top_would_skip() {
        // 90 easy samples packed near 0, 10 spread to 1 (aum: high = easy).
        let mut v: Vec<f64> = (0..90).map(|i| i as f64 * 0.001).collect();
        v.extend((1..=10).map(|i| i as f64 * 0.1));
        let l = vec![0; 100];
        // No pruning, 2 strata over [0, 1]: [0, 0.5) holds 94, [0.5, 1] 6 —
        // budget 20: the sparse stratum is taken whole (6), the dense one 14.
        let chosen = select_coverage(&v, &l, &cov(Metric::Aum, 0.2, 0.0, 2, 42)).unwrap();
        let dense: Vec<usize> = (0..94).collect();
        let sparse: Vec<usize> = (94..100).collect();
        assert_eq!(counts(&chosen, &[&dense, &sparse]), vec![14, 6]);
    }

    #[test]
    fn coverage_is_deterministic_by_seed_and_exact_in_count() {
        let v: Vec<f64> = (0..997).map(|i| ((i * 7919) % 997) as f64 / 997.0).collect();
        let l: Vec<i64> = (0..997).map(|i| (i % 3) as i64).collect();
        let a = select_coverage(&v, &l, &cov(Metric::Aum, 0.33, 0.1, 50, 7)).unwrap();
        assert_eq!(a, select_coverage(&v, &l, &cov(Metric::Aum, 0.33, 0.1, 50, 7)).unwrap());
        assert_ne!(a, select_coverage(&v, &l, &cov(Metric::Aum, 0.33, 0.1, 50, 8)).unwrap());
        for fraction in [0.0, 0.01, 0.1, 0.25, 0.33, 0.5, 0.8, 0.9] {
            for k in [1, 3, 50, 1000] {
                let chosen = select_coverage(&v, &l, &cov(Metric::El2n, fraction, 0.1, k, 1)).unwrap();
                assert_eq!(chosen.len(), count_for(fraction, 997), "fraction {fraction}, strata {k}");
                let unique: std::collections::HashSet<usize> = chosen.iter().copied().collect();
                assert_eq!(unique.len(), chosen.len());
            }
        }
        // --fraction 0.9 --hard-prune 0.1 leaves exactly enough: everything kept.
        let all = select_coverage(&v, &l, &cov(Metric::Aum, 0.9, 0.1, 50, 1)).unwrap();
        assert_eq!(all.len(), 897);
    }

    #[test]
    fn coverage_per_class_prunes_and_budgets_each_class() {
        // Class 0: values 0..=9 (ids 0..10); class 1: 100..=104 (ids 10..15).
        let mut v: Vec<f64> = (0..10).map(f64::from).collect();
        v.extend((100..105).map(f64::from));
        let l: Vec<i64> = (0..15).map(|i| if i < 10 { 0 } else { 1 }).collect();
        let c = Coverage { per_class: true, ..cov(Metric::Aum, 0.4, 0.2, 2, 3) };
        for seed in 0..20 {
            let chosen = select_coverage(&v, &l, &Coverage { seed, ..c }).unwrap();
            // Class 0: p = 2 (ids 0, 1 pruned), m = 4; class 1: p = ⌊1.5⌋ = 1 (id 10), m = 2.
            let class0: Vec<usize> = (0..10).collect();
            assert_eq!(counts(&chosen, &[&class0[..], &[10, 11, 12, 13, 14]]), vec![4, 2]);
            assert!(!chosen.contains(&0) && !chosen.contains(&1) && !chosen.contains(&10), "{chosen:?}");
            // Class 0's kept 2..=9 in 2 strata: {2..5} {6..9} → 2 + 2.
            assert_eq!(counts(&chosen, &[&[2, 3, 4, 5], &[6, 7, 8, 9]]), vec![2, 2]);
        }
    }

    #[test]
    fn coverage_bad_requests_name_the_flag() {
        let v: Vec<f64> = (0..10).map(f64::from).collect();
        let l = [0; 10];
        let err = |c: Coverage| select_coverage(&v, &l, &c).unwrap_err().to_string();
        assert!(err(cov(Metric::Aum, 0.5, 0.1, 0, 1)).starts_with("--strata 0"));
        for beta in [1.0, -0.1, f64::NAN, 1.5] {
            assert!(err(cov(Metric::Aum, 0.5, beta, 50, 1)).starts_with("--hard-prune"), "{beta}");
        }
        assert!(err(cov(Metric::Aum, 1.5, 0.1, 50, 1)).starts_with("--fraction"));
        // 10 samples, β = 0.3 prunes 3; 0.8 asks for 8 of the 7 left.
        let e = err(cov(Metric::Aum, 0.8, 0.3, 50, 1));
        assert_eq!(e, "--fraction 0.8 asks for 8 of 10 samples, but --hard-prune 0.3 leaves 7: lower --hard-prune or --fraction");
        let mut inf = v.clone();
        inf[4] = f64::INFINITY;
        assert!(select_coverage(&inf, &l, &cov(Metric::Aum, 0.5, 0.1, 5, 1)).unwrap_err().to_string().starts_with("sample_id 4: aum is inf"));
        assert!("best".parse::<Strategy>().unwrap_err().to_string().contains("top or coverage"));
    }
}
