//! Label mapping: integer labels are class indices; string labels become class
//! indices in sorted byte order of their distinct values.

use std::collections::HashSet;

use super::{fmt_f64, snippet, Loc};
use crate::Result;

/// Largest accepted integer label. Integer labels are class indices, so a model
/// gets `max + 1` outputs; a label beyond this is almost always a code or an id
/// that should be given as a string.
pub(crate) const MAX_INT_LABEL: i64 = 9_999_999;

/// Labels as a reader found them (nulls already rejected by the reader).
#[derive(Debug)]
pub(crate) enum RawLabels {
    /// Integer labels, used as class indices (negatives are rejected here).
    Int(Vec<i64>),
    /// String labels (empty strings are rejected here).
    Str(Vec<String>),
}

impl RawLabels {
    pub fn len(&self) -> usize {
        match self {
            RawLabels::Int(v) => v.len(),
            RawLabels::Str(v) => v.len(),
        }
    }
}

/// Labels ready for a [`super::Dataset`].
#[derive(Debug)]
pub(crate) struct Mapped {
    pub labels: Vec<i64>,
    pub names: Option<Vec<String>>,
    pub num_classes: usize,
}

/// Validates the labels and maps them to class indices. Needs at least one row.
pub(crate) fn finish(raw: RawLabels, loc: &Loc, col: &str) -> Result<Mapped> {
    match raw {
        RawLabels::Int(labels) => {
            let mut max = 0i64;
            for (row, &v) in labels.iter().enumerate() {
                if v < 0 {
                    return Err(loc.cell(
                        row,
                        col,
                        format!(
                            "negative label {v}; integer labels are class indices and must be >= 0"
                        ),
                    ));
                }
                if v > MAX_INT_LABEL {
                    return Err(loc.cell(
                        row,
                        col,
                        format!(
                            "label {v} is too large for a class index (at most {MAX_INT_LABEL}); \
                             integer labels are class indices 0..K-1, give codes as strings"
                        ),
                    ));
                }
                max = max.max(v);
            }
            let first = labels[0];
            if labels.iter().all(|&v| v == first) {
                return Err(single_class(loc, col, &first.to_string(), labels.len()));
            }
            let num_classes = max as usize + 1;
            let distinct: HashSet<i64> = labels.iter().copied().collect();
            if distinct.len() < num_classes {
                tracing::warn!(
                    path = %loc.path,
                    column = col,
                    num_classes,
                    present = distinct.len(),
                    "some class indices below the largest label have no rows"
                );
            }
            Ok(Mapped {
                labels,
                names: None,
                num_classes,
            })
        }
        RawLabels::Str(labels) => {
            if let Some(row) = labels.iter().position(|s| s.trim().is_empty()) {
                let what = if labels[row].is_empty() {
                    "empty label"
                } else {
                    "blank label"
                };
                return Err(loc.cell(row, col, what));
            }
            let mut names: Vec<&str> = labels.iter().map(|s| s.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            if names.len() < 2 {
                return Err(single_class(loc, col, &snippet(names[0]), labels.len()));
            }
            let indices = labels
                .iter()
                .map(|s| names.binary_search(&s.as_str()).expect("label among names") as i64)
                .collect();
            let names: Vec<String> = names.into_iter().map(str::to_owned).collect();
            Ok(Mapped {
                labels: indices,
                num_classes: names.len(),
                names: Some(names),
            })
        }
    }
}

fn single_class(loc: &Loc, col: &str, class: &str, rows: usize) -> crate::CartoError {
    loc.column(
        col,
        format!(
            "only one class ({class}) in {rows} row{}; a classifier needs at least two",
            if rows == 1 { "" } else { "s" }
        ),
    )
}

/// Decides the label kind of a text column (CSV): integers if every cell parses
/// as i64 (or every cell is a number with a whole value, like `1.0`), else strings.
/// `cells` are non-empty (the reader rejects empty cells).
pub(crate) fn from_text(cells: Vec<String>, loc: &Loc, col: &str) -> Result<RawLabels> {
    let mut ints = Vec::with_capacity(cells.len());
    let mut all_int = true;
    for s in &cells {
        match s.trim().parse::<i64>() {
            Ok(v) => ints.push(v),
            Err(_) => {
                all_int = false;
                break;
            }
        }
    }
    if all_int {
        return Ok(RawLabels::Int(ints));
    }
    // All numbers but not all i64: whole-valued floats (`1.0`, as pandas writes
    // integer columns holding NaN) are class indices; anything else is an error.
    let floats: Option<Vec<f64>> = cells.iter().map(|s| s.trim().parse::<f64>().ok()).collect();
    if let Some(floats) = floats {
        let mut out = Vec::with_capacity(floats.len());
        for (row, &f) in floats.iter().enumerate() {
            out.push(float_label(f).map_err(|m| loc.cell(row, col, m))?);
        }
        return Ok(RawLabels::Int(out));
    }
    Ok(RawLabels::Str(cells))
}

/// A float label must be a whole number that fits i64.
pub(crate) fn float_label(f: f64) -> std::result::Result<i64, String> {
    if f.is_nan() {
        return Err("NaN label".to_string());
    }
    if f.is_infinite() {
        return Err(format!("infinite label ({f})"));
    }
    if f.fract() != 0.0 {
        return Err(format!(
            "non-integer label {}; float labels must hold whole class indices",
            fmt_f64(f)
        ));
    }
    if f < i64::MIN as f64 || f >= i64::MAX as f64 {
        return Err(format!("label {} is out of the integer range", fmt_f64(f)));
    }
    Ok(f as i64)
}
