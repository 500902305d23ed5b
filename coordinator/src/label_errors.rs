//! Label errors at a job's end: the mislabel score over a window of epochs,
//! and with threshold samples a calibrated cut.
//!
//! - **The window.** Mislabeled samples are learned late: once a model
//!   memorises them their margins rise and later epochs blur the ranking.
//!   `--suspect-epochs A..B` fixes the window; otherwise, with `--eval-data`,
//!   it ends at the epoch of the best held-out accuracy when training
//!   accuracy still rose after it (held-out accuracy stopped while the model
//!   went on fitting its training labels); without held-out data, or when
//!   held-out accuracy kept improving, it is every epoch. The mislabel score
//!   is −AUM over the window (`mislabel_score` in metrics.parquet, the order
//!   of suspects.csv).
//! - **The cut** (`--threshold-samples`, see `carto_common::threshold`): in
//!   each of the two threshold runs, the threshold is a percentile of the
//!   threshold samples' AUM over the same window ([`THRESHOLD_PERCENTILE`]:
//!   the 25th, where the paper takes the 99th). A sample's evidence is its
//!   AUM minus the threshold, averaged over the runs where it was a real
//!   sample and the map's run (against the two thresholds' mean);
//!   `is_suspect` is evidence ≤ 0 (AUM at or below the threshold, Pleiss et
//!   al. 2020). The mislabel score and its ranking stay the map's. The
//!   suspects give a noise rate per class and, with each suspect's most
//!   predicted class, a noise matrix.

use std::collections::HashMap;
use std::path::Path;

use carto_common::epochs::EpochRange;
use carto_common::proto::v1 as pb;
use carto_common::spec::JobSpec;
use carto_common::threshold;
use carto_common::{CartoError, Result};

use crate::outputs::DYNAMICS_DIR;
use crate::record::{ClassNoise, ConfusedPair, LabelErrorsRecord};

/// Where the threshold runs' dynamics are committed: `OUT/threshold_runs/dynamics/epoch=K`
/// (K counts on from the map's epochs), apart from the map's `dynamics/`.
pub const THRESHOLD_RUNS_DIR: &str = "threshold_runs";
/// The threshold samples' AUM percentile below which a sample is suspect.
/// The paper's 99th percentile flags 15–23% of a clean Fashion-MNIST
/// (10,000 images, mlp, 5 epochs: a few threshold samples are memorised and
/// set the cut); the 25th flags 1.0% there and finds 10% flipped labels with
/// precision 0.92 and recall 0.81 (README, quality study).
pub const THRESHOLD_PERCENTILE: f64 = 0.25;
/// metrics.parquet's footer key holding the record.
pub const METADATA_KEY: &str = "carto.label_errors";
/// Confused class pairs listed in job.json.
const TOP_PAIRS: usize = 10;

/// How the window was chosen (job.json's `window`).
pub const GIVEN: &str = "given (--suspect-epochs)";
pub const HELD_OUT: &str = "up to the best held-out accuracy (training accuracy rose after it)";
pub const ALL: &str = "every epoch";

/// The mislabel score's epochs among the map's `epochs` (see the module).
pub fn choose_window(spec: &JobSpec, summaries: &[pb::EpochSummary], epochs: u32) -> Result<(EpochRange, &'static str)> {
    if let Some(r) = spec.suspect_epochs()? {
        let end = r.end.unwrap_or(epochs).min(epochs);
        if r.start >= end {
            return Err(CartoError::invalid(format!("suspect_epochs (--suspect-epochs) {r} has no epoch among the job's {epochs}")));
        }
        return Ok((EpochRange { start: r.start, end: Some(end) }, GIVEN));
    }
    let all = (EpochRange { start: 0, end: Some(epochs) }, ALL);
    let map: Vec<&pb::EpochSummary> = summaries.iter().filter(|e| e.epoch < epochs).collect();
    let held_out: Vec<f64> = map.iter().filter_map(|e| e.eval_accuracy).collect();
    if held_out.len() != map.len() || map.len() < 2 {
        return Ok(all);
    }
    // The first epoch reaching the best held-out accuracy.
    let best = held_out.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let peak = held_out.iter().position(|&a| a >= best).unwrap_or(map.len() - 1);
    if peak + 1 < map.len() && map[map.len() - 1].accuracy > map[peak].accuracy {
        return Ok((EpochRange { start: 0, end: Some(peak as u32 + 1) }, HELD_OUT));
    }
    Ok(all)
}

/// The nearest-rank percentile `q` of `values` (not empty).
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// What the end of a job adds to its outputs.
pub struct LabelErrors {
    pub record: LabelErrorsRecord,
    /// −AUM over the window, per sample.
    pub mislabel_score: Vec<f64>,
    /// With threshold samples.
    pub is_suspect: Option<Vec<bool>>,
}

