//! Where batches are merged: one job's dynamics, epoch by epoch.
//!
//! Each epoch has a stage: one slot per sample (gold_prob, correct, margin,
//! el2n, seen), opened for one generation of the job. Ranks stream their
//! rows in any order; every chunk is validated against the job (shard
//! ownership, labels, duplicates, value ranges) before anything is staged,
//! and a rank whose report fails has all its staged rows cleared. When every
//! rank has reported and said the epoch is done, and every sample has
//! exactly one row, the epoch's partition files are renamed into place and
//! then the stage is folded into the per-sample accumulators (memory
//! O(samples), never samples × epochs). An epoch that never completes
//! leaves the accumulators untouched: nothing counted twice, nothing lost.
//!
//! Every operation on a stage names the generation it belongs to (a report
//! by its [`PartWriter`] or [`ReportId`], `EpochDone` by its request) and is
//! refused with `FailedPrecondition` ("stale generation …") when the stage
//! belongs to another one, touching nothing: a report stream that outlives
//! its generation cannot write into, or unstage, the next one. One report
//! per rank is open at a time.
//!
//! Partition files gather in `dynamics/.epoch=K.pending/` (each report
//! streams into its own hidden file there and takes its final name
//! `part-R.parquet` when it finishes) and the commit renames that directory
//! to `dynamics/epoch=K` at once, then fsyncs `dynamics/`: after a crash,
//! every `epoch=K` directory is whole, which is what a restarted coordinator
//! rebuilds its accumulators from. Memory is never ahead of the disk: the
//! accumulators take an epoch only once its directory has its final name.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::buffer::BooleanBuffer;
use carto_common::dynamics::{self, DynamicsView};
use carto_common::memory::{prefetch, PREFETCH_AHEAD};
use carto_common::metrics::{SampleAccumulators, MAX_EPOCHS};
use carto_common::proto::v1 as pb;
use carto_common::sampler::ShardPlan;
use carto_common::threshold;
use carto_common::{CartoError, Result};
use parquet::arrow::ArrowWriter;
use tracing::warn;

use crate::outputs::{self, SampleInfo};

/// A staged sample's flags.
const SEEN: u8 = 1;
const CORRECT: u8 = 2;

/// Largest `el2n` accepted: ‖p − onehot‖₂ ≤ √2, plus float rounding.
pub const EL2N_MAX: f64 = std::f64::consts::SQRT_2 + 1e-6;
/// Largest |margin| accepted. A margin is a difference of two logits; a
/// float32 model's logits beyond 1e30 mean an overflowing model, not a
/// measurement (and such sums lose every other epoch's margin in `aum`).
pub const MARGIN_BOUND: f64 = 1e30;
/// Largest `train_seconds` an `EpochDone` may claim (about 31 years).
pub const MAX_TRAIN_SECONDS: f64 = 1e9;

/// Where a rank's report of the stage's epoch stands (by report serial).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    None,
    Open(u64),
    Finished(u64),
}

/// One epoch's staged rows: 23 bytes per sample, plus a bit of scratch.
struct EpochStage {
    epoch: u32,
    /// The job's generation this stage was opened for.
    generation: u64,
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
    /// Per rank: samples it owns this epoch, rows received, its report.
    share: Vec<u64>,
    rows: Vec<u64>,
    report: Vec<Report>,
    done: Vec<Option<pb::EpochDoneRequest>>,
    started: Instant,
    /// External jobs: each staged row's label and loss, and per rank whether
    /// its part holds rows that lost to another (see [`Aggregator::external`]).
    label: Vec<i64>,
    loss: Vec<f64>,
    dirty: Vec<bool>,
}

/// No rank owns the sample yet (external jobs: any rank may report any sample).
const NO_OWNER: u16 = u16::MAX;

/// A zeroed per-sample array in huge pages where offered (random access
/// from many ranks' rows; see `carto_common::memory`).
fn table<T: Clone + Default>(n: usize) -> Vec<T> {
    let mut v = Vec::new();
    carto_common::memory::reserve_huge(&mut v, n);
    v.resize(n, T::default());
    v
}

impl EpochStage {
    /// The stage of `epoch` for `generation`, reusing `spare`'s arrays (the
    /// previous epoch's stage) when it has them: no fresh pages to fault in
    /// and zero while rows arrive, and only the flags need clearing (values
    /// are read only where a flag says SEEN; `marks` is left clean by every
    /// batch).
    fn new(epoch: u32, generation: u64, plan: &StagePlan, spare: Option<EpochStage>) -> Self {
        let n = plan.num_samples as usize;
        let w = plan.world_size as usize;
        let (gold_prob, margin, el2n, flags, marks) = match spare {
            Some(mut s) if s.flags.len() == n => {
                s.flags.fill(0);
                (s.gold_prob, s.margin, s.el2n, s.flags, s.marks)
            }
            _ => (table(n), table(n), table(n), table(n), vec![0; n.div_ceil(64)]),
        };
        let (owner, share, label, loss) = if plan.external {
            (vec![NO_OWNER; n], vec![n as u64; w], vec![-1; n], vec![0.0; n])
        } else {
            let owner = ShardPlan::owners(plan.num_samples, plan.seed, plan.world_size, epoch);
            let mut share = vec![0u64; w];
            for &o in &owner {
                if let Some(c) = share.get_mut(o as usize) {
                    *c += 1;
                }
            }
            (owner, share, vec![], vec![])
        };
        EpochStage {
            epoch,
            generation,
            owner,
            gold_prob,
            margin,
            el2n,
            flags,
            marks,
            staged: 0,
            share,
            rows: vec![0; w],
            report: vec![Report::None; w],
            done: vec![None; w],
            started: Instant::now(),
            label,
            loss,
            dirty: vec![false; w],
        }
    }

    /// Clears everything `rank` staged: the stage is as if it never reported.
    fn unstage(&mut self, rank: u32) {
        for s in 0..self.flags.len() {
            if self.owner[s] as u32 == rank && self.flags[s] & SEEN != 0 {
                self.flags[s] = 0;
                self.staged -= 1;
                if let Some(o) = self.owner.get_mut(s).filter(|_| !self.label.is_empty()) {
                    *o = NO_OWNER;
                }
            }
        }
        self.rows[rank as usize] = 0;
        self.report[rank as usize] = Report::None;
    }
}

#[derive(Debug, Clone, Copy)]
struct StagePlan {
    num_samples: u64,
    seed: u64,
    world_size: u32,
    /// External job: no shard plan; duplicates and missing samples allowed.
    external: bool,
}

/// The identity of one report stream: the rank, epoch and generation it
/// reports for, and a serial no other report of this aggregator shares.
/// Only [`Aggregator::begin_report`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReportId {
    pub epoch: u32,
    pub rank: u32,
    pub generation: u64,
    serial: u64,
}

/// A rank's report of one epoch being written: its partition file, streamed
/// under a hidden name of its own in the pending partition until
/// [`Aggregator::finish_report`] gives it its final name `part-R.parquet`.
/// Dropped unfinished, it removes its file.
pub struct PartWriter {
    id: ReportId,
    /// This report's own file while it is written.
    tmp: PathBuf,
    /// `part-R.parquet` in the pending partition.
    path: PathBuf,
    writer: Option<ArrowWriter<File>>,
    /// The file was renamed to `path`: nothing left to clean up.
    placed: bool,
}

impl PartWriter {
    pub fn id(&self) -> ReportId {
        self.id
    }

    pub fn epoch(&self) -> u32 {
        self.id.epoch
    }

    pub fn rank(&self) -> u32 {
        self.id.rank
    }

    pub fn generation(&self) -> u64 {
        self.id.generation
    }

