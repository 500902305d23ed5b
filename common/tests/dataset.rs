//! Dataset readers: Parquet, CSV and JSONL happy paths, label mapping, id types,
//! the three feature sources, and every bad input with its one-line error.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, FixedSizeListArray, Float32Array,
    Float64Array, Int32Array, Int64Array, Int8Array, LargeListArray, LargeStringArray, ListArray,
    StringArray, StringViewArray, StructArray, UInt16Array, UInt64Array, UInt8Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Int32Type, UInt8Type};
use arrow::record_batch::RecordBatch;
use carto_common::dataset::{load, DatasetSpec, FeatureSource, Features, Format};
use carto_common::CartoError;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use tempfile::TempDir;

// ---------------------------------------------------------------- helpers

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    fs::write(&p, text).unwrap();
    p
}

fn write_parquet(dir: &TempDir, name: &str, cols: Vec<(&str, ArrayRef)>) -> PathBuf {
    write_parquet_groups(dir, name, cols, None)
}

fn write_parquet_groups(
    dir: &TempDir,
    name: &str,
    cols: Vec<(&str, ArrayRef)>,
    group_rows: Option<usize>,
) -> PathBuf {
    let p = dir.path().join(name);
    let batch =
        RecordBatch::try_from_iter(cols.into_iter().map(|(n, a)| (n.to_string(), a))).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(group_rows)
        .build();
    let mut w =
        ArrowWriter::try_new(fs::File::create(&p).unwrap(), batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    p
}

fn spec(path: &Path, label: &str, id: Option<&str>, features: FeatureSource) -> DatasetSpec {
    DatasetSpec {
        path: path.to_path_buf(),
        label_col: label.to_string(),
        id_col: id.map(str::to_string),
        features,
    }
}

fn cols(names: &[&str]) -> FeatureSource {
    FeatureSource::Columns(names.iter().map(|s| s.to_string()).collect())
}
fn list(name: &str) -> FeatureSource {
    FeatureSource::List(name.to_string())
}
fn text(name: &str) -> FeatureSource {
    FeatureSource::Text(name.to_string())
}

/// Loads and expects an InvalidInput error on one line; returns its message.
fn load_err(s: &DatasetSpec) -> String {
    match load(s) {
        Ok(d) => panic!(
            "expected an error for {}, loaded {} rows",
            s.path.display(),
            d.len()
        ),
        Err(CartoError::InvalidInput(m)) => {
            assert!(!m.contains('\n'), "error is not one line: {m}");
            m
        }
        Err(e) => panic!("expected InvalidInput, got {e:?}"),
    }
}

/// Asserts the message names the file and contains every fragment.
fn assert_msg(msg: &str, path: &Path, parts: &[&str]) {
    let p = path.display().to_string();
    assert!(
        msg.starts_with(&p),
        "message does not start with the file {p}: {msg}"
    );
    for part in parts {
        assert!(msg.contains(part), "message lacks {part:?}: {msg}");
    }
}

fn dense(f: &Features) -> (usize, &[f32]) {
    match f {
        Features::Dense { dim, values } => (*dim, values.as_slice()),
        Features::Text(_) => panic!("expected dense features"),
    }
}

fn texts(f: &Features) -> &[String] {
    match f {
        Features::Text(t) => t,
        Features::Dense { .. } => panic!("expected text features"),
    }
}

fn ids_i64(ids: &Option<ArrayRef>) -> Vec<i64> {
    let a = ids.as_ref().expect("ids");
    assert_eq!(a.data_type(), &DataType::Int64);
    a.as_primitive::<arrow::datatypes::Int64Type>()
        .values()
        .to_vec()
}

fn ids_str(ids: &Option<ArrayRef>) -> Vec<String> {
    let a = ids.as_ref().expect("ids");
    assert_eq!(a.data_type(), &DataType::Utf8);
    a.as_string::<i32>()
        .iter()
        .map(|s| s.unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------- format

#[test]
fn format_from_extension() {
    for (p, f) in [
        ("a.parquet", Format::Parquet),
        ("a.pq", Format::Parquet),
        ("dir/a.PARQUET", Format::Parquet),
        ("a.csv", Format::Csv),
        ("a.CSV", Format::Csv),
        ("a.jsonl", Format::Jsonl),
        ("a.ndjson", Format::Jsonl),
        ("a.json", Format::Jsonl),
    ] {
        assert_eq!(Format::from_path(Path::new(p)).unwrap(), f, "{p}");
    }
    for p in ["data/a.txt", "data/a.csv.gz", "data/noext"] {
        match Format::from_path(Path::new(p)) {
            Err(CartoError::InvalidInput(m)) => {
                assert!(m.starts_with(p), "{m}");
                for ext in [".parquet", ".pq", ".csv", ".jsonl", ".ndjson", ".json"] {
                    assert!(m.contains(ext), "{m}");
                }
            }
            other => panic!("{p}: {other:?}"),
        }
    }
}

#[test]
fn missing_file_and_unknown_extension() {
    let dir = TempDir::new().unwrap();
    let p = dir.path().join("nope.csv");
    let m = load_err(&spec(&p, "label", None, cols(&["x"])));
    assert_eq!(m, format!("{}: no such file", p.display()));

    let p = write(&dir, "data.txt", "label,x\n0,1\n1,2\n");
    let m = load_err(&spec(&p, "label", None, cols(&["x"])));
    assert_msg(&m, &p, &["'.txt'", ".parquet", ".csv", ".jsonl"]);
}

// ---------------------------------------------------------------- CSV

#[test]
fn csv_int_labels_int_ids_columns() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "d.csv",
        "id,label,x,y,unused\n10,0,1.5,-2,zz\n11,2, 3e2 ,4,zz\n12,1,0,0.25,zz\n12,0,7,8,zz\n",
    );
    let d = load(&spec(&p, "label", Some("id"), cols(&["y", "x"]))).unwrap();
    assert_eq!(d.len(), 4);
    assert_eq!(d.labels, vec![0, 2, 1, 0]);
    assert_eq!(d.num_classes, 3);
    assert_eq!(d.label_names, None);
    // Duplicate ids are allowed and kept.
    assert_eq!(ids_i64(&d.ids), vec![10, 11, 12, 12]);
    let (dim, v) = dense(&d.features);
    assert_eq!(dim, 2);
    assert_eq!(v, &[-2.0, 1.5, 4.0, 300.0, 0.25, 0.0, 8.0, 7.0]);
    assert_eq!(d.path, p);
}

#[test]
fn csv_string_labels_sorted_byte_order_and_string_ids() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "d.csv",
        "id,label,x\na,pos,1\nb,neg,2\nc,Zeta,3\nd,neg,4\n7,neutral,5\n",
    );
    let d = load(&spec(&p, "label", Some("id"), cols(&["x"]))).unwrap();
    // Byte order: uppercase before lowercase.
    assert_eq!(
        d.label_names.as_deref().unwrap(),
        &["Zeta", "neg", "neutral", "pos"]
    );
    assert_eq!(d.labels, vec![3, 1, 0, 1, 2]);
    assert_eq!(d.num_classes, 4);
    assert_eq!(ids_str(&d.ids), vec!["a", "b", "c", "d", "7"]);
}

