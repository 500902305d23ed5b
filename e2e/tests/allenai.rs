//! `carto import-allenai` reproduces the paper's code's metrics (to 1e-6) on
//! dynamics files in its format, including ties, never-learned samples and
//! the burn-out window.

use std::collections::HashMap;

use arrow::array::{Array, Float64Array, Int32Array, Int64Array};
use carto_e2e::*;

fn expected(file: &str) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(repo_root().join("e2e/fixtures/allenai").join(file)).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| header.iter().map(|h| h.to_string()).zip(l.split(',').map(str::to_string)).collect())
        .collect()
}

fn check(epochs: Option<&str>, file: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.parquet");
    let fixture = repo_root().join("e2e/fixtures/allenai/dynamics");
    let mut args = vec!["import-allenai", fixture.to_str().unwrap(), "--out", out.to_str().unwrap()];
    if let Some(e) = epochs {
        args.extend(["--epochs", e]);
    }
    assert_success(&carto(&args));
    let m = read_parquet(&out);
    let want = expected(file);
    assert_eq!(m.num_rows(), want.len());
    let ids = col::<Int64Array>(&m, "id");
    let f = |c: &str| col::<Float64Array>(&m, c);
    let i32c = |c: &str| col::<Int32Array>(&m, c);
    let mut never = 0;
    for (i, row) in want.iter().enumerate() {
        assert_eq!(ids.value(i).to_string(), row["guid"], "rows in first-epoch-file order");
        assert_eq!(col::<Int64Array>(&m, "label").value(i).to_string(), row["gold"]);
        for c in ["confidence", "variability", "correctness", "threshold_closeness", "aum", "el2n"] {
            let want: f64 = row[c].parse().unwrap();
            let got = f(c).value(i);
            assert!((got - want).abs() <= 1e-6, "guid {} {c}: {got} vs {want}", row["guid"]);
        }
        assert_eq!(i32c("correct_count").value(i).to_string(), row["correct_count"]);
        assert_eq!(i32c("forgetting_events").value(i).to_string(), row["forgetting_events"]);
        let fl = i32c("first_learned_epoch");
        if row["first_learned_epoch"].is_empty() {
            assert!(fl.is_null(i));
            // The paper's code marks never-learned samples with forgetfulness 1000.
            assert_eq!(row["forgetfulness"], "1000");
            never += 1;
        } else {
            assert_eq!(fl.value(i).to_string(), row["first_learned_epoch"]);
            assert_eq!(row["forgetfulness"], row["forgetting_events"]);
        }
    }
    assert!(never > 0, "the fixture covers never-learned samples");
}

#[test]
fn import_reproduces_the_papers_metrics() {
    check(None, "expected_metrics.csv");
}

#[test]
fn import_with_burn_out_uses_only_the_first_epochs() {
    check(Some("..3"), "expected_metrics_burnout3.csv");
}

#[test]
fn a_broken_dynamics_file_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dynamics_epoch_0.jsonl"), "{\"guid\": 1, \"logits_epoch_0\": [0.1, 0.2], \"gold\": 0}\n{\"guid\": 2, \"gold\": 1}\n").unwrap();
    let out = dir.path().join("m.parquet");
    let r = carto(&["import-allenai", dir.path().to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2));
    let line = error_line(&r);
    assert!(line.contains("dynamics_epoch_0.jsonl") && line.contains("line 2") && line.contains("logits_epoch_0"), "{line}");
    assert!(!out.exists());
}
