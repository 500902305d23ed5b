//! The job manager: the queue, generations, the epoch barrier's bookkeeping
//! and each job's lifecycle (queued → running → re-forming → … → succeeded,
//! failed or cancelled).
//!
//! Everything here is in-memory and runs under the coordinator's state lock;
//! what a transition needs done outside (orders to workers, `job.json`,
//! watchers, directories, aggregator stages) is returned as [`Effects`].
//! The merge of the dynamics themselves is the [`Aggregator`]'s, behind its
//! own lock.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use carto_common::proto::v1 as pb;
use carto_common::spec::JobSpec;
use carto_common::{CartoError, Result};
use tokio::sync::watch;
use tracing::{info, info_span, warn};

use crate::aggregator::Aggregator;
use crate::config::CoordinatorConfig;
use crate::effects::{Effect, Effects};
use crate::outputs::{self, SampleInfo};
use crate::placement::{self, QueuedJob};
use crate::record::{DatasetRecord, EpochRecord, JobRecord, OutputsRecord, RecordState, Timings, RECORD_VERSION};
use crate::registry::{Lease, LostWorker, WorkerRegistry};

/// ListJobs: the page size when none is asked for, and the largest allowed.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub fn state_name(s: pb::JobState) -> &'static str {
    match s {
        pb::JobState::Queued => "queued",
        pb::JobState::Running => "running",
        pb::JobState::Succeeded => "succeeded",
        pb::JobState::Failed => "failed",
        pb::JobState::Cancelled => "cancelled",
        pb::JobState::Unspecified => "unspecified",
    }
}

/// One job, as the manager tracks it.
pub struct Job {
    pub id: String,
    pub spec: JobSpec,
    pub state: pb::JobState,
    pub out: PathBuf,
    pub created_ms: i64,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub generation: u64,
    /// Worker ids by rank, in the current generation.
    pub ranks: Vec<String>,
    pub epochs: Vec<pb::EpochSummary>,
    rank_progress: Vec<Option<pb::WorkerProgress>>,
    pub error: String,
    /// Outputs beyond the metrics that could not be written (data map, report).
    pub warnings: Vec<String>,
    /// The window, threshold and noise estimates of the job's end.
    pub label_errors: Option<crate::record::LabelErrorsRecord>,
    /// Labels and ids per sample; dropped when the job ends.
    pub info: Arc<SampleInfo>,
    pub num_samples: u64,
    pub num_classes: u32,
    pub dataset_path: String,
    pub aggregator: Option<Arc<Mutex<Aggregator>>>,
    /// Epochs folded into the aggregator: the next epoch to train.
    pub committed: u32,
    watch: watch::Sender<pb::Job>,
    /// Re-formations after a lost rank so far.
    pub restarts: u32,
    /// Set while a job waits to be re-formed.
    pub recovering_since: Option<Instant>,
    /// Why the job last had to be re-formed (shown while it recovers).
    pub last_fault: String,
    /// Workers of the failed generation held back until heard from (see
    /// [`WorkerRegistry::hold_back`]): the job does not shrink without them.
    awaiting: Vec<String>,
    /// This job's record and checkpoints.
    pub dir: PathBuf,
    /// When the running generation last moved (a rank's sample count, a commit, its start).
    last_progress: Instant,
    progress_key: (u32, u64),
    /// External jobs: the ranks that called FinishExternal.
    finished_ranks: Vec<bool>,
}

/// What a new job is made of (the coordinator loads the dataset first).
pub struct NewJob {
    pub id: String,
    pub spec: JobSpec,
    pub out: PathBuf,
    pub dir: PathBuf,
    pub info: SampleInfo,
    pub num_classes: u32,
    pub dataset_path: String,
}

impl Job {
    pub fn new(n: NewJob) -> Job {
        let (watch, _) = watch::channel(pb::Job::default());
        Job {
            id: n.id,
            spec: n.spec,
            state: pb::JobState::Queued,
            out: n.out,
            created_ms: now_ms(),
            started_ms: 0,
            finished_ms: 0,
            generation: 0,
            ranks: vec![],
            epochs: vec![],
            rank_progress: vec![],
            error: String::new(),
            warnings: vec![],
            label_errors: None,
            num_samples: n.info.len() as u64,
            info: Arc::new(n.info),
            num_classes: n.num_classes,
            dataset_path: n.dataset_path,
            aggregator: None,
            committed: 0,
            watch,
            restarts: 0,
            recovering_since: None,
            last_fault: String::new(),
            awaiting: vec![],
            dir: n.dir,
            last_progress: Instant::now(),
            progress_key: (0, 0),
            finished_ranks: vec![],
        }
    }

