//! `carto relabel` as a user runs it: review decisions applied to a real
//! dataset (Rotten Tomatoes' reviews-2k.csv), the result read back from
//! Parquet; a bad decisions file is one line, exit 2, and writes nothing.

use arrow::array::{AsArray, BooleanArray, Int64Array};

use carto_e2e::*;

#[test]
fn review_decisions_make_a_clean_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let data = example("rotten_tomatoes/reviews-2k.csv");
    let original = read_parquet_or_csv(&data);
    let relabels = dir.path().join("relabels.csv");
    let orig_ids = col::<Int64Array>(&original, "id");
    let id = |row: usize| orig_ids.value(row);
    // Row 0 is fresh: relabel it rotten; drop rows 1 and 5; keep row 2.
    let body = format!(
        "sample_id,id,action,new_label\n0,{},relabel,rotten\n1,{},drop,\n5,{},drop,\n2,{},keep,\n",
        id(0),
        id(1),
        id(5),
        id(2)
    );
    std::fs::write(&relabels, body).unwrap();
    let out = dir.path().join("clean.parquet");
    let run = carto(&["relabel", "--data", data.to_str().unwrap(), "--relabels", relabels.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_success(&run);
    assert!(String::from_utf8_lossy(&run.stdout).contains("1 relabelled, 2 dropped"));
    let clean = read_parquet(&out);
    assert_eq!(clean.num_rows(), original.num_rows() - 2);
    let names: Vec<String> = clean.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, vec!["id", "text", "label", "movie", "carto_relabelled"], "every original column, then the flag");
    let ids = col::<Int64Array>(&clean, "id");
    let want: Vec<i64> = (0..original.num_rows()).filter(|r| *r != 1 && *r != 5).map(id).collect();
    assert_eq!(ids.values().to_vec(), want, "rows 1 and 5 dropped, order kept");
    let labels = clean.column_by_name("label").unwrap().as_string::<i32>();
    assert_eq!(original.column_by_name("label").unwrap().as_string::<i32>().value(0), "fresh");
    assert_eq!(labels.value(0), "rotten");
    let flag = col::<BooleanArray>(&clean, "carto_relabelled");
    assert!(flag.value(0) && (1..flag.len()).all(|i| !flag.value(i)));

    // A label the dataset does not have: refused, nothing written.
    std::fs::write(&relabels, format!("sample_id,id,action,new_label\n3,{},relabel,stale\n", id(3))).unwrap();
    let refused = dir.path().join("refused.parquet");
    let bad = carto(&["relabel", "--data", data.to_str().unwrap(), "--relabels", relabels.to_str().unwrap(), "--out", refused.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("sample 3: column 'new_label': 'stale' is not a label of"), "{err}");
    assert!(!refused.exists());
    // Decisions naming a row the dataset does not have.
    std::fs::write(&relabels, "sample_id,action,new_label\n99999,drop,\n").unwrap();
    let bad = carto(&["relabel", "--data", data.to_str().unwrap(), "--relabels", relabels.to_str().unwrap(), "--out", refused.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("line 2: column 'sample_id': 99999 is not a sample of the dataset"));
}

/// The dataset as carto reads it (CSV types inferred), through `carto relabel` with no decisions.
fn read_parquet_or_csv(path: &std::path::Path) -> arrow::array::RecordBatch {
    let dir = tempfile::tempdir().unwrap();
    let none = dir.path().join("none.csv");
    std::fs::write(&none, "sample_id,action,new_label\n").unwrap();
    let out = dir.path().join("same.parquet");
    assert_success(&carto(&["relabel", "--data", path.to_str().unwrap(), "--relabels", none.to_str().unwrap(), "--out", out.to_str().unwrap()]));
    read_parquet(&out)
}
