//! One model trained data-parallel: a job with 2 workers gives the same
//! metrics (within 1e-4) and the same final parameters (within 1e-5) as the
//! same job with 1 worker — same seed, same global batch.

use std::collections::HashMap;
use std::path::Path;

use arrow::array::{Float64Array, Int32Array};
use carto_e2e::*;

fn params(path: &Path) -> HashMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let v: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            (name, v)
        })
        .collect()
}

fn run(out: &Path, workers: &str, args: &[&str]) {
    let mut all = vec!["run", "--workers", workers, "--threads-per-worker", "1", "--save-model", "--seed", "3", "--out", out.to_str().unwrap()];
    all.extend_from_slice(args);
    assert_success(&carto(&all));
    let job: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("job.json")).unwrap()).unwrap();
    assert_eq!(job["workers"].as_array().unwrap().len(), workers.parse::<usize>().unwrap());
}

fn compare(one: &Path, two: &Path, rows: usize) {
    let a = read_parquet(&one.join("metrics.parquet"));
    let b = read_parquet(&two.join("metrics.parquet"));
    assert_eq!((a.num_rows(), b.num_rows()), (rows, rows));
    let mut worst = 0f64;
    for c in ["confidence", "variability", "aum", "el2n", "threshold_closeness"] {
        let (x, y) = (col::<Float64Array>(&a, c), col::<Float64Array>(&b, c));
        for i in 0..rows {
            let d = (x.value(i) - y.value(i)).abs();
            worst = worst.max(d);
            assert!(d <= 1e-4, "{c} of sample {i}: {} vs {}", x.value(i), y.value(i));
        }
    }
    // Predictions agree wherever they are not a near-tie.
    let (ca, cb) = (col::<Int32Array>(&a, "correct_count"), col::<Int32Array>(&b, "correct_count"));
    let differ = (0..rows).filter(|&i| ca.value(i) != cb.value(i)).count();
    assert!(differ <= rows / 500, "{differ} samples changed their correct_count");

    let (pa, pb) = (params(&one.join("model.safetensors")), params(&two.join("model.safetensors")));
    assert_eq!(pa.keys().collect::<std::collections::BTreeSet<_>>(), pb.keys().collect());
    let mut worst_p = 0f32;
    for (name, va) in &pa {
        let vb = &pb[name];
        assert_eq!(va.len(), vb.len(), "{name}");
        for (x, y) in va.iter().zip(vb) {
            worst_p = worst_p.max((x - y).abs());
        }
    }
    assert!(worst_p <= 1e-5, "largest parameter difference {worst_p}");
    eprintln!("largest metric difference {worst:e}, parameter difference {worst_p:e}");
}

#[test]
fn two_workers_train_the_same_mlp_as_one_with_padding_and_a_partial_batch() {
    let dir = tempfile::tempdir().unwrap();
    // 999 rows: an odd count pads one rank, and 999 = 19·50 + 49 leaves a partial last batch.
    let src = std::fs::read_to_string(example("fashion_mnist/fashion-7x7-1k.csv")).unwrap();
    let data = dir.path().join("fashion-999.csv");
    std::fs::write(&data, src.lines().take(1000).collect::<Vec<_>>().join("\n") + "\n").unwrap();
    let cols = (0..49).map(|i| format!("p{i}")).collect::<Vec<_>>().join(",");
    let args = ["--data", data.to_str().unwrap(), "--label-col", "label", "--feature-cols", &cols,
        "--model", "mlp", "--hidden", "32", "--epochs", "3", "--batch-size", "50", "--lr", "0.003"];
    run(&dir.path().join("one"), "1", &args);
    run(&dir.path().join("two"), "2", &args);
    compare(&dir.path().join("one"), &dir.path().join("two"), 999);
}

#[test]
fn two_workers_train_the_same_bow_model_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = example("rotten_tomatoes/reviews-2k.csv");
    let args = ["--data", data.to_str().unwrap(), "--label-col", "label", "--text-col", "text",
        "--model", "bow", "--hash-bits", "14", "--epochs", "3", "--batch-size", "64"];
    run(&dir.path().join("one"), "1", &args);
    run(&dir.path().join("two"), "2", &args);
    compare(&dir.path().join("one"), &dir.path().join("two"), 2000);
}
