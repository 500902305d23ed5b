//! CSV reader: a header line, then one row per record (quoted fields may span lines).

use std::fs::File;
use std::io::BufReader;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};

use super::labels::{self, RawLabels};
use super::{
    column_not_found, finite_f32, snippet, DatasetSpec, FeatureSource, Features, Loc, RawTable,
};
use crate::{CartoError, Result};

enum FeatIdx {
    Text(usize),
    Cols(Vec<(usize, String)>),
    List(usize),
}

pub(crate) fn read(spec: &DatasetSpec) -> Result<RawTable> {
    let path = spec.path.display().to_string();
    let file = File::open(&spec.path)
        .map_err(|e| CartoError::invalid(format!("{path}: cannot open: {e}")))?;
    let mut rdr = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .trim(::csv::Trim::Headers)
        .from_reader(BufReader::with_capacity(1 << 20, file));

    let header = rdr
        .byte_headers()
        .map_err(|e| CartoError::invalid(format!("{path}: cannot read the CSV header: {e}")))?
        .clone();
    let names: Vec<String> = header
        .iter()
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .collect();
    if names.is_empty() || (names.len() == 1 && names[0].is_empty()) {
        return Err(CartoError::invalid(format!(
            "{path}: no rows (empty file, no header line)"
        )));
    }
    let find = |col: &str| -> Result<usize> {
        names
            .iter()
            .position(|n| n == col)
            .ok_or_else(|| column_not_found(&path, col, &names))
    };
    let label_idx = find(&spec.label_col)?;
    let id_idx = spec.id_col.as_deref().map(find).transpose()?;
    let feat = match &spec.features {
        FeatureSource::Text(c) => FeatIdx::Text(find(c)?),
        FeatureSource::Columns(cs) => FeatIdx::Cols(
            cs.iter()
                .map(|c| Ok((find(c)?, c.clone())))
                .collect::<Result<Vec<_>>>()?,
        ),
        FeatureSource::List(c) => FeatIdx::List(find(c)?),
    };
    let label_col = spec.label_col.as_str();
    let id_col = spec.id_col.as_deref().unwrap_or("");
    let feat_col: &str = match &spec.features {
        FeatureSource::Text(c) | FeatureSource::List(c) => c,
        FeatureSource::Columns(_) => "",
    };

    let mut loc = Loc::new(&spec.path, Some(Vec::new()));
    let mut label_cells: Vec<String> = Vec::new();
    let mut id_cells: Vec<String> = Vec::new();
    let mut id_ints: Vec<i64> = Vec::new();
    let mut ids_all_int = true;
    let mut dense: Vec<f32> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    let mut list_dim: Option<usize> = None;

    let mut record = ::csv::ByteRecord::new();
    loop {
        let row = label_cells.len();
        match rdr.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_error(&path, e, row)),
        }
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        loc.lines.as_mut().expect("csv has lines").push(line);

        // Label.
        let cell = text_cell(&loc, row, label_col, &record[label_idx])?;
        if cell.trim().is_empty() {
            return Err(loc.cell(row, label_col, "null label (empty cell)"));
        }
        label_cells.push(cell.to_owned());

        // Id.
        if let Some(i) = id_idx {
            let cell = text_cell(&loc, row, id_col, &record[i])?;
            if cell.trim().is_empty() {
                return Err(loc.cell(row, id_col, "null id (empty cell)"));
            }
            if ids_all_int {
                match cell.trim().parse::<i64>() {
                    Ok(v) => id_ints.push(v),
                    Err(_) => ids_all_int = false,
                }
            }
            id_cells.push(cell.to_owned());
        }

        // Features.
        match &feat {
            FeatIdx::Text(i) => {
                texts.push(text_cell(&loc, row, feat_col, &record[*i])?.to_owned());
            }
            FeatIdx::Cols(cols) => {
                for (i, name) in cols {
                    let cell = text_cell(&loc, row, name, &record[*i])?.trim();
                    if cell.is_empty() {
                        return Err(loc.cell(row, name, "null feature value (empty cell)"));
                    }
                    let v: f64 = cell.parse().map_err(|_| {
                        loc.cell(
                            row,
                            name,
                            format!("feature value {} is not a number", snippet(cell)),
                        )
                    })?;
                    dense.push(finite_f32(v).map_err(|m| loc.cell(row, name, m))?);
                }
            }
            FeatIdx::List(i) => {
                let cell = text_cell(&loc, row, feat_col, &record[*i])?;
                if cell.trim().is_empty() {
                    return Err(loc.cell(row, feat_col, "null feature list (empty cell)"));
                }
                let before = dense.len();
                parse_list(cell, &mut dense).map_err(|m| loc.cell(row, feat_col, m))?;
                let n = dense.len() - before;
                if n == 0 {
                    return Err(loc.cell(row, feat_col, "empty feature list"));
                }
                match list_dim {
                    None => list_dim = Some(n),
                    Some(d) if d != n => {
                        return Err(loc.cell(
                            row,
                            feat_col,
                            format!(
                                "feature list has length {n}, but {} has length {d}; all rows need the same length",
                                row_ref(&loc, 0)
                            ),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
    }

    let labels = if label_cells.is_empty() {
        RawLabels::Int(Vec::new())
    } else {
        labels::from_text(label_cells, &loc, label_col)?
    };
    let ids: Option<ArrayRef> = id_idx.map(|_| -> ArrayRef {
        if ids_all_int {
            Arc::new(Int64Array::from(std::mem::take(&mut id_ints)))
        } else {
            Arc::new(StringArray::from(std::mem::take(&mut id_cells)))
        }
    });
    let features = match &feat {
        FeatIdx::Text(_) => Features::Text(texts),
        FeatIdx::Cols(cols) => Features::Dense {
            dim: cols.len(),
            values: dense,
        },
        FeatIdx::List(_) => Features::Dense {
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

/// `row R (line L)` for use inside a message.
fn row_ref(loc: &Loc, row: usize) -> String {
    match loc.lines.as_ref().and_then(|l| l.get(row)) {
        Some(l) => format!("row {row} (line {l})"),
        None => format!("row {row}"),
    }
}

fn text_cell<'a>(loc: &Loc, row: usize, col: &str, bytes: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| loc.cell(row, col, format!("invalid UTF-8 ({e})")))
}

/// Parses `[1, 2, 3]`, `1 2 3`, `1;2;3` or `1,2,3` into `out`.
pub(crate) fn parse_list(cell: &str, out: &mut Vec<f32>) -> std::result::Result<(), String> {
    let mut s = cell.trim();
    if let Some(rest) = s.strip_prefix('[') {
        s = rest.strip_suffix(']').ok_or_else(|| {
            format!(
                "feature list {} opens '[' but does not close it",
                snippet(cell)
            )
        })?;
    } else if s.ends_with(']') {
        return Err(format!(
            "feature list {} closes ']' without opening it",
            snippet(cell)
        ));
    }
    let tokens = s
        .split(|c: char| c == ',' || c == ';' || c.is_ascii_whitespace())
        .filter(|t| !t.is_empty());
    for (k, tok) in tokens.enumerate() {
        let v: f64 = tok
            .parse()
            .map_err(|_| format!("list element {k} ({}) is not a number", snippet(tok)))?;
        out.push(finite_f32(v).map_err(|m| format!("list element {k}: {m}"))?);
    }
    Ok(())
}

fn csv_error(path: &str, e: ::csv::Error, row: usize) -> CartoError {
    let line = e.position().map(|p| p.line());
    match e.kind() {
        ::csv::ErrorKind::UnequalLengths {
            expected_len,
            len,
            pos,
        } => {
            let line = pos.as_ref().map(|p| p.line()).or(line);
            CartoError::invalid(format!(
                "{}: malformed CSV: {len} field{} where the header has {expected_len}",
                super::row_prefix(path, row, line),
                if *len == 1 { "" } else { "s" }
            ))
        }
        ::csv::ErrorKind::Io(io) => CartoError::invalid(format!("{path}: cannot read: {io}")),
        _ => CartoError::invalid(format!(
            "{}: malformed CSV: {e}",
            super::row_prefix(path, row, line)
        )),
    }
}
