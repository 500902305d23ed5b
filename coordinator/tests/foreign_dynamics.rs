//! `carto metrics` over dynamics written by other training loops: float32
//! and int32 columns, minimal layouts (gold_prob only, gold_prob + pred,
//! logits only), samples missing from some or all epochs, parts that differ,
//! and one-line errors naming the file, the row or sample and the column.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, Float64Array, Int32Array, Int64Array,
    LargeListArray, ListArray, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Schema};
use carto_common::dynamics::DynamicsColumns;
use carto_common::metrics::RowStats;
use carto_coordinator::outputs::{self, Recorded};
use carto_coordinator::recompute::{self, EpochRange};
use parquet::arrow::ArrowWriter;

const CARTO: &str = env!("CARGO_BIN_EXE_carto");

/// Writes `dir/dynamics/epoch=K/part-R.parquet` with these columns, every
/// field nullable, as pandas' `to_parquet` writes them.
fn write(dir: &Path, epoch: u32, rank: u32, cols: Vec<(&str, ArrayRef)>) -> PathBuf {
    let fields: Vec<Field> = cols.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols.into_iter().map(|(_, a)| a).collect()).unwrap();
    let path = outputs::dynamics_part(dir, epoch, rank);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    path
}

fn i64s(v: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from(v.to_vec()))
}
fn i32s(v: &[i32]) -> ArrayRef {
    Arc::new(Int32Array::from(v.to_vec()))
}
fn f32s(v: &[f32]) -> ArrayRef {
    Arc::new(Float32Array::from(v.to_vec()))
}
fn f64s(v: &[f64]) -> ArrayRef {
    Arc::new(Float64Array::from(v.to_vec()))
}
fn bools(v: &[bool]) -> ArrayRef {
    Arc::new(BooleanArray::from(v.to_vec()))
}
fn list_f32(rows: &[Vec<f32>]) -> ArrayRef {
    Arc::new(ListArray::from_iter_primitive::<Float32Type, _, _>(rows.iter().map(|r| Some(r.iter().map(|&z| Some(z))))))
}

/// The metrics table `carto metrics` writes for `dir/dynamics`.
fn metrics(dir: &Path, num_samples: Option<usize>) -> RecordBatch {
    let p = recompute::recompute_any(&dir.join("dynamics"), EpochRange::ALL, num_samples).unwrap();
    p.metrics_batch().unwrap()
}

fn error(dir: &Path) -> String {
    let err = match recompute::recompute_any(&dir.join("dynamics"), EpochRange::ALL, None) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    assert!(!err.contains('\n'), "one line: {err}");
    err
}

fn f64_col(b: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    let c = b.column_by_name(name).unwrap();
    assert_eq!(c.data_type(), &DataType::Float64, "{name}");
    let c = c.as_any().downcast_ref::<Float64Array>().unwrap();
    (0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i))).collect()
}

fn i32_col(b: &RecordBatch, name: &str) -> Vec<Option<i32>> {
    let c = b.column_by_name(name).unwrap();
    assert_eq!(c.data_type(), &DataType::Int32, "{name}");
    let c = c.as_any().downcast_ref::<Int32Array>().unwrap();
    (0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i))).collect()
}

fn i64_col(b: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    let c = b.column_by_name(name).unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
    (0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i))).collect()
}

fn close(got: Option<f64>, want: f64, tol: f64) -> bool {
    got.is_some_and(|g| (g - want).abs() <= tol)
}

fn all_null(b: &RecordBatch, names: &[&str]) {
    for n in names {
        let c = b.column_by_name(n).unwrap();
        assert_eq!(c.null_count(), c.len(), "{n} should be null");
        assert!(b.schema().field_with_name(n).unwrap().is_nullable(), "{n} nullable");
    }
}

const NEED_CORRECT: [&str; 4] = ["correctness", "correct_count", "forgetting_events", "first_learned_epoch"];