#[test]
fn csv_numbers_mixed_with_words_are_string_labels() {
    let dir = TempDir::new().unwrap();
    let p = write(&dir, "d.csv", "label,x\n10,1\n9,2\ncat,3\n");
    let d = load(&spec(&p, "label", None, cols(&["x"]))).unwrap();
    assert_eq!(d.label_names.as_deref().unwrap(), &["10", "9", "cat"]);
    assert_eq!(d.labels, vec![0, 1, 2]);
}

#[test]
fn csv_whole_float_labels_are_ints() {
    let dir = TempDir::new().unwrap();
    let p = write(&dir, "d.csv", "label,x\n1.0,1\n0.0,2\n3,3\n");
    let d = load(&spec(&p, "label", None, cols(&["x"]))).unwrap();
    assert_eq!(d.labels, vec![1, 0, 3]);
    assert_eq!(d.num_classes, 4);
    assert_eq!(d.label_names, None);

    let p = write(&dir, "f.csv", "label,x\n1.0,1\n0.5,2\n");
    let m = load_err(&spec(&p, "label", None, cols(&["x"])));
    assert_msg(
        &m,
        &p,
        &["row 1 (line 3)", "column 'label'", "non-integer label 0.5"],
    );
}

#[test]
fn csv_text_features_with_quotes_and_multiline_cells() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "d.csv",
        "label,text\npos,\"good, very good\"\nneg,\"two\nlines\"\nneg,\npos,plain\nneg,\n",
    );
    let d = load(&spec(&p, "label", None, text("text"))).unwrap();
    assert_eq!(
        texts(&d.features),
        &["good, very good", "two\nlines", "", "plain", ""]
    );
    assert_eq!(d.labels, vec![1, 0, 0, 1, 0]);
    assert!(d.ids.is_none());

    // The multi-line cell shifts the physical line numbers of later rows.
    let p = write(&dir, "e.csv", "label,text\npos,\"two\nlines\"\n,oops\n");
    let m = load_err(&spec(&p, "label", None, text("text")));
    assert_msg(&m, &p, &["row 1 (line 4), column 'label': null label"]);
}

#[test]
fn csv_list_features_in_every_spelling() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "d.csv",
        "label,pixels\n0,\"[1, 2, 3]\"\n1,4 5 6\n1,7;8;-9.5\n0,[1e1;0;0]\n",
    );
    let d = load(&spec(&p, "label", None, list("pixels"))).unwrap();
    let (dim, v) = dense(&d.features);
    assert_eq!(dim, 3);
    assert_eq!(
        v,
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, -9.5, 10.0, 0.0, 0.0]
    );
    assert_eq!(d.labels, vec![0, 1, 1, 0]);
}

#[test]
fn csv_bad_labels() {
    let dir = TempDir::new().unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "label,x\n0,1\n1,2\n,3\n",
            "null",
            &["row 2 (line 4), column 'label': null label"],
        ),
        (
            "label,x\n0,1\n-1,2\n1,3\n",
            "neg",
            &["row 1 (line 3), column 'label'", "negative label -1"],
        ),
        (
            "label,x\n1,1\n1,2\n1,3\n",
            "one",
            &["column 'label'", "only one class (1)"],
        ),
        (
            "label,x\ncat,1\ncat,2\n",
            "onestr",
            &["column 'label'", "only one class", "cat"],
        ),
        (
            "label,x\ncat,1\n \t,2\ndog,3\n",
            "blank",
            &["row 1 (line 3), column 'label'", "null label"],
        ),
        (
            "label,x\n0,1\n1,NaN\n",
            "nanfeat",
            &["row 1 (line 3), column 'x'", "NaN"],
        ),
        (
            "label,x\n0,1\n99999999,2\n",
            "huge",
            &["row 1 (line 3), column 'label'", "too large"],
        ),
    ];
    for (body, name, parts) in cases {
        let p = write(&dir, &format!("{name}.csv"), body);
        let m = load_err(&spec(&p, "label", None, cols(&["x"])));
        assert_msg(&m, &p, parts);
    }
}

