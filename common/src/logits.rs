//! Rows of logits, as an external training loop sends them (carto's Python
//! `Recorder`): `sample_id` (int64 or int32), `label` (int64 or int32) and
//! `logits` (a fixed-size or variable list of float32 or float64, one value
//! per class). [`to_dynamics`] turns them into dynamics rows with
//! [`RowStats::from_logits`], the same code carto's own worker records with:
//! one implementation of gold_prob, pred, margin, el2n and loss.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int32Type, Int64Type};

use crate::dynamics::DynamicsColumns;
use crate::metrics::RowStats;
use crate::{CartoError, Result};

pub const SAMPLE_ID: &str = "sample_id";
pub const LABEL: &str = "label";
pub const LOGITS: &str = "logits";

/// Whether `batch` holds logits rows (rather than dynamics rows).
pub fn is_logits_batch(batch: &RecordBatch) -> bool {
    batch.schema().column_with_name(LOGITS).is_some()
}

fn ints(col: &ArrayRef, name: &str, what: &str) -> Result<Vec<i64>> {
    if col.null_count() > 0 {
        return Err(CartoError::invalid(format!("{what}: column '{name}' has nulls")));
    }
    match col.data_type() {
        DataType::Int64 => Ok(col.as_primitive::<Int64Type>().values().to_vec()),
        DataType::Int32 => Ok(col.as_primitive::<Int32Type>().values().iter().map(|&v| v as i64).collect()),
        t => Err(CartoError::invalid(format!("{what}: column '{name}' is {t}, expected int64"))),
    }
}

/// The logits of every row, flattened row-major, checked to have `k` values per row.
fn logits_matrix(col: &ArrayRef, k: usize, what: &str) -> Result<Vec<f64>> {
    let rows = col.len();
    let (values, offsets): (ArrayRef, Vec<usize>) = match col.data_type() {
        DataType::FixedSizeList(_, size) => {
            let l = col.as_fixed_size_list();
            if *size as usize != k {
                return Err(CartoError::invalid(format!(
                    "{what}: column 'logits' has {size} values per row, the job has {k} classes"
                )));
            }
            // A sliced column's rows start at its offset into the values.
            let start = if rows > 0 { l.value_offset_at(0) as usize } else { 0 };
            (l.values().clone(), (0..=rows).map(|i| start + i * k).collect())
        }
        DataType::List(_) => {
            let l = col.as_list::<i32>();
            (l.values().clone(), l.value_offsets().iter().map(|&o| o as usize).collect())
        }
        DataType::LargeList(_) => {
            let l = col.as_list::<i64>();
            (l.values().clone(), l.value_offsets().iter().map(|&o| o as usize).collect())
        }
        t => return Err(CartoError::invalid(format!("{what}: column 'logits' is {t}, expected a list of floats"))),
    };
    if col.null_count() > 0 || values.null_count() > 0 {
        return Err(CartoError::invalid(format!("{what}: column 'logits' has nulls")));
    }
    let flat: Vec<f64> = match values.data_type() {
        DataType::Float32 => values.as_primitive::<Float32Type>().values().iter().map(|&v| v as f64).collect(),
        DataType::Float64 => values.as_primitive::<Float64Type>().values().to_vec(),
        t => return Err(CartoError::invalid(format!("{what}: column 'logits' holds {t}, expected float32 or float64"))),
    };
    let mut out = Vec::with_capacity(rows * k);
    for r in 0..rows {
        let (a, b) = (offsets[r], offsets[r + 1]);
        if b - a != k {
            return Err(CartoError::invalid(format!(
                "{what}: row {r}: {} logits, the job has {k} classes",
                b - a
            )));
        }
        out.extend_from_slice(&flat[a..b]);
    }
    Ok(out)
}