    /// A job as its record describes it (a restarted coordinator). Unfinished
    /// jobs still need their dataset and committed epochs (see `recovery`).
    pub fn from_record(rec: &JobRecord, dir: PathBuf) -> Job {
        let spec = rec.resolved_spec();
        let mut job = Job::new(NewJob {
            id: rec.id.clone(),
            out: PathBuf::from(spec.out.clone().unwrap_or_default()),
            spec,
            dir,
            info: SampleInfo { labels: vec![], label_names: rec.dataset.label_names.clone(), ids: None },
            num_classes: rec.dataset.classes,
            dataset_path: rec.dataset.path.clone(),
        });
        job.state = match rec.state {
            RecordState::Running => pb::JobState::Queued,
            s => s.to_pb(),
        };
        job.created_ms = rec.created_unix_ms;
        job.started_ms = rec.timings.started_unix_ms;
        job.finished_ms = rec.timings.finished_unix_ms;
        job.generation = rec.generation;
        job.epochs = rec.epochs.iter().map(pb::EpochSummary::from).collect();
        job.error = rec.error.clone().unwrap_or_default();
        job.warnings = rec.warnings.clone();
        job.label_errors = rec.label_errors.clone();
        job.num_samples = rec.dataset.rows;
        job.restarts = rec.restarts;
        job.last_fault = rec.faults.clone().unwrap_or_default();
        job
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self.state, pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Cancelled)
    }

    fn progress(&self) -> pb::Progress {
        let epoch = self.epochs.len() as u32;
        let current: Vec<&pb::WorkerProgress> = self
            .rank_progress
            .iter()
            .flatten()
            .filter(|p| p.generation == self.generation && p.epoch == epoch)
            .collect();
        let samples: u64 = current.iter().map(|p| p.samples_done).sum();
        let loss: f64 = current.iter().map(|p| p.loss_sum).sum();
        let correct: u64 = current.iter().map(|p| p.correct).sum();
        let secs = current.iter().map(|p| p.train_seconds).fold(0.0, f64::max);
        pb::Progress {
            epoch,
            samples_done: samples,
            samples_total: self.num_samples,
            loss: if samples > 0 { loss / samples as f64 } else { 0.0 },
            accuracy: if samples > 0 { correct as f64 / samples as f64 } else { 0.0 },
            samples_per_sec: if secs > 0.0 { samples as f64 / secs } else { 0.0 },
        }
    }

    pub fn snapshot(&self) -> pb::Job {
        pb::Job {
            id: self.id.clone(),
            spec: Some(self.spec.clone().into()),
            state: self.state as i32,
            epochs_total: self.spec.epochs_total(),
            epochs: self.epochs.clone(),
            progress: Some(self.progress()),
            generation: self.generation,
            error: if self.error.is_empty() && self.recovering_since.is_some() {
                format!("recovering: {}", self.last_fault)
            } else {
                self.error.clone()
            },
            created_unix_ms: self.created_ms,
            started_unix_ms: self.started_ms,
            finished_unix_ms: self.finished_ms,
            num_samples: self.num_samples,
            num_classes: self.num_classes,
            workers: self.ranks.clone(),
            out: self.out.display().to_string(),
        }
    }

    /// `job.json` as of now.
    pub fn record(&self) -> JobRecord {
        let run_seconds = if self.started_ms > 0 {
            let end = if self.finished_ms > 0 { self.finished_ms } else { now_ms() };
            (end - self.started_ms) as f64 / 1000.0
        } else {
            0.0
        };
        JobRecord {
            record_version: RECORD_VERSION,
            carto_version: env!("CARGO_PKG_VERSION").into(),
            id: self.id.clone(),
            name: self.spec.name.clone(),
            state: RecordState::from_pb(self.state),
            error: (!self.error.is_empty()).then(|| self.error.clone()),
            warnings: self.warnings.clone(),
            spec: self.spec.clone(),
            restarts: self.restarts,
            faults: (!self.last_fault.is_empty()).then(|| self.last_fault.clone()),
            created_unix_ms: self.created_ms,
            dataset: DatasetRecord {
                path: self.dataset_path.clone(),
                rows: self.num_samples,
                classes: self.num_classes,
                label_names: self.info.label_names.clone(),
            },
            world_size: self.spec.workers(),
            generation: self.generation,
            workers: self.ranks.clone(),
            epochs: self
                .epochs
                .iter()
                .map(|e| EpochRecord {
                    missing_samples: self.spec.is_external().then(|| self.num_samples.saturating_sub(e.samples)),
                    ..EpochRecord::from(e)
                })
                .collect(),
            timings: Timings {
                created_unix_ms: self.created_ms,
                started_unix_ms: self.started_ms,
                finished_unix_ms: self.finished_ms,
                queued_seconds: if self.started_ms > 0 { (self.started_ms - self.created_ms) as f64 / 1000.0 } else { 0.0 },
                run_seconds,
                train_seconds: self.epochs.iter().map(|e| e.train_seconds).sum(),
            },
            outputs: OutputsRecord::default(),
            label_errors: self.label_errors.clone(),
        }
    }

    /// Its record written to `OUT/job.json` and the state directory, then
    /// the new snapshot for its watchers.
    pub fn persist(&self) -> Effects {
        Effects(vec![
            Effect::WriteRecord {
                record: Box::new(self.record()),
                paths: vec![self.out.join(outputs::JOB_FILE), self.dir.join(outputs::JOB_FILE)],
            },
            self.notify(),
        ])
    }

    /// The new snapshot for its watchers, without a record.
    pub fn notify(&self) -> Effect {
        Effect::Notify { watch: self.watch.clone(), job: Box::new(self.snapshot()) }
    }

    pub fn checkpoint_dir(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }

    fn subscribe(&self) -> watch::Receiver<pb::Job> {
        self.watch.send_replace(self.snapshot());
        self.watch.subscribe()
    }
}

/// Which generation a call acts for: the job and the caller's claim.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub job_id: &'a str,
    pub generation: u64,
    pub rank: u32,
    pub lease: &'a str,
}

pub struct JobManager {
    config: CoordinatorConfig,
    /// In submission order; finished jobs stay, without their per-sample data.
    jobs: Vec<Job>,
    index: HashMap<String, usize>,
    /// Output directories of submits still loading their dataset.
    claimed_outs: HashSet<PathBuf>,
}

impl JobManager {
    pub fn new(config: CoordinatorConfig) -> Self {
        JobManager { config, jobs: vec![], index: HashMap::new(), claimed_outs: HashSet::new() }
    }

    pub fn job(&self, id: &str) -> Result<&Job> {
        self.index.get(id).map(|&i| &self.jobs[i]).ok_or_else(|| CartoError::NotFound(format!("no job '{id}'")))
    }

    fn job_mut(&mut self, id: &str) -> Result<&mut Job> {
        match self.index.get(id) {
            Some(&i) => Ok(&mut self.jobs[i]),
            None => Err(CartoError::NotFound(format!("no job '{id}'"))),
        }
    }

    /// Queued and running jobs.
    pub fn active(&self) -> usize {
        self.jobs.iter().filter(|j| !j.is_terminal()).count()
    }

    /// Reserves `out` for a submit that is still loading its dataset: check
    /// and claim in one step, so two submits cannot both take it.
    pub fn claim_out(&mut self, out: &Path) -> Result<()> {
        if let Some(other) = self.jobs.iter().find(|j| !j.is_terminal() && j.out == out) {
            return Err(CartoError::FailedPrecondition(format!(
                "out {}: job {} is already writing there",
                out.display(),
                other.id
            )));
        }
        if !self.claimed_outs.insert(out.to_path_buf()) {
            return Err(CartoError::FailedPrecondition(format!(
                "out {}: another submit is preparing a job there",
                out.display()
            )));
        }
        Ok(())
    }

    pub fn release_out(&mut self, out: &Path) {
        self.claimed_outs.remove(out);
    }

