//! `carto relabel`: applies review decisions (`relabels.csv`, as the data
//! map's review mode exports them) to a dataset. Every original column comes
//! through in its type; `drop` rows are removed; `relabel` rows get their new
//! label in the label column's own type; a `carto_relabelled` column (bool)
//! says which rows changed. A decisions file that names a sample the dataset
//! does not have, an id that does not match the sample, an unknown action or a
//! label the dataset does not use is refused — one line naming the file, line
//! and column — and nothing is written.
//!
//! `relabels.csv` columns: `sample_id` (the 0-based row, as in every carto
//! output), `id` (optional: when present and `--id-col` is given, checked
//! against that column), `action` (`keep` | `relabel` | `drop`), `new_label`
//! (for `relabel`: one of the label column's values).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use carto_common::{CartoError, Result};

/// One row's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Keep,
    Relabel(String),
    Drop,
}

/// What was applied, for the command's summary line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub rows_in: usize,
    pub rows_out: usize,
    pub relabelled: usize,
    pub dropped: usize,
}

/// Reads `relabels.csv` into (sample_id → action, optional id per sample),
/// checking sample ids against `rows`.
pub fn read_decisions(path: &Path, rows: usize) -> Result<(HashMap<usize, Action>, HashMap<usize, String>)> {
    let what = path.display().to_string();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|e| CartoError::invalid(format!("{what}: cannot read: {e}")))?;
    let headers = reader.headers().map_err(|e| CartoError::invalid(format!("{what}: {e}")))?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let need = |name: &str| col(name).ok_or_else(|| CartoError::invalid(format!("{what}: no column '{name}'")));
    let (sid_col, action_col) = (need("sample_id")?, need("action")?);
    let (label_col, id_col) = (col("new_label"), col("id"));
    let mut decisions = HashMap::new();
    let mut ids = HashMap::new();
    for (i, record) in reader.records().enumerate() {
        // Line numbers count the header as line 1.
        let line = i + 2;
        let record = record.map_err(|e| CartoError::invalid(format!("{what}: line {line}: {e}")))?;
        let field = |c: usize| record.get(c).unwrap_or("").trim();
        let at = |column: &str, msg: String| CartoError::invalid(format!("{what}: line {line}: column '{column}': {msg}"));
        let sid: usize = field(sid_col)
            .parse()
            .map_err(|_| at("sample_id", format!("'{}' is not a row number", field(sid_col))))?;
        if sid >= rows {
            return Err(at("sample_id", format!("{sid} is not a sample of the dataset ({rows} rows: 0..{})", rows.saturating_sub(1))));
        }
        let action = match field(action_col) {
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "relabel" => {
                let label = label_col.map(field).unwrap_or("");
                if label.is_empty() {
                    return Err(at("new_label", "a relabel needs the new label".into()));
                }
                Action::Relabel(label.to_string())
            }
            other => return Err(at("action", format!("'{other}' is not keep, relabel or drop"))),
        };
        if decisions.insert(sid, action).is_some() {
            return Err(at("sample_id", format!("sample {sid} has a second decision")));
        }
        if let Some(c) = id_col {
            if !field(c).is_empty() {
                ids.insert(sid, field(c).to_string());
            }
        }
    }
    Ok((decisions, ids))
}

/// The values of `column` as text, the way they are compared with the
/// decisions file (an integer label 3 is "3").
fn as_text(column: &ArrayRef, what: &str) -> Result<Vec<Option<String>>> {
    let formatter = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())
        .map_err(|e| CartoError::invalid(format!("{what}: {e}")))?;
    Ok((0..column.len()).map(|i| column.is_valid(i).then(|| formatter.value(i).to_string())).collect())
}

