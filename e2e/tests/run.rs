//! `carto run` as a separate process on real data, its outputs read back.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use arrow::array::{Array, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray};
use carto_e2e::*;

/// Checks the contract's per-row invariants of a finished job's outputs.
fn check_outputs(out: &Path, rows: usize, epochs: usize) {
    let m = read_parquet(&out.join("metrics.parquet"));
    assert_eq!(m.num_rows(), rows);
    let sid = col::<Int64Array>(&m, "sample_id");
    let conf = col::<Float64Array>(&m, "confidence");
    let var = col::<Float64Array>(&m, "variability");
    let corr = col::<Float64Array>(&m, "correctness");
    let cc = col::<Int32Array>(&m, "correct_count");
    let ep = col::<Int32Array>(&m, "epochs");
    let fe = col::<Int32Array>(&m, "forgetting_events");
    let fl = col::<Int32Array>(&m, "first_learned_epoch");
    let tc = col::<Float64Array>(&m, "threshold_closeness");
    for i in 0..rows {
        assert_eq!(sid.value(i), i as i64, "sample_id is the 0-based row index");
        let c = conf.value(i);
        assert!((0.0..=1.0).contains(&c), "confidence {c}");
        assert!(var.value(i) >= 0.0 && var.value(i) <= 0.5, "variability {}", var.value(i));
        assert_eq!(ep.value(i), epochs as i32);
        assert_eq!(cc.value(i) as f64, corr.value(i) * epochs as f64, "correct_count = correctness × epochs");
        assert!((tc.value(i) - c * (1.0 - c)).abs() < 1e-12);
        assert!(fe.value(i) as usize <= epochs / 2, "at most ⌊E/2⌋ forgetting events");
        assert_eq!(fl.is_null(i), cc.value(i) == 0, "first_learned_epoch is null iff never correct");
    }

    let dynamics = read_dynamics(&out.join("dynamics"));
    assert_eq!(dynamics.len(), epochs, "one partition per epoch");
    let mut total = 0;
    let mut gold_sum = vec![0f64; rows];
    let mut correct = vec![0i32; rows];
    for (epoch, parts) in &dynamics {
        let mut seen = HashSet::new();
        for b in parts {
            let ids = col::<Int64Array>(b, "sample_id");
            let gp = col::<Float64Array>(b, "gold_prob");
            let ok = col::<BooleanArray>(b, "correct");
            let pred = col::<Int64Array>(b, "pred");
            let label = col::<Int64Array>(b, "label");
            for i in 0..b.num_rows() {
                let s = ids.value(i) as usize;
                assert!(seen.insert(s), "duplicate (sample {s}, epoch {epoch})");
                gold_sum[s] += gp.value(i);
                correct[s] += ok.value(i) as i32;
                assert_eq!(ok.value(i), pred.value(i) == label.value(i));
            }
            total += b.num_rows();
        }
        assert_eq!(seen.len(), rows, "epoch {epoch} has every sample");
    }
    assert_eq!(total, rows * epochs, "exactly samples × epochs dynamics rows");
    for s in 0..rows {
        let mean = gold_sum[s] / epochs as f64;
        assert!((conf.value(s) - mean).abs() < 1e-12, "sample {s}: confidence {} vs mean gold_prob {mean}", conf.value(s));
        assert_eq!(cc.value(s), correct[s]);
    }

    let job: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("job.json")).unwrap()).unwrap();
    assert_eq!(job["state"], "succeeded");
    let per_epoch = job["epochs"].as_array().unwrap();
    assert_eq!(per_epoch.len(), epochs);
    for e in per_epoch {
        assert!(e["loss"].as_f64().unwrap().is_finite());
        assert!(e["samples_per_sec"].as_f64().unwrap() > 0.0);
        assert_eq!(e["samples"].as_u64().unwrap() as usize, rows);
    }
}

