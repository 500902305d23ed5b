//! Where batches are merged: one job's dynamics, epoch by epoch.
//!
//! Each epoch has a stage: one slot per sample (gold_prob, correct, margin,
//! el2n, seen). Ranks stream their rows in any order; every chunk is validated
//! against the job (shard ownership, labels, duplicates, finite values) before
//! anything is staged, and a rank whose report fails has all its staged rows
//! cleared. When every rank has reported and said the epoch is done, and every
//! sample has exactly one row, the stage is folded into the per-sample
//! accumulators (memory O(samples), never samples × epochs) and the epoch's
//! partition files are renamed into place. An epoch that never completes
//! leaves the accumulators untouched: nothing counted twice, nothing lost.
//!
//! Partition files gather in `dynamics/.epoch=K.pending/` and the commit
//! renames that directory to `dynamics/epoch=K` at once: after a crash, every
//! `epoch=K` directory is whole, which is what a restarted coordinator
//! rebuilds its accumulators from.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::buffer::BooleanBuffer;
use carto_common::dynamics::{self, DynamicsView};
use carto_common::memory::{prefetch, PREFETCH_AHEAD};
use carto_common::metrics::SampleAccumulators;
use carto_common::proto::v1 as pb;
use carto_common::sampler::ShardPlan;
use carto_common::{CartoError, Result};
use parquet::arrow::ArrowWriter;

use crate::outputs::{self, SampleInfo};

/// A staged sample's flags.
const SEEN: u8 = 1;
const CORRECT: u8 = 2;

/// One epoch's staged rows: 23 bytes per sample, plus a bit of scratch.
struct EpochStage {
    epoch: u32,
    /// The rank that reports each sample this epoch.
    owner: Vec<u16>,
    gold_prob: Vec<f64>,
    margin: Vec<f64>,
    /// Folded into an f32 sum anyway (see SampleAccumulators).
    el2n: Vec<f32>,
    flags: Vec<u8>,
    /// One bit per sample: rows of the batch being validated (duplicates
    /// within a batch), cleared after each batch.
    marks: Vec<u64>,
    staged: u64,
    /// Rows received per rank, and whether that rank's report stream finished.
    rows: Vec<u64>,
    reported: Vec<bool>,
    done: Vec<Option<pb::EpochDoneRequest>>,
    started: Instant,
}

/// A zeroed per-sample array in huge pages where offered (random access
/// from many ranks' rows; see `carto_common::memory`).
fn table<T: Clone + Default>(n: usize) -> Vec<T> {
    let mut v = Vec::new();
    carto_common::memory::reserve_huge(&mut v, n);
    v.resize(n, T::default());
    v
}