/// The dataset with the decisions applied (see the module docs).
pub fn apply(
    data: &RecordBatch,
    label_col: &str,
    id_col: Option<&str>,
    decisions: &HashMap<usize, Action>,
    ids: &HashMap<usize, String>,
    names: (&str, &str),
) -> Result<(RecordBatch, Summary)> {
    let (data_name, decisions_name) = names;
    let schema = data.schema();
    let label_idx = schema.index_of(label_col).map_err(|_| {
        CartoError::invalid(format!("{data_name}: no column '{label_col}' (--label-col)"))
    })?;
    let labels = as_text(data.column(label_idx), data_name)?;
    let known: BTreeSet<&str> = labels.iter().flatten().map(String::as_str).collect();
    let mut wanted: Vec<(usize, &String)> = decisions
        .iter()
        .filter_map(|(&s, a)| match a {
            Action::Relabel(l) => Some((s, l)),
            _ => None,
        })
        .collect();
    wanted.sort_unstable();
    for (sid, label) in &wanted {
        if !known.contains(label.as_str()) {
            let list: Vec<&str> = known.iter().copied().take(20).collect();
            return Err(CartoError::invalid(format!(
                "{decisions_name}: sample {sid}: column 'new_label': '{label}' is not a label of {data_name} ({})",
                list.join(", ")
            )));
        }
    }
    if let Some(id_col) = id_col {
        let idx = schema.index_of(id_col).map_err(|_| CartoError::invalid(format!("{data_name}: no column '{id_col}' (--id-col)")))?;
        let values = as_text(data.column(idx), data_name)?;
        let mut checked: Vec<(&usize, &String)> = ids.iter().collect();
        checked.sort_unstable();
        for (sid, id) in checked {
            if values[*sid].as_deref() != Some(id.as_str()) {
                return Err(CartoError::invalid(format!(
                    "{decisions_name}: sample {sid}: column 'id': '{id}', but row {sid} of {data_name} has id '{}': \
                     are the decisions for this dataset?",
                    values[*sid].as_deref().unwrap_or("null")
                )));
            }
        }
    }

    // The new label column: the relabelled values in the column's own type.
    let mut text = labels.clone();
    for (sid, label) in &wanted {
        text[*sid] = Some((*label).clone());
    }
    let label_type = data.column(label_idx).data_type().clone();
    let new_labels = cast(&(Arc::new(StringArray::from(text)) as ArrayRef), &label_type)
        .map_err(|e| CartoError::invalid(format!("{data_name}: column '{label_col}': {e}")))?;
    let keep: Vec<u32> = (0..data.num_rows()).filter(|r| decisions.get(r) != Some(&Action::Drop)).map(|r| r as u32).collect();
    let idx = UInt32Array::from(keep.clone());
    let taken = |a: &ArrayRef| take(a.as_ref(), &idx, None).map_err(|e| CartoError::internal(format!("take: {e}")));
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut cols = Vec::with_capacity(fields.len() + 1);
    for (i, c) in data.columns().iter().enumerate() {
        cols.push(taken(if i == label_idx { &new_labels } else { c })?);
    }
    let flag = if fields.iter().any(|f| f.name() == "carto_relabelled") { "carto_relabelled_" } else { "carto_relabelled" };
    fields.push(Field::new(flag, DataType::Boolean, false));
    cols.push(Arc::new(BooleanArray::from_iter(
        keep.iter().map(|&r| Some(matches!(decisions.get(&(r as usize)), Some(Action::Relabel(_))))),
    )) as ArrayRef);
    let out = RecordBatch::try_new(Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())), cols)
        .map_err(|e| CartoError::internal(format!("relabelled dataset: {e}")))?;
    let dropped = data.num_rows() - keep.len();
    Ok((out, Summary { rows_in: data.num_rows(), rows_out: keep.len(), relabelled: wanted.len(), dropped }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::Int64Type;

    fn dataset() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("text", DataType::Utf8, false),
            Field::new("label", DataType::Int64, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "c", "d"])),
                Arc::new(StringArray::from(vec!["good", "bad", "fine", "awful"])),
                Arc::new(Int64Array::from(vec![1, 0, 1, 1])),
            ],
        )
        .unwrap()
    }

    fn decisions_file(body: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relabels.csv");
        std::fs::write(&path, body).unwrap();
        (dir, path)
    }

    #[test]
    fn decisions_relabel_drop_and_keep_with_types_kept() {
        let (_d, path) = decisions_file("sample_id,id,action,new_label\n3,d,relabel,0\n1,b,drop,\n0,a,keep,\n");
        let (decisions, ids) = read_decisions(&path, 4).unwrap();
        let (out, summary) = apply(&dataset(), "label", Some("id"), &decisions, &ids, ("data", "relabels.csv")).unwrap();
        assert_eq!(summary, Summary { rows_in: 4, rows_out: 3, relabelled: 1, dropped: 1 });
        assert_eq!(out.schema().field(2).data_type(), &DataType::Int64, "the label keeps its type");
        let labels: Vec<i64> = out.column(2).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(labels, vec![1, 1, 0], "rows a, c, d; d relabelled to 0");
        let ids: Vec<&str> = out.column(0).as_string::<i32>().iter().flatten().collect();
        assert_eq!(ids, vec!["a", "c", "d"], "b dropped, order kept");
        let flag = out.column_by_name("carto_relabelled").unwrap().as_boolean();
        assert_eq!(flag.iter().flatten().collect::<Vec<_>>(), vec![false, false, true]);
    }

    #[test]
    fn string_labels_take_string_values() {
        let schema = Schema::new(vec![Field::new("label", DataType::Utf8, false)]);
        let data = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(StringArray::from(vec!["fresh", "rotten"])) as ArrayRef])
            .unwrap();
        let decisions = HashMap::from([(0, Action::Relabel("rotten".into()))]);
        let (out, _) = apply(&data, "label", None, &decisions, &HashMap::new(), ("d", "r")).unwrap();
        assert_eq!(out.column(0).as_string::<i32>().iter().flatten().collect::<Vec<_>>(), vec!["rotten", "rotten"]);
        let bad = HashMap::from([(1, Action::Relabel("stale".into()))]);
        let err = apply(&data, "label", None, &bad, &HashMap::new(), ("d", "r")).unwrap_err().to_string();
        assert!(err.contains("sample 1: column 'new_label': 'stale' is not a label of d (fresh, rotten)"), "{err}");
    }

    #[test]
    fn bad_decision_files_are_one_line_naming_the_line_and_column() {
        let cases = [
            ("sample_id,action,new_label\n9,keep,\n", "line 2: column 'sample_id': 9 is not a sample of the dataset (4 rows: 0..3)"),
            ("sample_id,action,new_label\nx,keep,\n", "line 2: column 'sample_id': 'x' is not a row number"),
            ("sample_id,action,new_label\n0,keep,\n1,fix,\n", "line 3: column 'action': 'fix' is not keep, relabel or drop"),
            ("sample_id,action,new_label\n0,relabel,\n", "line 2: column 'new_label': a relabel needs the new label"),
            ("sample_id,action\n0,keep\n0,drop\n", "line 3: column 'sample_id': sample 0 has a second decision"),
            ("id,action\na,keep\n", "no column 'sample_id'"),
        ];
        for (body, want) in cases {
            let (_d, path) = decisions_file(body);
            let err = read_decisions(&path, 4).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should say {want:?}");
            assert!(!err.contains('\n'));
        }
        // An id that does not match its row: decisions for another dataset.
        let (_d, path) = decisions_file("sample_id,id,action,new_label\n2,b,drop,\n");
        let (decisions, ids) = read_decisions(&path, 4).unwrap();
        let err = apply(&dataset(), "label", Some("id"), &decisions, &ids, ("data", "relabels.csv")).unwrap_err().to_string();
        assert!(err.contains("sample 2: column 'id': 'b', but row 2 of data has id 'c'"), "{err}");
        let (_d, path) = decisions_file("sample_id,action,new_label\n0,relabel,7\n");
        let (decisions, ids) = read_decisions(&path, 4).unwrap();
        let err = apply(&dataset(), "label", None, &decisions, &ids, ("data", "relabels.csv")).unwrap_err().to_string();
        assert!(err.contains("'7' is not a label of data (0, 1)"), "{err}");
    }
}