    /// Adds a job (its `out` claim passes to it) and starts what can start.
    pub fn add(&mut self, job: Job, reg: &mut WorkerRegistry) -> Effects {
        self.claimed_outs.remove(&job.out);
        let mut fx = job.persist();
        info!(job = %job.id, rows = job.num_samples, classes = job.num_classes, "job queued");
        self.index.insert(job.id.clone(), self.jobs.len());
        self.jobs.push(job);
        fx.extend(self.place(reg));
        fx
    }

    /// Adds a job restored from the state directory (queued to resume, or
    /// finished), without starting anything yet.
    pub fn add_restored(&mut self, job: Job) -> Effects {
        let fx = job.persist();
        self.index.insert(job.id.clone(), self.jobs.len());
        self.jobs.push(job);
        fx
    }

    /// Starts queued jobs on free workers (see [`placement::place`]); once
    /// every job has ended, tells free workers to exit if configured to.
    pub fn place(&mut self, reg: &mut WorkerRegistry) -> Effects {
        let queue: Vec<QueuedJob> = self
            .jobs
            .iter()
            .filter(|j| j.state == pb::JobState::Queued && !j.spec.is_external())
            .map(|j| QueuedJob {
                id: j.id.clone(),
                want: j.spec.workers() as usize,
                cuda: j.spec.device() != "cpu",
                global_batch: j.spec.batch_size() as usize,
                recovering_for: j.recovering_since.map(|t| t.elapsed()),
                awaiting: j.awaiting.iter().filter(|w| reg.is_held_back(w)).count(),
            })
            .collect();
        let mut fx = Effects::default();
        for p in placement::place(&reg.free(), &queue, self.config.rejoin_wait) {
            fx.extend(self.start(&p.job, p.workers, reg));
        }
        if self.config.shutdown_idle_workers && !self.jobs.is_empty() && self.jobs.iter().all(Job::is_terminal) {
            fx.extend(reg.shutdown_free("no jobs left").into());
        }
        fx
    }

    /// A new generation of `job_id` on `workers` (by rank): leases, the
    /// aggregator's stage, the assignments.
    fn start(&mut self, job_id: &str, workers: Vec<String>, reg: &mut WorkerRegistry) -> Effects {
        let world = workers.len() as u32;
        // Rank 0 hosts the collectives' store, on the port it holds for that.
        let (rdv_host, rdv_port) = match reg.get(&workers[0]) {
            Some(w) if world > 1 => (w.advertise_host.clone(), w.rendezvous_port),
            _ => (String::new(), 0),
        };
        let Ok(job) = self.job_mut(job_id) else { return Effects::default() };
        job.generation += 1;
        job.state = pb::JobState::Running;
        if job.started_ms == 0 {
            job.started_ms = now_ms();
        }
        job.recovering_since = None;
        job.awaiting.clear();
        job.ranks = workers.clone();
        job.rank_progress = vec![None; workers.len()];
        job.last_progress = Instant::now();
        job.progress_key = (job.committed, 0);
        // Later generations keep the accumulators of the committed epochs.
        let aggregator = job
            .aggregator
            .get_or_insert_with(|| {
                let agg = Aggregator::new(
                    &job.out,
                    job.info.clone(),
                    job.num_classes as usize,
                    job.spec.seed(),
                    world,
                    job.spec.epochs(),
                    job.spec.record_dynamics(),
                );
                let agg = if job.spec.threshold_samples() { agg.with_threshold_runs(job.spec.epochs(), job.spec.seed()) } else { agg };
                Arc::new(Mutex::new(agg))
            })
            .clone();
        let start_epoch = job.committed;
        let generation = job.generation;
        let checkpoint_dir = job.checkpoint_dir();
        let checkpoint = if start_epoch > 0 {
            crate::recovery::checkpoint_path(&checkpoint_dir, start_epoch - 1).display().to_string()
        } else {
            String::new()
        };
        let _span = info_span!("job", job = %job_id, generation).entered();
        info!(world, start_epoch, rendezvous = %format!("{rdv_host}:{rdv_port}"), "job started");
        let mut fx = Effects(vec![Effect::BeginGeneration { aggregator, world, epoch: start_epoch, generation }]);
        fx.extend(job.persist());
        let (spec, num_samples, num_classes) = (job.spec.clone(), job.info.len() as u64, job.num_classes);
        for (rank, wid) in workers.iter().enumerate() {
            let rank = rank as u32;
            let Some(lease) = reg.lease(wid, job_id, generation, rank) else { continue };
            let a = pb::Assignment {
                job_id: job_id.to_string(),
                generation,
                rank,
                world_size: world,
                rendezvous_host: rdv_host.clone(),
                rendezvous_port: rdv_port,
                spec: Some(spec.clone().into()),
                shard: Some(pb::ShardPlan {
                    num_samples,
                    seed: spec.seed(),
                    world_size: world,
                    rank,
                    global_batch: spec.batch_size(),
                }),
                start_epoch,
                checkpoint: checkpoint.clone(),
                checkpoint_dir: checkpoint_dir.display().to_string(),
                num_classes,
                lease,
            };
            fx.push_opt(reg.order(wid, pb::order::Kind::Assignment(a)));
        }
        fx
    }

    /// The running job's aggregator, if the caller acts for the current
    /// generation's rank and holds that rank's lease.
    pub fn check_claim(&self, reg: &WorkerRegistry, c: Claim) -> Result<Arc<Mutex<Aggregator>>> {
        let job = self.job(c.job_id)?;
        if job.state != pb::JobState::Running {
            return Err(CartoError::FailedPrecondition(format!("job {} is {}", c.job_id, state_name(job.state))));
        }
        if c.generation != job.generation {
            return Err(CartoError::FailedPrecondition(format!(
                "stale generation {} for job {} (current {})",
                c.generation, c.job_id, job.generation
            )));
        }
        let Some(worker) = job.ranks.get(c.rank as usize) else {
            return Err(CartoError::invalid(format!(
                "rank {} is outside job {}'s world of {}",
                c.rank,
                c.job_id,
                job.ranks.len()
            )));
        };
        if !reg.holds_lease(worker, c.job_id, c.generation, c.rank, c.lease) {
            return Err(CartoError::Unauthenticated(format!(
                "job {} rank {}: the call does not carry that rank's lease",
                c.job_id, c.rank
            )));
        }
        job.aggregator.clone().ok_or_else(|| CartoError::internal("running job without aggregator"))
    }