impl EpochStage {
    /// The stage of `epoch`, reusing `spare`'s arrays (the previous epoch's
    /// stage) when it has them: no fresh pages to fault in and zero while
    /// rows arrive, and only the flags need clearing (values are read only
    /// where a flag says SEEN; `marks` is left clean by every batch).
    fn new(epoch: u32, plan: &StagePlan, spare: Option<EpochStage>) -> Self {
        let n = plan.num_samples as usize;
        let w = plan.world_size as usize;
        let (gold_prob, margin, el2n, flags, marks) = match spare {
            Some(mut s) if s.flags.len() == n => {
                s.flags.fill(0);
                (s.gold_prob, s.margin, s.el2n, s.flags, s.marks)
            }
            _ => (table(n), table(n), table(n), table(n), vec![0; n.div_ceil(64)]),
        };
        EpochStage {
            epoch,
            owner: ShardPlan::owners(plan.num_samples, plan.seed, plan.world_size, epoch),
            gold_prob,
            margin,
            el2n,
            flags,
            marks,
            staged: 0,
            rows: vec![0; w],
            reported: vec![false; w],
            done: vec![None; w],
            started: Instant::now(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct StagePlan {
    num_samples: u64,
    seed: u64,
    world_size: u32,
}

/// A rank's report of one epoch being written: its partition file, streamed
/// under a hidden name until the epoch commits.
pub struct PartWriter {
    rank: u32,
    epoch: u32,
    tmp: PathBuf,
    path: PathBuf,
    writer: Option<ArrowWriter<File>>,
}

impl PartWriter {
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let w = self.writer.as_mut().expect("writer open until finish");
        w.write(batch).map_err(|e| CartoError::internal(format!("{}: {e}", self.tmp.display())))
    }

    /// Closes the part (last row group, footer), fsyncs it and gives it its
    /// final name in the pending partition. Callers run it before taking the
    /// aggregator's lock: it is the slow half of finishing a report.
    pub fn finish(&mut self) -> Result<()> {
        if let Some(w) = self.writer.take() {
            let f = w.into_inner().map_err(|e| CartoError::internal(format!("{}: {e}", self.tmp.display())))?;
            f.sync_all().map_err(|e| CartoError::io(&self.tmp, e))?;
            std::fs::rename(&self.tmp, &self.path).map_err(|e| CartoError::io(&self.path, e))?;
        }
        Ok(())
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        // An unfinished report leaves nothing behind.
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The result of committing an epoch.
#[derive(Debug, Clone)]
pub struct Committed {
    pub summary: pb::EpochSummary,
    /// The job's last epoch was committed.
    pub last: bool,
}

/// What a batch of one rank's report is checked against.
pub struct BatchRules<'a> {
    pub rank: u32,
    pub epoch: u32,
    /// The rank that owns each sample this epoch.
    pub owner: &'a [u16],
    /// Each sample's class index in the dataset.
    pub labels: &'a [i64],
    /// Per sample: staged already this epoch (bit `SEEN`).
    pub flags: &'a [u8],
    pub num_classes: i64,
}

/// Checks every row of a batch against the job (nothing is staged): schema,
/// sample ids in range and in this rank's shard, no duplicates, labels as in
/// the dataset, gold_prob in [0, 1], finite margin/el2n/loss, pred a class,
/// `correct` = (pred == label). Errors name the row and the sample.
/// `marks` is a zeroed scratch bitset of one bit per sample, zeroed again on
/// return (duplicates within the batch, without hashing).
pub fn validate_batch<'b>(batch: &'b RecordBatch, r: &BatchRules, marks: &mut [u64], what: &str) -> Result<DynamicsView<'b>> {
    let v = DynamicsView::new(batch, what)?;
    // Workers send rows sorted by sample id: strictly increasing ids cannot
    // repeat within the batch, and the bitset (a read-modify-write chain on
    // one word per 64 rows, perf: a third of validation) is skipped.
    let sorted = v.sample_id.windows(2).fold(true, |ok, w| ok & (w[0] < w[1]));
    let result = check_rows(&v, r, marks, sorted, what);
    if !sorted || result.is_err() {
        unmark(&v, r, marks);
    }
    result.map(|_| v)
}

/// The checks of [`first_bad_row`] as branch-light passes: value checks
/// column by column (the compiler vectorises them), then one pass over the
/// sample ids for what needs the job's tables. Unless `sorted` (strictly
/// increasing ids), marks each row's sample in `marks`. A batch that fails
/// is then walked row by row for the message.
fn rows_ok(v: &DynamicsView, r: &BatchRules, marks: &mut [u64], sorted: bool) -> bool {
    let classes = r.num_classes;
    let mut ok = v.gold_prob.iter().fold(true, |ok, &p| ok & (p >= 0.0) & (p <= 1.0));
    ok &= v.margin.iter().chain(v.el2n).chain(v.loss).fold(true, |ok, x| ok & x.is_finite());
    ok &= v.pred.iter().fold(true, |ok, &p| ok & (p >= 0) & (p < classes));
    let agree = BooleanBuffer::collect_bool(v.len(), |i| v.pred[i] == v.label[i]);
    ok &= (&agree ^ v.correct.values()).count_set_bits() == 0;
    if !ok {
        return false;
    }
    let n = r.flags.len();
    for (i, &s) in v.sample_id.iter().enumerate() {
        // One rank's ids skip through the tables (world > 1): prefetch.
        if let Some(&ahead) = v.sample_id.get(i + PREFETCH_AHEAD) {
            let a = ahead as usize;
            prefetch(r.owner, a);
            prefetch(r.labels, a);
            prefetch(r.flags, a);
        }
        let su = s as usize; // negative ids wrap to huge and fail the range check
        if su >= n || r.owner[su] as u32 != r.rank || r.flags[su] & SEEN != 0 || v.label[i] != r.labels[su] {
            return false;
        }
        if sorted {
            continue;
        }
        let (word, bit) = (su / 64, 1u64 << (su % 64));
        if marks[word] & bit != 0 {
            return false;
        }
        marks[word] |= bit;
    }
    true
}

fn check_rows(v: &DynamicsView, r: &BatchRules, marks: &mut [u64], sorted: bool, what: &str) -> Result<()> {
    if rows_ok(v, r, marks, sorted) {
        return Ok(());
    }
    unmark(v, r, marks);
    first_bad_row(v, r, marks, what)?;
    Err(CartoError::internal(format!("{what}: batch failed its checks but no row did")))
}

/// Clears the batch's samples from `marks`.
fn unmark(v: &DynamicsView, r: &BatchRules, marks: &mut [u64]) {
    for &s in v.sample_id {
        if s >= 0 && (s as usize) < r.flags.len() {
            marks[s as usize / 64] &= !(1u64 << (s as usize % 64));
        }
    }
}

/// Finds the first row that breaks a rule and says which rule.
fn first_bad_row(v: &DynamicsView, r: &BatchRules, marks: &mut [u64], what: &str) -> Result<()> {
    let n = r.flags.len() as i64;
    let (rank, epoch, classes) = (r.rank, r.epoch, r.num_classes);
    let bad = |i: usize, msg: String| {
        CartoError::invalid(format!("{what}: row {i} (sample_id {}): {msg}", v.sample_id[i]))
    };
    for i in 0..v.len() {
        let s = v.sample_id[i];
        if s < 0 || s >= n {
            return Err(bad(i, format!("sample_id is outside the dataset's {n} rows")));
        }
        let su = s as usize;
        if r.owner[su] as u32 != rank {
            return Err(bad(i, format!("not in rank {rank}'s shard for epoch {epoch}")));
        }
        let (word, bit) = (su / 64, 1u64 << (su % 64));
        if r.flags[su] & SEEN != 0 || marks[word] & bit != 0 {
            return Err(bad(i, format!("duplicate row for epoch {epoch}")));
        }
        marks[word] |= bit;
        let label = v.label[i];
        if label != r.labels[su] {
            return Err(bad(i, format!("label {label} but the dataset says {}", r.labels[su])));
        }
        let p = v.gold_prob[i];
        if !(0.0..=1.0).contains(&p) {
            return Err(bad(i, format!("gold_prob {p} is not a probability in [0, 1]")));
        }
        let (m, e, l) = (v.margin[i], v.el2n[i], v.loss[i]);
        if !(m.is_finite() && e.is_finite() && l.is_finite()) {
            let (name, x) = if !m.is_finite() { ("margin", m) } else if !e.is_finite() { ("el2n", e) } else { ("loss", l) };
            return Err(bad(i, format!("{name} is {x}")));
        }
        let pred = v.pred[i];
        if pred < 0 || pred >= classes {
            return Err(bad(i, format!("pred {pred} is not a class index below {classes}")));
        }
        if v.correct.value(i) != (pred == label) {
            return Err(bad(i, "correct disagrees with pred == label".into()));
        }
    }
    Ok(())
}

/// The batch under the canonical dynamics schema (same columns, same order,
/// same types, no nulls), so it can be written to the partition as is.
pub fn conform(batch: &RecordBatch, what: &str) -> Result<RecordBatch> {
    let want = dynamics::schema();
    let got = batch.schema();
    let same = got.fields().len() == want.fields().len()
        && got.fields().iter().zip(want.fields()).all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
    if !same {
        let cols: Vec<String> = got.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect();
        let expected: Vec<String> = want.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect();
        return Err(CartoError::invalid(format!(
            "{what}: columns ({}) are not the dynamics schema ({})",
            cols.join(", "),
            expected.join(", ")
        )));
    }
    RecordBatch::try_new(want, batch.columns().to_vec()).map_err(|e| CartoError::invalid(format!("{what}: {e}")))
}

/// Decodes and checks one wire chunk: the path every byte a worker sends
/// goes through (and the fuzz target's entry point).
pub fn check_chunk(bytes: &[u8], rules: &BatchRules, marks: &mut [u64], what: &str) -> Result<Vec<RecordBatch>> {
    let batches = carto_common::ipc::decode_chunk(bytes, what)?;
    let mut out = Vec::with_capacity(batches.len());
    for b in &batches {
        let b = conform(b, what)?;
        validate_batch(&b, rules, marks, what)?;
        out.push(b);
    }
    Ok(out)
}

/// A fixed job for fuzzing and for replaying the fuzz corpus: 64 samples,
/// 3 classes, two ranks, epoch 0, seed 7; rank 0 reports.
pub struct FuzzJob {
    owner: Vec<u16>,
    labels: Vec<i64>,
    flags: Vec<u8>,
}

pub fn fuzz_rules() -> FuzzJob {
    FuzzJob {
        owner: ShardPlan::owners(64, 7, 2, 0),
        labels: (0..64).map(|i| i % 3).collect(),
        flags: vec![0; 64],
    }
}

impl FuzzJob {
    pub fn as_rules(&self) -> BatchRules<'_> {
        BatchRules { rank: 0, epoch: 0, owner: &self.owner, labels: &self.labels, flags: &self.flags, num_classes: 3 }
    }

    /// A zeroed scratch bitset for [`check_chunk`].
    pub fn marks(&self) -> Vec<u64> {
        vec![0; self.flags.len().div_ceil(64)]
    }
}

pub struct Aggregator {
    out: PathBuf,
    info: Arc<SampleInfo>,
    num_classes: i64,
    plan: StagePlan,
    epochs_total: u32,
    record: bool,
    acc: SampleAccumulators,
    stage: Option<EpochStage>,
    /// The last folded or discarded stage, whose arrays the next one reuses.
    spare: Option<EpochStage>,
    /// Epochs folded into `acc`: the next epoch to train.
    committed: u32,
}

impl Aggregator {
    pub fn new(
        out: &Path,
        info: Arc<SampleInfo>,
        num_classes: usize,
        seed: u64,
        world_size: u32,
        epochs_total: u32,
        record: bool,
    ) -> Self {
        let n = info.len();
        let plan = StagePlan { num_samples: n as u64, seed, world_size };
        Aggregator {
            out: out.to_path_buf(),
            info,
            num_classes: num_classes as i64,
            plan,
            epochs_total,
            record,
            acc: SampleAccumulators::new(n),
            stage: None,
            spare: None,
            committed: 0,
        }
    }