    /// Appends a batch (validated by [`Aggregator::ingest`] first).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let Some(w) = self.writer.as_mut() else {
            return Err(CartoError::FailedPrecondition(format!(
                "rank {}'s report of epoch {} is already closed",
                self.id.rank, self.id.epoch
            )));
        };
        w.write(batch).map_err(|e| CartoError::internal(format!("{}: {e}", self.tmp.display())))
    }

    /// Closes the part (last row group, footer) and fsyncs it, once. Callers
    /// run it before taking the aggregator's lock: it is the slow half of
    /// finishing a report ([`Aggregator::finish_report`] runs it otherwise).
    pub fn finish(&mut self) -> Result<()> {
        if let Some(w) = self.writer.take() {
            let f = w.into_inner().map_err(|e| CartoError::internal(format!("{}: {e}", self.tmp.display())))?;
            f.sync_all().map_err(|e| CartoError::io(&self.tmp, e))?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for PartWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartWriter").field("id", &self.id).field("file", &self.tmp).finish_non_exhaustive()
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        // A report that was not finished leaves nothing behind. Its file has
        // a name of its own: this never removes another report's part.
        if !self.placed {
            drop(self.writer.take());
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The hidden file a report streams into, unique to the report.
fn report_tmp(out: &Path, id: &ReportId) -> PathBuf {
    let name = format!("part-{}.g{}.r{}.parquet", id.rank, id.generation, id.serial);
    outputs::in_progress_path(&outputs::pending_dir(out, id.epoch).join(name))
}

/// A rank's part file's name in its epoch's partition.
fn part_name(rank: u32) -> String {
    format!("part-{rank}.parquet")
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
/// the dataset, gold_prob in [0, 1], el2n in [0, √2] ([`EL2N_MAX`]), loss
/// finite and ≥ 0, |margin| ≤ [`MARGIN_BOUND`] (NaN fails every range), pred
/// a class, `correct` = (pred == label). Errors name the row and the sample.
/// `marks` is a zeroed scratch bitset of one bit per sample, zeroed again on
/// return (duplicates within the batch, without hashing).
pub fn validate_batch<'b>(batch: &'b RecordBatch, r: &BatchRules, marks: &mut [u64], what: &str) -> Result<DynamicsView<'b>> {
    let n = r.flags.len();
    if r.owner.len() != n || r.labels.len() != n || marks.len() < n.div_ceil(64) {
        return Err(CartoError::internal(format!(
            "{what}: rules for {n} samples with {} owners, {} labels and {} mark words",
            r.owner.len(),
            r.labels.len(),
            marks.len()
        )));
    }
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
    // Each comparison is false for NaN, so the ranges reject it too.
    let mut ok = v.gold_prob.iter().fold(true, |ok, &p| ok & (p >= 0.0) & (p <= 1.0));
    ok &= v.margin.iter().fold(true, |ok, &m| ok & (m.abs() <= MARGIN_BOUND));
    ok &= v.el2n.iter().fold(true, |ok, &e| ok & (e >= 0.0) & (e <= EL2N_MAX));
    ok &= v.loss.iter().fold(true, |ok, &l| ok & (l >= 0.0) & (l <= f64::MAX));
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
        if m.abs() > MARGIN_BOUND {
            return Err(bad(i, format!("margin {} is beyond ±{MARGIN_BOUND:e}, not a logit difference", num(m))));
        }
        if !(0.0..=EL2N_MAX).contains(&e) {
            return Err(bad(i, format!("el2n {} is outside [0, √2]", num(e))));
        }
        if l < 0.0 {
            return Err(bad(i, format!("loss {} is negative", num(l))));
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

/// A value for a message: plain, or in exponent form when it is huge or tiny.
fn num(x: f64) -> String {
    if x != 0.0 && !(1e-4..1e9).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
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
    /// The serial of the next report (see [`ReportId`]).
    next_report: u64,
    /// External jobs: each sample's label, from the dataset or learned from
    /// the first committed epoch that has it (-1: not known yet).
    labels: Vec<i64>,
    /// With threshold samples: the map's epochs per run, and runs 1 and 2's
    /// labels (their threshold samples in class K).
    threshold_runs: Option<(u32, [Vec<i64>; 2])>,
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
        let plan = StagePlan { num_samples: n as u64, seed, world_size, external: false };
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
            next_report: 0,
            labels: vec![],
            threshold_runs: None,
        }
    }

    /// Two more runs after the map's `epochs`, with AUM threshold samples
    /// (`carto_common::threshold`): their rows carry the runs' labels and one
    /// more class, are committed under `OUT/threshold_runs/dynamics/`, and
    /// are not folded into the map's metrics.
    pub fn with_threshold_runs(mut self, epochs: u32, seed: u64) -> Self {
        let k = self.num_classes as usize;
        let run = |r| threshold::run_labels(&self.info.labels, k, seed, r);
        self.threshold_runs = Some((epochs, [run(1), run(2)]));
        self.epochs_total = epochs * threshold::RUNS;
        self
    }

    /// The run of `epoch`: 0 is the map's.
    fn run_of(&self, epoch: u32) -> u32 {
        self.threshold_runs.as_ref().map_or(0, |(e, _)| threshold::run_of(epoch, *e))
    }

    /// Where `epoch`'s partition goes: `OUT/dynamics/`, or for a threshold
    /// run `OUT/threshold_runs/dynamics/`.
    fn out_of(&self, epoch: u32) -> PathBuf {
        match self.run_of(epoch) {
            0 => self.out.clone(),
            _ => self.out.join(crate::label_errors::THRESHOLD_RUNS_DIR),
        }
    }

    /// The aggregator of an external job (the user's own training loop):
    /// any rank may report any sample; a sample reported twice in one epoch
    /// counts once — the row of the lowest rank, and of that rank the first
    /// (a `DistributedSampler` pads by repeating samples) — and the losing
    /// rows are left out of the committed partition too; a sample missing
    /// from an epoch (`drop_last`) is allowed; labels unknown to the dataset
    /// (`-1` in `info`) are learned from the rows, and may not change after.
    /// Epochs go on until the job is finished.
    pub fn external(out: &Path, info: Arc<SampleInfo>, num_classes: usize, world_size: u32) -> Self {
        let labels = info.labels.clone();
        let mut a = Aggregator::new(out, info, num_classes, 0, world_size, MAX_EPOCHS, true);
        a.plan.external = true;
        a.labels = labels;
        a
    }

    pub fn is_external(&self) -> bool {
        self.plan.external
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes as usize
    }

    /// The number of committed epochs, which is the epoch to train next.
    pub fn committed(&self) -> u32 {
        self.committed
    }

    pub fn accumulators(&self) -> &SampleAccumulators {
        &self.acc
    }

    /// Opens the stage of `epoch` (the next uncommitted one) for the job's
    /// `generation`, replacing any open stage (as [`Self::discard_stage`]
    /// would). Leftovers of an earlier stage of `epoch` (its pending
    /// partition) are removed. Only operations of `generation` reach the
    /// new stage.
    pub fn begin_epoch(&mut self, epoch: u32, generation: u64) {
        self.discard_stage();
        if self.record {
            // Best effort: a file that survives cannot reach the commit,
            // which keeps only the parts of this stage's reports.
            let _ = std::fs::remove_dir_all(outputs::pending_dir(&self.out_of(epoch), epoch));
        }
        self.stage = Some(EpochStage::new(epoch, generation, &self.plan, self.spare.take()));
    }

    pub fn current_epoch(&self) -> Option<u32> {
        self.stage.as_ref().map(|s| s.epoch)
    }

    /// The generation the open stage belongs to.
    pub fn current_generation(&self) -> Option<u64> {
        self.stage.as_ref().map(|s| s.generation)
    }

    /// The open stage, if it is `generation`'s stage of `epoch` and `rank`
    /// is in its world. Generation first: a stale caller learns only that.
    fn stage_of(stage: &mut Option<EpochStage>, epoch: u32, generation: u64, rank: u32) -> Result<&mut EpochStage> {
        let Some(s) = stage.as_mut() else {
            return Err(CartoError::FailedPrecondition(format!(
                "no epoch is being recorded (generation {generation}, epoch {epoch})"
            )));
        };
        if s.generation != generation {
            return Err(CartoError::FailedPrecondition(format!(
                "stale generation {generation}: epoch {} is being recorded by generation {}",
                s.epoch, s.generation
            )));
        }
        if s.epoch != epoch {
            return Err(CartoError::FailedPrecondition(format!(
                "epoch {epoch} is not the epoch being recorded ({})",
                s.epoch
            )));
        }
        if rank as usize >= s.rows.len() {
            return Err(CartoError::invalid(format!("rank {rank} is outside the job's world of {}", s.rows.len())));
        }
        Ok(s)
    }

    /// The open stage, if `id` is the open (or, with `finished`, also the
    /// finished) report of its rank in it.
    fn stage_of_report<'s>(stage: &'s mut Option<EpochStage>, id: &ReportId, finished: bool) -> Result<&'s mut EpochStage> {
        let s = Self::stage_of(stage, id.epoch, id.generation, id.rank)?;
        match s.report[id.rank as usize] {
            Report::Open(serial) if serial == id.serial => Ok(s),
            Report::Finished(serial) if finished && serial == id.serial => Ok(s),
            Report::Finished(serial) if serial == id.serial => Err(CartoError::FailedPrecondition(format!(
                "rank {}'s report of epoch {} is already finished",
                id.rank, id.epoch
            ))),
            _ => Err(CartoError::FailedPrecondition(format!(
                "this report of rank {} for epoch {} was aborted or replaced",
                id.rank, id.epoch
            ))),
        }
    }

    /// Starts rank `rank`'s report of `epoch` for `generation`: one report
    /// per rank at a time, and none once the rank's report finished.
    pub fn begin_report(&mut self, epoch: u32, rank: u32, generation: u64) -> Result<PartWriter> {
        if !self.record {
            return Err(CartoError::FailedPrecondition("this job records no dynamics".into()));
        }
        let out = self.out_of(epoch);
        // A threshold run's rows name one more class: the threshold samples'.
        let names: Option<Vec<String>> = match (&self.info.label_names, self.run_of(epoch)) {
            (Some(names), r) if r > 0 => Some(names.iter().cloned().chain([threshold::FAKE_CLASS_NAME.to_string()]).collect()),
            (names, _) => names.clone(),
        };
        let stage = Self::stage_of(&mut self.stage, epoch, generation, rank)?;
        match stage.report[rank as usize] {
            Report::Open(_) => {
                return Err(CartoError::FailedPrecondition(format!("rank {rank} is already reporting epoch {epoch}")))
            }
            Report::Finished(_) => {
                return Err(CartoError::FailedPrecondition(format!("rank {rank} already reported epoch {epoch}")))
            }
            Report::None if stage.rows[rank as usize] > 0 => {
                return Err(CartoError::FailedPrecondition(format!("rank {rank} already reported epoch {epoch}")))
            }
            Report::None => {}
        }
        let id = ReportId { epoch, rank, generation, serial: self.next_report };
        let dir = outputs::pending_dir(&out, epoch);
        std::fs::create_dir_all(&dir).map_err(|e| CartoError::io(&dir, e))?;
        let tmp = report_tmp(&out, &id);
        let file = File::options().write(true).create_new(true).open(&tmp).map_err(|e| CartoError::io(&tmp, e))?;
        // From here on the writer owns the file (and removes it if dropped).
        let mut w = PartWriter { id, tmp, path: dir.join(part_name(rank)), writer: None, placed: false };
        let props = outputs::part_writer_props(names.as_deref());
        let writer = ArrowWriter::try_new(file, dynamics::schema(), Some(props))
            .map_err(|e| CartoError::internal(format!("{}: {e}", w.tmp.display())))?;
        w.writer = Some(writer);
        self.next_report += 1;
        stage.report[rank as usize] = Report::Open(id.serial);
        Ok(w)
    }

    /// Validates one decoded batch of `w`'s report and stages it. Refused
    /// (nothing staged) when `w` is not its rank's open report in the open
    /// stage (stale generation, aborted, finished). On a validation error
    /// nothing of this batch is staged (the caller then calls
    /// [`Self::abort_report`]).
    pub fn ingest(&mut self, w: &PartWriter, batch: &RecordBatch, what: &str) -> Result<usize> {
        let info = self.info.clone();
        let run = self.run_of(w.id.epoch);
        let stage = Self::stage_of_report(&mut self.stage, &w.id, false)?;
        if self.plan.external {
            return stage_external(stage, &self.labels, self.num_classes, w.id.rank, batch, what);
        }
        match (run, &self.threshold_runs) {
            (r @ (1 | 2), Some((_, labels))) => {
                Self::stage_rows(stage, &labels[r as usize - 1], self.num_classes + 1, w.id.rank, batch, what)
            }
            _ => Self::stage_rows(stage, &info.labels, self.num_classes, w.id.rank, batch, what),
        }
    }

    /// Validates one batch of rank `rank` for `generation`'s `epoch` and
    /// stages it, without a report: the in-memory half of [`Self::ingest`],
    /// for benchmarks. A job's reports go through [`Self::ingest`].
    #[doc(hidden)]
    pub fn stage_batch(&mut self, epoch: u32, generation: u64, rank: u32, batch: &RecordBatch, what: &str) -> Result<usize> {
        let info = self.info.clone();
        let stage = Self::stage_of(&mut self.stage, epoch, generation, rank)?;
        Self::stage_rows(stage, &info.labels, self.num_classes, rank, batch, what)
    }

    fn stage_rows(stage: &mut EpochStage, labels: &[i64], classes: i64, rank: u32, batch: &RecordBatch, what: &str) -> Result<usize> {
        let rules = BatchRules {
            rank,
            epoch: stage.epoch,
            owner: &stage.owner,
            labels,
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

    /// Completes `w`'s report: its file is closed and fsynced (unless
    /// [`PartWriter::finish`] did it already, outside the lock) and renamed
    /// to `part-R.parquet` in the pending partition (still hidden from
    /// readers). Returns the rows the rank staged. Refused (nothing
    /// touched; the dropped writer removes its own file) when `w` is not
    /// its rank's open report in the open stage. After another error the
    /// report stays open: abort it with the id taken before.
    pub fn finish_report(&mut self, mut w: PartWriter) -> Result<u64> {
        Self::stage_of_report(&mut self.stage, &w.id, false)?;
        w.finish()?;
        std::fs::rename(&w.tmp, &w.path).map_err(|e| CartoError::io(&w.path, e))?;
        w.placed = true;
        let stage = Self::stage_of_report(&mut self.stage, &w.id, false)?;
        let r = w.id.rank as usize;
        stage.report[r] = Report::Finished(w.id.serial);
        Ok(stage.rows[r])
    }

    /// Drops everything report `id` staged, and its file: its rank is as if
    /// it never reported, and may report again. Refused with
    /// `FailedPrecondition`, touching nothing, when `id` belongs to another
    /// generation or epoch than the open stage, is not its rank's current
    /// report (aborted already, or replaced), or its rank already sent
    /// `EpochDone`.
    pub fn abort_report(&mut self, id: ReportId) -> Result<()> {
        let out = self.out_of(id.epoch);
        let stage = Self::stage_of_report(&mut self.stage, &id, true)?;
        let r = id.rank as usize;
        if stage.done[r].is_some() {
            return Err(CartoError::FailedPrecondition(format!(
                "rank {} already finished epoch {}",
                id.rank, id.epoch
            )));
        }
        let finished = matches!(stage.report[r], Report::Finished(_));
        stage.unstage(id.rank);
        let _ = std::fs::remove_file(report_tmp(&out, &id));
        if finished {
            let _ = std::fs::remove_file(outputs::pending_dir(&out, id.epoch).join(part_name(id.rank)));
        }
        Ok(())
    }

    /// Records that a rank finished `epoch`; commits the epoch when all have.
    /// Refused with `FailedPrecondition` (stale generation, another epoch, a
    /// second `EpochDone`, a report not finished or with other row counts)
    /// or `InvalidInput` naming the field whose value cannot be (see
    /// [`check_done`]); either way nothing changes. When the commit fails
    /// (an incomplete stage is `Internal`; a rename that fails, `Io`),
    /// the stage stays as it was before this request.
    pub fn epoch_done(&mut self, req: &pb::EpochDoneRequest) -> Result<Option<Committed>> {
        let record = self.record;
        let stage = Self::stage_of(&mut self.stage, req.epoch, req.generation, req.rank)?;
        let r = req.rank as usize;
        if stage.done[r].is_some() {
            return Err(CartoError::FailedPrecondition(format!(
                "rank {} already finished epoch {}",
                req.rank, req.epoch
            )));
        }
        // An external rank with no rows this epoch may send no report at all.
        let silent = self.plan.external && req.rows_sent == 0 && stage.report[r] == Report::None;
        if record && !silent && (!matches!(stage.report[r], Report::Finished(_)) || stage.rows[r] != req.rows_sent) {
            return Err(CartoError::FailedPrecondition(format!(
                "rank {} finished epoch {} having sent {} dynamics rows, but {} arrived",
                req.rank, req.epoch, req.rows_sent, stage.rows[r]
            )));
        }
        check_done(req, stage.share[r], stage.done.iter().flatten())?;
        stage.done[r] = Some(req.clone());
        if stage.done.iter().any(|d| d.is_none()) {
            return Ok(None);
        }
        let committed = self.commit();
        if committed.is_err() {
            if let Some(stage) = self.stage.as_mut() {
                stage.done[r] = None;
            }
        }
        committed.map(Some)
    }

    /// Commits the open stage, every rank done: checks it is complete,
    /// renames the pending partition into place, then folds. A failure
    /// before the rename, or of the rename, leaves the stage and the
    /// accumulators as they were.
    fn commit(&mut self) -> Result<Committed> {
        let Some(stage) = self.stage.as_ref() else {
            return Err(CartoError::internal("commit without an open stage"));
        };
        let (epoch, generation) = (stage.epoch, stage.generation);
        if self.record {
            if !self.plan.external {
                Self::check_complete(stage, self.committed)?;
            } else if stage.epoch < self.committed || stage.epoch > MAX_EPOCHS {
                return Err(CartoError::internal(format!("epoch {} cannot be folded after {} committed epochs", stage.epoch, self.committed)));
            }
            if self.plan.external {
                drop_losing_rows(&self.out, stage, self.info.label_names.as_deref())?;
            }
            Self::publish(&self.out_of(stage.epoch), stage)?;
        }
        let Some(stage) = self.stage.take() else {
            return Err(CartoError::internal("commit without an open stage"));
        };
        // A threshold run's epochs are not the map's.
        if self.record && self.run_of(stage.epoch) == 0 {
            // Cannot fail after check_complete; should it, the job fails
            // (Internal) rather than going on with half an epoch folded.
            Self::fold(&mut self.acc, &stage)?;
        }
        let done: Vec<&pb::EpochDoneRequest> = stage.done.iter().flatten().collect();
        // Bounded by check_done: no sum overflows, every f64 sum is finite.
        let sum = |f: fn(&pb::EpochDoneRequest) -> u64| done.iter().fold(0u64, |a, d| a.saturating_add(f(d)));
        let (mut samples, mut correct) = (sum(|d| d.samples), sum(|d| d.correct));
        let mut loss: f64 = done.iter().map(|d| d.loss_sum).sum();
        if self.plan.external {
            // The epoch's numbers come from the rows themselves, each sample once.
            (samples, correct, loss) = (0, 0, 0.0);
            for s in (0..stage.flags.len()).filter(|&s| stage.flags[s] & SEEN != 0) {
                samples += 1;
                correct += u64::from(stage.flags[s] & CORRECT != 0);
                loss += stage.loss[s];
                self.labels[s] = stage.label[s];
            }
        }
        let (eval_samples, eval_correct) = (sum(|d| d.eval_samples), sum(|d| d.eval_correct));
        let eval_loss: f64 = done.iter().map(|d| d.eval_loss_sum).sum();
        let train_seconds = done.iter().map(|d| d.train_seconds).fold(0.0, f64::max);
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
            self.begin_epoch(epoch + 1, generation);
        }
        Ok(Committed { summary, last })
    }

    /// Whether `stage` can be folded: every sample staged once, and its
    /// epoch after every folded one.
    fn check_complete(stage: &EpochStage, committed: u32) -> Result<()> {
        let n = stage.flags.len();
        if stage.staged != n as u64 {
            let missing = stage.flags.iter().position(|f| f & SEEN == 0).unwrap_or(0);
            return Err(CartoError::internal(format!(
                "epoch {}: {} of {n} samples reported (first missing: sample_id {missing})",
                stage.epoch, stage.staged
            )));
        }
        if stage.epoch < committed || stage.epoch > MAX_EPOCHS {
            return Err(CartoError::internal(format!(
                "epoch {} cannot be folded after {committed} committed epochs",
                stage.epoch
            )));
        }
        Ok(())
    }

    /// Puts the stage's partition in place: the pending directory keeps
    /// exactly the ranks' finished parts (anything else, such as a stale
    /// report's file, is removed), is fsynced, renamed to `epoch=K`, and
    /// `dynamics/` fsynced. Once the rename is done the epoch is on disk:
    /// a failing fsync after it is logged, not returned, so that memory
    /// follows what readers see.
    fn publish(out: &Path, stage: &EpochStage) -> Result<()> {
        let pending = outputs::pending_dir(out, stage.epoch);
        let world = stage.rows.len() as u32;
        // Every rank's part; of an external job, those of the ranks that reported.
        let keep: Vec<String> = (0..world)
            .filter(|&r| stage.label.is_empty() || matches!(stage.report[r as usize], Report::Finished(_)))
            .map(part_name)
            .collect();
        std::fs::create_dir_all(&pending).map_err(|e| CartoError::io(&pending, e))?;
        let entries = std::fs::read_dir(&pending).map_err(|e| CartoError::io(&pending, e))?;
        for e in entries {
            let e = e.map_err(|e| CartoError::io(&pending, e))?;
            if e.file_name().to_str().is_some_and(|n| keep.iter().any(|k| k == n)) {
                continue;
            }
            let path = e.path();
            let removed = match e.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
                _ => std::fs::remove_file(&path),
            };
            match removed {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(CartoError::io(&path, err)),
                _ => {}
            }
        }
        for name in &keep {
            let part = pending.join(name);
            if !part.is_file() {
                return Err(CartoError::internal(format!(
                    "epoch {}: {} is missing although every rank reported",
                    stage.epoch,
                    part.display()
                )));
            }
        }
        outputs::sync_dir(&pending)?;
        let dir = outputs::epoch_dir(out, stage.epoch);
        std::fs::rename(&pending, &dir).map_err(|e| CartoError::io(&dir, e))?;
        for d in [out.join(outputs::DYNAMICS_DIR), dir] {
            if let Err(e) = outputs::sync_dir(&d) {
                warn!(epoch = stage.epoch, error = %e, "the committed partition may not be durable yet");
            }
        }
        Ok(())
    }

    /// Folds a stage into the accumulators (every sample once).
    fn fold(acc: &mut SampleAccumulators, stage: &EpochStage) -> Result<()> {
        for s in 0..stage.flags.len() {
            if stage.flags[s] & SEEN == 0 {
                continue; // external jobs: missing from this epoch
            }
            let correct = stage.flags[s] & CORRECT != 0;
            acc.observe(s, stage.epoch, stage.gold_prob[s], correct, stage.margin[s], stage.el2n[s] as f64)?;
        }
        Ok(())
    }

    /// Folds the current (complete) stage into the accumulators, without
    /// files, reports or the next epoch's stage: the in-memory half of a
    /// commit, for benchmarks.
    pub fn fold_stage(&mut self) -> Result<()> {
        let Some(stage) = self.stage.as_ref() else { return Err(CartoError::internal("no stage to fold")) };
        Self::check_complete(stage, self.committed)?;
        let Some(stage) = self.stage.take() else { return Err(CartoError::internal("no stage to fold")) };
        Self::fold(&mut self.acc, &stage)?;
        self.committed = stage.epoch + 1;
        self.spare = Some(stage);
        Ok(())
    }

    /// Drops the stage of an epoch that will not complete (generation
    /// ended, job failed or cancelled), removing its pending partition.
    /// Reports of its generation are refused from then on.
    pub fn discard_stage(&mut self) {
        if let Some(stage) = self.stage.take() {
            if self.record {
                let _ = std::fs::remove_dir_all(outputs::pending_dir(&self.out_of(stage.epoch), stage.epoch));
            }
            self.spare = Some(stage);
        }
    }

    /// A new world for the next generation, before its
    /// [`Self::begin_epoch`]. An open stage (of the ending generation) is
    /// discarded first: its ranks are not this world's.
    pub fn set_world(&mut self, world_size: u32) {
        self.discard_stage();
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

    /// The metrics over the epochs committed so far (what the live map
    /// draws): samples not observed yet have null metrics.
    pub fn live_metrics(&self) -> Result<RecordBatch> {
        outputs::metrics_table(&self.acc, &self.sample_info(), outputs::Recorded::ALL)
    }

    /// The samples' info with their labels: an external job's as learned
    /// from its rows (-1 where not reported yet).
    fn sample_info(&self) -> std::borrow::Cow<'_, SampleInfo> {
        if self.plan.external {
            std::borrow::Cow::Owned(SampleInfo { labels: self.labels.clone(), ..(*self.info).clone() })
        } else {
            std::borrow::Cow::Borrowed(&*self.info)
        }
    }

    /// The job's label errors (see [`crate::label_errors`]), from the
    /// accumulators and, for a window or threshold runs, the committed dynamics.
    pub fn label_errors(&self, spec: &carto_common::spec::JobSpec, summaries: &[pb::EpochSummary]) -> Result<crate::label_errors::LabelErrors> {
        let epochs = match (&self.threshold_runs, self.plan.external) {
            (_, true) => self.committed,
            (Some((e, _)), _) => *e,
            (None, false) => self.epochs_total,
        };
        let info = self.sample_info();
        let full_aum = (0..self.acc.len()).map(|s| self.acc.metrics(s).map(|m| m.aum).unwrap_or(f64::NAN)).collect();
        crate::label_errors::compute(&self.out, spec, summaries, epochs, &info.labels, info.label_names.as_deref(), self.num_classes as usize, full_aum)
    }

    /// Writes `metrics.parquet`.
    pub fn write_metrics(&self) -> Result<PathBuf> {
        self.write_metrics_with(None)
    }

    /// Writes `metrics.parquet`, with the label errors' columns
    /// (`mislabel_score`, and `is_suspect` with threshold samples) and their
    /// record in the footer (`carto.label_errors`).
    pub fn write_metrics_with(&self, errors: Option<&crate::label_errors::LabelErrors>) -> Result<PathBuf> {
        if let Some(s) = self.labels.iter().position(|&l| l < 0).filter(|_| self.plan.external) {
            return Err(CartoError::invalid(format!(
                "sample_id {s} was never reported: an external job's training loop must record every sample at least once"
            )));
        }
        let mut batch = outputs::metrics_batch(&self.acc, &self.sample_info())?;
        let mut metadata = vec![];
        if let Some(e) = errors {
            batch = crate::label_errors::with_columns(&batch, e)?;
            metadata.push(parquet::file::metadata::KeyValue::new(
                crate::label_errors::METADATA_KEY.to_string(),
                serde_json::to_string(&e.record).expect("the record serialises"),
            ));
        }
        let path = self.out.join(outputs::METRICS_FILE);
        outputs::write_parquet_atomic_with(&path, &batch, self.info.label_names.as_deref(), metadata)?;
        Ok(path)
    }
}