    /// An epoch of generation `generation` was committed.
    pub fn epoch_committed(&mut self, job_id: &str, generation: u64, summary: pb::EpochSummary) -> Effects {
        let Ok(job) = self.job_mut(job_id) else { return Effects::default() };
        if job.generation != generation || job.is_terminal() {
            return Effects::default();
        }
        job.committed = job.committed.max(summary.epoch + 1);
        job.last_progress = Instant::now();
        if job.epochs.len() == summary.epoch as usize {
            job.epochs.push(summary);
        }
        job.persist()
    }

    /// What finishing needs: the aggregator, the output directory, the spec.
    pub fn finishing(&self, job_id: &str) -> Result<(Arc<Mutex<Aggregator>>, PathBuf, JobSpec)> {
        let job = self.job(job_id)?;
        let agg = job.aggregator.clone().ok_or_else(|| CartoError::internal("finishing a job without aggregator"))?;
        Ok((agg, job.out.clone(), job.spec.clone()))
    }

    /// Whether `job_id` still runs generation `generation` (`u64::MAX`: any).
    pub fn still_running(&self, job_id: &str, generation: u64) -> bool {
        self.job(job_id).is_ok_and(|j| !j.is_terminal() && (generation == u64::MAX || j.generation == generation))
    }

    pub fn set_label_errors(&mut self, job_id: &str, rec: crate::record::LabelErrorsRecord) {
        if let Ok(job) = self.job_mut(job_id) {
            job.label_errors = Some(rec);
        }
    }

    pub fn set_warnings(&mut self, job_id: &str, warnings: Vec<String>) {
        if let Ok(job) = self.job_mut(job_id) {
            job.warnings = warnings;
        }
    }

    /// Ends a job in a terminal state: aborts its ranks, frees its workers,
    /// discards an unfinished epoch, records the outcome.
    pub fn end(&mut self, id: &str, state: pb::JobState, error: String, reg: &mut WorkerRegistry) -> Effects {
        let embedded = self.config.state_dir.is_none();
        let Ok(job) = self.job_mut(id) else { return Effects::default() };
        if job.is_terminal() {
            return Effects::default();
        }
        let was_running = job.state == pb::JobState::Running;
        job.state = state;
        job.error = if state == pb::JobState::Succeeded { String::new() } else { error.clone() };
        job.finished_ms = now_ms();
        job.recovering_since = None;
        let mut fx = Effects::default();
        if let Some(aggregator) = job.aggregator.take() {
            fx.push(Effect::DiscardStage { aggregator, generation: job.generation });
        }
        if state != pb::JobState::Failed {
            // A failed job keeps its last checkpoints for inspection.
            fx.push(Effect::RemoveDir(job.checkpoint_dir()));
        }
        fx.extend(job.persist());
        if embedded && state != pb::JobState::Failed {
            // `carto run` keeps its state in OUT/.carto only while it runs.
            fx.push(Effect::RemoveDir(job.dir.clone()));
        }
        // The per-sample tables are not needed to list a finished job.
        job.info = Arc::new(SampleInfo { labels: vec![], label_names: job.info.label_names.clone(), ids: None });
        match state {
            pb::JobState::Succeeded => info!(job = %id, "job succeeded"),
            pb::JobState::Cancelled => info!(job = %id, %error, "job cancelled"),
            _ => warn!(job = %id, state = state_name(state), %error, "job failed"),
        }
        let (ranks, generation) = (job.ranks.clone(), job.generation);
        for wid in &ranks {
            if reg.release(wid, id) && was_running && state != pb::JobState::Succeeded {
                let abort = pb::Abort { job_id: id.to_string(), generation, reason: error.clone() };
                fx.push_opt(reg.order(wid, pb::order::Kind::Abort(abort)));
            }
        }
        fx.extend(self.place(reg));
        fx
    }

    /// A running job lost a rank: within the restart budget its generation
    /// ends (ranks aborted, the unfinished epoch's dynamics discarded) and it
    /// waits to be re-formed from its last checkpoint; past it, it fails.
    /// For faults on the coordinator's side or a hung trainer (which still
    /// heartbeats): every rank's worker may be placed again at once.
    pub fn recover_or_fail(&mut self, job_id: &str, fault: String, reg: &mut WorkerRegistry) -> Effects {
        self.reform(job_id, fault, &[], reg)
    }

    /// [`Self::recover_or_fail`] after a fault that may have killed workers:
    /// `doubtful` (ranks of the failed generation that have not spoken since)
    /// are held back until heard from. A killed worker stays registered until
    /// its heartbeat timeout; placed again, it would host or join the next
    /// generation's rendezvous and leave the live ranks waiting on it.
    fn reform(&mut self, job_id: &str, fault: String, doubtful: &[String], reg: &mut WorkerRegistry) -> Effects {
        let max = self.config.max_restarts;
        let Ok(job) = self.job_mut(job_id) else { return Effects::default() };
        if job.state != pb::JobState::Running {
            return Effects::default();
        }
        // Also when the job fails: a dead worker would stall another job's rendezvous.
        let awaiting: Vec<String> = doubtful.iter().filter(|w| reg.hold_back(w)).cloned().collect();
        if job.spec.is_external() {
            // carto cannot restart the user's training loop.
            let msg = format!("{fault}; an external training loop cannot be re-formed: rerun it");
            return self.end(job_id, pb::JobState::Failed, msg, reg);
        }
        if job.restarts >= max {
            let msg = format!("{fault}; gave up after {max} restart(s)");
            return self.end(job_id, pb::JobState::Failed, msg, reg);
        }
        job.restarts += 1;
        job.state = pb::JobState::Queued;
        job.recovering_since = Some(Instant::now());
        job.last_fault = fault.clone();
        let mut fx = Effects::default();
        if let Some(agg) = &job.aggregator {
            fx.push(Effect::DiscardStage { aggregator: agg.clone(), generation: job.generation });
        }
        let (ranks, generation, restarts) = (std::mem::take(&mut job.ranks), job.generation, job.restarts);
        job.rank_progress.clear();
        job.awaiting = awaiting;
        fx.extend(job.persist());
        let _span = info_span!("job", job = %job_id, generation).entered();
        warn!(restarts, %fault, awaiting = ?job.awaiting, "re-forming the job from its last finished epoch");
        for wid in &ranks {
            if reg.release(wid, job_id) {
                let abort = pb::Abort { job_id: job_id.to_string(), generation, reason: fault.clone() };
                fx.push_opt(reg.order(wid, pb::order::Kind::Abort(abort)));
            }
        }
        fx.extend(self.place(reg));
        fx
    }