#[test]
fn float32_gold_prob_alone_gives_confidence_variability_and_closeness() {
    let tmp = tempfile::tempdir().unwrap();
    // Two samples, three epochs; every value exact in float32.
    let p = [[0.25f32, 1.0], [0.5, 0.5], [0.75, 0.0]];
    for (e, p) in p.iter().enumerate() {
        write(tmp.path(), e as u32, 0, vec![("sample_id", i64s(&[0, 1])), ("label", i64s(&[0, 1])), ("gold_prob", f32s(p))]);
    }
    let b = metrics(tmp.path(), None);
    assert_eq!(b.num_rows(), 2);
    assert_eq!(i32_col(&b, "epochs"), [Some(3), Some(3)]);
    assert_eq!(i64_col(&b, "label"), [Some(0), Some(1)]);
    let (conf, var, tc) = (f64_col(&b, "confidence"), f64_col(&b, "variability"), f64_col(&b, "threshold_closeness"));
    assert!(close(conf[0], 0.5, 1e-12) && close(conf[1], 0.5, 1e-12));
    // Population std: sqrt(((−0.25)² + 0² + 0.25²) / 3) and sqrt((0.5² + 0² + 0.5²) / 3).
    assert!(close(var[0], (0.125f64 / 3.0).sqrt(), 1e-12), "{:?}", var[0]);
    assert!(close(var[1], (0.5f64 / 3.0).sqrt(), 1e-12), "{:?}", var[1]);
    assert!(close(tc[0], 0.25, 1e-12) && close(tc[1], 0.25, 1e-12));
    all_null(&b, &NEED_CORRECT);
    all_null(&b, &["aum", "el2n"]);
    // Computable columns keep their contract type and stay non-nullable.
    for n in ["confidence", "variability", "threshold_closeness", "epochs", "label"] {
        assert!(!b.schema().field_with_name(n).unwrap().is_nullable(), "{n}");
    }
}

#[test]
fn gold_prob_and_int32_pred_give_correctness_and_forgetting() {
    let tmp = tempfile::tempdir().unwrap();
    // int32 ids, labels and predictions. Sample 0 (label 1): right, wrong,
    // right. Sample 1 (label 0): wrong, wrong, right.
    let preds = [[1, 1], [0, 1], [1, 0]];
    let probs = [[0.75, 0.125], [0.25, 0.25], [0.5, 0.625]];
    for e in 0..3 {
        write(tmp.path(), e as u32, 0, vec![
            ("sample_id", i32s(&[0, 1])),
            ("label", i32s(&[1, 0])),
            ("gold_prob", f64s(&probs[e])),
            ("pred", i32s(&preds[e])),
        ]);
    }
    let b = metrics(tmp.path(), None);
    let corr = f64_col(&b, "correctness");
    assert!(close(corr[0], 2.0 / 3.0, 1e-12) && close(corr[1], 1.0 / 3.0, 1e-12), "{corr:?}");
    assert_eq!(i32_col(&b, "correct_count"), [Some(2), Some(1)]);
    assert_eq!(i32_col(&b, "forgetting_events"), [Some(1), Some(0)]);
    assert_eq!(i32_col(&b, "first_learned_epoch"), [Some(0), Some(2)]);
    assert!(close(f64_col(&b, "confidence")[0], 0.5, 1e-12));
    assert_eq!(i64_col(&b, "label"), [Some(1), Some(0)]);
    all_null(&b, &["aum", "el2n"]);
    for n in ["correctness", "correct_count", "forgetting_events"] {
        assert!(!b.schema().field_with_name(n).unwrap().is_nullable(), "{n}");
    }
}

/// Logits of sample s at epoch e, 3 classes.
fn z(e: usize, s: usize) -> [f32; 3] {
    [s as f32 * 0.5 - e as f32, (e as f32 - 1.0) * 0.75, 0.25 * (s % 3) as f32]
}

