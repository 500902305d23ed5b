//! The training loop of one rank: data-parallel steps over this rank's shard,
//! recording every sample's dynamics from the training forward pass (before the
//! optimizer step, as the paper's code does) or from an eval pass at the
//! epoch's end, and reporting each epoch to the coordinator.

use std::time::Instant;

use carto_common::dynamics::DynamicsColumns;
use carto_common::metrics::RowStats;
use carto_common::sampler::{ShardItem, ShardPlan};
use carto_common::spec::JobSpec;
use carto_common::threshold;
use tch::{Device, Kind, Reduction, Tensor};
use tracing::{debug, info, info_span};

use crate::checkpoint;
use crate::collective::{all_reduce_rows, Collective};
use crate::data::TrainData;
use crate::model::{Model, ModelConfig};
use crate::optim::{linear_warmup, Adam, AdamConfig};
use crate::WorkerError;

/// Fine-tuning a pretrained transformer as the paper's code does
/// (transformers' run_glue): AdamW with this weight decay on all but biases
/// and LayerNorm weights, the learning rate warmed up linearly over this
/// fraction of all steps and then decayed linearly to 0, gradients clipped
/// to this global norm.
pub const FINE_TUNE_WEIGHT_DECAY: f64 = 0.01;
pub const FINE_TUNE_WARMUP: f64 = 0.06;
pub const FINE_TUNE_MAX_GRAD_NORM: f64 = 1.0;

/// Whether a transformer parameter is exempt from weight decay.
fn no_decay(name: &str) -> bool {
    name.ends_with(".bias") || name.contains("LayerNorm.weight")
}

/// Live progress of the running epoch (sent with heartbeats).
#[derive(Debug, Clone, Copy, Default)]
pub struct StepProgress {
    pub epoch: u32,
    pub samples_done: u64,
    pub loss_sum: f64,
    pub correct: u64,
    pub train_seconds: f64,
}

/// What a rank reports at the end of an epoch.
#[derive(Debug, Clone, Copy, Default)]
pub struct EpochReport {
    pub epoch: u32,
    pub samples: u64,
    pub loss_sum: f64,
    pub correct: u64,
    pub train_seconds: f64,
    pub rows_sent: u64,
    /// This rank's share of the held-out set (rows rank, rank + W, …).
    pub eval_samples: u64,
    pub eval_loss_sum: f64,
    pub eval_correct: u64,
}

/// Where the trainer sends what it learns; the gRPC link in production,
/// a collector in tests.
pub trait Reporter {
    fn progress(&self, p: StepProgress);
    /// True once the coordinator asked this rank to stop.
    fn aborted(&self) -> bool;
    /// Sends one epoch's dynamics rows; returns the rows acknowledged.
    fn dynamics(&self, epoch: u32, rows: &DynamicsColumns) -> Result<u64, WorkerError>;
    /// Reports the epoch; `Ok(true)` means stop training.
    fn epoch_done(&self, report: EpochReport) -> Result<bool, WorkerError>;
}

pub struct TrainJob<'a> {
    pub job_id: &'a str,
    pub generation: u64,
    pub spec: &'a JobSpec,
    pub plan: ShardPlan,
    pub start_epoch: u32,
    pub device: Device,
    /// The checkpoint of epoch `start_epoch − 1` to resume from.
    pub resume_from: Option<std::path::PathBuf>,
    /// Where rank 0 writes a checkpoint after every epoch.
    pub checkpoint_dir: Option<std::path::PathBuf>,
}

pub fn parse_device(s: &str) -> Result<Device, WorkerError> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        d => match d.strip_prefix("cuda:").and_then(|i| i.parse().ok()) {
            Some(i) => Ok(Device::Cuda(i)),
            None => Err(WorkerError::Unsupported(format!("unknown device '{d}'"))),
        },
    }
    .and_then(|dev| match dev {
        Device::Cuda(i) if !tch::Cuda::is_available() || i >= tch::Cuda::device_count() as usize => Err(
            WorkerError::Unsupported(format!("device cuda:{i} is not available on this worker")),
        ),
        dev => Ok(dev),
    })
}