    /// A rank could not go on. Bad input (the data, the spec, a diverging
    /// loss) fails the job at once; anything else (a crash, a collective that
    /// lost its peer) re-forms it within the restart budget. A report for a
    /// generation that already ended changes nothing.
    pub fn report_failure(&mut self, req: pb::ReportFailureRequest, reg: &mut WorkerRegistry) -> Result<Effects> {
        let job = self.job(&req.job_id)?;
        if job.generation != req.generation || job.state != pb::JobState::Running {
            return Ok(Effects::default());
        }
        let claim = Claim { job_id: &req.job_id, generation: req.generation, rank: req.rank, lease: &req.lease };
        self.check_claim(reg, claim)?;
        let text: String = req.message.chars().take(2000).collect();
        let message = if job.ranks.len() > 1 { format!("rank {}: {text}", req.rank) } else { text };
        // The reporter just spoke; a peer whose death broke the collective
        // has not been reaped yet and must not be placed again before it speaks.
        let others: Vec<String> =
            job.ranks.iter().enumerate().filter(|&(r, _)| r != req.rank as usize).map(|(_, w)| w.clone()).collect();
        Ok(if req.invalid_input {
            self.end(&req.job_id, pb::JobState::Failed, message, reg)
        } else {
            self.reform(&req.job_id, message, &others, reg)
        })
    }

    /// A heartbeat's progress of the rank a worker's lease names.
    pub fn progress(&mut self, lease: &Lease, p: pb::WorkerProgress) -> Effects {
        if p.job_id != lease.job_id || p.rank != lease.rank || p.generation != lease.generation {
            return Effects::default();
        }
        let Ok(job) = self.job_mut(&lease.job_id) else { return Effects::default() };
        if p.generation != job.generation || job.state != pb::JobState::Running {
            return Effects::default();
        }
        let Some(slot) = job.rank_progress.get_mut(lease.rank as usize) else { return Effects::default() };
        *slot = Some(p);
        let epoch = job.epochs.len() as u32;
        let samples: u64 = job
            .rank_progress
            .iter()
            .flatten()
            .filter(|q| q.epoch == epoch)
            .fold(0u64, |s, q| s.saturating_add(q.samples_done));
        if (epoch, samples) != job.progress_key {
            job.progress_key = (epoch, samples);
            job.last_progress = Instant::now();
        }
        Effects(vec![job.notify()])
    }

    /// Workers that were lost: their jobs are re-formed or fail.
    pub fn workers_lost(&mut self, lost: Vec<LostWorker>, reg: &mut WorkerRegistry) -> Effects {
        let mut fx = Effects::default();
        for w in lost {
            if let Some(l) = w.lease {
                if self.still_running(&l.job_id, l.generation) {
                    let fault = format!("worker {} on {} (rank {}) was lost", w.id, w.hostname, l.rank);
                    // Its peers may have died with it and not be reaped yet.
                    let peers = self.job(&l.job_id).map(|j| j.ranks.clone()).unwrap_or_default();
                    fx.extend(self.reform(&l.job_id, fault, &peers, reg));
                }
            }
        }
        fx
    }

    /// Re-forms running generations whose ranks made no training progress
    /// for the configured time (a hung training thread still heartbeats).
    pub fn watchdog(&mut self, reg: &mut WorkerRegistry) -> Effects {
        let limit = self.config.progress_timeout;
        let stalled: Vec<(String, String)> = self
            .jobs
            .iter()
            .filter(|j| j.state == pb::JobState::Running && !j.spec.is_external() && j.last_progress.elapsed() > limit)
            .map(|j| {
                let epoch = j.epochs.len();
                (j.id.clone(), format!("no training progress in epoch {epoch} for {} s", limit.as_secs()))
            })
            .collect();
        let mut fx = Effects::default();
        for (id, fault) in stalled {
            warn!(job = %id, %fault, "progress deadline passed");
            fx.extend(self.recover_or_fail(&id, fault, reg));
        }
        fx
    }

    /// A rank of an external job's training loop joins (the worker `worker`
    /// registered and authenticated). The first rank starts generation 1;
    /// each rank joins once.
    pub fn join_external(
        &mut self,
        job_id: &str,
        rank: u32,
        world: u32,
        worker: &str,
        reg: &mut WorkerRegistry,
    ) -> Result<(pb::Assignment, Effects)> {
        let job = self.job_mut(job_id)?;
        if !job.spec.is_external() {
            return Err(CartoError::FailedPrecondition(format!("job {job_id} is trained by carto-workers, not joined")));
        }
        if job.is_terminal() {
            return Err(CartoError::FailedPrecondition(format!("job {job_id} already {}", state_name(job.state))));
        }
        let want = job.spec.workers();
        if world != want {
            return Err(CartoError::invalid(format!("world_size {world}, but job {job_id} expects {want} ranks")));
        }
        if rank >= want {
            return Err(CartoError::invalid(format!("rank {rank} is outside job {job_id}'s world of {want}")));
        }
        let mut fx = Effects::default();
        if job.generation == 0 {
            job.generation = 1;
            job.state = pb::JobState::Running;
            job.started_ms = now_ms();
            job.ranks = vec![String::new(); want as usize];
            job.rank_progress = vec![None; want as usize];
            job.finished_ranks = vec![false; want as usize];
            let agg = Arc::new(Mutex::new(Aggregator::external(&job.out, job.info.clone(), job.num_classes as usize, want)));
            job.aggregator = Some(agg.clone());
            fx.push(Effect::BeginGeneration { aggregator: agg, world: want, epoch: 0, generation: 1 });
            info!(job = %job_id, world = want, "external job started");
        }
        if !job.ranks[rank as usize].is_empty() {
            return Err(CartoError::FailedPrecondition(format!("rank {rank} of job {job_id} has already joined")));
        }
        let lease = reg
            .lease(worker, job_id, job.generation, rank)
            .ok_or_else(|| CartoError::NotFound(format!("no worker '{worker}': register first")))?;
        job.ranks[rank as usize] = worker.to_string();
        let a = pb::Assignment {
            job_id: job_id.to_string(),
            generation: job.generation,
            rank,
            world_size: want,
            spec: Some(job.spec.clone().into()),
            start_epoch: job.committed,
            num_classes: job.num_classes,
            lease,
            ..Default::default()
        };
        fx.extend(job.persist());
        Ok((a, fx))
    }