#[test]
fn logits_alone_give_every_metric_like_rowstats_and_carto_own_dynamics() {
    let (n, epochs) = (5usize, 3usize);
    let labels: Vec<i64> = (0..n as i64).map(|s| s % 3).collect();
    let ids: Vec<i64> = (0..n as i64).rev().collect();
    let foreign = tempfile::tempdir().unwrap();
    let own = tempfile::tempdir().unwrap();
    for e in 0..epochs {
        let rows: Vec<[f32; 3]> = ids.iter().map(|&s| z(e, s as usize)).collect();
        let lab: Vec<i64> = ids.iter().map(|&s| labels[s as usize]).collect();
        // Each epoch in another list type: List<f32>, FixedSizeList<f64>, LargeList<f32>.
        let logits: ArrayRef = match e {
            0 => list_f32(&rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>()),
            1 => Arc::new(FixedSizeListArray::from_iter_primitive::<Float64Type, _, _>(
                rows.iter().map(|r| Some(r.iter().map(|&v| Some(v as f64)))),
                3,
            )),
            _ => Arc::new(LargeListArray::from_iter_primitive::<Float32Type, _, _>(
                rows.iter().map(|r| Some(r.iter().map(|&v| Some(v)))),
            )),
        };
        write(foreign.path(), e as u32, 0, vec![("sample_id", i64s(&ids)), ("label", i64s(&lab)), ("logits", logits)]);
        let mut cols = DynamicsColumns::default();
        for (r, &s) in ids.iter().enumerate() {
            cols.push(s, lab[r], &RowStats::from_logits(&rows[r], lab[r] as usize));
        }
        outputs::write_parquet_atomic(&outputs::dynamics_part(own.path(), e as u32, 0), &cols.to_batch(), None).unwrap();
    }
    let p = recompute::recompute_any(&foreign.path().join("dynamics"), EpochRange::ALL, None).unwrap();
    assert_eq!(p.recorded, Recorded::ALL);
    let got = p.metrics_batch().unwrap();
    let own = metrics(own.path(), None);
    for c in ["confidence", "variability", "correctness", "aum", "el2n", "threshold_closeness"] {
        let (a, b) = (f64_col(&got, c), f64_col(&own, c));
        for s in 0..n {
            assert!(close(a[s], b[s].unwrap(), 1e-12), "{c} of sample {s}: {:?} vs {:?}", a[s], b[s]);
        }
    }
    for c in ["epochs", "correct_count", "forgetting_events", "first_learned_epoch"] {
        assert_eq!(i32_col(&got, c), i32_col(&own, c), "{c}");
    }
    assert_eq!(i64_col(&got, "label"), labels.iter().map(|&l| Some(l)).collect::<Vec<_>>());
    // And by hand from RowStats.
    for s in 0..n {
        let r: Vec<RowStats> = (0..epochs).map(|e| RowStats::from_logits(&z(e, s), labels[s] as usize)).collect();
        let mean = |f: fn(&RowStats) -> f64| r.iter().map(f).sum::<f64>() / epochs as f64;
        let conf = mean(|r| r.gold_prob);
        let var = (r.iter().map(|r| (r.gold_prob - conf).powi(2)).sum::<f64>() / epochs as f64).sqrt();
        assert!(close(f64_col(&got, "confidence")[s], conf, 1e-12));
        assert!(close(f64_col(&got, "variability")[s], var, 1e-12));
        assert!(close(f64_col(&got, "aum")[s], mean(|r| r.margin), 1e-12));
        assert!(close(f64_col(&got, "el2n")[s], mean(|r| r.el2n), 1e-6), "el2n sums in f32");
        assert!(close(f64_col(&got, "correctness")[s], mean(|r| r.correct as i32 as f64), 1e-12));
        let first = r.iter().position(|r| r.correct).map(|e| e as i32);
        assert_eq!(i32_col(&got, "first_learned_epoch")[s], first);
        let forgot = r.windows(2).filter(|w| w[0].correct && !w[1].correct).count() as i32;
        assert_eq!(i32_col(&got, "forgetting_events")[s], Some(forgot));
    }
}