    /// The number of committed epochs, which is the epoch to train next.
    pub fn committed(&self) -> u32 {
        self.committed
    }

    pub fn accumulators(&self) -> &SampleAccumulators {
        &self.acc
    }

    /// Opens the stage of `epoch` (the next uncommitted one).
    pub fn begin_epoch(&mut self, epoch: u32, _generation: u64) {
        self.stage = Some(EpochStage::new(epoch, &self.plan, self.spare.take()));
    }

    pub fn current_epoch(&self) -> Option<u32> {
        self.stage.as_ref().map(|s| s.epoch)
    }

    fn stage_for(&mut self, epoch: u32, rank: u32) -> Result<&mut EpochStage> {
        if rank >= self.plan.world_size {
            return Err(CartoError::invalid(format!(
                "rank {rank} is outside the job's world of {}",
                self.plan.world_size
            )));
        }
        match self.stage.as_mut() {
            Some(s) if s.epoch == epoch => Ok(s),
            Some(s) => Err(CartoError::FailedPrecondition(format!(
                "epoch {epoch} is not the epoch being recorded ({})",
                s.epoch
            ))),
            None => Err(CartoError::FailedPrecondition("no epoch is being recorded".into())),
        }
    }

    /// Starts rank `rank`'s report of `epoch`.
    pub fn begin_report(&mut self, epoch: u32, rank: u32, _generation: u64) -> Result<PartWriter> {
        if !self.record {
            return Err(CartoError::FailedPrecondition("this job records no dynamics".into()));
        }
        let stage = self.stage_for(epoch, rank)?;
        if stage.reported[rank as usize] || stage.rows[rank as usize] > 0 {
            return Err(CartoError::FailedPrecondition(format!(
                "rank {rank} already reported epoch {epoch}"
            )));
        }
        let dir = outputs::pending_dir(&self.out, epoch);
        std::fs::create_dir_all(&dir).map_err(|e| CartoError::io(&dir, e))?;
        let path = dir.join(format!("part-{rank}.parquet"));
        let tmp = outputs::in_progress_path(&path);
        let file = File::create(&tmp).map_err(|e| CartoError::io(&tmp, e))?;
        let writer = ArrowWriter::try_new(
            file,
            dynamics::schema(),
            Some(outputs::part_writer_props(self.info.label_names.as_deref())),
        )
        .map_err(|e| CartoError::internal(format!("{}: {e}", tmp.display())))?;
        Ok(PartWriter { rank, epoch, tmp, path, writer: Some(writer) })
    }

