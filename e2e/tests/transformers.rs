//! `--model bert|roberta --pretrained DIR`: carto against PyPI's
//! `transformers` on the same checkpoints (tiny random classifiers and
//! tokenizers trained on the bundled reviews, saved with save_pretrained by
//! scripts/transformer_fixture.py): the same probabilities in eval mode and
//! the same loss after AdamW steps, within 1e-4. Then data parallelism,
//! a frozen map (--lr 0), a fresh head, a real dataset, and bad checkpoints.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use arrow::array::{Array, Float64Array, Int64Array};
use carto_e2e::*;

const TOL: f64 = 1e-4;

/// Runs the fixture script once per test binary: `reference` into
/// target/tmp/transformers (regenerated each run, so it follows the script).
fn fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("transformers");
        let _ = std::fs::remove_dir_all(&dir);
        python_fixture(&["reference", dir.to_str().unwrap()]);
        dir
    })
}

fn python_fixture(args: &[&str]) {
    let out = Command::new(python())
        .arg(repo_root().join("scripts/transformer_fixture.py"))
        .args(args)
        .output()
        .expect("the Python environment runs");
    assert!(
        out.status.success(),
        "transformer_fixture.py {args:?} failed (is `transformers` installed? scripts/env.sh installs scripts/requirements.txt):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn reference() -> &'static serde_json::Value {
    static REF: OnceLock<serde_json::Value> = OnceLock::new();
    REF.get_or_init(|| serde_json::from_str(&std::fs::read_to_string(fixture().join("reference.json")).unwrap()).unwrap())
}

/// `carto run` on the fixture's 48 reviews with `arch`'s checkpoint.
fn run_model(arch: &str, ckpt: &Path, out: &Path, extra: &[&str]) {
    let data = fixture().join("texts.csv");
    let mut args = vec![
        "run", "--data", data.to_str().unwrap(), "--label-col", "label", "--text-col", "text", "--id-col", "id",
        "--model", arch, "--pretrained", ckpt.to_str().unwrap(), "--max-len", "32", "--threads-per-worker", "1",
        "--out", out.to_str().unwrap(), "-q",
    ];
    args.extend_from_slice(extra);
    assert_success(&carto(&args));
}

/// sample_id → gold_prob of one epoch's dynamics.
fn gold_probs(out: &Path, epoch: u32) -> HashMap<i64, f64> {
    let dynamics = read_dynamics(&out.join("dynamics"));
    let mut m = HashMap::new();
    for b in &dynamics[&epoch] {
        let (ids, p) = (col::<Int64Array>(b, "sample_id"), col::<Float64Array>(b, "gold_prob"));
        for i in 0..b.num_rows() {
            m.insert(ids.value(i), p.value(i));
        }
    }
    m
}

fn job_losses(out: &Path) -> Vec<f64> {
    let job: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("job.json")).unwrap()).unwrap();
    job["epochs"].as_array().unwrap().iter().map(|e| e["loss"].as_f64().unwrap()).collect()
}

fn labels(out: &Path) -> Vec<i64> {
    let m = read_parquet(&out.join("metrics.parquet"));
    col::<Int64Array>(&m, "label").values().to_vec()
}