#[test]
fn missing_rows_count_only_the_epochs_a_sample_has() {
    let tmp = tempfile::tempdir().unwrap();
    // 3 samples, 4 epochs. Sample 1 lacks epochs 1 and 2 (correct at 0,
    // wrong at 3: one forgetting event between consecutive recorded epochs);
    // sample 2 lacks epoch 0 and is first right at epoch 2.
    let rows: [&[(i64, f64, bool)]; 4] = [
        &[(0, 0.5, true), (1, 0.75, true)],
        &[(0, 0.5, true), (2, 0.25, false)],
        &[(2, 0.75, true), (0, 0.5, false)],
        &[(0, 0.5, true), (1, 0.25, false), (2, 0.5, true)],
    ];
    for (e, rows) in rows.iter().enumerate() {
        write(tmp.path(), e as u32, 0, vec![
            ("sample_id", i64s(&rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            ("label", i64s(&rows.iter().map(|r| r.0 % 2).collect::<Vec<_>>())),
            ("gold_prob", f64s(&rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            ("correct", bools(&rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        ]);
    }
    let b = metrics(tmp.path(), None);
    assert_eq!(i32_col(&b, "epochs"), [Some(4), Some(2), Some(3)]);
    let conf = f64_col(&b, "confidence");
    assert!(close(conf[1], 0.5, 1e-12) && close(conf[2], 0.5, 1e-12));
    assert!(close(f64_col(&b, "variability")[1], 0.25, 1e-12));
    assert!(close(f64_col(&b, "correctness")[1], 0.5, 1e-12));
    assert!(close(f64_col(&b, "correctness")[2], 2.0 / 3.0, 1e-12));
    assert_eq!(i32_col(&b, "forgetting_events"), [Some(1), Some(1), Some(0)]);
    assert_eq!(i32_col(&b, "first_learned_epoch"), [Some(0), Some(0), Some(2)]);
    // A window: epochs 1..3 hold no row of sample 1.
    let w = recompute::recompute_any(&tmp.path().join("dynamics"), "1..3".parse().unwrap(), None).unwrap();
    let w = w.metrics_batch().unwrap();
    assert_eq!(i32_col(&w, "epochs"), [Some(2), Some(0), Some(2)]);
    assert_eq!(f64_col(&w, "confidence")[1], None);
}

#[test]
fn samples_never_seen_have_a_row_of_nulls() {
    let tmp = tempfile::tempdir().unwrap();
    // Sample 1 is in no epoch; --num-samples 5 adds samples 3 and 4.
    for e in 0..2 {
        write(tmp.path(), e, 0, vec![
            ("sample_id", i64s(&[2, 0])),
            ("label", i64s(&[1, 0])),
            ("gold_prob", f32s(&[0.5, 0.25])),
            ("correct", bools(&[true, false])),
            ("margin", f32s(&[1.0, -1.0])),
            ("el2n", f32s(&[0.5, 1.0])),
        ]);
    }
    for (num_samples, rows) in [(None, 3), (Some(5), 5)] {
        let b = metrics(tmp.path(), num_samples);
        assert_eq!(b.num_rows(), rows);
        let unseen: Vec<usize> = if rows == 3 { vec![1] } else { vec![1, 3, 4] };
        assert_eq!(i64_col(&b, "sample_id"), (0..rows as i64).map(Some).collect::<Vec<_>>());
        let epochs = i32_col(&b, "epochs");
        assert!(b.column_by_name("epochs").unwrap().null_count() == 0);
        for s in 0..rows {
            let seen = !unseen.contains(&s);
            assert_eq!(epochs[s], Some(if seen { 2 } else { 0 }), "sample {s}");
            for c in ["confidence", "variability", "correctness", "aum", "el2n", "threshold_closeness"] {
                assert_eq!(f64_col(&b, c)[s].is_some(), seen, "{c} of sample {s}");
            }
            for c in ["correct_count", "forgetting_events"] {
                assert_eq!(i32_col(&b, c)[s].is_some(), seen, "{c} of sample {s}");
            }
            assert_eq!(i64_col(&b, "label")[s].is_some(), seen, "label of sample {s}");
        }
        assert!(close(f64_col(&b, "aum")[2], 1.0, 1e-12));
        assert!(close(f64_col(&b, "el2n")[0], 1.0, 1e-12));
        assert_eq!(i32_col(&b, "first_learned_epoch")[2], Some(0));
    }
    // The strict table (carto's own jobs) still refuses such a gap.
    let r = recompute::recompute_any(&tmp.path().join("dynamics"), EpochRange::ALL, None).unwrap().recomputed;
    assert!(outputs::metrics_batch(&r.acc, &r.info).unwrap_err().to_string().contains("sample_id 1"));
    // An id at or beyond --num-samples is an error naming it.
    let err = recompute::recompute_any(&tmp.path().join("dynamics"), EpochRange::ALL, Some(2)).err().unwrap().to_string();
    assert!(err.contains("part-0.parquet: row 0: column 'sample_id' is 2, not below --num-samples 2"), "{err}");
}

#[test]
fn parts_that_differ_give_what_every_part_provides() {
    let tmp = tempfile::tempdir().unwrap();
    // Epoch 0: carto's own schema and a logits-only part. Epoch 1: float32
    // gold_prob with `correct`, and gold_prob with int32 `pred`: no margin,
    // no el2n, so aum and el2n are null; correctness comes from both.
    let zs = [[2.0f32, 0.0], [0.0, 1.0]];
    let mut own = DynamicsColumns::default();
    own.push(0, 0, &RowStats::from_logits(&zs[0], 0));
    outputs::write_parquet_atomic(&outputs::dynamics_part(tmp.path(), 0, 0), &own.to_batch(), None).unwrap();
    write(tmp.path(), 0, 1, vec![("sample_id", i64s(&[1])), ("label", i64s(&[0])), ("logits", list_f32(&[zs[1].to_vec()]))]);
    write(tmp.path(), 1, 0, vec![("sample_id", i64s(&[1])), ("label", i64s(&[0])), ("gold_prob", f32s(&[0.5])), ("correct", bools(&[true]))]);
    write(tmp.path(), 1, 1, vec![("sample_id", i32s(&[0])), ("label", i32s(&[0])), ("gold_prob", f64s(&[0.25])), ("pred", i32s(&[1]))]);
    let p = recompute::recompute_any(&tmp.path().join("dynamics"), EpochRange::ALL, None).unwrap();
    assert_eq!(p.recorded, Recorded { correct: true, margin: false, el2n: false });
    let b = p.metrics_batch().unwrap();
    let r = [RowStats::from_logits(&zs[0], 0), RowStats::from_logits(&zs[1], 0)];
    let conf = f64_col(&b, "confidence");
    assert!(close(conf[0], (r[0].gold_prob + 0.25) / 2.0, 1e-12));
    assert!(close(conf[1], (r[1].gold_prob + 0.5) / 2.0, 1e-12));
    // Sample 0: right then wrong (pred 1 ≠ label 0); sample 1: wrong then right.
    assert_eq!(i32_col(&b, "correct_count"), [Some(1), Some(1)]);
    assert_eq!(i32_col(&b, "forgetting_events"), [Some(1), Some(0)]);
    assert_eq!(i32_col(&b, "first_learned_epoch"), [Some(0), Some(1)]);
    all_null(&b, &["aum", "el2n"]);
    // With epoch 0 alone, every part has every statistic.
    let p = recompute::recompute_any(&tmp.path().join("dynamics"), "0".parse().unwrap(), None).unwrap();
    assert_eq!(p.recorded, Recorded::ALL);
    assert!(close(f64_col(&p.metrics_batch().unwrap(), "aum")[1], r[1].margin, 1e-12));
}

#[test]
fn bad_dynamics_are_one_line_naming_file_row_and_column() {
    let case = |cols: Vec<(&str, ArrayRef)>| {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), 0, 3, cols);
        error(tmp.path())
    };
    let has = |err: &str, parts: &[&str]| {
        assert!(err.contains("epoch=0/part-3.parquet: "), "names the file: {err}");
        for p in parts {
            assert!(err.contains(p), "'{p}' missing from: {err}");
        }
    };
    let err = case(vec![("label", i64s(&[0])), ("gold_prob", f64s(&[0.5]))]);
    has(&err, &["column 'sample_id' is missing"]);
    let err = case(vec![("sample_id", i64s(&[0])), ("gold_prob", f64s(&[0.5]))]);
    has(&err, &["column 'label' is missing"]);
    let err = case(vec![("sample_id", i64s(&[0])), ("label", i64s(&[0])), ("margin", f64s(&[0.5]))]);
    has(&err, &["'gold_prob' is missing", "'logits'"]);
    let err = case(vec![("sample_id", i64s(&[0])), ("label", i64s(&[0])), ("gold_prob", Arc::new(StringArray::from(vec!["x"])))]);
    has(&err, &["column 'gold_prob' has type Utf8", "float"]);
    let err = case(vec![("sample_id", i64s(&[0, 1])), ("label", i64s(&[0, 1])), ("logits", list_f32(&[vec![0.0, 1.0], vec![0.0, 1.0, 2.0]]))]);
    has(&err, &["row 1: column 'logits' has 3 values, but row 0 has 2"]);
    let err = case(vec![("sample_id", i64s(&[0, 1])), ("label", i64s(&[0, 1])), ("logits", list_f32(&[vec![0.0, 1.0], vec![f32::NAN, 1.0]]))]);
    has(&err, &["row 1: column 'logits' holds NaN"]);
    let err = case(vec![("sample_id", i64s(&[0])), ("label", i64s(&[2])), ("logits", list_f32(&[vec![0.0, 1.0]]))]);
    has(&err, &["row 0: column 'label' is 2, not a class index below 2"]);
    let err = case(vec![("sample_id", i64s(&[0, 1, 2])), ("label", i64s(&[0, 0, 0])), ("gold_prob", f32s(&[0.5, 0.25, 1.5]))]);
    has(&err, &["row 2: column 'gold_prob' is 1.5, expected a probability in [0, 1]"]);
    let err = case(vec![("sample_id", i64s(&[0])), ("label", i64s(&[0])), ("gold_prob", f64s(&[f64::NAN]))]);
    has(&err, &["row 0: column 'gold_prob' is NaN"]);
    let err = case(vec![
        ("sample_id", i64s(&[0, 1])),
        ("label", i64s(&[0, 0])),
        ("gold_prob", Arc::new(Float64Array::from(vec![Some(0.5), None]))),
    ]);
    has(&err, &["row 1: column 'gold_prob' is null"]);
    let err = case(vec![("sample_id", i64s(&[0, -4])), ("label", i64s(&[0, 0])), ("gold_prob", f64s(&[0.5, 0.5]))]);
    has(&err, &["row 1: column 'sample_id' is -4, negative"]);
    let err = case(vec![("sample_id", i32s(&[0, 1, 1])), ("label", i32s(&[0, 1, 1])), ("gold_prob", f32s(&[0.5, 0.5, 0.5]))]);
    has(&err, &["sample_id 1 appears twice in epoch 0"]);

    // Across files: a label that changes, logits of another length.
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), 0, 0, vec![("sample_id", i64s(&[0, 1])), ("label", i64s(&[0, 1])), ("gold_prob", f32s(&[0.5, 0.5]))]);
    write(tmp.path(), 1, 0, vec![("sample_id", i64s(&[0, 1])), ("label", i64s(&[0, 0])), ("gold_prob", f32s(&[0.5, 0.5]))]);
    let err = error(tmp.path());
    assert!(err.contains("epoch=1/part-0.parquet: sample_id 1 has label 0 in epoch 1 but 1 in an earlier epoch"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), 0, 0, vec![("sample_id", i64s(&[0])), ("label", i64s(&[0])), ("logits", list_f32(&[vec![0.0, 1.0]]))]);
    write(tmp.path(), 1, 0, vec![("sample_id", i64s(&[0])), ("label", i64s(&[0])), ("logits", list_f32(&[vec![0.0, 1.0, 2.0]]))]);
    let err = error(tmp.path());
    assert!(err.contains("epoch=1/part-0.parquet: row 0: column 'logits' has 3 values per row, but "), "{err}");
    assert!(err.contains("epoch=0/part-0.parquet has 2"), "{err}");
}

#[test]
fn carto_metrics_takes_a_pandas_style_file_and_num_samples() {
    let tmp = tempfile::tempdir().unwrap();
    // What pandas writes for a DataFrame with a non-default index: an extra
    // column, nullable fields, float32 logits.
    write(tmp.path(), 0, 0, vec![
        ("sample_id", i64s(&[0, 2])),
        ("label", i64s(&[1, 0])),
        ("logits", list_f32(&[vec![0.25, 1.5], vec![2.0, -1.0]])),
        ("__index_level_0__", i64s(&[10, 11])),
    ]);
    let out = tmp.path().join("metrics.parquet");
    let run = |args: &[&str]| {
        Command::new(CARTO)
            .args(args)
            .env_remove("CARTO_COORDINATOR")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let dyn_dir = tmp.path().join("dynamics");
    let ok = run(&["metrics", "--dynamics", dyn_dir.to_str().unwrap(), "--num-samples", "4", "--out", out.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let b = recompute::read_metrics(&out).unwrap();
    assert_eq!(i32_col(&b, "epochs"), [Some(1), Some(0), Some(1), Some(0)]);
    let r = RowStats::from_logits(&[0.25f32, 1.5], 1);
    assert!(close(f64_col(&b, "confidence")[0], r.gold_prob, 1e-12));
    assert_eq!(f64_col(&b, "aum")[3], None);

    let bad = run(&["metrics", "--dynamics", dyn_dir.to_str().unwrap(), "--num-samples", "2", "--out", out.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].contains("part-0.parquet: row 1: column 'sample_id' is 2, not below --num-samples 2"), "{stderr}");
}