/// Stages one batch of an external job's rows (see [`Aggregator::external`]):
/// every row is checked first (nothing staged if one fails), then each
/// sample keeps the row of the lowest rank, and of that rank the first.
fn stage_external(stage: &mut EpochStage, learned: &[i64], classes: i64, rank: u32, batch: &RecordBatch, what: &str) -> Result<usize> {
    let v = DynamicsView::new(batch, what)?;
    let n = stage.flags.len();
    // Rows by sample id, the first occurrence first (a stable sort).
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by_key(|&i| v.sample_id[i]);
    for (j, &i) in order.iter().enumerate() {
        let s = v.sample_id[i];
        let bad = |msg: String| CartoError::invalid(format!("{what}: row {i} (sample_id {s}): {msg}"));
        if s < 0 || s >= n as i64 {
            return Err(bad(format!("sample_id is outside the job's {n} samples")));
        }
        let (su, label) = (s as usize, v.label[i]);
        if label < 0 || label >= classes {
            return Err(bad(format!("label {label} is not a class index below {classes}")));
        }
        if learned[su] >= 0 && learned[su] != label {
            return Err(bad(format!(
                "label {label}, but the dataset or an earlier epoch says {}: a sample's label may not change",
                learned[su]
            )));
        }
        let earlier = if stage.flags[su] & SEEN != 0 { Some(stage.label[su]) } else { None };
        let before = j.checked_sub(1).map(|p| order[p]).filter(|&p| v.sample_id[p] == s).map(|p| v.label[p]);
        if let Some(other) = earlier.or(before).filter(|&l| l != label) {
            return Err(bad(format!("label {label}, but another row of this epoch says {other}")));
        }
        let (p, m, e, l) = (v.gold_prob[i], v.margin[i], v.el2n[i], v.loss[i]);
        if !((0.0..=1.0).contains(&p) && m.abs() <= MARGIN_BOUND && (0.0..=EL2N_MAX).contains(&e) && l >= 0.0 && l.is_finite()) {
            return Err(bad(format!("values out of range (gold_prob {p}, margin {m}, el2n {e}, loss {l})")));
        }
        let pred = v.pred[i];
        if pred < 0 || pred >= classes || v.correct.value(i) != (pred == label) {
            return Err(bad(format!("pred {pred} and correct disagree with the label or the classes")));
        }
    }
    let correct = v.correct.values();
    let mut previous = None;
    for &i in &order {
        let s = v.sample_id[i];
        let su = s as usize;
        let repeat = previous == Some(s);
        previous = Some(s);
        if repeat || (stage.flags[su] & SEEN != 0 && stage.owner[su] as u32 <= rank) {
            stage.dirty[rank as usize] = true;
            continue;
        }
        if stage.flags[su] & SEEN != 0 {
            // A higher rank's row loses to this one.
            stage.dirty[stage.owner[su] as usize] = true;
        } else {
            stage.staged += 1;
        }
        stage.owner[su] = rank as u16;
        stage.gold_prob[su] = v.gold_prob[i];
        stage.margin[su] = v.margin[i];
        stage.el2n[su] = v.el2n[i] as f32;
        stage.flags[su] = SEEN | if correct.value(i) { CORRECT } else { 0 };
        stage.label[su] = v.label[i];
        stage.loss[su] = v.loss[i];
    }
    stage.rows[rank as usize] += v.len() as u64;
    Ok(v.len())
}