/// Trains `job` to its last epoch (or until stopped), evaluating on `eval`
/// after every epoch. Returns the final model.
pub fn train(
    job: &TrainJob,
    data: &TrainData,
    eval: Option<&TrainData>,
    collective: &dyn Collective,
    reporter: &dyn Reporter,
) -> Result<Model, WorkerError> {
    let spec = job.spec;
    let plan = job.plan;
    plan.validate().map_err(|e| WorkerError::Invalid(e.to_string()))?;
    if plan.num_samples as usize != data.len() {
        return Err(WorkerError::Invalid(format!(
            "the dataset has {} rows here but {} at the coordinator: is the file the same on every host?",
            data.len(),
            plan.num_samples
        )));
    }
    // Run 0 trains the map; with --threshold-samples runs 1 and 2 train
    // afresh with their threshold samples in an extra class (carto_common::threshold).
    let per_run = spec.epochs();
    let mut run = threshold::run_of(job.start_epoch, per_run);
    let mut setup = build_run(spec, data, job.device, collective, run)?;
    let fine_tune = setup.model.is_transformer();
    // --lr 0 maps the model as loaded: no gradients, no steps.
    let frozen = spec.lr() == 0.0;
    let total_steps = plan.steps_per_epoch() * per_run as u64;
    let warmup_steps = (FINE_TUNE_WARMUP * total_steps as f64 + 0.5).floor() as u64;
    if let Some(path) = &job.resume_from {
        // The checkpoint of the epoch before: of this run, unless this run starts now.
        if job.start_epoch % per_run != 0 {
            let epoch = checkpoint::load(path, &mut setup.model, &mut setup.opt)?;
            if epoch + 1 != job.start_epoch {
                return Err(WorkerError::Internal(format!(
                    "checkpoint {} is of epoch {epoch}, but training resumes at epoch {}",
                    path.display(),
                    job.start_epoch
                )));
            }
            info!(checkpoint = %path.display(), "resumed");
        }
    }

    let record = spec.record_dynamics();
    let eval_pass = spec.dynamics_pass() == "eval";
    let local_batch = plan.local_batch() as usize;

    for epoch in job.start_epoch..spec.epochs_total() {
        if threshold::run_of(epoch, per_run) != run {
            run = threshold::run_of(epoch, per_run);
            setup = build_run(spec, data, job.device, collective, run)?;
            info!(run, "a threshold-sample run starts afresh");
        }
        let RunSetup { model, opt, labels, labels_cpu, classes } = &mut setup;
        let classes = *classes;
        let _span = info_span!("epoch", job = job.job_id, generation = job.generation, rank = plan.rank, epoch, run)
            .entered();
        // Dropout draws from libtorch's generator: seeding it per (seed, epoch,
        // rank) makes an epoch rerun after a resume draw the same masks.
        tch::manual_seed(epoch_seed(spec.seed(), epoch, plan.rank));
        let started = Instant::now();
        let mut items = plan.rank_items(epoch);
        if spec.group_by_length() {
            if let crate::data::Inputs::Tokens(tokens) = &data.inputs {
                plan.group_by_length(&mut items, |s| tokens.row(s as usize).len());
            }
        }
        // The training pass's logits, one tensor per batch (a handle each, no
        // copy kernel per step: at 64-row batches each extra op costs ~2% of
        // the step), concatenated once at the epoch's end.
        let mut train_logits: Vec<Tensor> = Vec::new();
        let mut loss_acc = Tensor::zeros([], (Kind::Double, job.device));
        let mut correct_acc = Tensor::zeros([], (Kind::Int64, job.device));
        let mut progress = StepProgress { epoch, ..Default::default() };
        let mut last_report = Instant::now();

        for (step, batch) in items.chunks(local_batch).enumerate() {
            if reporter.aborted() {
                return Err(WorkerError::Aborted);
            }
            let samples: Vec<i64> = batch.iter().map(|i| i.sample as i64).collect();
            let mask_v: Vec<f32> = batch.iter().map(|i| if i.padding { 0.0 } else { 1.0 }).collect();
            let real = mask_v.iter().filter(|&&m| m > 0.0).count() as u64;
            let idx = Tensor::from_slice(&samples).to_device(job.device);
            let mask = Tensor::from_slice(&mask_v).to_device(job.device);
            let y = labels.index_select(0, &idx);

            let logits = if frozen {
                tch::no_grad(|| model.forward(&data.inputs, &samples, true))
            } else {
                model.forward(&data.inputs, &samples, true)
            };
            let per_sample = logits.cross_entropy_loss::<Tensor>(&y, None, Reduction::None, -100, 0.0);
            // Sum over this rank's real samples divided by the real samples of
            // the global step: summed over ranks this is the global mean, so
            // the gradient equals a single worker's on the same global batch.
            let denom = plan.global_real_in_step(step as u64).max(1) as f64;
            let loss = (&per_sample * &mask).sum(Kind::Float) / denom;

            if !frozen {
                opt.zero_grad();
                loss.backward();
                sync_gradients(model, collective)?;
                if fine_tune {
                    // After the all-reduce, so every rank clips the same global gradient.
                    opt.clip_grad_norm(FINE_TUNE_MAX_GRAD_NORM);
                    let t = (epoch - run * per_run) as u64 * plan.steps_per_epoch() + step as u64;
                    opt.set_lr(spec.lr() * linear_warmup(t, total_steps, warmup_steps));
                }
                opt.step();
                if let Some((ids, grad)) = model.sparse_grad() {
                    let (ids, grad) = if collective.world_size() > 1 {
                        tch::no_grad(|| all_reduce_rows(collective, &ids, &grad))?
                    } else {
                        (ids, grad)
                    };
                    model.sparse_step(&ids, &grad);
                }
            }

            tch::no_grad(|| {
                let detached = logits.detach();
                if record && !eval_pass {
                    train_logits.push(detached.shallow_clone());
                }
                loss_acc += (per_sample.detach() * &mask).sum(Kind::Double);
                let hit = detached.argmax(-1, false).eq_tensor(&y).to_kind(Kind::Float) * &mask;
                correct_acc += hit.sum(Kind::Int64);
            });
            progress.samples_done += real;
            if last_report.elapsed().as_millis() >= 250 {
                progress.loss_sum = loss_acc.double_value(&[]);
                progress.correct = correct_acc.int64_value(&[]) as u64;
                progress.train_seconds = started.elapsed().as_secs_f64();
                reporter.progress(progress);
                last_report = Instant::now();
            }
        }
        let train_seconds = started.elapsed().as_secs_f64();
        let loss_sum = loss_acc.double_value(&[]);
        if !loss_sum.is_finite() {
            return Err(WorkerError::Diverged(format!(
                "training diverged in epoch {epoch}: the loss is {loss_sum}; try a smaller --lr"
            )));
        }
        let correct = correct_acc.int64_value(&[]) as u64;
        let samples = items.iter().filter(|i| !i.padding).count() as u64;
        progress.samples_done = samples;
        progress.loss_sum = loss_sum;
        progress.correct = correct;
        progress.train_seconds = train_seconds;
        reporter.progress(progress);

        let mut rows_sent = 0;
        if record {
            if eval_pass {
                train_logits = tch::no_grad(|| {
                    items
                        .chunks(local_batch)
                        .map(|batch| {
                            let samples: Vec<i64> = batch.iter().map(|i| i.sample as i64).collect();
                            model.forward(&data.inputs, &samples, false)
                        })
                        .collect()
                });
            }
            let logits = if train_logits.is_empty() {
                Tensor::zeros([0, classes], (Kind::Float, job.device))
            } else {
                Tensor::cat(&train_logits, 0)
            };
            let rows = dynamics_rows(&items, &logits, labels_cpu, epoch)?;
            rows_sent = reporter.dynamics(epoch, &rows)?;
        }
        let (eval_samples, eval_loss_sum, eval_correct) = match eval {
            Some(e) => evaluate(model, e, plan.rank as usize, plan.world_size as usize, local_batch.max(256)),
            None => (0, 0.0, 0),
        };
        let report = EpochReport {
            epoch,
            samples,
            loss_sum,
            correct,
            train_seconds,
            rows_sent,
            eval_samples,
            eval_loss_sum,
            eval_correct,
        };
        info!(
            loss = loss_sum / samples.max(1) as f64,
            accuracy = correct as f64 / samples.max(1) as f64,
            seconds = train_seconds,
            "epoch trained"
        );
        if let (0, Some(dir)) = (plan.rank, &job.checkpoint_dir) {
            checkpoint::save(dir, epoch, model, opt)?;
        }
        if spec.save_model() && plan.rank == 0 && epoch + 1 == per_run {
            // The map's model, before the run's last report: the job's success
            // implies the file is there.
            if let Some(out) = spec.out.as_deref() {
                save_model(model, &std::path::Path::new(out).join("model.safetensors"))?;
            }
        }
        if reporter.epoch_done(report)? {
            debug!("coordinator asked to stop");
            break;
        }
    }
    Ok(setup.model)
}

