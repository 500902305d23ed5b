//! The three applications as a user meets them: the data map and the
//! mislabel report written at a job's end, `carto select`, `carto suspects`,
//! `carto map`, and held-out evaluation with `--eval-data`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow::array::{Float64Array, Int64Array, StringArray};
use carto_e2e::*;

/// A small finished text job (shared by the tests of this file).
fn job(dir: &Path) -> PathBuf {
    let out = dir.join("out");
    let data = example("rotten_tomatoes/reviews-2k.csv");
    let test = example("rotten_tomatoes/reviews.csv");
    assert_success(&carto(&[
        "run", "--data", data.to_str().unwrap(), "--label-col", "label", "--text-col", "text", "--id-col", "id",
        "--epochs", "3", "--lr", "0.005", "--eval-data", test.to_str().unwrap(), "--out", out.to_str().unwrap(),
    ]));
    out
}

fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{} is a PNG", path.display());
    (u32::from_be_bytes(b[16..20].try_into().unwrap()), u32::from_be_bytes(b[20..24].try_into().unwrap()))
}

#[test]
fn a_job_ends_with_a_data_map_a_report_and_held_out_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let out = job(dir.path());
    let (w, h) = png_size(&out.join("datamap.png"));
    assert!(w >= 1200 && h >= 1000, "{w}×{h}");
    let svg = std::fs::read_to_string(out.join("datamap.svg")).unwrap();
    assert!(svg.contains("variability") && svg.contains("confidence") && svg.contains("fresh"));

    let report = std::fs::read_to_string(out.join("suspects.csv")).unwrap();
    let mut lines = report.lines();
    assert!(lines.next().unwrap().starts_with("rank,sample_id,id,label,most_predicted,mislabel_score"));
    let rows: Vec<&str> = report.lines().skip(1).collect();
    assert!(rows.len() >= 1000, "the 1,000 most suspicious (a quoted text may span lines)");
    assert!(rows[0].contains(",fresh,") || rows[0].contains(",rotten,"));

    let job: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("job.json")).unwrap()).unwrap();
    assert_eq!(job["warnings"].as_array().unwrap().len(), 0, "{}", job["warnings"]);
    for e in job["epochs"].as_array().unwrap() {
        let acc = e["eval_accuracy"].as_f64().expect("eval accuracy per epoch");
        assert!((0.0..=1.0).contains(&acc));
    }
    let last = job["epochs"][2]["eval_accuracy"].as_f64().unwrap();
    assert!(last > 0.6, "held-out accuracy {last}");
}

#[test]
fn select_returns_the_datasets_rows_with_their_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let out = job(dir.path());
    let metrics = read_parquet(&out.join("metrics.parquet"));
    let sub = dir.path().join("ambiguous.parquet");
    let r = carto(&["select", "--metrics", out.join("metrics.parquet").to_str().unwrap(), "--metric", "variability",
        "--fraction", "0.33", "--out", sub.to_str().unwrap()]);
    assert_success(&r);
    let s = read_parquet(&sub);
    assert_eq!(s.num_rows(), 660, "⌊0.33 · 2000 + 0.5⌋");
    for c in ["id", "text", "label", "movie", "sample_id", "carto_id", "variability", "confidence", "carto_label", "select_rank"] {
        assert!(s.column_by_name(c).is_some(), "column {c} in {:?}", s.schema());
    }
    // The most variable samples, in order; every other sample is less variable.
    let var = col::<Float64Array>(&s, "variability");
    assert!(var.values().windows(2).all(|w| w[0] >= w[1]));
    let chosen: std::collections::HashSet<i64> = col::<Int64Array>(&s, "sample_id").values().iter().copied().collect();
    let all = col::<Float64Array>(&metrics, "variability");
    let min_chosen = var.values().iter().copied().fold(f64::INFINITY, f64::min);
    for i in 0..all.len() {
        if !chosen.contains(&(i as i64)) {
            assert!(all.value(i) <= min_chosen);
        }
    }
    // Rows line up: the dataset's own id column equals the id the metrics carry
    // for that sample (renamed carto_id, since the dataset has an `id`).
    assert_eq!(col::<Int64Array>(&s, "id").values(), col::<Int64Array>(&s, "carto_id").values());
    assert_eq!(col::<Int64Array>(&s, "select_rank").values().to_vec(), (0..660).collect::<Vec<i64>>());

    // Easy-to-learn per class: the same fraction of each class, highest confidence first.
    let easy = dir.path().join("easy.parquet");
    assert_success(&carto(&["select", "--metrics", out.join("metrics.parquet").to_str().unwrap(), "--metric", "confidence",
        "--worst", "--per-class", "--fraction", "0.25", "--out", easy.to_str().unwrap()]));
    let e = read_parquet(&easy);
    let labels = col::<StringArray>(&e, "label");
    let mut per: HashMap<&str, usize> = HashMap::new();
    for i in 0..e.num_rows() {
        *per.entry(labels.value(i)).or_default() += 1;
    }
    assert_eq!(per["fresh"], 289, "⌊0.25 · 1156 + 0.5⌋");
    assert_eq!(per["rotten"], 211, "⌊0.25 · 844 + 0.5⌋");
}

