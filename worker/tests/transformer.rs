//! A fine-tuned RoBERTa (dropout on) resumes from an epoch checkpoint exactly
//! like an uninterrupted job, and its forward under CPU bf16 autocast stays
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
use carto_worker::trainer::{train, TrainJob};
use carto_worker::transformer::{weights, Arch, Pretrained, Transformer};
use tch::{nn, Device, Kind, Tensor};

mod common;
use common::Collector;

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
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path());
    let pretrained = Arc::new(Pretrained::open(&ckpt, Arch::Roberta, 32).unwrap());
    let path = root().join("examples/rotten_tomatoes/reviews-2k.csv");
    let mut ds = dataset::load(&DatasetSpec { path, label_col: "label".into(), id_col: None, features: FeatureSource::Text("text".into()) }).unwrap();
    // 300 rows keep it quick.
    if let carto_common::dataset::Features::Text(t) = &mut ds.features {
        t.truncate(300);
    }
    ds.labels.truncate(300);
    let data = TrainData::encoded(ds, TextEncoder::Pretrained(pretrained), Device::Cpu).unwrap();
    let spec = JobSpec {
        text_col: Some("text".into()),
        model: Some("roberta".into()),
        pretrained: Some(ckpt.display().to_string()),
        max_len: Some(32),
        epochs: Some(3),
        batch_size: Some(32),
        lr: Some(1e-3),
        threads_per_worker: Some(1),
        ..Default::default()
    };
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
fn bf16_autocast_on_cpu_gives_float32_logits_close_to_the_float32_forward() {
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
