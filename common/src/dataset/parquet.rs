//! Parquet reader: reads only the needed columns (a projection), batch by batch.

use std::fs::File;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::{cast, concat};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int64Type, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::labels::{float_label, RawLabels};
use super::{column_not_found, finite_f32, DatasetSpec, FeatureSource, Features, Loc, RawTable};
use crate::{CartoError, Result};

/// Rows per decoded batch: small batches stay in cache and decode fastest.
const BATCH_ROWS: usize = 1024;

pub(crate) fn read(spec: &DatasetSpec) -> Result<RawTable> {
    let path = spec.path.display().to_string();
    let file = File::open(&spec.path)
        .map_err(|e| CartoError::invalid(format!("{path}: cannot open: {e}")))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| CartoError::invalid(format!("{path}: not a readable Parquet file ({e})")))?;
    let schema = builder.schema().clone();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let find = |col: &str| -> Result<usize> {
        names
            .iter()
            .position(|n| *n == col)
            .ok_or_else(|| column_not_found(&path, col, &names))
    };
    let mut roots = vec![find(&spec.label_col)?];
    if let Some(id) = &spec.id_col {
        roots.push(find(id)?);
    }
    match &spec.features {
        FeatureSource::Text(c) | FeatureSource::List(c) => roots.push(find(c)?),
        FeatureSource::Columns(cs) => {
            for c in cs {
                roots.push(find(c)?);
            }
        }
    }

    let loc = Loc::new(&spec.path, None);

    // Check the types before reading any data.
    let type_of = |col: &str| {
        schema
            .field_with_name(col)
            .expect("found above")
            .data_type()
            .clone()
    };
    let label_col = spec.label_col.as_str();
    let label_type = type_of(label_col);
    let string_labels = is_string_type(&label_type);
    if !string_labels && !is_int_label_type(&label_type) {
        return Err(loc.column(
            label_col,
            format!("unsupported label type {label_type}; labels must be integers, whole-valued floats, booleans or strings"),
        ));
    }
    match &spec.features {
        FeatureSource::Text(c) => {
            let t = type_of(c);
            if !is_string_type(&t) {
                return Err(loc.column(
                    c,
                    format!("type {t} cannot be text features; expected a string column"),
                ));
            }
        }
        FeatureSource::Columns(cs) => {
            for c in cs {
                let t = type_of(c);
                if !is_number_type(&t) {
                    return Err(loc.column(
                        c,
                        format!("type {t} cannot be a feature; expected a numeric column"),
                    ));
                }
            }
        }
        FeatureSource::List(c) => {
            let t = type_of(c);
            let ok = match &t {
                DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                    is_number_type(f.data_type())
                }
                _ => false,
            };
            if !ok {
                return Err(loc.column(
                    c,
                    format!("type {t} cannot be a feature list; expected a list of numbers"),
                ));
            }
        }
    }

    let total_rows = usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| CartoError::invalid(format!("{path}: cannot read Parquet data: {e}")))?;

    let mut labels = if string_labels {
        RawLabels::Str(Vec::new())
    } else {
        RawLabels::Int(Vec::new())
    };
    let mut id_parts: Vec<ArrayRef> = Vec::new();
    let mut dense: Vec<f32> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    let mut list_dim: Option<usize> = None;
    let mut offset = 0usize;

    for batch in reader {
        let batch = batch
            .map_err(|e| CartoError::invalid(format!("{path}: cannot read Parquet data: {e}")))?;
        let column = |c: &str| -> Result<&ArrayRef> {
            batch.column_by_name(c).ok_or_else(|| {
                CartoError::internal(format!("{path}: projected column '{c}' missing"))
            })
        };
        read_labels(column(label_col)?, offset, &loc, label_col, &mut labels)?;
        if let Some(id) = &spec.id_col {
            let arr = column(id)?;
            if let Some(nulls) = arr.logical_nulls() {
                if nulls.null_count() > 0 {
                    let i = (0..arr.len()).find(|&i| nulls.is_null(i)).unwrap_or(0);
                    return Err(loc.cell(offset + i, id, "null id"));
                }
            }
            id_parts.push(arr.clone());
        }
        match &spec.features {
            FeatureSource::Text(c) => read_text(column(c)?, offset, &loc, c, &mut texts)?,
            FeatureSource::Columns(cs) => {
                let n = batch.num_rows();
                let dim = cs.len();
                let base = dense.len();
                if base == 0 {
                    dense.reserve(total_rows.max(n).saturating_mul(dim));
                }
                dense.resize(base + n * dim, 0.0);
                for (j, c) in cs.iter().enumerate() {
                    let vals = numeric_f64(column(c)?, &loc, c)?;
                    for i in 0..n {
                        if vals.is_null(i) {
                            return Err(loc.cell(offset + i, c, "null feature value"));
                        }
                        let v =
                            finite_f32(vals.value(i)).map_err(|m| loc.cell(offset + i, c, m))?;
                        dense[base + i * dim + j] = v;
                    }
                }
            }
            FeatureSource::List(c) => read_list(
                column(c)?,
                offset,
                total_rows,
                &loc,
                c,
                &mut list_dim,
                &mut dense,
            )?,
        }
        offset += batch.num_rows();
    }

    let ids =
        match spec.id_col {
            None => None,
            Some(_) if id_parts.len() == 1 => id_parts.pop(),
            Some(_) if id_parts.is_empty() => {
                let t = type_of(spec.id_col.as_deref().unwrap_or_default());
                Some(arrow::array::new_empty_array(&t))
            }
            Some(_) => {
                let refs: Vec<&dyn Array> = id_parts.iter().map(|a| a.as_ref()).collect();
                Some(concat(&refs).map_err(|e| {
                    CartoError::internal(format!("{path}: joining the id column: {e}"))
                })?)
            }
        };
    let features = match &spec.features {
        FeatureSource::Text(_) => Features::Text(texts),
        FeatureSource::Columns(cs) => Features::Dense {
            dim: cs.len(),
            values: dense,
        },
        FeatureSource::List(_) => Features::Dense {
            dim: list_dim.unwrap_or(0),
            values: dense,
        },
    };
    Ok(RawTable {
        loc,
        labels,
        ids,
        features,
    })
}