#[test]
fn csv_bad_features() {
    let dir = TempDir::new().unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "label,x,y\n0,1,2\n1,abc,3\n",
            "word",
            &["row 1 (line 3), column 'x'", "\"abc\"", "not a number"],
        ),
        (
            "label,x,y\n0,1,2\n1,4,\n",
            "empty",
            &["row 1 (line 3), column 'y'", "null feature value"],
        ),
        (
            "label,x,y\n0,1,2\n1,4,nan\n",
            "nan",
            &["row 1 (line 3), column 'y'", "NaN"],
        ),
        (
            "label,x,y\n0,1,2\n1,inf,1\n",
            "inf",
            &["row 1 (line 3), column 'x'", "infinite"],
        ),
        (
            "label,x,y\n0,1,2\n1,-Infinity,1\n",
            "ninf",
            &["row 1 (line 3), column 'x'", "infinite"],
        ),
        (
            "label,x,y\n0,1,2\n1,1e300,1\n",
            "big",
            &["row 1 (line 3), column 'x': feature value 1e300 is out of the f32 range"],
        ),
    ];
    for (body, name, parts) in cases {
        let p = write(&dir, &format!("{name}.csv"), body);
        let m = load_err(&spec(&p, "label", None, cols(&["x", "y"])));
        assert_msg(&m, &p, parts);
    }
}

#[test]
fn csv_bad_lists() {
    let dir = TempDir::new().unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "label,v\n0,\"[1,2,3]\"\n1,\"[1,2,3]\"\n0,\"[1,2]\"\n",
            "unequal",
            &[
                "row 2 (line 4), column 'v'",
                "length 2",
                "row 0 (line 2) has length 3",
            ],
        ),
        (
            "label,v\n0,\"[1,2]\"\n1,[]\n",
            "emptylist",
            &["row 1 (line 3), column 'v'", "empty feature list"],
        ),
        (
            "label,v\n0,\"[1,2]\"\n1,\n",
            "nulllist",
            &["row 1 (line 3), column 'v'", "null feature list"],
        ),
        (
            "label,v\n0,\"[1,2]\"\n1,\"[1,x]\"\n",
            "word",
            &["row 1 (line 3), column 'v'", "element 1", "\"x\""],
        ),
        (
            "label,v\n0,\"[1,2]\"\n1,\"[1,NaN]\"\n",
            "nan",
            &["row 1 (line 3), column 'v'", "element 1", "NaN"],
        ),
        (
            "label,v\n0,\"[1,2]\"\n1,\"[1,2\"\n",
            "open",
            &["row 1 (line 3), column 'v'", "'['"],
        ),
    ];
    for (body, name, parts) in cases {
        let p = write(&dir, &format!("{name}.csv"), body);
        let m = load_err(&spec(&p, "label", None, list("v")));
        assert_msg(&m, &p, parts);
    }
}

#[test]
fn csv_bad_structure() {
    let dir = TempDir::new().unwrap();
    // Missing column lists the available ones.
    let p = write(&dir, "d.csv", "label,a,b\n0,1,2\n1,2,3\n");
    let m = load_err(&spec(&p, "label", None, cols(&["a", "pixels"])));
    assert_eq!(
        m,
        format!(
            "{}: column 'pixels' not found (columns: label, a, b)",
            p.display()
        )
    );
    let m = load_err(&spec(&p, "target", None, cols(&["a"])));
    assert_msg(
        &m,
        &p,
        &["column 'target' not found (columns: label, a, b)"],
    );
    let m = load_err(&spec(&p, "label", Some("uid"), cols(&["a"])));
    assert_msg(&m, &p, &["column 'uid' not found"]);

    // Null id.
    let p = write(&dir, "id.csv", "id,label,a\n1,0,1\n,1,2\n");
    let m = load_err(&spec(&p, "label", Some("id"), cols(&["a"])));
    assert_msg(&m, &p, &["row 1 (line 3), column 'id'", "null id"]);

    // Malformed: wrong number of fields.
    let p = write(&dir, "bad.csv", "label,a\n0,1\n1,2\n1,2,3\n");
    let m = load_err(&spec(&p, "label", None, cols(&["a"])));
    assert_msg(
        &m,
        &p,
        &[
            "row 2 (line 4)",
            "malformed CSV",
            "3 fields",
            "header has 2",
        ],
    );

    // No rows.
    let p = write(&dir, "header.csv", "label,a\n");
    let m = load_err(&spec(&p, "label", None, cols(&["a"])));
    assert_eq!(m, format!("{}: no rows", p.display()));
    let p = write(&dir, "empty.csv", "");
    let m = load_err(&spec(&p, "label", None, cols(&["a"])));
    assert_msg(&m, &p, &["no rows"]);

    // Invalid UTF-8 in a text cell.
    let p = dir.path().join("utf.csv");
    fs::write(&p, b"label,t\n0,ok\n1,\xff\xfe\n").unwrap();
    let m = load_err(&spec(&p, "label", None, text("t")));
    assert_msg(&m, &p, &["row 1 (line 3), column 't'", "UTF-8"]);
}

#[test]
fn csv_bom_crlf_and_padded_header() {
    let dir = TempDir::new().unwrap();
    let p = write(&dir, "d.csv", "\u{feff}label , x\r\n0,1\r\n1,2\r\n");
    let d = load(&spec(&p, "label", None, cols(&["x"]))).unwrap();
    assert_eq!(d.labels, vec![0, 1]);
    assert_eq!(dense(&d.features).1, &[1.0, 2.0]);
}

// ---------------------------------------------------------------- JSONL