    /// Validates one decoded batch of rank `w.rank` and stages it. On error
    /// nothing of this batch is staged (the caller then calls [`Self::abort_report`]).
    pub fn ingest(&mut self, w: &PartWriter, batch: &RecordBatch, what: &str) -> Result<usize> {
        self.stage_batch(w.epoch, w.rank, batch, what)
    }

    /// Validates one batch of rank `rank` for `epoch` and stages it (the
    /// in-memory half of [`Self::ingest`]; benchmarks drive it directly).
    pub fn stage_batch(&mut self, epoch: u32, rank: u32, batch: &RecordBatch, what: &str) -> Result<usize> {
        let classes = self.num_classes;
        let info = self.info.clone();
        let stage = self.stage_for(epoch, rank)?;
        let rules = BatchRules {
            rank,
            epoch,
            owner: &stage.owner,
            labels: &info.labels,
            flags: &stage.flags,
            num_classes: classes,
        };
        let v = validate_batch(batch, &rules, &mut stage.marks, what)?;
        let correct = v.correct.values();
        for (i, &s) in v.sample_id.iter().enumerate() {
            if let Some(&ahead) = v.sample_id.get(i + PREFETCH_AHEAD) {
                let a = ahead as usize;
                prefetch(&stage.gold_prob, a);
                prefetch(&stage.margin, a);
                prefetch(&stage.el2n, a);
            }
            let s = s as usize;
            stage.gold_prob[s] = v.gold_prob[i];
            stage.margin[s] = v.margin[i];
            stage.el2n[s] = v.el2n[i] as f32;
            stage.flags[s] = SEEN | if correct.value(i) { CORRECT } else { 0 };
        }
        stage.staged += v.len() as u64;
        stage.rows[rank as usize] += v.len() as u64;
        Ok(v.len())
    }