/// Rewrites the pending part of every rank whose rows lost to another's
/// (or repeated its own), keeping only the rows the stage kept: the
/// committed partition then holds each sample at most once.
fn drop_losing_rows(out: &Path, stage: &EpochStage, label_names: Option<&[String]>) -> Result<()> {
    use arrow::array::{Array, BooleanArray, Int64Array};
    let pending = outputs::pending_dir(out, stage.epoch);
    for rank in (0..stage.dirty.len()).filter(|&r| stage.dirty[r]) {
        let path = pending.join(part_name(rank as u32));
        let file = File::open(&path).map_err(|e| CartoError::io(&path, e))?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| CartoError::internal(format!("{}: {e}", path.display())))?;
        let tmp = outputs::in_progress_path(&path);
        let out_file = File::create(&tmp).map_err(|e| CartoError::io(&tmp, e))?;
        let mut w = ArrowWriter::try_new(out_file, dynamics::schema(), Some(outputs::part_writer_props(label_names)))
            .map_err(|e| CartoError::internal(format!("{}: {e}", tmp.display())))?;
        let mut kept = vec![false; stage.flags.len()];
        for b in reader {
            let b = b.map_err(|e| CartoError::internal(format!("{}: {e}", path.display())))?;
            let ids = b.column(0).as_any().downcast_ref::<Int64Array>().ok_or_else(|| CartoError::internal("sample_id column"))?;
            let keep: BooleanArray = ids
                .values()
                .iter()
                .map(|&s| {
                    let su = s as usize;
                    let mine = stage.owner[su] as usize == rank && !kept[su];
                    kept[su] |= mine;
                    Some(mine)
                })
                .collect();
            let b = arrow::compute::filter_record_batch(&b, &keep).map_err(|e| CartoError::internal(e.to_string()))?;
            if b.num_rows() > 0 {
                w.write(&b).map_err(|e| CartoError::internal(format!("{}: {e}", tmp.display())))?;
            }
        }
        let f = w.into_inner().map_err(|e| CartoError::internal(format!("{}: {e}", tmp.display())))?;
        f.sync_all().map_err(|e| CartoError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| CartoError::io(&path, e))?;
    }
    Ok(())
}

