//! Label errors as a user meets them: the mislabel score's window (chosen,
//! recorded, or given with `--suspect-epochs`) and the calibrated cut of
//! `--threshold-samples` (two more runs with AUM threshold samples), on real
//! Fashion-MNIST images with labels flipped on purpose.

use std::path::{Path, PathBuf};

use arrow::array::{Array, BooleanArray, Float64Array, Int64Array};
use carto_e2e::*;

/// fashion-2k with 10% of its labels moved to another class (a fixed choice).
fn flipped_dataset(dir: &Path) -> (PathBuf, Vec<bool>) {
    let src = read_parquet(&example("fashion_mnist/fashion-2k.parquet"));
    let labels = src.column_by_name("label").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
    let n = labels.len();
    let mut flipped = vec![false; n];
    let new: Vec<i64> = (0..n)
        .map(|i| {
            // Every 10th row, to the next class.
            if i % 10 == 3 {
                flipped[i] = true;
                (labels.value(i) + 1) % 10
            } else {
                labels.value(i)
            }
        })
        .collect();
    let mut cols = src.columns().to_vec();
    let at = src.schema().index_of("label").unwrap();
    cols[at] = std::sync::Arc::new(Int64Array::from(new));
    let batch = arrow::array::RecordBatch::try_new(src.schema(), cols).unwrap();
    let path = dir.join("flipped.parquet");
    write_parquet(&path, &batch);
    (path, flipped)
}

fn write_parquet(path: &Path, batch: &arrow::array::RecordBatch) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// A value of a Parquet file's footer metadata.
fn parquet_metadata(path: &Path, key: &str) -> Option<String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let r = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let kv = r.metadata().file_metadata().key_value_metadata()?.clone();
    kv.into_iter().find(|k| k.key == key)?.value
}

fn run(data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "run", "--data", data.to_str().unwrap(), "--label-col", "label", "--features-col", "pixels", "--model", "mlp",
        "--epochs", "4", "--out", out.to_str().unwrap(), "-q",
    ];
    args.extend_from_slice(extra);
    carto(&args)
}

fn f64s(path: &Path, col: &str) -> Vec<f64> {
    let m = read_parquet(path);
    let c = m.column_by_name(col).unwrap_or_else(|| panic!("{col}")).as_any().downcast_ref::<Float64Array>().unwrap().clone();
    c.values().to_vec()
}

fn job_json(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("job.json")).unwrap()).unwrap()
}

#[test]
fn threshold_samples_flag_the_flipped_labels_and_say_how() {
    let dir = tempfile::tempdir().unwrap();
    let (data, flipped) = flipped_dataset(dir.path());
    let out = dir.path().join("out");
    assert_success(&run(&data, &out, &["--threshold-samples"]));

    // Two more runs of 4 epochs, committed apart from the map's dynamics.
    let job = job_json(&out);
    assert_eq!(job["epochs"].as_array().unwrap().len(), 12);
    for e in 0..4 {
        assert!(out.join(format!("dynamics/epoch={e}")).is_dir());
    }
    for e in 4..12 {
        assert!(out.join(format!("threshold_runs/dynamics/epoch={e}")).is_dir(), "epoch {e}");
        assert!(!out.join(format!("dynamics/epoch={e}")).exists());
    }
    // The threshold runs' rows carry the extra class (10) for their threshold samples.
    let part = read_parquet(&out.join("threshold_runs/dynamics/epoch=4/part-0.parquet"));
    let l = part.column_by_name("label").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
    let fake = l.values().iter().filter(|&&x| x == 10).count();
    assert_eq!(fake, 2000 / 11, "⌊N/(K+1)⌋ threshold samples");

    // metrics.parquet: the map's metrics (over the map's 4 epochs), the score and the flags.
    let m = read_parquet(&out.join("metrics.parquet"));
    let epochs = m.column_by_name("epochs").unwrap().as_any().downcast_ref::<arrow::array::Int32Array>().unwrap();
    assert!(epochs.values().iter().all(|&e| e == 4), "the threshold runs are not the map's epochs");
    let suspect = m.column_by_name("is_suspect").unwrap().as_any().downcast_ref::<BooleanArray>().unwrap();
    let flagged: Vec<usize> = (0..suspect.len()).filter(|&i| suspect.value(i)).collect();
    let hits = flagged.iter().filter(|&&i| flipped[i]).count();
    let precision = hits as f64 / flagged.len().max(1) as f64;
    let recall = hits as f64 / flipped.iter().filter(|&&f| f).count() as f64;
    // 2,000 images and 4 epochs: mostly flips among the flagged, a good share of the flips found.
    assert!(precision > 0.7 && recall > 0.35, "is_suspect: precision {precision:.3}, recall {recall:.3}");
    // The ranking stays the map's: over every epoch, the score is −aum.
    let aum = f64s(&out.join("metrics.parquet"), "aum");
    let score = f64s(&out.join("metrics.parquet"), "mislabel_score");
    assert!(aum.iter().zip(&score).all(|(a, s)| (a + s).abs() < 1e-12));

    // job.json: the window, the threshold, noise per class and the confused pairs.
    let le = &job["label_errors"];
    assert_eq!(le["suspect_epochs"], serde_json::json!([0, 4]));
    assert_eq!(le["suspects"].as_u64().unwrap() as usize, flagged.len());
    assert_eq!(le["thresholds"].as_array().unwrap().len(), 2);
    assert!(le["threshold"].as_f64().unwrap().is_finite());
    let rates = le["noise_rate"].as_array().unwrap();
    assert_eq!(rates.len(), 10);
    let counted: u64 = rates.iter().map(|r| r["suspects"].as_u64().unwrap()).sum();
    assert_eq!(counted as usize, flagged.len());
    // Flips go to the next class: the top pairs are (k → k−1)'s mirror, given k+1 for a true k.
    let top = &le["confused_pairs"][0];
    let (given, likely) = (top["given"].as_i64().unwrap(), top["likely"].as_i64().unwrap());
    assert_eq!(given, (likely + 1) % 10, "the most confused pair follows the flips: {top}");
    let matrix = le["noise_matrix"].as_array().unwrap();
    assert_eq!(matrix.len(), 10);
    // The same record in metrics.parquet's footer.
    assert!(parquet_metadata(&out.join("metrics.parquet"), "carto.label_errors").unwrap().contains("noise_rate"));
    // suspects.csv says which epochs its score is over.
    let report = std::fs::read_to_string(out.join("suspects.csv")).unwrap();
    assert!(report.lines().next().unwrap().contains("mislabel_score,score_epochs,"));
    assert!(report.lines().nth(1).unwrap().contains(",0..4,"));

    // Run again over the same outputs: --overwrite takes the threshold runs away too.
    assert_success(&run(&data, &out, &["--threshold-samples", "--overwrite"]));
    assert_eq!(job_json(&out)["epochs"].as_array().unwrap().len(), 12);
}

