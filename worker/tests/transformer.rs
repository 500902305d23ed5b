//! A fine-tuned RoBERTa (dropout on) resumes from an epoch checkpoint exactly
//! like an uninterrupted job; `--train-layers` trains only the last layers
//! and reads the frozen ones from its cache; `--group-by-length` still
//! reports every sample once; the forward under CPU bf16 autocast stays
//! close to the float32 one. The checkpoint is a tiny random one built by
//! scripts/transformer_fixture.py (needs $CARTO_PYTHON with transformers).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use carto_common::dataset::{self, DatasetSpec, FeatureSource};
use carto_common::sampler::ShardPlan;
use carto_common::spec::JobSpec;
use carto_worker::checkpoint::path_for;
use carto_worker::collective::Single;
use carto_worker::data::{TextEncoder, TrainData};
use carto_worker::model::{Model, ModelConfig};
use carto_worker::trainer::{train, TrainJob};
use carto_worker::transformer::{weights, Arch, Pretrained, Transformer};
use tch::{nn, Device, Kind, Tensor};

mod common;
use common::Collector;

/// libtorch's generator is global to the process: tests that seed it and
/// draw from it (initialisation, dropout) run one at a time, or one test's
/// draws would shift another's.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn checkpoint(dir: &Path) -> PathBuf {
    let python = std::env::var_os("CARTO_PYTHON")
        .expect("CARTO_PYTHON is not set: run the tests through scripts/test.sh, which creates the Python environment");
    let ckpt = dir.join("roberta");
    let out = std::process::Command::new(python)
        .arg(root().join("scripts/transformer_fixture.py"))
        .args(["model", ckpt.to_str().unwrap(), "--arch", "roberta", "--size", "tiny"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ckpt
}

/// The first 300 reviews of reviews-2k (quick), tokenized for `ckpt`.
fn reviews(ckpt: &Path) -> TrainData {
    let pretrained = Arc::new(Pretrained::open(ckpt, Arch::Roberta, 32).unwrap());
    let path = root().join("examples/rotten_tomatoes/reviews-2k.csv");
    let mut ds = dataset::load(&DatasetSpec { path, label_col: "label".into(), id_col: None, features: FeatureSource::Text("text".into()) }).unwrap();
    if let carto_common::dataset::Features::Text(t) = &mut ds.features {
        t.truncate(300);
    }
    ds.labels.truncate(300);
    TrainData::encoded(ds, TextEncoder::Pretrained(pretrained), Device::Cpu).unwrap()
}

fn roberta_spec(ckpt: &Path) -> JobSpec {
    JobSpec {
        text_col: Some("text".into()),
        model: Some("roberta".into()),
        pretrained: Some(ckpt.display().to_string()),
        max_len: Some(32),
        epochs: Some(3),
        batch_size: Some(32),
        lr: Some(1e-3),
        threads_per_worker: Some(1),
        ..Default::default()
    }
}

fn model(data: &TrainData, train_layers: Option<u32>) -> Result<Model, carto_worker::WorkerError> {
    tch::manual_seed(42);
    Model::new(
        &ModelConfig {
            kind: "roberta",
            input_dim: data.input_dim,
            num_classes: data.num_classes,
            hidden: 0,
            embed_dim: 0,
            hash_buckets: 0,
            pretrained: data.pretrained(),
            train_layers,
        },
        Device::Cpu,
    )
}

fn run_from(spec: &JobSpec, data: &TrainData, start: u32, resume: Option<PathBuf>, ckpt_dir: Option<PathBuf>) -> Collector {
    let job = TrainJob {
        job_id: "t",
        generation: 1,
        spec,
        plan: ShardPlan { num_samples: data.len() as u64, seed: spec.seed(), world_size: 1, rank: 0, global_batch: spec.batch_size() },
        start_epoch: start,
        device: Device::Cpu,
        resume_from: resume,
        checkpoint_dir: ckpt_dir,
    };
    let c = Collector::default();
    train(&job, data, None, &Single, &c).unwrap();
    c
}

#[test]
fn a_fine_tuned_roberta_resumes_from_a_checkpoint_exactly() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path());
    let data = reviews(&ckpt);
    let spec = roberta_spec(&ckpt);
    let ckdir = dir.path().join("ckpt");
    let full = run_from(&spec, &data, 0, None, Some(ckdir.clone()));
    let resumed = run_from(&spec, &data, 2, Some(path_for(&ckdir, 1)), None);
    let (full, resumed) = (full.rows.borrow(), resumed.rows.borrow());
    assert_eq!(resumed[0].0, 2);
    assert!(resumed[0].1.gold_prob == full[2].1.gold_prob, "resumed epoch 2 differs from the uninterrupted one");
    // Training moved the model: epoch 2 is not epoch 0 again.
    assert!(full[0].1.gold_prob != full[2].1.gold_prob);
}