#[test]
fn jsonl_int_labels_int_ids_list() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "d.jsonl",
        "{\"id\": 5, \"label\": 1, \"v\": [1, 2.5], \"skip\": {\"deep\": [1, {\"x\": null}]}}\n\
         \n\
         {\"label\": 0, \"id\": 6, \"v\": [-3, 4e1]}\n\
         {\"id\": 5, \"label\": 3, \"v\": [0, 0]}\n",
    );
    let d = load(&spec(&p, "label", Some("id"), list("v"))).unwrap();
    assert_eq!(d.labels, vec![1, 0, 3]);
    assert_eq!(d.num_classes, 4);
    assert_eq!(d.label_names, None);
    assert_eq!(ids_i64(&d.ids), vec![5, 6, 5]);
    let (dim, v) = dense(&d.features);
    assert_eq!(dim, 2);
    assert_eq!(v, &[1.0, 2.5, -3.0, 40.0, 0.0, 0.0]);

    // The blank line counts for line numbers but not for rows.
    let p = write(
        &dir,
        "e.jsonl",
        "{\"label\": 0, \"v\": [1]}\n\n{\"label\": null, \"v\": [1]}\n",
    );
    let m = load_err(&spec(&p, "label", None, list("v")));
    assert_msg(&m, &p, &["row 1 (line 3), column 'label': null label"]);
}

#[test]
fn jsonl_string_labels_text_and_string_ids() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "d.ndjson",
        "{\"id\": \"a\", \"label\": \"pos\", \"text\": \"great\"}\n\
         {\"id\": 2, \"label\": \"neg\", \"text\": \"\"}\n\
         {\"id\": \"c\", \"label\": \"pos\", \"text\": \"caf\\u00e9 \\\"x\\\"\"}\n",
    );
    let d = load(&spec(&p, "label", Some("id"), text("text"))).unwrap();
    assert_eq!(d.label_names.as_deref().unwrap(), &["neg", "pos"]);
    assert_eq!(d.labels, vec![1, 0, 1]);
    assert_eq!(d.num_classes, 2);
    assert_eq!(ids_str(&d.ids), vec!["a", "2", "c"]);
    assert_eq!(texts(&d.features), &["great", "", "café \"x\""]);
}

#[test]
fn jsonl_mixed_labels_are_text() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "d.json",
        "{\"label\": 1, \"x\": 1}\n{\"label\": \"a\", \"x\": 2}\n{\"label\": 10, \"x\": 3}\n",
    );
    let d = load(&spec(&p, "label", None, cols(&["x"]))).unwrap();
    assert_eq!(d.label_names.as_deref().unwrap(), &["1", "10", "a"]);
    assert_eq!(d.labels, vec![0, 2, 1]);
    assert_eq!(dense(&d.features), (1, &[1.0f32, 2.0, 3.0][..]));
}

#[test]
fn jsonl_columns_and_bool_and_whole_float_labels() {
    let dir = TempDir::new().unwrap();
    let p = write(
        &dir,
        "d.jsonl",
        "{\"label\": true, \"a\": 1, \"b\": -0.5}\n{\"label\": false, \"a\": 2, \"b\": 1e-1}\n",
    );
    let d = load(&spec(&p, "label", None, cols(&["b", "a"]))).unwrap();
    assert_eq!(d.labels, vec![1, 0]);
    assert_eq!(dense(&d.features), (2, &[-0.5f32, 1.0, 0.1, 2.0][..]));

    let p = write(
        &dir,
        "f.jsonl",
        "{\"label\": 2.0, \"a\": 1}\n{\"label\": 0, \"a\": 2}\n",
    );
    let d = load(&spec(&p, "label", None, cols(&["a"]))).unwrap();
    assert_eq!(d.labels, vec![2, 0]);
    assert_eq!(d.num_classes, 3);
}