fn equivalence(arch: &str) {
    let r = &reference()["models"][arch];
    let ckpt = fixture().join(arch);
    let dir = tempfile::tempdir().unwrap();

    // Eval-mode probabilities: --lr 0 keeps the model as loaded, and the
    // eval pass runs in batches of 16, each padded to its own longest text.
    let frozen = dir.path().join("frozen");
    run_model(arch, &ckpt, &frozen, &["--lr", "0", "--epochs", "1", "--batch-size", "16", "--dynamics-pass", "eval"]);
    let got = gold_probs(&frozen, 0);
    let gold = labels(&frozen);
    let want: Vec<f64> = (0..gold.len()).map(|i| r["probs"][i][gold[i] as usize].as_f64().unwrap()).collect();
    assert_eq!(got.len(), want.len());
    let mean = want.iter().sum::<f64>() / want.len() as f64;
    let spread = (want.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / want.len() as f64).sqrt();
    assert!(spread > 0.05, "the fixture's probabilities spread (std {spread}), so a wrong layer would show");
    let worst_p = (0..want.len()).map(|i| (got[&(i as i64)] - want[i]).abs()).fold(0.0, f64::max);
    eprintln!("{arch}: eval probabilities, max |carto − transformers| = {worst_p:e}");
    assert!(worst_p <= TOL, "{arch}: probabilities differ from transformers' by {worst_p}");

    // Training: one full-batch step per epoch; epoch k's loss is the loss
    // after k AdamW steps (weight decay, warmup/decay schedule, clipping).
    let trained = dir.path().join("trained");
    run_model(arch, &ckpt, &trained, &["--lr", "0.001", "--epochs", "3", "--batch-size", "48"]);
    let got = job_losses(&trained);
    let want: Vec<f64> = r["losses"].as_array().unwrap().iter().map(|l| l.as_f64().unwrap()).collect();
    assert_eq!(got.len(), want.len());
    assert!((want[0] - want[1]).abs() > 100.0 * TOL, "a step moves the loss well beyond the tolerance");
    let worst_l = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    eprintln!("{arch}: losses carto {got:?} transformers {want:?}, max diff {worst_l:e}");
    assert!(worst_l <= TOL, "{arch}: losses {got:?}, transformers {want:?}");
}

#[test]
fn bert_matches_transformers() {
    equivalence("bert");
}

#[test]
fn roberta_matches_transformers() {
    equivalence("roberta");
}

fn safetensors_map(path: &Path) -> HashMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().into_iter().map(|(n, v)| (n, v.data().to_vec())).collect()
}

#[test]
fn lr_zero_leaves_the_model_exactly_as_loaded() {
    let ckpt = fixture().join("roberta");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run_model("roberta", &ckpt, &out, &["--lr", "0", "--epochs", "2", "--batch-size", "16", "--save-model"]);
    let loaded = safetensors_map(&ckpt.join("model.safetensors"));
    let saved = safetensors_map(&out.join("model.safetensors"));
    // carto names its variables like transformers, so its file loads back there.
    assert_eq!(saved.len(), loaded.len());
    for (name, bytes) in &saved {
        assert!(loaded.get(name) == Some(bytes), "{name} changed or is not in the checkpoint");
    }
    // Dropout is 0 in this checkpoint: both epochs see the same model.
    assert_eq!(gold_probs(&out, 0), gold_probs(&out, 1));
}

#[test]
fn two_workers_fine_tune_like_one() {
    let ckpt = fixture().join("bert");
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    // 48 rows, global batch 16: 3 steps per epoch, 8 samples per rank.
    let args = ["--lr", "0.001", "--epochs", "3", "--batch-size", "16", "--seed", "5"];
    run_model("bert", &ckpt, &one, &args);
    run_model("bert", &ckpt, &two, &[&args[..], &["--workers", "2"]].concat());
    let d = metrics_difference(&one.join("metrics.parquet"), &two.join("metrics.parquet"));
    eprintln!("bert, 2 workers vs 1: largest metric difference {d:e}");
    assert!(d <= 1e-4, "{d}");
    let (a, b) = (job_losses(&one), job_losses(&two));
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-4), "{a:?} vs {b:?}");
}

#[test]
fn a_checkpoint_without_a_head_gets_a_fresh_one_and_maps_a_real_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("encoder");
    python_fixture(&["model", ckpt.to_str().unwrap(), "--arch", "roberta", "--size", "tiny", "--no-head"]);
    assert!(!String::from_utf8_lossy(&std::fs::read(ckpt.join("config.json")).unwrap()).contains("ForSequenceClassification"));
    let out = dir.path().join("out");
    let data = example("rotten_tomatoes/reviews-2k.csv");
    assert_success(&carto(&[
        "run", "--data", data.to_str().unwrap(), "--label-col", "label", "--text-col", "text", "--id-col", "id",
        "--model", "roberta", "--pretrained", ckpt.to_str().unwrap(), "--max-len", "64", "--lr", "0.001",
        "--epochs", "2", "--batch-size", "32", "--out", out.to_str().unwrap(), "-q",
    ]));
    let m = read_parquet(&out.join("metrics.parquet"));
    assert_eq!(m.num_rows(), 2000);
    let conf = col::<Float64Array>(&m, "confidence");
    assert_eq!(conf.null_count(), 0);
    let mean = conf.values().iter().sum::<f64>() / 2000.0;
    assert!(conf.values().iter().any(|&c| (c - mean).abs() > 0.05), "the map separates samples");
    for f in ["datamap.png", "suspects.csv", "job.json"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let job: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("job.json")).unwrap()).unwrap();
    let acc = job["epochs"][1]["accuracy"].as_f64().unwrap();
    assert!(acc > 0.55, "the fresh head learns something in 2 epochs: accuracy {acc}");
}