#[test]
fn training_the_last_layers_leaves_the_frozen_ones_and_reads_them_from_the_cache() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path());
    let data = reviews(&ckpt);
    let samples: Vec<i64> = (0..40).collect();

    // Split at layer 1 of 2, the frozen part cached: the same logits as the
    // whole network (evaluation mode), whether computed now or read back.
    let mut full = model(&data, None).unwrap();
    let mut split = model(&data, Some(1)).unwrap();
    let want = tch::no_grad(|| full.forward(&data.inputs, &samples, false));
    let first = tch::no_grad(|| split.forward(&data.inputs, &samples, false));
    assert!(split.frozen_cache_bytes() > 0, "the frozen states were kept");
    let again = tch::no_grad(|| split.forward(&data.inputs, &samples[..17], false));
    for (got, want) in [(&first, &want), (&again, &want.narrow(0, 0, 17))] {
        let diff = (got - want).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "cached split forward differs from the full one by {diff}");
    }
    // The head only (0 layers): one vector per text.
    let mut head = model(&data, Some(0)).unwrap();
    let got = tch::no_grad(|| head.forward(&data.inputs, &samples, false));
    assert!((&got - &want).abs().max().double_value(&[]) < 1e-5);
    assert_eq!(head.frozen_cache_bytes(), samples.len() * 32 * 4, "one hidden vector (32 floats) per text");
    // Only trainable parameters are stepped, reduced and checkpointed.
    let trainable: Vec<String> = split.dense_params().into_iter().map(|(n, _)| n).collect();
    assert!(trainable.iter().all(|n| !n.contains("embeddings") && !n.contains("layer.0.")), "{trainable:?}");
    assert!(trainable.iter().any(|n| n.contains("layer.1.")) && trainable.iter().any(|n| n.starts_with("classifier.")));

    // Training moves layer 1 and the head, never the frozen part.
    let spec = JobSpec { train_layers: Some(1), epochs: Some(2), ..roberta_spec(&ckpt) };
    let job = TrainJob {
        job_id: "t",
        generation: 1,
        spec: &spec,
        plan: ShardPlan { num_samples: data.len() as u64, seed: spec.seed(), world_size: 1, rank: 0, global_batch: 32 },
        start_epoch: 0,
        device: Device::Cpu,
        resume_from: None,
        checkpoint_dir: None,
    };
    let c = Collector::default();
    let trained = train(&job, &data, None, &Single, &c).unwrap();
    assert_eq!(c.rows.borrow().len(), 2);
    assert!(c.rows.borrow().iter().all(|(_, rows)| rows.len() == 300), "every sample, every epoch");
    let before: std::collections::HashMap<String, tch::Tensor> = model(&data, Some(1)).unwrap().all_params().into_iter().collect();
    let mut moved = Vec::new();
    for (name, p) in trained.all_params() {
        let same = p.equal(&before[&name]);
        let frozen = name.contains("embeddings") || name.contains("layer.0.");
        assert!(!frozen || same, "frozen parameter {name} changed");
        if !same {
            moved.push(name);
        }
    }
    assert!(moved.iter().any(|n| n.contains("layer.1.")) && moved.iter().any(|n| n.starts_with("classifier.")), "{moved:?}");
}