#[test]
fn the_score_window_is_given_or_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = flipped_dataset(dir.path());
    // Given: the score is −AUM over those epochs only, as `carto metrics --epochs` computes it.
    let out = dir.path().join("given");
    assert_success(&run(&data, &out, &["--suspect-epochs", "1..3"]));
    let job = job_json(&out);
    assert_eq!(job["label_errors"]["suspect_epochs"], serde_json::json!([1, 3]));
    assert!(job["label_errors"]["window"].as_str().unwrap().contains("given"));
    assert!(job["label_errors"].get("threshold").is_none(), "no threshold without threshold samples");
    let window = dir.path().join("window.parquet");
    assert_success(&carto(&[
        "metrics", "--dynamics", out.join("dynamics").to_str().unwrap(), "--epochs", "1..3", "--out", window.to_str().unwrap(),
    ]));
    let score = f64s(&out.join("metrics.parquet"), "mislabel_score");
    let aum = f64s(&window, "aum");
    assert!(score.iter().zip(&aum).all(|(s, a)| (s + a).abs() < 1e-9));
    assert!(read_parquet(&out.join("metrics.parquet")).column_by_name("is_suspect").is_none());
    let report = std::fs::read_to_string(out.join("suspects.csv")).unwrap();
    assert!(report.lines().nth(1).unwrap().contains(",1..3,"));

    // Chosen with held-out data, and recorded either way.
    let out = dir.path().join("chosen");
    assert_success(&run(&data, &out, &["--eval-data", example("fashion_mnist/fashion-2k.parquet").to_str().unwrap()]));
    let le = &job_json(&out)["label_errors"];
    let [a, b] = [le["suspect_epochs"][0].as_u64().unwrap(), le["suspect_epochs"][1].as_u64().unwrap()];
    assert!(a == 0 && (1..=4).contains(&b), "{le}");

    // Beyond the job's epochs: one line naming the flag, nothing written.
    let out = dir.path().join("bad");
    let o = run(&data, &out, &["--suspect-epochs", "2..9"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--suspect-epochs") && err.contains("2..9") && err.lines().count() == 1, "{err}");
    assert!(!out.join("job.json").exists());
}

#[test]
fn threshold_samples_work_with_string_labels() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let data = example("rotten_tomatoes/reviews-2k.csv");
    assert_success(&carto(&[
        "run", "--data", data.to_str().unwrap(), "--label-col", "label", "--text-col", "text", "--epochs", "2",
        "--threshold-samples", "--out", out.to_str().unwrap(), "-q",
    ]));
    let job = job_json(&out);
    let rates = job["label_errors"]["noise_rate"].as_array().unwrap();
    let names: Vec<&str> = rates.iter().map(|r| r["label_name"].as_str().unwrap()).collect();
    assert_eq!(names, ["fresh", "rotten"]);
    // The threshold runs' files name the extra class.
    assert!(parquet_metadata(&out.join("threshold_runs/dynamics/epoch=2/part-0.parquet"), "carto.label_names")
        .unwrap()
        .contains("(threshold sample)"));
}