/// Dynamics rows (the contract's schema) computed from a batch of logits
/// rows of a job with `k` classes. Refuses, naming the row: a label outside
/// `[0, k)`, NaN or infinite logits, a row without `k` logits, nulls.
pub fn to_dynamics(batch: &RecordBatch, k: usize, what: &str) -> Result<RecordBatch> {
    let col = |name: &str| {
        batch.column_by_name(name).ok_or_else(|| CartoError::invalid(format!("{what}: column '{name}' is missing")))
    };
    if k < 2 {
        return Err(CartoError::invalid(format!("{what}: a job needs at least 2 classes")));
    }
    let ids = ints(col(SAMPLE_ID)?, SAMPLE_ID, what)?;
    let labels = ints(col(LABEL)?, LABEL, what)?;
    let logits = logits_matrix(col(LOGITS)?, k, what)?;
    let mut rows = DynamicsColumns::with_capacity(ids.len());
    for (i, (&s, &label)) in ids.iter().zip(&labels).enumerate() {
        let bad = |msg: String| CartoError::invalid(format!("{what}: row {i} (sample_id {s}): {msg}"));
        if label < 0 || label >= k as i64 {
            return Err(bad(format!("label {label} is not a class index below {k}")));
        }
        let z = &logits[i * k..(i + 1) * k];
        if let Some(x) = z.iter().find(|x| !x.is_finite()) {
            return Err(bad(format!("logits hold {x}")));
        }
        rows.push(s, label, &RowStats::from_logits(z, label as usize));
    }
    Ok(rows.to_batch())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{FixedSizeListArray, Float32Array, Int64Array, ListArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn batch(ids: &[i64], labels: &[i64], logits: &[f32], k: i32) -> RecordBatch {
        let values = Arc::new(Float32Array::from(logits.to_vec()));
        let field = Arc::new(Field::new("item", DataType::Float32, false));
        let list = FixedSizeListArray::new(field.clone(), k, values, None);
        let schema = Schema::new(vec![
            Field::new(SAMPLE_ID, DataType::Int64, false),
            Field::new(LABEL, DataType::Int64, false),
            Field::new(LOGITS, DataType::FixedSizeList(field, k), false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(Int64Array::from(ids.to_vec())), Arc::new(Int64Array::from(labels.to_vec())), Arc::new(list)],
        )
        .unwrap()
    }

    #[test]
    fn rows_are_computed_by_the_workers_formulas() {
        let z = [2.0f32, 0.5, -1.0, 0.0, 0.0, 3.0];
        let b = batch(&[4, 7], &[0, 1], &z, 3);
        assert!(is_logits_batch(&b));
        let d = to_dynamics(&b, 3, "chunk 0").unwrap();
        let v = crate::dynamics::DynamicsView::new(&d, "x").unwrap();
        for (i, gold) in [(0usize, 0usize), (1, 1)] {
            let want = RowStats::from_logits(&z[i * 3..i * 3 + 3], gold);
            assert_eq!(v.gold_prob[i], want.gold_prob);
            assert_eq!(v.margin[i], want.margin);
            assert_eq!(v.el2n[i], want.el2n);
            assert_eq!(v.loss[i], want.loss);
            assert_eq!(v.pred[i], want.pred);
        }
        // By hand for row 0: softmax of (2, 0.5, -1).
        let e = [2.0f64.exp(), 0.5f64.exp(), (-1.0f64).exp()];
        let p0 = e[0] / e.iter().sum::<f64>();
        assert!((v.gold_prob[0] - p0).abs() < 1e-12);
        assert!((v.margin[0] - 1.5).abs() < 1e-12);
        assert_eq!(v.sample_id, &[4, 7]);
        // A slice of the batch reads its own rows.
        let tail = to_dynamics(&b.slice(1, 1), 3, "chunk 0").unwrap();
        let t = crate::dynamics::DynamicsView::new(&tail, "x").unwrap();
        assert_eq!((t.sample_id, t.gold_prob[0]), (&[7i64][..], v.gold_prob[1]));
    }

    #[test]
    fn variable_lists_work_and_bad_rows_are_named() {
        let values = Arc::new(Float32Array::from(vec![1.0f32, 2.0, 3.0, 4.0]));
        let offsets = arrow::buffer::OffsetBuffer::new(vec![0i32, 2, 4].into());
        let list = ListArray::new(Arc::new(Field::new("item", DataType::Float32, false)), offsets, values, None);
        let schema = Schema::new(vec![
            Field::new(SAMPLE_ID, DataType::Int64, false),
            Field::new(LABEL, DataType::Int64, false),
            Field::new(LOGITS, list.data_type().clone(), false),
        ]);
        let b = RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(Int64Array::from(vec![0, 1])), Arc::new(Int64Array::from(vec![1, 0])), Arc::new(list)],
        )
        .unwrap();
        assert_eq!(to_dynamics(&b, 2, "c").unwrap().num_rows(), 2);
        assert!(to_dynamics(&b, 3, "c").unwrap_err().to_string().contains("row 0: 2 logits, the job has 3"));

        let err = to_dynamics(&batch(&[0, 1], &[0, 2], &[0.0; 4], 2), 2, "c").unwrap_err().to_string();
        assert!(err.contains("row 1 (sample_id 1): label 2 is not a class index below 2"), "{err}");
        let err = to_dynamics(&batch(&[0, 1], &[0, 1], &[0.0, 1.0, f32::NAN, 0.0], 2), 2, "c").unwrap_err().to_string();
        assert!(err.contains("row 1 (sample_id 1): logits hold NaN"), "{err}");
        let err = to_dynamics(&batch(&[0], &[0], &[0.0, 1.0, 2.0], 3), 2, "c").unwrap_err().to_string();
        assert!(err.contains("3 values per row, the job has 2 classes"), "{err}");
    }
}