#[test]
fn jsonl_bad_inputs() {
    let dir = TempDir::new().unwrap();
    let l = |label: &str, v: &str| {
        format!("{{\"id\": 1, \"label\": {label}, \"v\": {v}, \"t\": \"x\", \"a\": 1}}\n")
    };
    let ok = l("0", "[1, 2]") + &l("1", "[3, 4]");
    type Case = (
        String,
        FeatureSource,
        Option<&'static str>,
        &'static [&'static str],
    );
    let cases: Vec<(&str, Case)> = vec![
        (
            "null_label",
            (
                ok.clone() + &l("null", "[1, 2]"),
                list("v"),
                None,
                &["row 2 (line 3), column 'label': null label"],
            ),
        ),
        (
            "neg_label",
            (
                ok.clone() + &l("-2", "[1, 2]"),
                list("v"),
                None,
                &["row 2 (line 3), column 'label'", "negative label -2"],
            ),
        ),
        (
            "float_label",
            (
                ok.clone() + &l("1.5", "[1, 2]"),
                list("v"),
                None,
                &["row 2 (line 3), column 'label'", "non-integer label 1.5"],
            ),
        ),
        (
            "empty_label",
            (
                ok.clone() + &l("\"\"", "[1, 2]"),
                list("v"),
                None,
                &["row 2 (line 3), column 'label'", "empty label"],
            ),
        ),
        (
            "array_label",
            (
                ok.clone() + &l("[1]", "[1, 2]"),
                list("v"),
                None,
                &["row 2 (line 3), column 'label'", "an array"],
            ),
        ),
        (
            "one_class",
            (
                l("1", "[1, 2]") + &l("1", "[1, 2]"),
                list("v"),
                None,
                &["column 'label'", "only one class (1)"],
            ),
        ),
        (
            "unequal",
            (
                ok.clone() + &l("1", "[1, 2, 3]"),
                list("v"),
                None,
                &[
                    "row 2 (line 3), column 'v'",
                    "length 3",
                    "row 0 (line 1) has length 2",
                ],
            ),
        ),
        (
            "empty_list",
            (
                ok.clone() + &l("1", "[]"),
                list("v"),
                None,
                &["row 2 (line 3), column 'v'", "empty feature list"],
            ),
        ),
        (
            "null_list",
            (
                ok.clone() + &l("1", "null"),
                list("v"),
                None,
                &["row 2 (line 3), column 'v'", "null feature list"],
            ),
        ),
        (
            "str_elem",
            (
                ok.clone() + &l("1", "[1, \"2\"]"),
                list("v"),
                None,
                &["row 2 (line 3), column 'v'", "element 1", "\"2\""],
            ),
        ),
        (
            "null_elem",
            (
                ok.clone() + &l("1", "[null, 2]"),
                list("v"),
                None,
                &["row 2 (line 3), column 'v'", "element 0", "null"],
            ),
        ),
        (
            "scalar_list",
            (
                ok.clone() + &l("1", "7"),
                list("v"),
                None,
                &["row 2 (line 3), column 'v'", "array of numbers"],
            ),
        ),
        (
            "big_elem",
            (
                ok.clone() + &l("1", "[1, 1e300]"),
                list("v"),
                None,
                &["row 2 (line 3), column 'v'", "element 1", "f32"],
            ),
        ),
        (
            "null_text",
            (
                ok.clone() + "{\"label\": 1, \"t\": null}\n",
                text("t"),
                None,
                &["row 2 (line 3), column 't'", "null text"],
            ),
        ),
        (
            "num_text",
            (
                ok.clone() + "{\"label\": 1, \"t\": 5}\n",
                text("t"),
                None,
                &["row 2 (line 3), column 't'", "text must be a string"],
            ),
        ),
        (
            "str_col",
            (
                ok.clone() + "{\"label\": 1, \"a\": \"1.5\"}\n",
                cols(&["a"]),
                None,
                &["row 2 (line 3), column 'a'", "must be a number", "\"1.5\""],
            ),
        ),
        (
            "null_col",
            (
                ok.clone() + "{\"label\": 1, \"a\": null}\n",
                cols(&["a"]),
                None,
                &["row 2 (line 3), column 'a'", "null feature value"],
            ),
        ),
        (
            "absent_col",
            (
                ok.clone() + "{\"label\": 1}\n",
                cols(&["a"]),
                None,
                &["row 2 (line 3), column 'a'", "key missing"],
            ),
        ),
        (
            "null_id",
            (
                ok.clone() + "{\"id\": null, \"label\": 1, \"a\": 1}\n",
                cols(&["a"]),
                Some("id"),
                &["row 2 (line 3), column 'id'", "null id"],
            ),
        ),
        (
            "malformed",
            (
                ok.clone() + "{\"label\": 1, \"a\": 1\n",
                cols(&["a"]),
                None,
                &["row 2 (line 3)", "malformed JSON"],
            ),
        ),
        (
            "trailing",
            (
                ok.clone() + "{\"label\": 1, \"a\": 1} x\n",
                cols(&["a"]),
                None,
                &["row 2 (line 3)", "malformed JSON"],
            ),
        ),
        (
            "nan_literal",
            (
                ok.clone() + "{\"label\": 1, \"a\": NaN}\n",
                cols(&["a"]),
                None,
                &["row 2 (line 3)", "malformed JSON"],
            ),
        ),
        (
            "not_object",
            (
                ok.clone() + "[1, 2]\n",
                cols(&["a"]),
                None,
                &["row 2 (line 3): expected a JSON object, found an array"],
            ),
        ),
        (
            "array_file",
            (
                "[{\"label\": 1, \"a\": 1}]\n".to_string(),
                cols(&["a"]),
                None,
                &["row 0 (line 1)", "JSON Lines"],
            ),
        ),
        (
            "missing_col",
            (
                ok.clone(),
                cols(&["pixels"]),
                None,
                &["row 0 (line 1): column 'pixels' not found (columns: id, label, v, t, a)"],
            ),
        ),
        (
            "missing_id_col",
            (
                ok.clone(),
                cols(&["a"]),
                Some("uid"),
                &["column 'uid' not found"],
            ),
        ),
        (
            "no_rows",
            ("\n\n".to_string(), cols(&["a"]), None, &["no rows"]),
        ),
    ];
    for (name, (body, feats, id, parts)) in cases {
        let p = write(&dir, &format!("{name}.jsonl"), &body);
        let m = load_err(&spec(&p, "label", id, feats));
        assert_msg(&m, &p, parts);
    }
}

// ---------------------------------------------------------------- Parquet

fn f32_list(rows: &[&[f32]]) -> ArrayRef {
    Arc::new(ListArray::from_iter_primitive::<Float32Type, _, _>(
        rows.iter()
            .map(|r| Some(r.iter().map(|v| Some(*v)).collect::<Vec<_>>())),
    ))
}

#[test]
fn parquet_int_labels_string_ids_list() {
    let dir = TempDir::new().unwrap();
    let p = write_parquet(
        &dir,
        "d.parquet",
        vec![
            (
                "id",
                Arc::new(StringArray::from(vec!["a", "b", "a"])) as ArrayRef,
            ),
            ("label", Arc::new(Int32Array::from(vec![2, 0, 1]))),
            (
                "pixels",
                f32_list(&[&[1.0, 2.0], &[3.0, 4.0], &[5.0, -6.0]]),
            ),
            (
                "other",
                Arc::new(Float64Array::from(vec![f64::NAN, 0.0, 1.0])),
            ),
        ],
    );
    let d = load(&spec(&p, "label", Some("id"), list("pixels"))).unwrap();
    assert_eq!(d.labels, vec![2, 0, 1]);
    assert_eq!(d.num_classes, 3);
    assert_eq!(d.label_names, None);
    assert_eq!(ids_str(&d.ids), vec!["a", "b", "a"]);
    assert_eq!(
        dense(&d.features),
        (2, &[1.0f32, 2.0, 3.0, 4.0, 5.0, -6.0][..])
    );
}