/// Per-sample AUM over `range` of the committed dynamics in `dir` (NaN for
/// a sample with no row there: an external loop's drop_last).
fn aum_over(dir: &Path, range: EpochRange, n: usize) -> Result<Vec<f64>> {
    let r = crate::recompute::recompute_any(dir, range, Some(n))?.recomputed;
    if r.acc.len() != n {
        return Err(CartoError::internal(format!("{}: {} samples, the job has {n}", dir.display(), r.acc.len())));
    }
    Ok((0..n).map(|s| r.acc.metrics(s).map(|m| m.aum).unwrap_or(f64::NAN)).collect())
}

/// `metrics` with `mislabel_score` (and `is_suspect`) appended.
pub fn with_columns(metrics: &arrow::array::RecordBatch, e: &LabelErrors) -> Result<arrow::array::RecordBatch> {
    use std::sync::Arc;
    use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    let mut fields: Vec<Arc<Field>> = metrics.schema().fields().iter().cloned().collect();
    let mut columns: Vec<ArrayRef> = metrics.columns().to_vec();
    let score: Float64Array = e.mislabel_score.iter().map(|&v| v.is_finite().then_some(v)).collect();
    fields.push(Arc::new(Field::new("mislabel_score", DataType::Float64, score.null_count() > 0)));
    columns.push(Arc::new(score));
    if let Some(flags) = &e.is_suspect {
        fields.push(Arc::new(Field::new("is_suspect", DataType::Boolean, false)));
        columns.push(Arc::new(BooleanArray::from(flags.clone())));
    }
    arrow::array::RecordBatch::try_new(Arc::new(Schema::new_with_metadata(fields, metrics.schema().metadata().clone())), columns)
        .map_err(|err| CartoError::internal(format!("metrics with label errors: {err}")))
}