/// One training run's model, optimizer and labels.
struct RunSetup {
    model: Model,
    opt: Adam,
    labels: Tensor,
    labels_cpu: Vec<i64>,
    classes: i64,
}

/// A fresh model for `run` (seeded by the job's seed and the run, so every
/// rank builds it alike, then rank 0's parameters broadcast), its optimizer,
/// and the run's labels: run 0 the dataset's; runs 1 and 2 with their
/// threshold samples in class K, and one more output.
fn build_run(
    spec: &carto_common::spec::JobSpec,
    data: &TrainData,
    device: Device,
    collective: &dyn Collective,
    run: u32,
) -> Result<RunSetup, WorkerError> {
    let extra = usize::from(run > 0);
    tch::manual_seed(spec.seed().wrapping_add(run as u64) as i64);
    let mut model = Model::new(
        &ModelConfig {
            kind: spec.model(),
            input_dim: data.input_dim,
            num_classes: data.num_classes + extra,
            hidden: spec.hidden() as usize,
            embed_dim: spec.embed_dim() as usize,
            hash_buckets: 1 << spec.hash_bits(),
            pretrained: data.pretrained(),
            train_layers: spec.train_layers(),
        },
        device,
    )?;
    // Every rank starts from rank 0's parameters.
    tch::no_grad(|| -> Result<(), WorkerError> {
        for (_, mut p) in model.dense_params() {
            collective.broadcast(&mut p, 0)?;
        }
        for (_, p) in model.extra_params() {
            collective.broadcast(p, 0)?;
        }
        Ok(())
    })?;
    let adam = AdamConfig::new(spec.lr());
    let (names, params): (Vec<String>, Vec<Tensor>) = model.dense_params().into_iter().unzip();
    let opt = if model.is_transformer() {
        let decay = names.iter().map(|n| if no_decay(n) { 0.0 } else { FINE_TUNE_WEIGHT_DECAY }).collect();
        Adam::with_decay(adam, params, decay)
    } else {
        Adam::new(adam, params)
    };
    model.init_sparse_optimizer(adam);
    let (labels, labels_cpu) = if run == 0 {
        (data.labels.shallow_clone(), data.labels_cpu.clone())
    } else {
        let l = threshold::run_labels(&data.labels_cpu, data.num_classes, spec.seed(), run);
        (Tensor::from_slice(&l).to_device(device), l)
    };
    Ok(RunSetup { model, opt, labels, labels_cpu, classes: (data.num_classes + extra) as i64 })
}