    /// Completes rank `w.rank`'s report: its partition is flushed (still hidden).
    pub fn finish_report(&mut self, mut w: PartWriter) -> Result<u64> {
        w.finish()?;
        let stage = self.stage_for(w.epoch, w.rank)?;
        stage.reported[w.rank as usize] = true;
        Ok(stage.rows[w.rank as usize])
    }

    /// Drops everything rank `rank` staged for `epoch`: the stage is as if it never reported.
    pub fn abort_report(&mut self, w: PartWriter) {
        let (epoch, rank) = (w.epoch, w.rank);
        drop(w);
        if let Ok(stage) = self.stage_for(epoch, rank) {
            for s in 0..stage.flags.len() {
                if stage.owner[s] as u32 == rank && stage.flags[s] & SEEN != 0 {
                    stage.flags[s] = 0;
                    stage.staged -= 1;
                }
            }
            stage.rows[rank as usize] = 0;
            stage.reported[rank as usize] = false;
        }
        let path = outputs::pending_dir(&self.out, epoch).join(format!("part-{rank}.parquet"));
        let _ = std::fs::remove_file(outputs::in_progress_path(&path));
        let _ = std::fs::remove_file(&path);
    }

    /// Records that a rank finished `epoch`; commits the epoch when all have.
    pub fn epoch_done(&mut self, req: &pb::EpochDoneRequest) -> Result<Option<Committed>> {
        let record = self.record;
        let stage = self.stage_for(req.epoch, req.rank)?;
        let r = req.rank as usize;
        if stage.done[r].is_some() {
            return Err(CartoError::FailedPrecondition(format!(
                "rank {} already finished epoch {}",
                req.rank, req.epoch
            )));
        }
        if record && (!stage.reported[r] || stage.rows[r] != req.rows_sent) {
            return Err(CartoError::FailedPrecondition(format!(
                "rank {} finished epoch {} having sent {} dynamics rows, but {} arrived",
                req.rank, req.epoch, req.rows_sent, stage.rows[r]
            )));
        }
        stage.done[r] = Some(req.clone());
        if stage.done.iter().any(|d| d.is_none()) {
            return Ok(None);
        }
        self.commit().map(Some)
    }