#[test]
fn suspects_and_map_commands_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = job(dir.path());
    let metrics = out.join("metrics.parquet");
    let r = carto(&["suspects", "--metrics", metrics.to_str().unwrap(), "--top", "10"]);
    assert_success(&r);
    let text = String::from_utf8_lossy(&r.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "rank,sample_id,id,label,most_predicted,mislabel_score,score_epochs,confidence,variability,aum,correctness,forgetting_events,text");
    let scores: Vec<f64> = lines[1..].iter().map(|l| l.split(',').nth(5).unwrap().parse().unwrap()).collect();
    assert!(scores.len() >= 10 && scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(lines[1].split(',').nth(4).is_some_and(|p| p == "fresh" || p == "rotten"), "most predicted: {}", lines[1]);

    for name in ["m.png", "m.svg", "m.html"] {
        let path = dir.path().join(name);
        assert_success(&carto(&["map", "--metrics", metrics.to_str().unwrap(), "--out", path.to_str().unwrap()]));
        assert!(std::fs::metadata(&path).unwrap().len() > 10_000);
    }
    let bad = carto(&["map", "--metrics", metrics.to_str().unwrap(), "--out", dir.path().join("m.gif").to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(error_line(&bad).contains(".png, .svg or .html"));

    let bad = carto(&["select", "--metrics", metrics.to_str().unwrap(), "--metric", "loss", "--fraction", "0.3", "--out", "x.parquet"]);
    assert_eq!(bad.status.code(), Some(2));
    let wrong = dir.path().join("wrong.csv");
    std::fs::write(&wrong, "text,label\na,x\nb,y\n").unwrap();
    let bad = carto(&["select", "--metrics", metrics.to_str().unwrap(), "--data", wrong.to_str().unwrap(), "--metric", "aum",
        "--fraction", "0.3", "--out", dir.path().join("s.parquet").to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(error_line(&bad).contains("2 rows, but the metrics have 2000"), "{}", error_line(&bad));
}

#[test]
fn a_held_out_set_with_unknown_classes_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let eval = dir.path().join("eval.csv");
    std::fs::write(&eval, "text,label\ngood,fresh\nbad,stale\n").unwrap();
    let out = dir.path().join("out");
    let r = carto(&["run", "--data", example("rotten_tomatoes/reviews-2k.csv").to_str().unwrap(), "--label-col", "label",
        "--text-col", "text", "--eval-data", eval.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2));
    let line = error_line(&r);
    assert!(line.contains("eval.csv") && line.contains("'stale'"), "{line}");
    assert!(!out.exists());
}