    /// An external rank is done. Returns whether every rank now is: then
    /// the caller writes the outputs (see `Coordinator::finish`).
    pub fn finish_external(&mut self, reg: &WorkerRegistry, c: Claim) -> Result<bool> {
        self.check_claim(reg, c)?;
        let job = self.job_mut(c.job_id)?;
        if !job.spec.is_external() {
            return Err(CartoError::FailedPrecondition(format!("job {} is not an external job", c.job_id)));
        }
        let first = !job.finished_ranks[c.rank as usize];
        job.finished_ranks[c.rank as usize] = true;
        Ok(first && job.finished_ranks.iter().all(|&f| f))
    }

    pub fn cancel(&mut self, id: &str, reg: &mut WorkerRegistry) -> Result<(pb::Job, Effects)> {
        let job = self.job(id)?;
        if job.is_terminal() {
            return Err(CartoError::FailedPrecondition(format!("job {id} already {}", state_name(job.state))));
        }
        let fx = self.end(id, pb::JobState::Cancelled, "cancelled by the user".into(), reg);
        Ok((self.job(id)?.snapshot(), fx))
    }

    pub fn get(&self, id: &str) -> Result<pb::Job> {
        Ok(self.job(id)?.snapshot())
    }

    /// One page of jobs in submission order, and the token of the next page
    /// (empty on the last). Tokens are positions in the submission order,
    /// which only grows.
    pub fn list(&self, page_size: u32, token: &str) -> Result<(Vec<pb::Job>, String)> {
        let start: usize = if token.is_empty() {
            0
        } else {
            token.parse().map_err(|_| CartoError::invalid(format!("page_token '{token}' is not one this coordinator gave")))?
        };
        let size = match page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let end = (start.saturating_add(size)).min(self.jobs.len());
        let page = self.jobs.get(start.min(self.jobs.len())..end).unwrap_or_default().iter().map(Job::snapshot).collect();
        let next = if end < self.jobs.len() { end.to_string() } else { String::new() };
        Ok((page, next))
    }

    /// A receiver of the job's snapshots, starting with the current one.
    pub fn watch(&self, id: &str) -> Result<watch::Receiver<pb::Job>> {
        Ok(self.job(id)?.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carto_common::proto::PROTOCOL_VERSION;
    use std::time::Duration;

    fn manager(config: CoordinatorConfig) -> (JobManager, WorkerRegistry, tempfile::TempDir) {
        (JobManager::new(config), WorkerRegistry::default(), tempfile::tempdir().unwrap())
    }

    fn new_job(dir: &Path, id: &str, workers: u32) -> Job {
        let spec = JobSpec {
            data: Some("d.csv".into()),
            label_col: Some("label".into()),
            text_col: Some("text".into()),
            out: Some(dir.join(id).display().to_string()),
            workers: Some(workers),
            epochs: Some(2),
            batch_size: Some(8),
            ..Default::default()
        }
        .with_defaults();
        Job::new(NewJob {
            id: id.into(),
            out: dir.join(id),
            dir: dir.join("state").join(id),
            spec,
            info: SampleInfo { labels: vec![0, 1, 0, 1], label_names: None, ids: None },
            num_classes: 2,
            dataset_path: "/d.csv".into(),
        })
    }

    type Orders = tokio::sync::mpsc::Receiver<std::result::Result<pb::Order, tonic::Status>>;

    /// A registered worker with an open order stream.
    fn worker(reg: &mut WorkerRegistry) -> (String, Orders) {
        let (id, _, rx) = worker_with_secret(reg);
        (id, rx)
    }

    /// The same, with the secret its heartbeats carry.
    fn worker_with_secret(reg: &mut WorkerRegistry) -> (String, String, Orders) {
        let r = reg
            .register(
                pb::RegisterRequest { protocol_version: PROTOCOL_VERSION, hostname: "h".into(), devices: vec!["cpu".into()], ..Default::default() },
                Duration::from_millis(500),
            )
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        reg.open_orders(&r.worker_id, &r.worker_secret, tx).unwrap();
        (r.worker_id, r.worker_secret, rx)
    }

    fn assignments(fx: &Effects) -> Vec<pb::Assignment> {
        fx.0.iter()
            .filter_map(|e| match e {
                Effect::Send { order: pb::order::Kind::Assignment(a), .. } => Some(a.clone()),
                _ => None,
            })
            .collect()
    }

    fn aborts(fx: &Effects) -> usize {
        fx.0.iter().filter(|e| matches!(e, Effect::Send { order: pb::order::Kind::Abort(_), .. })).count()
    }

    #[test]
    fn lifecycle_transitions_return_their_effects_instead_of_doing_them() {
        let (mut m, mut reg, dir) = manager(CoordinatorConfig::default());
        let (_w, _rx) = worker(&mut reg);
        let fx = m.add(new_job(dir.path(), "a", 1), &mut reg);
        // Nothing was written: the record is an effect.
        assert!(!dir.path().join("a").join("job.json").exists());
        assert!(fx.0.iter().any(|e| matches!(e, Effect::WriteRecord { .. })));
        assert!(fx.0.iter().any(|e| matches!(e, Effect::BeginGeneration { generation: 1, world: 1, epoch: 0, .. })));
        let a = assignments(&fx);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].lease.len(), 64);
        assert_eq!(m.job("a").unwrap().state, pb::JobState::Running);
        let (_, fx) = m.cancel("a", &mut reg).unwrap();
        assert_eq!(aborts(&fx), 1);
        assert!(fx.0.iter().any(|e| matches!(e, Effect::DiscardStage { generation: 1, .. })));
        assert!(fx.0.iter().any(|e| matches!(e, Effect::RemoveDir(p) if p.ends_with("checkpoints"))));
        assert!(m.cancel("a", &mut reg).is_err(), "already cancelled");
        assert_eq!(reg.free().len(), 1, "the worker is free again");
    }

