//! A fine-tuned RoBERTa (dropout on) resumes from an epoch checkpoint exactly
//! like an uninterrupted job. The checkpoint is a tiny random one built by
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
use carto_worker::transformer::{Arch, Pretrained};
use tch::Device;

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