    fn commit(&mut self) -> Result<Committed> {
        let stage = self.stage.take().expect("commit with a stage");
        let epoch = stage.epoch;
        if self.record {
            if let Err(e) = Self::fold(&mut self.acc, &stage) {
                self.stage = Some(stage);
                return Err(e);
            }
            let pending = outputs::pending_dir(&self.out, epoch);
            let done = outputs::dynamics_part(&self.out, epoch, 0);
            let done = done.parent().expect("epoch dir");
            std::fs::rename(&pending, done).map_err(|e| CartoError::io(done, e))?;
        }
        let done: Vec<&pb::EpochDoneRequest> = stage.done.iter().flatten().collect();
        let samples: u64 = done.iter().map(|d| d.samples).sum();
        let loss: f64 = done.iter().map(|d| d.loss_sum).sum();
        let correct: u64 = done.iter().map(|d| d.correct).sum();
        let train_seconds = done.iter().map(|d| d.train_seconds).fold(0.0, f64::max);
        let eval_samples: u64 = done.iter().map(|d| d.eval_samples).sum();
        let eval_loss: f64 = done.iter().map(|d| d.eval_loss_sum).sum();
        let eval_correct: u64 = done.iter().map(|d| d.eval_correct).sum();
        let summary = pb::EpochSummary {
            epoch,
            samples,
            loss: loss / samples.max(1) as f64,
            accuracy: correct as f64 / samples.max(1) as f64,
            samples_per_sec: if train_seconds > 0.0 { samples as f64 / train_seconds } else { 0.0 },
            train_seconds,
            wall_seconds: stage.started.elapsed().as_secs_f64(),
            eval_loss: (eval_samples > 0).then(|| eval_loss / eval_samples as f64),
            eval_accuracy: (eval_samples > 0).then(|| eval_correct as f64 / eval_samples as f64),
        };
        self.committed = epoch + 1;
        self.spare = Some(stage);
        let last = epoch + 1 >= self.epochs_total;
        if !last {
            self.begin_epoch(epoch + 1, 0);
        }
        Ok(Committed { summary, last })
    }

    /// Folds a complete stage into the accumulators (every sample once).
    fn fold(acc: &mut SampleAccumulators, stage: &EpochStage) -> Result<()> {
        let n = stage.flags.len();
        if stage.staged != n as u64 {
            let missing = stage.flags.iter().position(|f| f & SEEN == 0).unwrap_or(0);
            return Err(CartoError::internal(format!(
                "epoch {}: {} of {n} samples reported (first missing: sample_id {missing})",
                stage.epoch, stage.staged
            )));
        }
        for s in 0..n {
            let correct = stage.flags[s] & CORRECT != 0;
            acc.observe(s, stage.epoch, stage.gold_prob[s], correct, stage.margin[s], stage.el2n[s] as f64)?;
        }
        Ok(())
    }

    /// Folds the current (complete) stage into the accumulators, without
    /// files, reports or the next epoch's stage: the in-memory half of a
    /// commit, for benchmarks.
    pub fn fold_stage(&mut self) -> Result<()> {
        let stage = self.stage.take().ok_or_else(|| CartoError::internal("no stage to fold"))?;
        Self::fold(&mut self.acc, &stage)?;
        self.committed = stage.epoch + 1;
        self.spare = Some(stage);
        Ok(())
    }

    /// Drops the stage of an epoch that will not complete (job failed or
    /// cancelled), removing its hidden partition files.
    pub fn discard_stage(&mut self, _generation: u64) {
        if let Some(stage) = self.stage.take() {
            let _ = std::fs::remove_dir_all(outputs::pending_dir(&self.out, stage.epoch));
            self.spare = Some(stage);
        }
    }

    /// A new world for the next generation (between stages: after
    /// [`Self::discard_stage`], before [`Self::begin_epoch`]).
    pub fn set_world(&mut self, world_size: u32) {
        debug_assert!(self.stage.is_none());
        self.plan.world_size = world_size;
    }