#[test]
fn parquet_label_types() {
    let dir = TempDir::new().unwrap();
    let x: ArrayRef = Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0]));
    let int_cases: Vec<(&str, ArrayRef, Vec<i64>)> = vec![
        (
            "i8",
            Arc::new(Int8Array::from(vec![1, 0, 1])),
            vec![1, 0, 1],
        ),
        (
            "u16",
            Arc::new(UInt16Array::from(vec![4, 0, 1])),
            vec![4, 0, 1],
        ),
        (
            "u64",
            Arc::new(UInt64Array::from(vec![4, 0, 1])),
            vec![4, 0, 1],
        ),
        (
            "i64",
            Arc::new(Int64Array::from(vec![0, 5, 1])),
            vec![0, 5, 1],
        ),
        (
            "bool",
            Arc::new(BooleanArray::from(vec![true, false, true])),
            vec![1, 0, 1],
        ),
        (
            "f64",
            Arc::new(Float64Array::from(vec![2.0, 0.0, 1.0])),
            vec![2, 0, 1],
        ),
        (
            "f32",
            Arc::new(Float32Array::from(vec![2.0, 0.0, 1.0])),
            vec![2, 0, 1],
        ),
    ];
    for (name, labels, want) in int_cases {
        let p = write_parquet(
            &dir,
            &format!("{name}.parquet"),
            vec![("y", labels), ("x", x.clone())],
        );
        let d = load(&spec(&p, "y", None, cols(&["x"]))).unwrap();
        assert_eq!(d.labels, want, "{name}");
        assert_eq!(
            d.num_classes,
            *want.iter().max().unwrap() as usize + 1,
            "{name}"
        );
        assert_eq!(d.label_names, None, "{name}");
    }

    let dict: DictionaryArray<Int32Type> = vec!["b", "a", "b"].into_iter().collect();
    let str_cases: Vec<(&str, ArrayRef)> = vec![
        ("utf8", Arc::new(StringArray::from(vec!["b", "a", "b"]))),
        (
            "large",
            Arc::new(LargeStringArray::from(vec!["b", "a", "b"])),
        ),
        ("view", Arc::new(StringViewArray::from(vec!["b", "a", "b"]))),
        ("dict", Arc::new(dict)),
    ];
    for (name, labels) in str_cases {
        let p = write_parquet(
            &dir,
            &format!("{name}.parquet"),
            vec![("y", labels), ("x", x.clone())],
        );
        let d = load(&spec(&p, "y", None, cols(&["x"]))).unwrap();
        assert_eq!(d.labels, vec![1, 0, 1], "{name}");
        assert_eq!(d.label_names.as_deref().unwrap(), &["a", "b"], "{name}");
        assert_eq!(d.num_classes, 2);
    }
}

#[test]
fn parquet_bad_labels() {
    let dir = TempDir::new().unwrap();
    let x: ArrayRef = Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0]));
    let cases: Vec<(&str, ArrayRef, &[&str])> = vec![
        (
            "null",
            Arc::new(Int64Array::from(vec![Some(0), Some(1), None])),
            &["row 2, column 'y': null label"],
        ),
        (
            "nullstr",
            Arc::new(StringArray::from(vec![Some("a"), None, Some("b")])),
            &["row 1, column 'y': null label"],
        ),
        (
            "emptystr",
            Arc::new(StringArray::from(vec!["a", "b", ""])),
            &["row 2, column 'y'", "empty label"],
        ),
        (
            "neg",
            Arc::new(Int32Array::from(vec![0, -3, 1])),
            &["row 1, column 'y'", "negative label -3"],
        ),
        (
            "frac",
            Arc::new(Float64Array::from(vec![0.0, 1.0, 0.5])),
            &["row 2, column 'y'", "non-integer label 0.5"],
        ),
        (
            "nan",
            Arc::new(Float64Array::from(vec![0.0, f64::NAN, 1.0])),
            &["row 1, column 'y'", "NaN label"],
        ),
        (
            "u64big",
            Arc::new(UInt64Array::from(vec![0, 1, u64::MAX])),
            &["row 2, column 'y'", "out of the integer range"],
        ),
        (
            "one",
            Arc::new(Int64Array::from(vec![3, 3, 3])),
            &["column 'y'", "only one class (3)"],
        ),
        (
            "type",
            Arc::new(Float64Array::from(vec![0.0, 1.0, 1.0])),
            &[],
        ), // ok
    ];
    for (name, labels, parts) in cases {
        let p = write_parquet(
            &dir,
            &format!("{name}.parquet"),
            vec![("y", labels), ("x", x.clone())],
        );
        if parts.is_empty() {
            load(&spec(&p, "y", None, cols(&["x"]))).unwrap();
            continue;
        }
        let m = load_err(&spec(&p, "y", None, cols(&["x"])));
        assert_msg(&m, &p, parts);
    }
    // A label column of a type that cannot hold classes.
    let p = write_parquet(
        &dir,
        "listlabel.parquet",
        vec![("y", f32_list(&[&[1.0], &[2.0], &[3.0]])), ("x", x.clone())],
    );
    let m = load_err(&spec(&p, "y", None, cols(&["x"])));
    assert_msg(&m, &p, &["column 'y'", "unsupported label type"]);
}

#[test]
fn parquet_columns_text_and_id_types() {
    let dir = TempDir::new().unwrap();
    let p = write_parquet(
        &dir,
        "d.pq",
        vec![
            (
                "uid",
                Arc::new(UInt64Array::from(vec![7u64, 8, 9])) as ArrayRef,
            ),
            ("label", Arc::new(StringArray::from(vec!["x", "y", "x"]))),
            ("a", Arc::new(Int32Array::from(vec![1, 2, 3]))),
            ("b", Arc::new(Float64Array::from(vec![0.5, -0.5, 1e3]))),
            ("c", Arc::new(UInt8Array::from(vec![255u8, 0, 1]))),
            ("t", Arc::new(StringArray::from(vec!["one", "", "three"]))),
        ],
    );
    let d = load(&spec(&p, "label", Some("uid"), cols(&["a", "b", "c"]))).unwrap();
    assert_eq!(
        dense(&d.features),
        (
            3,
            &[1.0f32, 0.5, 255.0, 2.0, -0.5, 0.0, 3.0, 1000.0, 1.0][..]
        )
    );
    let ids = d.ids.as_ref().unwrap();
    assert_eq!(ids.data_type(), &DataType::UInt64);
    assert_eq!(
        ids.as_primitive::<arrow::datatypes::UInt64Type>()
            .values()
            .to_vec(),
        vec![7, 8, 9]
    );
    assert_eq!(d.labels, vec![0, 1, 0]);

    let d = load(&spec(&p, "label", None, text("t"))).unwrap();
    assert_eq!(texts(&d.features), &["one", "", "three"]);
    // The same column as label and id.
    let d = load(&spec(&p, "label", Some("label"), cols(&["a"]))).unwrap();
    assert_eq!(ids_str(&d.ids), vec!["x", "y", "x"]);
}

