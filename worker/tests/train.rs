//! The training loop on real data, in-process: what it records and reports.

use std::path::PathBuf;

use carto_common::dataset::{self, DatasetSpec, FeatureSource};
use carto_common::sampler::ShardPlan;
use carto_common::spec::JobSpec;
use carto_worker::collective::Single;
use carto_worker::data::TrainData;
use carto_worker::optim::{Adam, AdamConfig, LazyAdam};
use carto_worker::trainer::{train, TrainJob};
use tch::{Device, Kind, Tensor};

mod common;
use common::Collector;

fn example(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(rel)
}

fn fashion_7x7() -> (JobSpec, TrainData) {
    let cols: Vec<String> = (0..49).map(|i| format!("p{i}")).collect();
    let ds = dataset::load(&DatasetSpec {
        path: example("fashion_mnist/fashion-7x7-1k.csv"),
        label_col: "label".into(),
        id_col: None,
        features: FeatureSource::Columns(cols.clone()),
    })
    .unwrap();
    let spec = JobSpec {
        feature_cols: cols,
        model: Some("mlp".into()),
        hidden: Some(32),
        epochs: Some(3),
        batch_size: Some(50),
        threads_per_worker: Some(1),
        ..Default::default()
    };
    (spec, TrainData::new(ds, 20, Device::Cpu))
}

fn run(spec: &JobSpec, data: &TrainData) -> Collector {
    run_from(spec, data, 0, None, None)
}

/// libtorch's random generator is process-wide: tests that train take turns.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_from(
    spec: &JobSpec,
    data: &TrainData,
    start_epoch: u32,
    resume_from: Option<PathBuf>,
    checkpoint_dir: Option<PathBuf>,
) -> Collector {
    let job = TrainJob {
        job_id: "t",
        generation: 1,
        spec,
        plan: ShardPlan {
            num_samples: data.len() as u64,
            seed: spec.seed(),
            world_size: 1,
            rank: 0,
            global_batch: spec.batch_size(),
        },
        start_epoch,
        device: Device::Cpu,
        resume_from,
        checkpoint_dir,
    };
    let c = Collector::default();
    let _turn = TORCH_RNG.lock().unwrap_or_else(|p| p.into_inner());
    train(&job, data, None, &Single, &c).unwrap();
    c
}

#[test]
fn every_sample_is_recorded_once_per_epoch_and_the_loss_falls() {
    let (spec, data) = fashion_7x7();
    let c = run(&spec, &data);
    let rows = c.rows.borrow();
    assert_eq!(rows.len(), 3);
    for (epoch, r) in rows.iter() {
        let mut ids = r.sample_id.clone();
        ids.sort();
        assert_eq!(ids, (0..1000).collect::<Vec<i64>>(), "epoch {epoch}");
        for i in 0..r.len() {
            assert_eq!(r.label[i], data.labels_cpu[r.sample_id[i] as usize]);
            assert!((0.0..=1.0).contains(&r.gold_prob[i]));
            assert!((r.loss[i] - (-r.gold_prob[i].ln())).abs() < 1e-9);
        }
    }
    let reports = c.reports.borrow();
    let mean_loss: Vec<f64> = reports.iter().map(|r| r.loss_sum / r.samples as f64).collect();
    assert!(mean_loss[2] < mean_loss[0], "loss per epoch {mean_loss:?}");
    // The reported loss is the recorded one: both come from the training forward pass.
    let recorded: f64 = rows[0].1.loss.iter().sum();
    assert!((recorded - reports[0].loss_sum).abs() / recorded < 1e-4, "{recorded} vs {}", reports[0].loss_sum);
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let (spec, data) = fashion_7x7();
    let a = run(&spec, &data);
    let b = run(&spec, &data);
    assert!(a.rows.borrow()[2].1.gold_prob == b.rows.borrow()[2].1.gold_prob, "same seed, same run");
    let other = JobSpec { seed: Some(7), ..spec };
    let c = run(&other, &data);
    assert!(a.rows.borrow()[2].1.gold_prob != c.rows.borrow()[2].1.gold_prob, "another seed, another run");
}

#[test]
fn the_eval_pass_records_the_model_after_the_epoch() {
    let (spec, data) = fashion_7x7();
    let eval = JobSpec { dynamics_pass: Some("eval".into()), ..spec.clone() };
    let e = run(&eval, &data);
    let t = run(&spec, &data);
    // Same training, different recording point: the end-of-epoch model fits
    // the data better than the average over the epoch's steps.
    let mean = |c: &Collector| -> f64 { c.rows.borrow()[0].1.gold_prob.iter().sum::<f64>() / 1000.0 };
    assert!(mean(&e) > mean(&t), "eval {} vs train {}", mean(&e), mean(&t));
}