fn epoch_seed(seed: u64, epoch: u32, rank: u32) -> i64 {
    let x = seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (rank as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    (x >> 1) as i64
}

/// Loss sum and correct count of the current model on this rank's share of a
/// held-out set (rows rank, rank + world, …), in no-grad batches.
fn evaluate(model: &mut Model, data: &TrainData, rank: usize, world: usize, batch: usize) -> (u64, f64, u64) {
    let rows: Vec<i64> = (rank..data.len()).step_by(world).map(|r| r as i64).collect();
    tch::no_grad(|| {
        let mut loss = 0f64;
        let mut correct = 0u64;
        for chunk in rows.chunks(batch) {
            let logits = model.forward(&data.inputs, chunk, false);
            let idx = Tensor::from_slice(chunk).to_device(data.labels.device());
            let y = data.labels.index_select(0, &idx);
            loss += logits.cross_entropy_loss::<Tensor>(&y, None, Reduction::Sum, -100, 0.0).double_value(&[]);
            correct += logits.argmax(-1, false).eq_tensor(&y).sum(Kind::Int64).int64_value(&[]) as u64;
        }
        (rows.len() as u64, loss, correct)
    })
}

/// Gradients per all-reduce: big enough to amortise a collective's latency,
/// small enough to bound the extra memory (torch DDP's default bucket size).
const BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// Sums gradients over ranks (the loss is already divided by the global
/// count): dense gradients are flattened into buckets of up to
/// [`BUCKET_BYTES`] in parameter-name order, the same on every rank.
fn sync_gradients(model: &mut Model, collective: &dyn Collective) -> Result<(), WorkerError> {
    if collective.world_size() == 1 {
        return Ok(());
    }
    let grads: Vec<Tensor> = model.dense_params().iter().map(|(_, p)| p.grad()).filter(|g| g.defined()).collect();
    let mut start = 0;
    while start < grads.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < grads.len() && (end == start || bytes + grads[end].numel() * 4 <= BUCKET_BYTES) {
            bytes += grads[end].numel() * 4;
            end += 1;
        }
        let bucket_grads = &grads[start..end];
        let flat: Vec<Tensor> = bucket_grads.iter().map(|g| g.view([-1])).collect();
        let mut bucket = Tensor::cat(&flat, 0);
        collective.all_reduce_sum(&mut bucket)?;
        let mut offset = 0i64;
        for g in bucket_grads {
            let n = g.numel() as i64;
            tch::no_grad(|| {
                let _ = g.view([-1]).copy_(&bucket.narrow(0, offset, n));
            });
            offset += n;
        }
        start = end;
    }
    Ok(())
}