    /// Continues from accumulators rebuilt from committed epochs (a restarted
    /// coordinator).
    pub fn restore(&mut self, acc: SampleAccumulators, committed: u32) -> Result<()> {
        if acc.len() != self.acc.len() {
            return Err(CartoError::internal(format!(
                "{} samples in the stored dynamics, {} in the dataset",
                acc.len(),
                self.acc.len()
            )));
        }
        self.acc = acc;
        self.committed = committed;
        Ok(())
    }

    /// Writes `metrics.parquet`.
    pub fn write_metrics(&self) -> Result<PathBuf> {
        let batch = outputs::metrics_batch(&self.acc, &self.info)?;
        let path = self.out.join(outputs::METRICS_FILE);
        outputs::write_parquet_atomic(&path, &batch, self.info.label_names.as_deref())?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carto_common::dynamics::DynamicsColumns;
    use carto_common::metrics::RowStats;

    /// Rank 0's rows of the fuzz job, valid.
    fn rank0_rows(job: &FuzzJob) -> DynamicsColumns {
        rank0_rows_ordered(job, false)
    }

    fn rank0_rows_ordered(job: &FuzzJob, reversed: bool) -> DynamicsColumns {
        let mut c = DynamicsColumns::with_capacity(32);
        let mut ids: Vec<usize> = (0..64).filter(|&s| job.owner[s] == 0).collect();
        if reversed {
            ids.reverse();
        }
        for s in ids {
            let label = job.labels[s];
            let z = [s as f64 * 0.1, 0.3, -0.2];
            c.push(s as i64, label, &RowStats::from_logits(&z, label as usize));
        }
        c
    }

    fn check(job: &FuzzJob, c: &DynamicsColumns) -> std::result::Result<(), String> {
        let mut marks = job.marks();
        let batch = c.to_batch();
        let r = validate_batch(&batch, &job.as_rules(), &mut marks, "chunk 3").map(|_| ()).map_err(|e| e.to_string());
        assert!(marks.iter().all(|&w| w == 0), "scratch bitset left clean");
        r
    }

    #[test]
    fn each_rule_names_the_first_bad_row() {
        let job = fuzz_rules();
        let good = rank0_rows(&job);
        assert_eq!(check(&job, &good), Ok(()));
        // Unsorted batches take the bitset path for duplicates.
        let mut rev = rank0_rows_ordered(&job, true);
        assert_eq!(check(&job, &rev), Ok(()));
        rev.sample_id[5] = rev.sample_id[1];
        let err = check(&job, &rev).unwrap_err();
        assert!(err.contains("row 5") && err.contains("duplicate row"), "{err}");
        let other_rank = (0..64).find(|&s| job.owner[s] == 1).unwrap() as i64;
        let cases: Vec<(&str, Box<dyn Fn(&mut DynamicsColumns)>)> = vec![
            ("outside the dataset's 64 rows", Box::new(|c| c.sample_id[2] = 64)),
            ("outside the dataset's 64 rows", Box::new(|c| c.sample_id[2] = -1)),
            ("not in rank 0's shard", Box::new(move |c| c.sample_id[2] = other_rank)),
            ("duplicate row for epoch 0", Box::new(|c| c.sample_id[2] = c.sample_id[1])),
            ("but the dataset says", Box::new(|c| c.label[2] = (c.label[2] + 1) % 3)),
            ("is not a probability", Box::new(|c| c.gold_prob[2] = 1.5)),
            ("is not a probability", Box::new(|c| c.gold_prob[2] = f64::NAN)),
            ("margin is inf", Box::new(|c| c.margin[2] = f64::INFINITY)),
            ("loss is NaN", Box::new(|c| c.loss[2] = f64::NAN)),
            ("pred 3 is not a class index", Box::new(|c| c.pred[2] = 3)),
            ("correct disagrees", Box::new(|c| c.correct[2] = !c.correct[2])),
        ];
        for (want, break_row) in cases {
            let mut c = rank0_rows(&job);
            break_row(&mut c);
            // A second, later fault: the message must still name row 2.
            let last = c.len() - 1;
            c.gold_prob[last] = -0.5;
            let err = check(&job, &c).unwrap_err();
            assert!(err.starts_with("chunk 3: row 2 (sample_id") && err.contains(want), "{want}: {err}");
        }
    }
}