#[test]
fn text_job_on_real_reviews_writes_consistent_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let data = example("rotten_tomatoes/reviews-2k.csv");
    let run = carto(&[
        "run", "--data", data.to_str().unwrap(), "--label-col", "label", "--text-col", "text",
        "--id-col", "id", "--epochs", "3", "--lr", "0.005", "--out", out.to_str().unwrap(),
    ]);
    assert_success(&run);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("metrics.parquet"), "summary names the outputs: {stdout}");
    check_outputs(&out, 2000, 3);

    // The user's ids and label names travel to the metrics.
    let m = read_parquet(&out.join("metrics.parquet"));
    let csv = std::fs::read_to_string(&data).unwrap();
    let mut rdr = csv_reader(&csv);
    let ids = col::<Int64Array>(&m, "id");
    let names = col::<StringArray>(&m, "label_name");
    let labels = col::<Int64Array>(&m, "label");
    for (i, rec) in rdr.iter_mut().enumerate() {
        assert_eq!(ids.value(i).to_string(), rec.0);
        assert_eq!(names.value(i), rec.1);
        assert_eq!(labels.value(i), if rec.1 == "fresh" { 0 } else { 1 }, "sorted order: fresh=0, rotten=1");
    }
    // The model learns: training accuracy rises over the epochs.
    let job: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("job.json")).unwrap()).unwrap();
    let acc: Vec<f64> = job["epochs"].as_array().unwrap().iter().map(|e| e["accuracy"].as_f64().unwrap()).collect();
    assert!(acc[2] > acc[0] && acc[2] > 0.7, "accuracy per epoch {acc:?}");
}

/// (id, label) of every row of a CSV with columns id,text,label,… (quoted text).
fn csv_reader(text: &str) -> Vec<(String, String)> {
    // A tiny RFC 4180 reader, enough for the example files.
    let mut rows = Vec::new();
    let mut field = String::new();
    let mut record: Vec<String> = Vec::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut record));
            }
            (false, '\r') => {}
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        rows.push(record);
    }
    let header = &rows[0];
    let id = header.iter().position(|h| h == "id").unwrap();
    let label = header.iter().position(|h| h == "label").unwrap();
    rows[1..].iter().map(|r| (r[id].clone(), r[label].clone())).collect()
}

#[test]
fn numeric_jobs_train_mlp_on_pixels_and_linear_on_columns() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mlp");
    let run = carto(&[
        "run", "--data", example("fashion_mnist/fashion-2k.parquet").to_str().unwrap(),
        "--label-col", "label", "--features-col", "pixels", "--id-col", "image_id",
        "--model", "mlp", "--hidden", "64", "--epochs", "3", "--batch-size", "32",
        "--out", out.to_str().unwrap(),
    ]);
    assert_success(&run);
    check_outputs(&out, 2000, 3);
    let m = read_parquet(&out.join("metrics.parquet"));
    assert!(m.column_by_name("label_name").is_none(), "integer labels have no names");
    assert_eq!(col::<Int64Array>(&m, "id").value(5), 5);

    let cols: Vec<String> = (0..49).map(|i| format!("p{i}")).collect();
    let out = dir.path().join("linear");
    let run = carto(&[
        "run", "--data", example("fashion_mnist/fashion-7x7-1k.csv").to_str().unwrap(),
        "--label-col", "label", "--feature-cols", &cols.join(","), "--model", "linear",
        "--epochs", "4", "--lr", "0.01", "--dynamics-pass", "eval", "--out", out.to_str().unwrap(),
    ]);
    assert_success(&run);
    check_outputs(&out, 1000, 4);
    let m = read_parquet(&out.join("metrics.parquet"));
    let names = col::<StringArray>(&m, "label_name");
    let distinct: HashSet<&str> = (0..m.num_rows()).map(|i| names.value(i)).collect();
    assert_eq!(distinct.len(), 10);
    let mean_correctness: f64 = col::<Float64Array>(&m, "correctness").values().iter().sum::<f64>() / 1000.0;
    assert!(mean_correctness > 0.5, "a linear model on 7×7 Fashion-MNIST beats chance by far: {mean_correctness}");
}