    #[test]
    fn claims_need_the_current_generation_rank_and_lease() {
        let (mut m, mut reg, dir) = manager(CoordinatorConfig::default());
        let (_w0, _r0) = worker(&mut reg);
        let (_w1, _r1) = worker(&mut reg);
        let fx = m.add(new_job(dir.path(), "a", 2), &mut reg);
        let a = assignments(&fx);
        let claim = |a: &pb::Assignment| Claim { job_id: "a", generation: a.generation, rank: a.rank, lease: "" };
        assert!(m.check_claim(&reg, Claim { lease: &a[0].lease, ..claim(&a[0]) }).is_ok());
        let err = m.check_claim(&reg, Claim { lease: &a[1].lease, ..claim(&a[0]) }).err().unwrap();
        assert!(matches!(err, CartoError::Unauthenticated(_)), "rank 1's lease does not act for rank 0: {err}");
        let err = m.check_claim(&reg, Claim { generation: 7, lease: &a[0].lease, ..claim(&a[0]) }).err().unwrap();
        assert!(matches!(err, CartoError::FailedPrecondition(_)), "{err}");
        let err = m.check_claim(&reg, Claim { rank: 5, lease: &a[0].lease, ..claim(&a[0]) }).err().unwrap();
        assert!(matches!(err, CartoError::InvalidInput(_)), "{err}");
    }

    #[test]
    fn a_lost_rank_reforms_on_a_spare_and_the_old_leases_stop_working() {
        let (mut m, mut reg, dir) = manager(CoordinatorConfig::default());
        let mut streams: HashMap<String, _> = [worker(&mut reg), worker(&mut reg)].into_iter().collect();
        let fx = m.add(new_job(dir.path(), "a", 1), &mut reg);
        let first = assignments(&fx).remove(0);
        let w0 = m.job("a").unwrap().ranks[0].clone();
        streams.remove(&w0);
        let lost = reg.reap(Duration::from_secs(60));
        assert_eq!(lost[0].id, w0);
        let fx = m.workers_lost(lost, &mut reg);
        let second = assignments(&fx);
        assert_eq!(second.len(), 1, "the spare takes over at once");
        assert_eq!(second[0].generation, 2);
        assert!(fx.0.iter().any(|e| matches!(e, Effect::DiscardStage { generation: 1, .. })));
        let job = m.job("a").unwrap();
        assert_eq!((job.restarts, job.state), (1, pb::JobState::Running));
        let old = Claim { job_id: "a", generation: 1, rank: 0, lease: &first.lease };
        assert!(matches!(m.check_claim(&reg, old).err().unwrap(), CartoError::FailedPrecondition(_)));
    }