/// The label errors of a finished job in `out`: `labels` are the dataset's,
/// `epochs` the map's epochs, `full_aum` each sample's AUM over all of them
/// (the accumulators'; read again from the dynamics only for a narrower window).
pub fn compute(
    out: &Path,
    spec: &JobSpec,
    summaries: &[pb::EpochSummary],
    epochs: u32,
    labels: &[i64],
    label_names: Option<&[String]>,
    num_classes: usize,
    full_aum: Vec<f64>,
) -> Result<LabelErrors> {
    let n = labels.len();
    let (window, how) = choose_window(spec, summaries, epochs)?;
    let whole = window.start == 0 && window.end == Some(epochs);
    let aum = if whole { full_aum } else { aum_over(&out.join(DYNAMICS_DIR), window, n)? };
    let mislabel_score: Vec<f64> = aum.iter().map(|a| -a).collect();
    let mut record = LabelErrorsRecord {
        suspect_epochs: [window.start, window.end.unwrap_or(epochs)],
        window: how.to_string(),
        ..Default::default()
    };
    if !spec.threshold_samples() {
        return Ok(LabelErrors { record, mislabel_score, is_suspect: None });
    }

    // The threshold runs: each run's threshold, then each sample's evidence.
    let dir = out.join(THRESHOLD_RUNS_DIR).join(DYNAMICS_DIR);
    let mut evidence = vec![0.0f64; n];
    let mut runs_real = vec![0u32; n];
    for run in 1..threshold::RUNS {
        let offset = run * epochs;
        let range = EpochRange { start: offset + window.start, end: Some(offset + window.end.unwrap_or(epochs)) };
        let run_aum = aum_over(&dir, range, n)?;
        let set = threshold::threshold_set(n, num_classes, spec.seed(), run);
        let mut theirs: Vec<f64> = (0..n).filter(|&s| set[s]).map(|s| run_aum[s]).filter(|a| a.is_finite()).collect();
        if theirs.is_empty() {
            return Err(CartoError::invalid(format!(
                "threshold run {run} has no threshold samples: {n} samples are too few for {} classes",
                num_classes
            )));
        }
        let t = percentile(&mut theirs, THRESHOLD_PERCENTILE);
        record.thresholds.push(t);
        for s in (0..n).filter(|&s| !set[s]) {
            evidence[s] += run_aum[s] - t;
            runs_real[s] += 1;
        }
    }
    let threshold = record.thresholds.iter().sum::<f64>() / record.thresholds.len() as f64;
    record.threshold = Some(threshold);
    // The map's run is a third model: measured against the runs' mean
    // threshold it joins the evidence. (The ranking stays the map's own: with
    // two classes a third of the threshold runs' samples are moved to the
    // fake class, and their margins made Rotten Tomatoes' ranking worse.)
    for s in 0..n {
        if aum[s].is_finite() {
            evidence[s] += aum[s] - threshold;
            runs_real[s] += 1;
        }
    }
    let is_suspect: Vec<bool> = (0..n).map(|s| runs_real[s] > 0 && evidence[s] / runs_real[s] as f64 <= 0.0).collect();

    // Noise per class, and where the suspects' labels most likely belong.
    let flagged: Vec<usize> = (0..n).filter(|&s| is_suspect[s]).collect();
    let likely: HashMap<usize, i64> = crate::suspects::most_predicted(&out.join(DYNAMICS_DIR), &flagged)?;
    let name = |k: usize| label_names.and_then(|l| l.get(k)).cloned().unwrap_or_else(|| k.to_string());
    let mut matrix = vec![vec![0u64; num_classes]; num_classes];
    let mut per_class = vec![(0u64, 0u64); num_classes];
    for s in 0..n {
        let given = labels[s] as usize;
        per_class[given].0 += 1;
        if is_suspect[s] {
            per_class[given].1 += 1;
            if let Some(&p) = likely.get(&s) {
                matrix[given][p as usize] += 1;
            }
        }
    }
    record.suspects = Some(flagged.len() as u64);
    record.noise_rate = per_class
        .iter()
        .enumerate()
        .map(|(k, &(samples, suspects))| ClassNoise {
            label: k as i64,
            label_name: name(k),
            samples,
            suspects,
            rate: suspects as f64 / samples.max(1) as f64,
        })
        .collect();
    let mut pairs: Vec<ConfusedPair> = (0..num_classes)
        .flat_map(|g| (0..num_classes).map(move |p| (g, p)))
        .filter(|&(g, p)| g != p && matrix[g][p] > 0)
        .map(|(g, p)| ConfusedPair { given: g as i64, given_name: name(g), likely: p as i64, likely_name: name(p), count: matrix[g][p] })
        .collect();
    pairs.sort_by(|a, b| b.count.cmp(&a.count).then(a.given.cmp(&b.given)).then(a.likely.cmp(&b.likely)));
    pairs.truncate(TOP_PAIRS);
    record.confused_pairs = pairs;
    record.noise_matrix = Some(matrix);
    Ok(LabelErrors { record, mislabel_score, is_suspect: Some(is_suspect) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(e: u32, acc: f64, eval: Option<f64>) -> pb::EpochSummary {
        pb::EpochSummary { epoch: e, accuracy: acc, eval_accuracy: eval, ..Default::default() }
    }

    #[test]
    fn the_window_ends_where_held_out_accuracy_stops_and_training_goes_on() {
        let spec = JobSpec { epochs: Some(5), ..Default::default() };
        let e = |evals: [f64; 5], trains: [f64; 5]| -> Vec<pb::EpochSummary> {
            (0..5).map(|i| epoch(i as u32, trains[i], Some(evals[i]))).collect()
        };
        // Held-out peaks at epoch 1, training keeps rising: epochs 0..2.
        let (w, how) = choose_window(&spec, &e([0.7, 0.8, 0.79, 0.78, 0.8], [0.6, 0.7, 0.8, 0.9, 0.95]), 5).unwrap();
        assert_eq!((w.to_string(), how), ("0..2".to_string(), HELD_OUT));
        // Held-out still improving at the end: every epoch.
        let (w, how) = choose_window(&spec, &e([0.7, 0.8, 0.81, 0.82, 0.83], [0.6, 0.7, 0.8, 0.9, 0.95]), 5).unwrap();
        assert_eq!((w.to_string(), how), ("0..5".to_string(), ALL));
        // Training flat after the peak: nothing memorised, every epoch.
        let (w, _) = choose_window(&spec, &e([0.7, 0.8, 0.7, 0.7, 0.7], [0.6, 0.9, 0.9, 0.9, 0.9]), 5).unwrap();
        assert_eq!(w.to_string(), "0..5");
        // No held-out data: every epoch.
        let plain: Vec<_> = (0..5).map(|i| epoch(i, 0.5, None)).collect();
        assert_eq!(choose_window(&spec, &plain, 5).unwrap().1, ALL);
        // Given: as given, the end clamped to the map's epochs.
        let given = JobSpec { suspect_epochs: Some("1..".into()), ..spec.clone() };
        let (w, how) = choose_window(&given, &plain, 5).unwrap();
        assert_eq!((w.to_string(), how), ("1..5".to_string(), GIVEN));
        // The threshold runs' epochs never count as the map's.
        let mut with_runs = e([0.7, 0.8, 0.79, 0.78, 0.8], [0.6, 0.7, 0.8, 0.9, 0.95]);
        with_runs.extend((5..15).map(|i| epoch(i, 0.99, Some(0.99))));
        assert_eq!(choose_window(&spec, &with_runs, 5).unwrap().0.to_string(), "0..2");
    }

    #[test]
    fn the_threshold_runs_are_one_of_carto_s_outputs() {
        // `--overwrite` removes them with the rest.
        assert!(crate::outputs::is_carto_output(THRESHOLD_RUNS_DIR));
    }

    #[test]
    fn the_percentile_is_the_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(|x| x as f64).collect();
        assert_eq!(percentile(&mut v, 0.99), 99.0);
        assert_eq!(percentile(&mut [3.0, 1.0, 2.0], 0.99), 3.0);
        assert_eq!(percentile(&mut [5.0], 0.99), 5.0);
        assert_eq!(percentile(&mut [4.0, 1.0, 3.0, 2.0], 0.5), 2.0);
    }
}
