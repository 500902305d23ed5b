//! The raw training dynamics: one row per sample per recorded epoch.
//!
//! This schema is both the wire format (workers → coordinator, as Arrow IPC) and
//! the on-disk format of `OUT/dynamics/epoch=K/part-R.parquet` (contract). The
//! epoch is not a column: it is the Hive partition key of the path, and the
//! header of every wire chunk.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::metrics::RowStats;
use crate::{CartoError, Result};

pub const SAMPLE_ID: &str = "sample_id";
pub const LABEL: &str = "label";
pub const GOLD_PROB: &str = "gold_prob";
pub const PRED: &str = "pred";
pub const CORRECT: &str = "correct";
pub const MARGIN: &str = "margin";
pub const EL2N: &str = "el2n";
pub const LOSS: &str = "loss";
/// Not a dynamics column: dynamics written by other training loops may hold
/// each row's raw logits (a list, one value per class) instead of the
/// statistics; `carto metrics` computes the statistics from them with
/// [`RowStats::from_logits`].
pub const LOGITS: &str = "logits";

/// The dynamics schema (contract): all columns non-nullable.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(SAMPLE_ID, DataType::Int64, false),
        Field::new(LABEL, DataType::Int64, false),
        Field::new(GOLD_PROB, DataType::Float64, false),
        Field::new(PRED, DataType::Int64, false),
        Field::new(CORRECT, DataType::Boolean, false),
        Field::new(MARGIN, DataType::Float64, false),
        Field::new(EL2N, DataType::Float64, false),
        Field::new(LOSS, DataType::Float64, false),
    ]))
}

/// Bytes one dynamics row takes in Arrow buffers (the bool is one bit; round up).
pub const ROW_BYTES: usize = 8 * 7 + 1;

/// Column-wise builder of dynamics rows.
#[derive(Debug, Default, Clone)]
pub struct DynamicsColumns {
    pub sample_id: Vec<i64>,
    pub label: Vec<i64>,
    pub gold_prob: Vec<f64>,
    pub pred: Vec<i64>,
    pub correct: Vec<bool>,
    pub margin: Vec<f64>,
    pub el2n: Vec<f64>,
    pub loss: Vec<f64>,
}

impl DynamicsColumns {
    pub fn with_capacity(n: usize) -> Self {
        DynamicsColumns {
            sample_id: Vec::with_capacity(n),
            label: Vec::with_capacity(n),
            gold_prob: Vec::with_capacity(n),
            pred: Vec::with_capacity(n),
            correct: Vec::with_capacity(n),
            margin: Vec::with_capacity(n),
            el2n: Vec::with_capacity(n),
            loss: Vec::with_capacity(n),
        }
    }

    pub fn push(&mut self, sample_id: i64, label: i64, s: &RowStats) {
        self.sample_id.push(sample_id);
        self.label.push(label);
        self.gold_prob.push(s.gold_prob);
        self.pred.push(s.pred);
        self.correct.push(s.correct);
        self.margin.push(s.margin);
        self.el2n.push(s.el2n);
        self.loss.push(s.loss);
    }

    pub fn len(&self) -> usize {
        self.sample_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sample_id.is_empty()
    }

    /// Rows `[start, end)` as a record batch.
    pub fn slice_to_batch(&self, start: usize, end: usize) -> RecordBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(self.sample_id[start..end].to_vec())),
            Arc::new(Int64Array::from(self.label[start..end].to_vec())),
            Arc::new(Float64Array::from(self.gold_prob[start..end].to_vec())),
            Arc::new(Int64Array::from(self.pred[start..end].to_vec())),
            Arc::new(BooleanArray::from(self.correct[start..end].to_vec())),
            Arc::new(Float64Array::from(self.margin[start..end].to_vec())),
            Arc::new(Float64Array::from(self.el2n[start..end].to_vec())),
            Arc::new(Float64Array::from(self.loss[start..end].to_vec())),
        ];
        RecordBatch::try_new(schema(), cols).expect("dynamics columns match the schema")
    }

    pub fn to_batch(&self) -> RecordBatch {
        self.slice_to_batch(0, self.len())
    }
}

/// Typed, checked access to the columns of one dynamics record batch.
pub struct DynamicsView<'a> {
    pub sample_id: &'a [i64],
    pub label: &'a [i64],
    pub gold_prob: &'a [f64],
    pub pred: &'a [i64],
    pub correct: &'a BooleanArray,
    pub margin: &'a [f64],
    pub el2n: &'a [f64],
    pub loss: &'a [f64],
}

impl<'a> DynamicsView<'a> {
    /// Checks that `batch` has the dynamics schema (names, types, no nulls);
    /// extra columns are ignored. `what` names the source in errors.
    pub fn new(batch: &'a RecordBatch, what: &str) -> Result<Self> {
        fn col<'b, T: 'static>(batch: &'b RecordBatch, name: &str, what: &str) -> Result<&'b T> {
            let array = batch.column_by_name(name).ok_or_else(|| {
                CartoError::invalid(format!("{what}: column '{name}' is missing"))
            })?;
            if array.null_count() > 0 {
                return Err(CartoError::invalid(format!("{what}: column '{name}' has nulls")));
            }
            array.as_any().downcast_ref::<T>().ok_or_else(|| {
                CartoError::invalid(format!(
                    "{what}: column '{name}' has type {}, expected {}",
                    array.data_type(),
                    schema().field_with_name(name).map(|f| f.data_type().to_string()).unwrap_or_default()
                ))
            })
        }
        Ok(DynamicsView {
            sample_id: col::<Int64Array>(batch, SAMPLE_ID, what)?.values(),
            label: col::<Int64Array>(batch, LABEL, what)?.values(),
            gold_prob: col::<Float64Array>(batch, GOLD_PROB, what)?.values(),
            pred: col::<Int64Array>(batch, PRED, what)?.values(),
            correct: col::<BooleanArray>(batch, CORRECT, what)?,
            margin: col::<Float64Array>(batch, MARGIN, what)?.values(),
            el2n: col::<Float64Array>(batch, EL2N, what)?.values(),
            loss: col::<Float64Array>(batch, LOSS, what)?.values(),
        })
    }

    pub fn len(&self) -> usize {
        self.sample_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sample_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_round_trips_through_a_view() {
        let mut cols = DynamicsColumns::default();
        let s = RowStats::from_logits(&[2.0f32, 0.0], 0);
        cols.push(7, 0, &s);
        cols.push(3, 1, &s);
        let batch = cols.to_batch();
        let v = DynamicsView::new(&batch, "test").unwrap();
        assert_eq!(v.sample_id, &[7, 3]);
        assert_eq!(v.label, &[0, 1]);
        assert!(v.correct.value(0));
        assert_eq!(v.gold_prob[1], s.gold_prob);
    }

    #[test]
    fn view_rejects_a_wrong_type_naming_the_column() {
        let schema = Arc::new(Schema::new(vec![Field::new(SAMPLE_ID, DataType::Float64, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Float64Array::from(vec![1.0]))]).unwrap();
        let err = DynamicsView::new(&batch, "chunk 3").err().unwrap().to_string();
        assert!(err.contains("chunk 3") && err.contains("sample_id") && err.contains("Int64"), "{err}");
    }
}