#[test]
fn bow_learns_real_reviews() {
    let ds = reviews_2k_dataset();
    let spec = JobSpec {
        text_col: Some("text".into()),
        epochs: Some(3),
        hash_bits: Some(18),
        lr: Some(0.005),
        ..Default::default()
    };
    let data = TrainData::new(ds, spec.hash_bits(), Device::Cpu);
    let c = run(&spec, &data);
    let reports = c.reports.borrow();
    let acc: Vec<f64> = reports.iter().map(|r| r.correct as f64 / r.samples as f64).collect();
    assert!(acc[2] > acc[0] && acc[2] > 0.7, "accuracy per epoch {acc:?}");
}

#[test]
fn lazy_adam_equals_dense_adam_on_the_rows_it_touches() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|p| p.into_inner());
    tch::manual_seed(0);
    let init = Tensor::randn([6, 4], (Kind::Float, Device::Cpu));
    let dense = init.copy().set_requires_grad(true);
    let mut table = init.copy();
    let cfg = AdamConfig::new(0.01);
    let mut adam = Adam::new(cfg, vec![dense.shallow_clone()]);
    let mut lazy = LazyAdam::new(cfg, &table);
    let rows = Tensor::from_slice(&[1i64, 4]);
    for step in 0..3 {
        let g = Tensor::randn([2, 4], (Kind::Float, Device::Cpu)) * (step + 1) as f64;
        // Dense: the same gradient scattered into a full-size tensor.
        adam.zero_grad();
        let full = Tensor::zeros([6, 4], (Kind::Float, Device::Cpu)).index_add(0, &rows, &g);
        (&dense * &full).sum(Kind::Float).backward();
        adam.step();
        lazy.step(&mut table, &rows, &g);
    }
    let touched = dense.detach().index_select(0, &rows);
    assert!(touched.allclose(&table.index_select(0, &rows), 1e-6, 1e-7, false));
    // Untouched rows keep their values in the lazy table (a dense Adam with a
    // zero gradient also leaves them unmoved, its moments being zero).
    let untouched = Tensor::from_slice(&[0i64, 2, 3, 5]);
    assert!(table.index_select(0, &untouched).equal(&init.index_select(0, &untouched)));
}

/// The bundled 2,000 reviews, text features.
fn reviews_2k_dataset() -> dataset::Dataset {
    dataset::load(&DatasetSpec {
        path: example("rotten_tomatoes/reviews-2k.csv"),
        label_col: "label".into(),
        id_col: None,
        features: FeatureSource::Text("text".into()),
    })
    .unwrap()
}

fn reviews_2k() -> (JobSpec, TrainData) {
    let ds = reviews_2k_dataset();
    let spec = JobSpec {
        text_col: Some("text".into()),
        epochs: Some(4),
        hash_bits: Some(14),
        lr: Some(0.005),
        threads_per_worker: Some(1),
        ..Default::default()
    };
    let data = TrainData::new(ds, spec.hash_bits(), Device::Cpu);
    (spec, data)
}

#[test]
fn a_job_resumed_from_a_checkpoint_reruns_the_next_epochs_exactly() {
    for (spec, data) in [fashion_7x7(), reviews_2k()] {
        let spec = JobSpec { epochs: Some(4), ..spec };
        let dir = tempfile::tempdir().unwrap();
        let full = run_from(&spec, &data, 0, None, Some(dir.path().to_path_buf()));
        // Checkpoints of the last two epochs are kept.
        assert!(carto_worker::checkpoint::path_for(dir.path(), 3).exists());
        assert!(carto_worker::checkpoint::path_for(dir.path(), 2).exists());
        assert!(!carto_worker::checkpoint::path_for(dir.path(), 1).exists());
        let resumed = run_from(&spec, &data, 3, Some(carto_worker::checkpoint::path_for(dir.path(), 2)), None);
        let (full_rows, resumed_rows) = (full.rows.borrow(), resumed.rows.borrow());
        assert_eq!(resumed_rows.len(), 1);
        assert_eq!(resumed_rows[0].0, 3);
        assert_eq!(resumed_rows[0].1.sample_id, full_rows[3].1.sample_id);
        assert!(resumed_rows[0].1.gold_prob == full_rows[3].1.gold_prob, "model {}: resumed epoch 3 differs", spec.model());
        // From a fresh model instead, epoch 3 would differ.
        let fresh = run_from(&spec, &data, 3, None, None);
        assert!(fresh.rows.borrow()[0].1.gold_prob != full_rows[3].1.gold_prob);
    }
}