/// Writes every parameter (dense ones by VarStore name, plus bow's table) to a
/// safetensors file.
pub fn save_model(model: &mut Model, path: &std::path::Path) -> Result<(), WorkerError> {
    let mut named: Vec<(String, Tensor)> = model.all_params();
    for (name, t) in model.extra_params() {
        named.push((name, t.shallow_clone()));
    }
    let tmp = path.with_extension("safetensors.inprogress");
    Tensor::write_safetensors(&named, &tmp)
        .map_err(|e| WorkerError::Internal(format!("{}: {e}", path.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| WorkerError::Internal(format!("{}: {e}", path.display())))
}

/// Turns the epoch's logits (`[items, classes]`, in item order) into the
/// contract's dynamics rows, one per real (non-padding) item.
fn dynamics_rows(
    items: &[ShardItem],
    logits: &Tensor,
    labels: &[i64],
    epoch: u32,
) -> Result<DynamicsColumns, WorkerError> {
    let classes = logits.size()[1] as usize;
    let cpu = logits.to_device(Device::Cpu).contiguous();
    let mut flat = vec![0f32; cpu.numel()];
    cpu.copy_data(&mut flat, cpu.numel());
    // Rows go out in sample order: the coordinator stages them sequentially
    // and the partition files' sample_id column compresses to almost nothing.
    let mut order: Vec<usize> = (0..items.len()).filter(|&k| !items[k].padding).collect();
    order.sort_unstable_by_key(|&k| items[k].sample);
    let mut rows = DynamicsColumns::with_capacity(order.len());
    for k in order {
        let item = &items[k];
        let z = &flat[k * classes..(k + 1) * classes];
        if z.iter().any(|v| !v.is_finite()) {
            return Err(WorkerError::Diverged(format!(
                "epoch {epoch}: sample {} has non-finite logits; try a smaller --lr",
                item.sample
            )));
        }
        let label = labels[item.sample as usize];
        rows.push(item.sample as i64, label, &RowStats::from_logits(z, label as usize));
    }
    Ok(rows)
}