#[test]
fn parquet_list_types() {
    let dir = TempDir::new().unwrap();
    let y: ArrayRef = Arc::new(Int64Array::from(vec![0, 1]));
    let large: ArrayRef = Arc::new(LargeListArray::from_iter_primitive::<Float64Type, _, _>(
        vec![
            Some(vec![Some(1.0), Some(2.0), Some(3.0)]),
            Some(vec![Some(4.0), Some(5.0), Some(6.0)]),
        ],
    ));
    let fixed: ArrayRef = Arc::new(FixedSizeListArray::from_iter_primitive::<UInt8Type, _, _>(
        vec![
            Some(vec![Some(1), Some(2), Some(3)]),
            Some(vec![Some(4), Some(5), Some(6)]),
        ],
        3,
    ));
    // A list whose values are i32, built from offsets.
    let ints: ArrayRef = Arc::new(ListArray::new(
        Arc::new(Field::new("item", DataType::Int32, true)),
        OffsetBuffer::new(vec![0, 3, 6].into()),
        Arc::new(Int32Array::from(vec![1, 2, 3, 4, 5, 6])),
        None,
    ));
    for (name, arr) in [("large", large), ("fixed", fixed), ("ints", ints)] {
        let p = write_parquet(
            &dir,
            &format!("{name}.parquet"),
            vec![("y", y.clone()), ("v", arr)],
        );
        let d = load(&spec(&p, "y", None, list("v"))).unwrap();
        assert_eq!(
            dense(&d.features),
            (3, &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0][..]),
            "{name}"
        );
    }
}

#[test]
fn parquet_bad_features() {
    let dir = TempDir::new().unwrap();
    let y: ArrayRef = Arc::new(Int64Array::from(vec![0, 1, 0]));
    let opt_list = |rows: Vec<Option<Vec<Option<f32>>>>| -> ArrayRef {
        Arc::new(ListArray::from_iter_primitive::<Float32Type, _, _>(rows))
    };
    let s = |v: &[f32]| Some(v.iter().map(|x| Some(*x)).collect::<Vec<_>>());
    let cases: Vec<(&str, ArrayRef, FeatureSource, &[&str])> = vec![
        (
            "unequal",
            f32_list(&[&[1.0, 2.0], &[1.0, 2.0], &[1.0, 2.0, 3.0]]),
            list("v"),
            &["row 2, column 'v'", "length 3", "row 0 has length 2"],
        ),
        (
            "empty",
            f32_list(&[&[1.0], &[], &[1.0]]),
            list("v"),
            &["row 1, column 'v'", "empty feature list"],
        ),
        (
            "nulllist",
            opt_list(vec![s(&[1.0]), None, s(&[2.0])]),
            list("v"),
            &["row 1, column 'v'", "null feature list"],
        ),
        (
            "nullelem",
            opt_list(vec![
                s(&[1.0, 2.0]),
                s(&[1.0, 2.0]),
                Some(vec![Some(1.0), None]),
            ]),
            list("v"),
            &["row 2, column 'v'", "element 1", "null"],
        ),
        (
            "nanelem",
            f32_list(&[&[1.0, 2.0], &[1.0, f32::NAN], &[1.0, 2.0]]),
            list("v"),
            &["row 1, column 'v'", "element 1", "NaN"],
        ),
        (
            "infelem",
            f32_list(&[&[1.0, 2.0], &[1.0, 2.0], &[f32::INFINITY, 2.0]]),
            list("v"),
            &["row 2, column 'v'", "element 0", "infinite"],
        ),
        (
            "nullcol",
            Arc::new(Float64Array::from(vec![Some(1.0), Some(2.0), None])),
            cols(&["v"]),
            &["row 2, column 'v'", "null feature value"],
        ),
        (
            "nancol",
            Arc::new(Float64Array::from(vec![1.0, f64::NAN, 2.0])),
            cols(&["v"]),
            &["row 1, column 'v'", "NaN"],
        ),
        (
            "infcol",
            Arc::new(Float32Array::from(vec![1.0, 2.0, f32::NEG_INFINITY])),
            cols(&["v"]),
            &["row 2, column 'v'", "infinite"],
        ),
        (
            "strcol",
            Arc::new(StringArray::from(vec!["1", "2", "3"])),
            cols(&["v"]),
            &["column 'v'", "numeric"],
        ),
        (
            "nulltext",
            Arc::new(StringArray::from(vec![Some("a"), None, Some("b")])),
            text("v"),
            &["row 1, column 'v'", "null text"],
        ),
        (
            "numtext",
            Arc::new(Int32Array::from(vec![1, 2, 3])),
            text("v"),
            &["column 'v'", "string"],
        ),
        (
            "notlist",
            Arc::new(Int32Array::from(vec![1, 2, 3])),
            list("v"),
            &["column 'v'", "list of numbers"],
        ),
    ];
    for (name, arr, feats, parts) in cases {
        let p = write_parquet(
            &dir,
            &format!("{name}.parquet"),
            vec![("y", y.clone()), ("v", arr)],
        );
        let m = load_err(&spec(&p, "y", None, feats));
        assert_msg(&m, &p, parts);
    }

    // Null ids.
    let p = write_parquet(
        &dir,
        "nullid.parquet",
        vec![
            ("y", y.clone()),
            (
                "id",
                Arc::new(Int32Array::from(vec![Some(1), None, Some(3)])),
            ),
            ("v", Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0]))),
        ],
    );
    let m = load_err(&spec(&p, "y", Some("id"), cols(&["v"])));
    assert_msg(&m, &p, &["row 1, column 'id'", "null id"]);
}

