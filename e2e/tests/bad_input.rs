//! Bad input to `carto run`: one clear line naming the file, row and column at
//! fault, exit code 2, and no output directory claiming success.

use std::path::{Path, PathBuf};

use carto_e2e::*;

struct Case {
    file: &'static str,
    body: &'static str,
    flags: &'static [&'static str],
    /// Fragments the error line must contain (besides the file name).
    want: &'static [&'static str],
}

fn run_case(dir: &Path, case: &Case) -> (String, PathBuf) {
    let data = dir.join(case.file);
    std::fs::write(&data, case.body).unwrap();
    let out = dir.join(format!("out-{}", case.file));
    let mut args = vec!["run", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(case.flags);
    let r = carto(&args);
    assert_eq!(r.status.code(), Some(2), "{}: exit {:?}, stderr {}", case.file, r.status.code(), String::from_utf8_lossy(&r.stderr));
    (error_line(&r), out)
}

#[test]
fn each_bad_dataset_is_one_line_naming_file_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let text = &["--label-col", "label", "--text-col", "text"];
    let nums = &["--label-col", "label", "--feature-cols", "x,y"];
    let cases = [
        Case { file: "no-column.csv", body: "text,y\na,1\nb,0\n", flags: text, want: &["label", "not found"] },
        Case { file: "empty.csv", body: "text,label\n", flags: text, want: &["no rows"] },
        Case { file: "one-class.csv", body: "text,label\na,pos\nb,pos\n", flags: text, want: &["class"] },
        Case { file: "null-label.csv", body: "text,label\na,pos\nb,\nc,neg\n", flags: text, want: &["row 1", "label"] },
        Case { file: "not-a-number.csv", body: "x,y,label\n1,2,0\n3,abc,1\n", flags: nums, want: &["row 1", "'y'", "abc"] },
        Case { file: "nan.csv", body: "x,y,label\n1,2,0\n3,4,1\nNaN,5,1\n", flags: nums, want: &["row 2", "'x'", "NaN"] },
        Case { file: "neg-label.csv", body: "x,y,label\n1,2,0\n3,4,-1\n", flags: nums, want: &["row 1", "label"] },
        Case { file: "nulls.jsonl", body: "{\"text\":\"a\",\"label\":1}\n{\"text\":null,\"label\":0}\n", flags: text, want: &["row 1", "text"] },
        Case { file: "bad.txt", body: "whatever", flags: text, want: &[".txt"] },
    ];
    for case in &cases {
        let (line, out) = run_case(dir.path(), case);
        assert!(line.contains(case.file), "{}: the error names the file: {line}", case.file);
        for w in case.want {
            assert!(line.contains(w), "{}: the error mentions {w:?}: {line}", case.file);
        }
        assert!(!out.exists(), "{}: no output directory for a failed input", case.file);
    }
}

#[test]
fn a_missing_file_and_missing_flags_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let r = carto(&["run", "--data", "/no/such/file.csv", "--label-col", "l", "--text-col", "t", "--out", out.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2));
    assert!(error_line(&r).contains("/no/such/file.csv"));
    let r = carto(&["run", "--data", "x.csv", "--label-col", "l", "--out", out.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2));
    assert!(error_line(&r).contains("--text-col"));
    let r = carto(&["run", "--data", "x.csv", "--label-col", "l", "--text-col", "t", "--model", "mlp", "--out", out.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2));
    assert!(error_line(&r).contains("numeric features"));
    assert!(!out.exists());
}

#[test]
fn earlier_results_are_never_clobbered_without_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("metrics.parquet"), b"results of last week").unwrap();
    let data = example("rotten_tomatoes/reviews-2k.csv");
    let r = carto(&["run", "--data", data.to_str().unwrap(), "--label-col", "label", "--text-col", "text", "--epochs", "1", "--out", out.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2));
    assert!(error_line(&r).contains("--overwrite"));
    assert_eq!(std::fs::read(out.join("metrics.parquet")).unwrap(), b"results of last week");

    // A bad dataset with --overwrite still leaves the old results alone.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "text,label\na,x\n").unwrap();
    let r = carto(&["run", "--data", bad.to_str().unwrap(), "--label-col", "label", "--text-col", "text", "--overwrite", "--out", out.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2));
    assert_eq!(std::fs::read(out.join("metrics.parquet")).unwrap(), b"results of last week");

    let r = carto(&["run", "--data", data.to_str().unwrap(), "--label-col", "label", "--text-col", "text", "--epochs", "1", "--overwrite", "--out", out.to_str().unwrap()]);
    assert_success(&r);
    assert_eq!(read_parquet(&out.join("metrics.parquet")).num_rows(), 2000);
}