/// A copy of the fixture's checkpoint of `arch`, changed by `edit`; the
/// error line of a run on it.
fn broken(arch: &str, edit: impl FnOnce(&Path), extra: &[&str]) -> String {
    broken_on(arch, edit, extra, &fixture().join("texts.csv"))
}

fn broken_on(arch: &str, edit: impl FnOnce(&Path), extra: &[&str], data: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    std::fs::create_dir(&ckpt).unwrap();
    for f in std::fs::read_dir(fixture().join(arch)).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), ckpt.join(f.file_name())).unwrap();
    }
    edit(&ckpt);
    let out = dir.path().join("out");
    let mut args = vec![
        "run", "--data", data.to_str().unwrap(), "--label-col", "label", "--text-col", "text",
        "--pretrained", ckpt.to_str().unwrap(), "--epochs", "1", "--out", out.to_str().unwrap(), "-q",
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--max-len") {
        args.extend(["--max-len", "32"]);
    }
    // Only the error line: the worker's and scheduler's warnings are logs.
    let r = Command::new(bin("carto")).args(&args).env("CARTO_WORKER_BIN", bin("carto-worker")).env("CARTO_LOG", "error").output().unwrap();
    assert_eq!(r.status.code(), Some(2), "stderr: {}", String::from_utf8_lossy(&r.stderr));
    assert!(!out.join("metrics.parquet").exists());
    error_line(&r)
}

fn edit_config(ckpt: &Path, field: &str, value: serde_json::Value) {
    let path = ckpt.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v[field] = value;
    std::fs::write(&path, v.to_string()).unwrap();
}

#[test]
fn bad_checkpoints_are_one_line_naming_the_file_and_field() {
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("missing config", broken("roberta", |d| std::fs::remove_file(d.join("config.json")).unwrap(), &["--model", "roberta"]), &["config.json"]),
        ("wrong architecture", broken("roberta", |_| {}, &["--model", "bert"]), &["config.json", "model_type", "'roberta'"]),
        ("missing tokenizer", broken("bert", |d| std::fs::remove_file(d.join("tokenizer.json")).unwrap(), &["--model", "bert"]), &["tokenizer.json", "not found"]),
        (
            "shape mismatch",
            broken("bert", |d| edit_config(d, "intermediate_size", serde_json::json!(48)), &["--model", "bert"]),
            &["model.safetensors", "bert.encoder.layer.0.intermediate.dense", "shape"],
        ),
        (
            "missing weights",
            broken("roberta", |d| std::fs::remove_file(d.join("model.safetensors")).unwrap(), &["--model", "roberta"]),
            &["model.safetensors", "not found"],
        ),
        (
            "too long",
            broken("roberta", |_| {}, &["--model", "roberta", "--max-len", "100"]),
            &["config.json", "max_position_embeddings", "--max-len"],
        ),
    ];
    for (case, line, want) in cases {
        eprintln!("{case}: {line}");
        for w in want {
            assert!(line.contains(w), "{case}: '{w}' not in: {line}");
        }
    }
}

#[test]
fn a_head_trained_for_other_classes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("three.csv");
    let text = std::fs::read_to_string(fixture().join("texts.csv")).unwrap();
    // A third class: the checkpoint's head has two outputs.
    let relabelled: Vec<String> =
        text.lines().enumerate().map(|(i, l)| if i % 5 == 1 { l.replace(",fresh", ",meh").replace(",rotten", ",meh") } else { l.to_string() }).collect();
    std::fs::write(&data, relabelled.join("\n") + "\n").unwrap();
    let line = broken_on("bert", |_| {}, &["--model", "bert"], &data);
    assert!(line.contains("model.safetensors") && line.contains("classifier.") && line.contains("2 classes, the dataset has 3"), "{line}");
}