    #[test]
    fn a_reforming_job_shrinks_after_the_rejoin_wait_and_can_be_cancelled_meanwhile() {
        let config = CoordinatorConfig { rejoin_wait: Duration::ZERO, ..Default::default() };
        let (mut m, mut reg, dir) = manager(config);
        let (w0, s0, _r0) = worker_with_secret(&mut reg);
        let (_w1, r1) = worker(&mut reg);
        let fx = m.add(new_job(dir.path(), "a", 2), &mut reg);
        assert_eq!(assignments(&fx).len(), 2);
        drop(r1);
        let lost = reg.reap(Duration::from_secs(60));
        let fx = m.workers_lost(lost, &mut reg);
        // Rank 0's worker may have died too: the job waits to hear from it,
        // even with no rejoin wait, rather than go on without it.
        assert!(assignments(&fx).is_empty());
        reg.heartbeat(&w0, &s0).unwrap();
        // It is free again; with no wait, the job goes on with one rank.
        let a = assignments(&m.place(&mut reg));
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].world_size, a[0].generation), (1, 2));

        // Cancel while re-forming: a job waiting for workers is cancelled
        // and never started again.
        let config = CoordinatorConfig { rejoin_wait: Duration::from_secs(3600), ..Default::default() };
        let (mut m, mut reg, dir) = manager(config);
        let (_w0, _r0) = worker(&mut reg);
        let (_w1, r1) = worker(&mut reg);
        let _ = m.add(new_job(dir.path(), "b", 2), &mut reg);
        drop(r1);
        let lost = reg.reap(Duration::from_secs(60));
        let fx = m.workers_lost(lost, &mut reg);
        assert!(assignments(&fx).is_empty(), "waits for its full world");
        assert_eq!(m.job("b").unwrap().state, pb::JobState::Queued);
        let (snap, fx) = m.cancel("b", &mut reg).unwrap();
        assert_eq!(snap.state, pb::JobState::Cancelled as i32);
        assert_eq!(aborts(&fx), 0, "its ranks were already aborted");
        let (_w2, _r2) = worker(&mut reg);
        assert!(assignments(&m.place(&mut reg)).is_empty(), "a cancelled job is never placed");
    }

    /// Rank 1 reports the collective it shares with rank 0 broken. Rank 0's
    /// worker was killed: still registered (its heartbeat timeout has not
    /// passed), silent. Returns job "a"'s generation-1 ranks and the effects.
    fn a_peer_reports_failure(m: &mut JobManager, reg: &mut WorkerRegistry, dir: &Path) -> (Vec<String>, Effects) {
        let a = assignments(&m.add(new_job(dir, "a", 2), reg));
        let ranks = m.job("a").unwrap().ranks.clone();
        let lease1 = a.iter().find(|a| a.rank == 1).unwrap().lease.clone();
        let req = pb::ReportFailureRequest {
            worker_id: ranks[1].clone(),
            job_id: "a".into(),
            generation: 1,
            rank: 1,
            message: "collective: connection reset by peer".into(),
            invalid_input: false,
            lease: lease1,
        };
        let fx = m.report_failure(req, reg).unwrap();
        (ranks, fx)
    }

    #[test]
    fn a_rank_silent_since_a_peer_reported_failure_is_not_placed_until_heard_from() {
        let (mut m, mut reg, dir) = manager(CoordinatorConfig::default());
        let (wa, sa, _ra) = worker_with_secret(&mut reg);
        let (_wb, sb, _rb) = worker_with_secret(&mut reg);
        let secret = |w: &str| if w == wa { sa.clone() } else { sb.clone() };
        let (ranks, fx) = a_peer_reports_failure(&mut m, &mut reg, dir.path());
        assert!(assignments(&fx).is_empty(), "rank 0's worker has not spoken since the fault");
        let job = m.job("a").unwrap();
        assert_eq!((job.state, job.generation, job.restarts), (pb::JobState::Queued, 1, 1));
        assert_eq!(reg.free().iter().map(|f| f.id.clone()).collect::<Vec<_>>(), [ranks[1].clone()], "the reporter is free");

        // It was alive after all (the fault was the reporter's): its next
        // heartbeat makes it placeable, and the job re-forms on both.
        reg.heartbeat(&ranks[0], &secret(&ranks[0])).unwrap();
        let second = assignments(&m.place(&mut reg));
        assert_eq!(second.len(), 2);
        assert!(second.iter().all(|a| a.generation == 2 && a.world_size == 2));
        let mut now = m.job("a").unwrap().ranks.clone();
        now.sort();
        let mut before = ranks.clone();
        before.sort();
        assert_eq!(now, before);
    }

    #[test]
    fn a_spare_replaces_a_rank_silent_since_a_peer_reported_failure() {
        let (mut m, mut reg, dir) = manager(CoordinatorConfig::default());
        let (_wa, _ra) = worker(&mut reg);
        let (_wb, _rb) = worker(&mut reg);
        let (ranks, fx) = a_peer_reports_failure(&mut m, &mut reg, dir.path());
        assert!(assignments(&fx).is_empty(), "waits (--rejoin-wait-secs) rather than use the silent worker");

        // A spare registers: the next generation is the reporter and the spare.
        let (spare, _rs) = worker(&mut reg);
        let second = assignments(&m.place(&mut reg));
        assert_eq!(second.len(), 2);
        let job = m.job("a").unwrap();
        assert_eq!(job.generation, 2);
        assert!(!job.ranks.contains(&ranks[0]), "the silent worker is in no rank: {:?}", job.ranks);
        assert!(job.ranks.contains(&ranks[1]) && job.ranks.contains(&spare), "{:?}", job.ranks);
        assert!(reg.free().is_empty(), "the silent worker stays held back");
    }

    #[test]
    fn a_reforming_job_does_not_shrink_while_a_silent_rank_may_still_answer() {
        let config = CoordinatorConfig { rejoin_wait: Duration::ZERO, ..Default::default() };
        let (mut m, mut reg, dir) = manager(config);
        let mut streams: HashMap<String, Orders> = [worker(&mut reg), worker(&mut reg)].into_iter().collect();
        let (ranks, fx) = a_peer_reports_failure(&mut m, &mut reg, dir.path());
        assert!(assignments(&fx).is_empty(), "no shrinking to the reporter alone while rank 0 may answer");
        assert!(assignments(&m.place(&mut reg)).is_empty());

        // Declared lost (its order stream closed, or its heartbeat timeout):
        // the job goes on with the reporter alone.
        streams.remove(&ranks[0]);
        let lost = reg.reap(Duration::from_secs(60));
        assert_eq!(lost.iter().map(|l| l.id.clone()).collect::<Vec<_>>(), [ranks[0].clone()]);
        assert!(lost[0].lease.is_none(), "its lease ended with the failed generation");
        let mut fx = m.workers_lost(lost, &mut reg);
        fx.extend(m.place(&mut reg));
        let a = assignments(&fx);
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].world_size, a[0].generation), (1, 2));
        assert_eq!(m.job("a").unwrap().ranks, [ranks[1].clone()]);
    }

    #[test]
    fn the_restart_budget_ends_in_failure() {
        let config = CoordinatorConfig { max_restarts: 1, ..Default::default() };
        let (mut m, mut reg, dir) = manager(config);
        let (_w0, _r0) = worker(&mut reg);
        let _ = m.add(new_job(dir.path(), "a", 1), &mut reg);
        let _ = m.recover_or_fail("a", "crash 1".into(), &mut reg);
        assert_eq!(m.job("a").unwrap().state, pb::JobState::Running, "re-formed on the same, freed worker");
        let _ = m.recover_or_fail("a", "crash 2".into(), &mut reg);
        let job = m.job("a").unwrap();
        assert_eq!(job.state, pb::JobState::Failed);
        assert!(job.error.contains("crash 2; gave up after 1 restart(s)"), "{}", job.error);
    }

    #[test]
    fn the_watchdog_reforms_a_generation_that_stopped_moving() {
        let config = CoordinatorConfig { progress_timeout: Duration::ZERO, ..Default::default() };
        let (mut m, mut reg, dir) = manager(config);
        let (_w0, _r0) = worker(&mut reg);
        let _ = m.add(new_job(dir.path(), "a", 1), &mut reg);
        std::thread::sleep(Duration::from_millis(2));
        let fx = m.watchdog(&mut reg);
        assert!(fx.0.iter().any(|e| matches!(e, Effect::DiscardStage { generation: 1, .. })));
        let job = m.job("a").unwrap();
        assert_eq!(job.restarts, 1);
        assert!(job.last_fault.contains("no training progress"), "{}", job.last_fault);

        let config = CoordinatorConfig { progress_timeout: Duration::from_secs(3600), ..Default::default() };
        let (mut m, mut reg, dir) = manager(config);
        let (_w0, _r0) = worker(&mut reg);
        let _ = m.add(new_job(dir.path(), "a", 1), &mut reg);
        assert!(m.watchdog(&mut reg).is_empty());
    }

    #[test]
    fn an_out_directory_is_claimed_once() {
        let (mut m, mut reg, dir) = manager(CoordinatorConfig::default());
        let out = dir.path().join("a");
        m.claim_out(&out).unwrap();
        assert!(m.claim_out(&out).unwrap_err().to_string().contains("another submit"));
        let _ = m.add(new_job(dir.path(), "a", 1), &mut reg);
        assert!(m.claim_out(&out).unwrap_err().to_string().contains("already writing there"));
        let _ = m.cancel("a", &mut reg).unwrap();
        m.claim_out(&out).expect("free once the job ended");
    }

    #[test]
    fn jobs_list_in_pages() {
        let (mut m, mut reg, dir) = manager(CoordinatorConfig::default());
        for i in 0..5 {
            let _ = m.add(new_job(dir.path(), &format!("j{i}"), 1), &mut reg);
        }
        let (page, next) = m.list(2, "").unwrap();
        assert_eq!(page.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["j0", "j1"]);
        let (page, next) = m.list(2, &next).unwrap();
        assert_eq!(page.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["j2", "j3"]);
        let (page, next) = m.list(2, &next).unwrap();
        assert_eq!((page.len(), next.as_str()), (1, ""));
        assert_eq!(m.list(0, "").unwrap().0.len(), 5);
        assert!(m.list(2, "nonsense").is_err());
        assert!(m.list(2, "99").unwrap().0.is_empty());
    }
}