#[test]
fn parquet_bad_files() {
    let dir = TempDir::new().unwrap();
    let p = write_parquet(
        &dir,
        "d.parquet",
        vec![
            ("a", Arc::new(Int64Array::from(vec![0, 1])) as ArrayRef),
            ("b", Arc::new(Int64Array::from(vec![0, 1]))),
            ("c", Arc::new(Int64Array::from(vec![0, 1]))),
        ],
    );
    let m = load_err(&spec(&p, "a", None, list("pixels")));
    assert_eq!(
        m,
        format!(
            "{}: column 'pixels' not found (columns: a, b, c)",
            p.display()
        )
    );
    let m = load_err(&spec(&p, "label", None, cols(&["b"])));
    assert_msg(&m, &p, &["column 'label' not found (columns: a, b, c)"]);

    let p = write(&dir, "fake.parquet", "label,x\n0,1\n");
    let m = load_err(&spec(&p, "label", None, cols(&["x"])));
    assert_msg(&m, &p, &["not a readable Parquet file"]);

    let p = write_parquet(
        &dir,
        "empty.parquet",
        vec![
            (
                "y",
                Arc::new(Int64Array::from(Vec::<i64>::new())) as ArrayRef,
            ),
            ("x", Arc::new(Float32Array::from(Vec::<f32>::new()))),
        ],
    );
    let m = load_err(&spec(&p, "y", None, cols(&["x"])));
    assert_eq!(m, format!("{}: no rows", p.display()));

    let sub = dir.path().join("dir.parquet");
    fs::create_dir(&sub).unwrap();
    let m = load_err(&spec(&sub, "y", None, cols(&["x"])));
    assert_msg(&m, &sub, &["directory"]);
}

#[test]
fn parquet_many_batches_and_row_groups() {
    // More rows than one read batch, in several row groups: row numbers are global
    // and the id column is joined across batches.
    let dir = TempDir::new().unwrap();
    let n = 20_000usize;
    let ids: Vec<i64> = (0..n as i64).map(|i| i * 3).collect();
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    // An unused column of a type carto cannot read must not matter.
    let unused: ArrayRef = Arc::new(StructArray::from(vec![(
        Arc::new(Field::new("q", DataType::Int32, false)),
        Arc::new(Int32Array::from(vec![0; n])) as ArrayRef,
    )]));
    let p = write_parquet_groups(
        &dir,
        "big.parquet",
        vec![
            ("id", Arc::new(Int64Array::from(ids.clone())) as ArrayRef),
            ("label", Arc::new(Int64Array::from(labels.clone()))),
            ("x", Arc::new(Float32Array::from(x.clone()))),
            ("unused", unused),
        ],
        Some(3_000),
    );
    let d = load(&spec(&p, "label", Some("id"), cols(&["x"]))).unwrap();
    assert_eq!(d.labels, labels);
    assert_eq!(ids_i64(&d.ids), ids);
    assert_eq!(dense(&d.features), (1, &x[..]));

    let mut bad = labels.clone();
    bad[17_001] = -1;
    let p = write_parquet_groups(
        &dir,
        "bad.parquet",
        vec![
            ("label", Arc::new(Int64Array::from(bad)) as ArrayRef),
            ("x", Arc::new(Float32Array::from(x))),
        ],
        Some(3_000),
    );
    let m = load_err(&spec(&p, "label", None, cols(&["x"])));
    assert_msg(&m, &p, &["row 17001, column 'label'", "negative label -1"]);
}

#[test]
fn parquet_wide_list_loads_fast() {
    // 70k × 784, like MNIST: must load well under a second in release mode.
    let dir = TempDir::new().unwrap();
    let (rows, dim) = (70_000usize, 784usize);
    let values: Vec<f32> = (0..rows * dim).map(|i| ((i * 7919) % 256) as f32).collect();
    let offsets: Vec<i32> = (0..=rows).map(|r| (r * dim) as i32).collect();
    let pixels: ArrayRef = Arc::new(ListArray::new(
        Arc::new(Field::new("item", DataType::Float32, false)),
        OffsetBuffer::new(offsets.into()),
        Arc::new(Float32Array::from(values)),
        None,
    ));
    let labels: ArrayRef = Arc::new(Int64Array::from(
        (0..rows as i64).map(|i| i % 10).collect::<Vec<_>>(),
    ));
    let p = write_parquet(
        &dir,
        "mnist.parquet",
        vec![("label", labels), ("pixels", pixels)],
    );

    let t = Instant::now();
    let d = load(&spec(&p, "label", None, list("pixels"))).unwrap();
    let took = t.elapsed();
    eprintln!("loaded {rows} x {dim} in {took:?}");
    assert_eq!(d.len(), rows);
    assert_eq!(d.num_classes, 10);
    let (got_dim, v) = dense(&d.features);
    assert_eq!(got_dim, dim);
    assert_eq!(v.len(), rows * dim);
    let last = rows * dim - 1;
    assert_eq!(v[last], ((last * 7919) % 256) as f32);
    assert_eq!(v[12345], ((12345 * 7919) % 256) as f32);
    if cfg!(debug_assertions) {
        return;
    }
    // Generous bound: the build machine is shared; typical is far below.
    assert!(took.as_secs_f64() < 2.0, "took {took:?}");
}