fn is_string_type(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => matches!(
            **v,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ),
        _ => false,
    }
}

fn is_int_label_type(t: &DataType) -> bool {
    t.is_integer() || t.is_floating() || *t == DataType::Boolean
}

fn is_number_type(t: &DataType) -> bool {
    t.is_integer()
        || t.is_floating()
        || matches!(
            t,
            DataType::Boolean | DataType::Decimal128(_, _) | DataType::Decimal256(_, _)
        )
}

fn cast_err(loc: &Loc, col: &str, e: arrow::error::ArrowError) -> CartoError {
    loc.column(col, format!("cannot convert: {e}"))
}

fn read_labels(
    arr: &ArrayRef,
    offset: usize,
    loc: &Loc,
    col: &str,
    out: &mut RawLabels,
) -> Result<()> {
    let null = |i: usize| loc.cell(offset + i, col, "null label");
    match out {
        RawLabels::Str(out) => {
            let s = cast(arr, &DataType::Utf8).map_err(|e| cast_err(loc, col, e))?;
            let s = s.as_string::<i32>();
            out.reserve(s.len());
            for i in 0..s.len() {
                if s.is_null(i) {
                    return Err(null(i));
                }
                out.push(s.value(i).to_owned());
            }
        }
        RawLabels::Int(out) => {
            out.reserve(arr.len());
            match arr.data_type() {
                DataType::UInt64 => {
                    let a = arr.as_primitive::<UInt64Type>();
                    for i in 0..a.len() {
                        if a.is_null(i) {
                            return Err(null(i));
                        }
                        let v = a.value(i);
                        let v = i64::try_from(v).map_err(|_| {
                            loc.cell(
                                offset + i,
                                col,
                                format!("label {v} is out of the integer range"),
                            )
                        })?;
                        out.push(v);
                    }
                }
                t if t.is_floating() => {
                    let f = cast(arr, &DataType::Float64).map_err(|e| cast_err(loc, col, e))?;
                    let f = f.as_primitive::<Float64Type>();
                    for i in 0..f.len() {
                        if f.is_null(i) {
                            return Err(null(i));
                        }
                        out.push(
                            float_label(f.value(i)).map_err(|m| loc.cell(offset + i, col, m))?,
                        );
                    }
                }
                DataType::Boolean => {
                    let b = arr.as_boolean();
                    for i in 0..b.len() {
                        if b.is_null(i) {
                            return Err(null(i));
                        }
                        out.push(b.value(i) as i64);
                    }
                }
                _ => {
                    let a = cast(arr, &DataType::Int64).map_err(|e| cast_err(loc, col, e))?;
                    let a = a.as_primitive::<Int64Type>();
                    if a.null_count() == 0 {
                        out.extend_from_slice(a.values());
                    } else {
                        for i in 0..a.len() {
                            if a.is_null(i) {
                                return Err(null(i));
                            }
                            out.push(a.value(i));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn read_text(
    arr: &ArrayRef,
    offset: usize,
    loc: &Loc,
    col: &str,
    out: &mut Vec<String>,
) -> Result<()> {
    let s = cast(arr, &DataType::Utf8).map_err(|e| cast_err(loc, col, e))?;
    let s = s.as_string::<i32>();
    out.reserve(s.len());
    for i in 0..s.len() {
        if s.is_null(i) {
            return Err(loc.cell(offset + i, col, "null text"));
        }
        out.push(s.value(i).to_owned());
    }
    Ok(())
}

fn numeric_f64(arr: &ArrayRef, loc: &Loc, col: &str) -> Result<arrow::array::Float64Array> {
    let f = cast(arr, &DataType::Float64).map_err(|e| cast_err(loc, col, e))?;
    Ok(f.as_primitive::<Float64Type>().clone())
}

fn read_list(
    arr: &ArrayRef,
    offset: usize,
    total_rows: usize,
    loc: &Loc,
    col: &str,
    dim: &mut Option<usize>,
    out: &mut Vec<f32>,
) -> Result<()> {
    // (start, end) of each row in `values`.
    let (values, ranges): (ArrayRef, Vec<(usize, usize)>) = match arr.data_type() {
        DataType::List(_) => {
            let l = arr.as_list::<i32>();
            let o = l.value_offsets();
            (
                l.values().clone(),
                (0..l.len())
                    .map(|i| (o[i] as usize, o[i + 1] as usize))
                    .collect(),
            )
        }
        DataType::LargeList(_) => {
            let l = arr.as_list::<i64>();
            let o = l.value_offsets();
            (
                l.values().clone(),
                (0..l.len())
                    .map(|i| (o[i] as usize, o[i + 1] as usize))
                    .collect(),
            )
        }
        DataType::FixedSizeList(_, _) => {
            let l = arr.as_fixed_size_list();
            let n = l.value_length() as usize;
            (
                l.values().clone(),
                (0..l.len())
                    .map(|i| {
                        let s = l.value_offset_at(i);
                        (s, s + n)
                    })
                    .collect(),
            )
        }
        t => {
            return Err(loc.column(
                col,
                format!("type {t} cannot be a feature list; expected a list of numbers"),
            ))
        }
    };
    let source_f64 = matches!(
        values.data_type(),
        DataType::Float64 | DataType::Decimal128(_, _) | DataType::Decimal256(_, _)
    );
    let wide = if source_f64 {
        Some(numeric_f64(&values, loc, col)?)
    } else {
        None
    };
    let f32s = match &wide {
        Some(w) => cast(w, &DataType::Float32),
        None => cast(&values, &DataType::Float32),
    }
    .map_err(|e| cast_err(loc, col, e))?;
    let f32s = f32s.as_primitive::<Float32Type>();
    let vals = f32s.values();
    let has_null_items = f32s.null_count() > 0;
    let list_nulls = arr.logical_nulls();

    for (i, &(s, e)) in ranges.iter().enumerate() {
        let row = offset + i;
        if list_nulls.as_ref().is_some_and(|n| n.is_null(i)) {
            return Err(loc.cell(row, col, "null feature list"));
        }
        let n = e - s;
        if n == 0 {
            return Err(loc.cell(row, col, "empty feature list"));
        }
        match *dim {
            None => {
                *dim = Some(n);
                // Every row has this length: reserve the whole matrix once.
                out.reserve(total_rows.max(ranges.len()).saturating_mul(n).min(1 << 34));
            }
            Some(d) if d != n => {
                return Err(loc.cell(
                    row,
                    col,
                    format!("feature list has length {n}, but row 0 has length {d}; all rows need the same length"),
                ))
            }
            Some(_) => {}
        }
        if has_null_items {
            if let Some(k) = (s..e).find(|&k| f32s.is_null(k)) {
                return Err(loc.cell(
                    row,
                    col,
                    format!("list element {}: null feature value", k - s),
                ));
            }
        }
        let slice = &vals[s..e];
        if let Some(k) = slice.iter().position(|v| !v.is_finite()) {
            let msg = match &wide {
                Some(w) => finite_f32(w.value(s + k)).err(),
                None => finite_f32(slice[k] as f64).err(),
            }
            .unwrap_or_else(|| "non-finite feature value".to_string());
            return Err(loc.cell(row, col, format!("list element {k}: {msg}")));
        }
        out.extend_from_slice(slice);
    }
    Ok(())
}