#[test]
fn outputs_are_read_by_pyarrow_polars_and_duckdb() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = carto(&[
        "run", "--data", example("rotten_tomatoes/reviews-2k.csv").to_str().unwrap(),
        "--label-col", "label", "--text-col", "text", "--id-col", "id", "--epochs", "2",
        "--out", out.to_str().unwrap(),
    ]);
    assert_success(&run);
    let script = repo_root().join("e2e/python/read_outputs.py");
    let check = Command::new(python()).arg(script).arg(&out).arg("2000").arg("2").output().unwrap();
    assert_success(&check);
    assert!(String::from_utf8_lossy(&check.stdout).contains("pyarrow ok"));
}

#[test]
fn metrics_are_recomputed_from_the_dynamics_alone_and_over_a_window() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = carto(&[
        "run", "--data", example("fashion_mnist/fashion-7x7-1k.csv").to_str().unwrap(),
        "--label-col", "label", "--feature-cols", &(0..49).map(|i| format!("p{i}")).collect::<Vec<_>>().join(","),
        "--model", "mlp", "--hidden", "32", "--epochs", "4", "--out", out.to_str().unwrap(),
    ]);
    assert_success(&run);
    let original = read_parquet(&out.join("metrics.parquet"));

    let all = dir.path().join("all.parquet");
    assert_success(&carto(&["metrics", "--dynamics", out.join("dynamics").to_str().unwrap(), "--out", all.to_str().unwrap()]));
    let again = read_parquet(&all);
    for c in [
        "sample_id", "label", "label_name", "epochs", "confidence", "variability", "correctness", "aum", "el2n",
        "threshold_closeness", "correct_count", "forgetting_events", "first_learned_epoch",
    ] {
        assert_eq!(column(&again, c).to_data(), column(&original, c).to_data(), "column {c}");
    }

    // Epochs 1 and 2 only ("1..3"), recomputed by hand from the dynamics rows.
    let window = dir.path().join("window.parquet");
    assert_success(&carto(&[
        "metrics", "--dynamics", out.join("dynamics").to_str().unwrap(), "--epochs", "1..3", "--out", window.to_str().unwrap(),
    ]));
    let w = read_parquet(&window);
    let dynamics = read_dynamics(&out.join("dynamics"));
    let mut probs = vec![Vec::new(); 1000];
    let mut hits = vec![Vec::new(); 1000];
    for epoch in [1u32, 2] {
        for b in &dynamics[&epoch] {
            let ids = col::<Int64Array>(b, "sample_id");
            let gp = col::<Float64Array>(b, "gold_prob");
            let ok = col::<BooleanArray>(b, "correct");
            for i in 0..b.num_rows() {
                probs[ids.value(i) as usize].push(gp.value(i));
                hits[ids.value(i) as usize].push(ok.value(i));
            }
        }
    }
    let conf = col::<Float64Array>(&w, "confidence");
    let var = col::<Float64Array>(&w, "variability");
    let fl = col::<Int32Array>(&w, "first_learned_epoch");
    for s in 0..1000 {
        let p = &probs[s];
        let mean = (p[0] + p[1]) / 2.0;
        let std = (((p[0] - mean).powi(2) + (p[1] - mean).powi(2)) / 2.0).sqrt();
        assert!((conf.value(s) - mean).abs() < 1e-12);
        assert!((var.value(s) - std).abs() < 1e-12, "sample {s}: {} vs {std}", var.value(s));
        let first = hits[s].iter().position(|&h| h).map(|k| k as i32 + 1);
        assert_eq!(if fl.is_null(s) { None } else { Some(fl.value(s)) }, first, "absolute epoch index");
    }
    assert!(col::<Int32Array>(&w, "epochs").values().iter().all(|&e| e == 2));

    // A window with no stored epoch is one clear error.
    let bad = carto(&["metrics", "--dynamics", out.join("dynamics").to_str().unwrap(), "--epochs", "7..9", "--out", window.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(error_line(&bad).contains("--epochs"));
}