/// Checks an `EpochDone`'s numbers against what they count: `samples` at
/// most the rank's `share` of the epoch, `correct` ≤ `samples`,
/// `eval_correct` ≤ `eval_samples`, `loss_sum` and `eval_loss_sum` finite
/// and ≥ 0, `train_seconds` finite, ≥ 0 and below [`MAX_TRAIN_SECONDS`], and
/// the sums with the ranks done before (`earlier`) neither overflowing nor
/// infinite. Errors are `InvalidInput` naming the field.
pub fn check_done<'a>(
    req: &pb::EpochDoneRequest,
    share: u64,
    earlier: impl Iterator<Item = &'a pb::EpochDoneRequest>,
) -> Result<()> {
    let bad = |field: &str, msg: String| {
        CartoError::invalid(format!("EpochDone of rank {} for epoch {}: {field} {msg}", req.rank, req.epoch))
    };
    if req.samples > share {
        return Err(bad("samples", format!("{} exceeds the rank's shard of {share} samples", req.samples)));
    }
    if req.correct > req.samples {
        return Err(bad("correct", format!("{} exceeds samples {}", req.correct, req.samples)));
    }
    if req.eval_correct > req.eval_samples {
        return Err(bad("eval_correct", format!("{} exceeds eval_samples {}", req.eval_correct, req.eval_samples)));
    }
    for (field, x) in [("loss_sum", req.loss_sum), ("eval_loss_sum", req.eval_loss_sum)] {
        if !(x.is_finite() && x >= 0.0) {
            return Err(bad(field, format!("{x} is not a finite sum of losses (≥ 0)")));
        }
    }
    let t = req.train_seconds;
    if !(t.is_finite() && (0.0..MAX_TRAIN_SECONDS).contains(&t)) {
        return Err(bad("train_seconds", format!("{t} is not a duration in [0, {MAX_TRAIN_SECONDS:e}) seconds")));
    }
    let (mut loss, mut eval_loss, mut eval_samples) = (req.loss_sum, req.eval_loss_sum, Some(req.eval_samples));
    for d in earlier {
        loss += d.loss_sum;
        eval_loss += d.eval_loss_sum;
        eval_samples = eval_samples.and_then(|n| n.checked_add(d.eval_samples));
    }
    if !loss.is_finite() {
        return Err(bad("loss_sum", format!("{} overflows the epoch's total", req.loss_sum)));
    }
    if !eval_loss.is_finite() {
        return Err(bad("eval_loss_sum", format!("{} overflows the epoch's total", req.eval_loss_sum)));
    }
    if eval_samples.is_none() {
        return Err(bad("eval_samples", format!("{} overflows the epoch's total", req.eval_samples)));
    }
    Ok(())
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
        // The branch-light pass and the row-naming walk accept the same rows.
        let v = DynamicsView::new(&batch, "chunk 3").unwrap();
        let fast = rows_ok(&v, &job.as_rules(), &mut marks, false);
        unmark(&v, &job.as_rules(), &mut marks);
        let slow = first_bad_row(&v, &job.as_rules(), &mut marks, "chunk 3");
        unmark(&v, &job.as_rules(), &mut marks);
        assert_eq!(fast, slow.is_ok(), "rows_ok and first_bad_row disagree: {slow:?}");
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
            ("margin is NaN", Box::new(|c| c.margin[2] = f64::NAN)),
            ("margin 1e31 is beyond", Box::new(|c| c.margin[2] = 1e31)),
            ("margin -1e31 is beyond", Box::new(|c| c.margin[2] = -1e31)),
            ("el2n is NaN", Box::new(|c| c.el2n[2] = f64::NAN)),
            // Finite in f64, inf once staged as f32.
            ("el2n 1e39 is outside [0, √2]", Box::new(|c| c.el2n[2] = 1e39)),
            ("el2n 1.5 is outside [0, √2]", Box::new(|c| c.el2n[2] = 1.5)),
            ("el2n -0.01 is outside [0, √2]", Box::new(|c| c.el2n[2] = -0.01)),
            ("loss is NaN", Box::new(|c| c.loss[2] = f64::NAN)),
            ("loss is inf", Box::new(|c| c.loss[2] = f64::INFINITY)),
            ("loss -0.5 is negative", Box::new(|c| c.loss[2] = -0.5)),
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
        // The edges of each range are values a model produces.
        let edges: Vec<Box<dyn Fn(&mut DynamicsColumns)>> = vec![
            Box::new(|c| c.el2n[2] = std::f64::consts::SQRT_2 + 5e-7),
            Box::new(|c| c.el2n[2] = 0.0),
            Box::new(|c| c.margin[2] = MARGIN_BOUND),
            Box::new(|c| c.margin[2] = -MARGIN_BOUND),
            Box::new(|c| c.loss[2] = 0.0),
            Box::new(|c| c.loss[2] = -0.0),
            Box::new(|c| c.loss[2] = 1e300),
        ];
        for edit in edges {
            let mut c = rank0_rows(&job);
            edit(&mut c);
            assert_eq!(check(&job, &c), Ok(()));
        }
    }

    #[test]
    fn rules_that_do_not_fit_the_marks_are_an_error_not_a_panic() {
        let job = fuzz_rules();
        let batch = rank0_rows(&job).to_batch();
        let mut short = vec![0u64; 0];
        let err = validate_batch(&batch, &job.as_rules(), &mut short, "x").map(|_| ()).unwrap_err();
        assert!(matches!(err, CartoError::Internal(_)), "{err}");
    }

    // ------------------------------------------------------ the aggregator

    const N: usize = 64;

    fn aggregator(out: &Path, record: bool) -> Aggregator {
        let info = Arc::new(SampleInfo { labels: (0..N as i64).map(|i| i % 3).collect(), label_names: None, ids: None });
        Aggregator::new(out, info, 3, 7, 2, 3, record)
    }

    /// Rank `rank`'s valid rows of `epoch` (world 2, seed 7), sorted.
    fn rows(epoch: u32, rank: u32) -> RecordBatch {
        let owner = ShardPlan::owners(N as u64, 7, 2, epoch);
        let mut c = DynamicsColumns::with_capacity(N);
        for s in (0..N).filter(|&s| owner[s] as u32 == rank) {
            let label = (s % 3) as i64;
            let z = [s as f64 * 0.1 - 2.0, 0.3, -0.2 + epoch as f64];
            c.push(s as i64, label, &RowStats::from_logits(&z, label as usize));
        }
        c.to_batch()
    }

    /// Streams `batch` as `w`'s report: validated, staged, written.
    fn send(a: &mut Aggregator, w: &mut PartWriter, batch: &RecordBatch) -> Result<usize> {
        let n = a.ingest(w, batch, "test")?;
        w.write(batch)?;
        Ok(n)
    }

    /// Rank `rank`'s whole report of `epoch` in `generation`.
    fn report(a: &mut Aggregator, epoch: u32, rank: u32, generation: u64) -> u64 {
        let mut w = a.begin_report(epoch, rank, generation).unwrap();
        send(a, &mut w, &rows(epoch, rank)).unwrap();
        a.finish_report(w).unwrap()
    }

    fn done(epoch: u32, rank: u32, generation: u64, rows: u64) -> pb::EpochDoneRequest {
        pb::EpochDoneRequest {
            generation,
            rank,
            epoch,
            samples: rows,
            correct: rows / 2,
            loss_sum: 0.5 * rows as f64,
            train_seconds: 2.0,
            rows_sent: rows,
            ..Default::default()
        }
    }

    /// Everything a stage holds, to compare before and after a refusal.
    fn fingerprint(a: &Aggregator) -> (u32, u64, u64, Vec<u64>, Vec<Report>, Vec<bool>, Vec<u8>) {
        let s = a.stage.as_ref().unwrap();
        let done = s.done.iter().map(Option::is_some).collect();
        (s.epoch, s.generation, s.staged, s.rows.clone(), s.report.clone(), done, s.flags.clone())
    }

    fn precondition(r: Result<impl std::fmt::Debug>, want: &str) {
        match r {
            Err(CartoError::FailedPrecondition(m)) if m.contains(want) => {}
            other => panic!("expected FailedPrecondition with {want:?}, got {other:?}"),
        }
    }

    fn rows_in(path: &Path) -> usize {
        crate::recompute::read_metrics(path).unwrap().num_rows()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    /// Hole 1: a report stream that outlived its generation wrote into the
    /// next one (its chunks were staged there) and its failure wiped the new
    /// rank's rows and part file.
    #[test]
    fn a_stale_generation_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = aggregator(dir.path(), true);
        let pending = outputs::pending_dir(dir.path(), 0);
        a.begin_epoch(0, 1);
        let all0 = rows(0, 0);
        let mut stale = a.begin_report(0, 0, 1).unwrap();
        send(&mut a, &mut stale, &all0.slice(0, 4)).unwrap();
        // The generation ends; the job is re-formed and reruns epoch 0.
        a.discard_stage();
        a.begin_epoch(0, 2);
        assert_eq!((a.current_epoch(), a.current_generation()), (Some(0), Some(2)));
        let rows0 = report(&mut a, 0, 0, 2);
        let mut open1 = a.begin_report(0, 1, 2).unwrap();
        send(&mut a, &mut open1, &rows(0, 1).slice(0, 5)).unwrap();
        let before = fingerprint(&a);
        let files = entries(&pending);
        assert!(files.contains(&"part-0.parquet".to_string()) && files.len() == 2, "{files:?}");

        // The stale stream's next chunk, its failure, its finish.
        precondition(a.ingest(&stale, &all0.slice(4, 4), "late chunk"), "stale generation 1");
        assert_eq!(fingerprint(&a), before);
        precondition(a.abort_report(stale.id()), "stale generation 1");
        assert_eq!(fingerprint(&a), before);
        assert_eq!(entries(&pending), files);
        assert_eq!(rows_in(&pending.join("part-0.parquet")), rows0 as usize);
        precondition(a.begin_report(0, 1, 1), "stale generation 1");
        stale.finish().unwrap();
        precondition(a.finish_report(stale), "stale generation 1");
        assert_eq!(fingerprint(&a), before);
        assert_eq!(entries(&pending), files);
        assert_eq!(rows_in(&pending.join("part-0.parquet")), rows0 as usize);

        // Its EpochDone too.
        precondition(a.epoch_done(&done(0, 0, 1, 4)), "stale generation 1");
        assert_eq!(fingerprint(&a), before);
        assert!(a.epoch_done(&done(0, 0, 2, rows0)).unwrap().is_none());

        // The new generation commits exactly its own rows.
        send(&mut a, &mut open1, &rows(0, 1).slice(5, rows(0, 1).num_rows() - 5)).unwrap();
        let rows1 = a.finish_report(open1).unwrap();
        assert_eq!(rows0 + rows1, N as u64);
        let c = a.epoch_done(&done(0, 1, 2, rows1)).unwrap().expect("committed");
        assert_eq!((c.summary.samples, c.last), (N as u64, false));
        let epoch0 = outputs::epoch_dir(dir.path(), 0);
        assert_eq!(entries(&epoch0), ["part-0.parquet", "part-1.parquet"]);
        assert_eq!(rows_in(&epoch0.join("part-0.parquet")) + rows_in(&epoch0.join("part-1.parquet")), N);
        // The next stage carries the generation on.
        assert_eq!((a.current_epoch(), a.current_generation()), (Some(1), Some(2)));
        precondition(a.begin_report(1, 0, 1), "stale generation 1");
    }

    /// Hole 2: two report streams of one rank both passed begin_report (it
    /// looked only at rows that had arrived) and wrote the same part file.
    #[test]
    fn one_report_per_rank_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = aggregator(dir.path(), true);
        a.begin_epoch(0, 1);
        let first = a.begin_report(0, 0, 1).unwrap();
        precondition(a.begin_report(0, 0, 1), "rank 0 is already reporting epoch 0");
        // Rank 1 is not affected.
        let other = a.begin_report(0, 1, 1).unwrap();
        a.abort_report(first.id()).unwrap();
        let mut second = a.begin_report(0, 0, 1).unwrap();
        assert_ne!(first.tmp, second.tmp, "two reports never share a file");
        assert_ne!(first.id(), second.id());
        send(&mut a, &mut second, &rows(0, 0).slice(0, 3)).unwrap();
        let before = fingerprint(&a);
        // The aborted report can neither stage nor abort its successor.
        precondition(a.ingest(&first, &rows(0, 0).slice(3, 2), "x"), "aborted or replaced");
        precondition(a.abort_report(first.id()), "aborted or replaced");
        assert_eq!(fingerprint(&a), before);
        drop(first);
        assert!(second.tmp.exists(), "the aborted writer removed only its own file");
        send(&mut a, &mut second, &rows(0, 0).slice(3, rows(0, 0).num_rows() - 3)).unwrap();
        let id = second.id();
        let n = a.finish_report(second).unwrap();
        precondition(a.begin_report(0, 0, 1), "rank 0 already reported epoch 0");
        // A finished report can still be aborted before EpochDone: its part goes.
        let part = outputs::pending_dir(dir.path(), 0).join("part-0.parquet");
        assert_eq!(rows_in(&part), n as usize);
        a.abort_report(id).unwrap();
        assert!(!part.exists());
        assert_eq!(a.stage.as_ref().unwrap().staged, 0);
        let n = report(&mut a, 0, 0, 1);
        a.epoch_done(&done(0, 0, 1, n)).unwrap();
        precondition(a.abort_report(id), "aborted or replaced");
        drop(other);
    }

    /// Hole 6: the commit folded the stage and then renamed the pending
    /// partition; a failed rename left memory ahead of the disk.
    #[test]
    fn a_failed_rename_folds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = aggregator(dir.path(), true);
        a.begin_epoch(0, 1);
        let (r0, r1) = (report(&mut a, 0, 0, 1), report(&mut a, 0, 1, 1));
        assert!(a.epoch_done(&done(0, 0, 1, r0)).unwrap().is_none());
        // A regular file where the partition goes: the rename must fail.
        let epoch0 = outputs::epoch_dir(dir.path(), 0);
        std::fs::write(&epoch0, b"in the way").unwrap();
        let before = fingerprint(&a);
        let err = a.epoch_done(&done(0, 1, 1, r1)).unwrap_err();
        assert!(matches!(err, CartoError::Io { .. }), "{err}");
        assert_eq!(a.committed(), 0);
        assert!((0..N).all(|s| a.accumulators().metrics(s).is_none()), "nothing folded");
        assert_eq!(fingerprint(&a), before, "the stage stays as it was");
        let pending = outputs::pending_dir(dir.path(), 0);
        assert_eq!(entries(&pending), ["part-0.parquet", "part-1.parquet"]);
        // Once the way is clear the same EpochDone commits.
        std::fs::remove_file(&epoch0).unwrap();
        let c = a.epoch_done(&done(0, 1, 1, r1)).unwrap().expect("committed");
        assert_eq!(c.summary.samples, N as u64);
        assert_eq!(a.committed(), 1);
        assert!((0..N).all(|s| a.accumulators().metrics(s).is_some_and(|m| m.epochs == 1)));
        assert!(!pending.exists());
        assert_eq!(entries(&epoch0), ["part-0.parquet", "part-1.parquet"]);
    }

    #[test]
    fn an_incomplete_stage_is_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = aggregator(dir.path(), true);
        a.begin_epoch(0, 1);
        let r0 = report(&mut a, 0, 0, 1);
        let mut w = a.begin_report(0, 1, 1).unwrap();
        send(&mut a, &mut w, &rows(0, 1).slice(0, 1)).unwrap();
        let r1 = a.finish_report(w).unwrap();
        a.epoch_done(&done(0, 0, 1, r0)).unwrap();
        let mut last = done(0, 1, 1, r1);
        last.samples = 1;
        let err = a.epoch_done(&last).unwrap_err();
        assert!(matches!(err, CartoError::Internal(_)) && err.to_string().contains("samples reported"), "{err}");
        assert_eq!(a.committed(), 0);
        assert!(!outputs::epoch_dir(dir.path(), 0).exists());
        assert!(a.accumulators().metrics(0).is_none());
    }

    /// Hole 12, EpochDone: its numbers went into the job's summary unchecked.
    #[test]
    fn epoch_done_numbers_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = aggregator(dir.path(), false);
        a.begin_epoch(0, 1);
        let share = |rank: u16| ShardPlan::owners(N as u64, 7, 2, 0).iter().filter(|&&o| o == rank).count() as u64;
        let (s0, s1) = (share(0), share(1));
        let ok0 = done(0, 0, 1, s0);
        let cases: Vec<(&str, Box<dyn Fn(&mut pb::EpochDoneRequest)>)> = vec![
            ("samples", Box::new(move |r| r.samples = s0 + 1)),
            ("samples", Box::new(|r| r.samples = u64::MAX)),
            ("correct", Box::new(|r| r.correct = r.samples + 1)),
            ("eval_correct", Box::new(|r| (r.eval_samples, r.eval_correct) = (10, 11))),
            ("loss_sum", Box::new(|r| r.loss_sum = f64::NAN)),
            ("loss_sum", Box::new(|r| r.loss_sum = f64::INFINITY)),
            ("loss_sum", Box::new(|r| r.loss_sum = -1.0)),
            ("eval_loss_sum", Box::new(|r| r.eval_loss_sum = -0.5)),
            ("eval_loss_sum", Box::new(|r| r.eval_loss_sum = f64::NAN)),
            ("train_seconds", Box::new(|r| r.train_seconds = f64::NAN)),
            ("train_seconds", Box::new(|r| r.train_seconds = -1.0)),
            ("train_seconds", Box::new(|r| r.train_seconds = 1e9)),
        ];
        let before = fingerprint(&a);
        for (field, edit) in cases {
            let mut r = ok0.clone();
            edit(&mut r);
            match a.epoch_done(&r) {
                Err(CartoError::InvalidInput(m)) if m.contains(&format!(": {field} ")) => {}
                other => panic!("{field}: {other:?}"),
            }
            assert_eq!(fingerprint(&a), before, "{field}");
        }
        // Sums across ranks: each value fits, the total would not.
        let mut big0 = ok0.clone();
        (big0.eval_samples, big0.eval_correct, big0.loss_sum) = (u64::MAX - 1, 3, 1e308);
        assert!(a.epoch_done(&big0).unwrap().is_none());
        let ok1 = done(0, 1, 1, s1);
        let mut r = ok1.clone();
        r.eval_samples = 5;
        match a.epoch_done(&r) {
            Err(CartoError::InvalidInput(m)) if m.contains("eval_samples") => {}
            other => panic!("{other:?}"),
        }
        r = ok1.clone();
        r.loss_sum = 1e308;
        match a.epoch_done(&r) {
            Err(CartoError::InvalidInput(m)) if m.contains("loss_sum") && m.contains("overflows") => {}
            other => panic!("{other:?}"),
        }
        let c = a.epoch_done(&ok1).unwrap().expect("committed");
        assert_eq!(c.summary.samples, N as u64);
        assert!(c.summary.loss.is_finite() && c.summary.eval_accuracy.is_some_and(|x| x.is_finite()));
        assert_eq!(a.committed(), 1);
    }

    #[test]
    fn out_of_range_requests_are_refused_without_panics() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = aggregator(dir.path(), true);
        precondition(a.begin_report(0, 0, 1), "no epoch is being recorded");
        precondition(a.epoch_done(&done(0, 0, 1, 0)), "no epoch is being recorded");
        a.begin_epoch(0, 1);
        for rank in [2, u32::MAX] {
            assert!(matches!(a.begin_report(0, rank, 1), Err(CartoError::InvalidInput(_))));
            assert!(matches!(a.epoch_done(&done(0, rank, 1, 0)), Err(CartoError::InvalidInput(_))));
        }
        precondition(a.begin_report(u32::MAX, 0, 1), "is not the epoch being recorded");
        precondition(a.epoch_done(&done(0, 0, u64::MAX, 0)), "stale generation");
        // EpochDone before the report finished, or with other counts.
        let mut w = a.begin_report(0, 0, 1).unwrap();
        precondition(a.epoch_done(&done(0, 0, 1, 0)), "but 0 arrived");
        let n = send(&mut a, &mut w, &rows(0, 0)).unwrap() as u64;
        a.finish_report(w).unwrap();
        precondition(a.epoch_done(&done(0, 0, 1, n + 1)), "rows");
        a.epoch_done(&done(0, 0, 1, n)).unwrap();
        precondition(a.epoch_done(&done(0, 0, 1, n)), "already finished epoch 0");
        // A writer used after its report closed says so.
        let mut w = a.begin_report(0, 1, 1).unwrap();
        w.finish().unwrap();
        precondition(w.write(&rows(0, 1)), "already closed");
        // A new world discards the open stage; its ranks are the new world's.
        a.set_world(1);
        assert_eq!(a.current_epoch(), None);
        assert!(!outputs::pending_dir(dir.path(), 0).exists());
        a.begin_epoch(0, 2);
        assert!(matches!(a.begin_report(0, 1, 2), Err(CartoError::InvalidInput(_))));
        precondition(a.finish_report(w), "stale generation 1");
    }

    #[test]
    fn a_job_without_dynamics_commits_on_epoch_done_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = aggregator(dir.path(), false);
        a.begin_epoch(0, 3);
        precondition(a.begin_report(0, 0, 3), "records no dynamics");
        assert!(a.epoch_done(&done(0, 0, 3, 0)).unwrap().is_none());
        let c = a.epoch_done(&done(0, 1, 3, 0)).unwrap().expect("committed");
        assert_eq!(c.summary.epoch, 0);
        assert!(!dir.path().join(outputs::DYNAMICS_DIR).exists());
    }
}