#[test]
fn train_layers_beyond_the_checkpoint_is_one_clear_error() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path());
    let data = reviews(&ckpt);
    let err = model(&data, Some(3)).err().expect("3 of 2 layers is refused").to_string();
    assert!(err.contains("--train-layers 3: the checkpoint has 2 encoder layers"), "{err}");
}

#[test]
fn grouping_by_length_still_reports_every_sample_once_per_epoch() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path());
    let data = reviews(&ckpt);
    let spec = JobSpec { group_by_length: Some(true), epochs: Some(2), ..roberta_spec(&ckpt) };
    let c = run_from(&spec, &data, 0, None, None);
    for (epoch, rows) in c.rows.borrow().iter() {
        let mut ids = rows.sample_id.clone();
        ids.sort_unstable();
        assert_eq!(ids, (0..300).collect::<Vec<i64>>(), "epoch {epoch}");
    }
    assert_eq!(c.reports.borrow().iter().map(|r| r.samples).sum::<u64>(), 600);
}

#[test]
fn bf16_autocast_on_cpu_gives_float32_logits_close_to_the_float32_forward() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path());
    let pretrained = Pretrained::open(&ckpt, Arch::Roberta, 32).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Transformer::new(&vs.root(), &pretrained.config, 2);
    weights::load(&vs, &pretrained.dir, &pretrained.config).unwrap();
    let texts: Vec<String> = [
        "a gripping, beautifully acted drama",
        "dull and far too long",
        "the cast is wonderful but the script lets them down",
        "one of the best films of the year",
        "i laughed, i cried, i checked my watch",
        "an utter mess from start to finish",
        "quietly moving",
        "neither funny nor clever, just loud",
    ]
    .iter()
    .map(|t| t.to_string())
    .collect();
    let tokens = pretrained.tokenizer.encode(&texts, "texts").unwrap();
    let samples: Vec<i64> = (0..texts.len() as i64).collect();
    let (ids, mask) = tokens.batch(&samples, Device::Cpu);

    let (fp32, bf16, inside) = tch::no_grad(|| {
        let fp32 = net.forward(&ids, &mask, false);
        let (bf16, inside) = carto_worker::autocast::bf16_cpu(|| {
            let probe = Tensor::ones([2, 2], (Kind::Float, Device::Cpu)).matmul(&Tensor::ones([2, 2], (Kind::Float, Device::Cpu)));
            (net.forward(&ids, &mask, false), probe.kind())
        });
        (fp32, bf16, inside)
    });
    assert_eq!(inside, Kind::BFloat16, "a matmul under CPU autocast computes in bfloat16");
    let after = Tensor::ones([2, 2], (Kind::Float, Device::Cpu)).matmul(&Tensor::ones([2, 2], (Kind::Float, Device::Cpu)));
    assert_eq!(after.kind(), Kind::Float, "autocast is off again after the region");

    assert_eq!((fp32.kind(), bf16.kind()), (Kind::Float, Kind::Float), "logits are float32 either way");
    assert_eq!(bf16.size(), [texts.len() as i64, 2]);
    let scale = fp32.abs().max().double_value(&[]);
    let diff = (&bf16 - &fp32).abs().max().double_value(&[]);
    // Non-zero: the bf16 path really ran. Bounded: bfloat16 keeps 8 bits of
    // mantissa (relative error ~0.4% per rounding); a few layers of it stay
    // within a few percent of the logits' scale.
    assert!(diff > 0.0, "bf16 logits equal the float32 ones exactly: autocast did not engage");
    assert!(diff <= 0.03 * scale, "bf16 logits differ by {diff:e} (float32 logits up to {scale:e})");
    eprintln!("bf16 vs float32 logits: largest difference {diff:e}, largest logit {scale:e}");
}
