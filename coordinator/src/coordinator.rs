//! The coordinator: the one object the gRPC services, `carto run` and tests
//! share. It owns the state (the [`WorkerRegistry`] and the [`JobManager`])
//! behind one lock and the [`Executor`] that carries out what each state
//! transition returns, after the lock is released.
//!
//! Where things happen: a shard is assigned in [`crate::placement`] (policy)
//! and [`JobManager`] (assignments); a batch is merged in
//! [`crate::aggregator`]; `job.json` is [`crate::record`].
//!
//! Locking: the state lock is never held across an `.await` or file I/O
//! (see [`crate::locking`]). Each running job's aggregator has its own lock,
//! taken after the state lock is released, never the other way round.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use carto_common::dataset;
use carto_common::proto::v1 as pb;
use carto_common::spec::JobSpec;
use carto_common::{CartoError, Result};
use tokio::sync::watch;
use tracing::{info, info_span, warn};

use crate::aggregator::{Aggregator, Committed};
use crate::effects::{Effects, Executor, Pending};
use crate::jobs::{Claim, Job, JobManager, NewJob};
use crate::locking::{lock, StateGuard};
use crate::outputs::{self, SampleInfo};
use crate::registry::{short_id, ControlReceiver, WorkerRegistry};
use crate::roots::Roots;

pub use crate::config::CoordinatorConfig;
pub use crate::jobs::state_name;

struct State {
    registry: WorkerRegistry,
    jobs: JobManager,
}

/// The coordinator: shared by the gRPC services, `carto run` and tests.
pub struct Coordinator {
    config: CoordinatorConfig,
    state: Mutex<State>,
    effects: Executor,
    /// Submits loading their dataset now, and waiting to.
    loading: tokio::sync::Semaphore,
    submits_in_flight: AtomicUsize,
    /// Held for the process's life: one `carto serve` per `--state-dir`.
    state_dir_lock: Mutex<Option<File>>,
    /// Where submitted jobs may read and write (`--data-root`, `--out-root`).
    roots: Roots,
    /// Data maps built for GetDataMap.
    maps: crate::live::MapCache,
}

/// Releases a submit's claim on its output directory unless the job took it.
struct OutClaim<'a> {
    coord: &'a Coordinator,
    out: PathBuf,
    armed: bool,
}

impl Drop for OutClaim<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.coord.transition(|jobs, _| {
                jobs.release_out(&self.out);
                Effects::default()
            });
        }
    }
}

/// Counts a submit in flight for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Coordinator {
    pub fn new(config: CoordinatorConfig) -> Arc<Self> {
        Arc::new(Coordinator {
            state: Mutex::new(State { registry: WorkerRegistry::default(), jobs: JobManager::new(config.clone()) }),
            loading: tokio::sync::Semaphore::new(config.limits.max_concurrent_submits.max(1)),
            submits_in_flight: AtomicUsize::new(0),
            effects: Executor::new(),
            state_dir_lock: Mutex::new(None),
            roots: Roots::from_config(&config),
            maps: Default::default(),
            config,
        })
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// Submits being prepared now (loading their dataset, or waiting to).
    pub fn submits_in_flight(&self) -> usize {
        self.submits_in_flight.load(Ordering::SeqCst)
    }

    /// Runs one state transition under the lock and queues its effects
    /// (in transition order) for the executor; they run after the lock is released.
    fn transition<R>(&self, f: impl FnOnce(&mut JobManager, &mut WorkerRegistry) -> R) -> (R::Out, Pending)
    where
        R: Transition,
    {
        let mut st = StateGuard::acquire(&self.state);
        let st = &mut *st;
        let (out, effects) = f(&mut st.jobs, &mut st.registry).split();
        let pending = self.effects.submit(effects);
        (out, pending)
    }

    /// Reads the state (no effects).
    fn read<R>(&self, f: impl FnOnce(&JobManager, &WorkerRegistry) -> R) -> R {
        let st = StateGuard::acquire(&self.state);
        f(&st.jobs, &st.registry)
    }

    // ---------------------------------------------------------------- jobs

    /// Validates `spec` and its dataset, prepares the output directory, and
    /// queues the job. Bad input fails here, before anything is written.
    pub async fn submit(self: &Arc<Self>, spec: JobSpec, overwrite: bool) -> Result<pb::Job> {
        spec.validate()?;
        let spec = self.confine(spec.with_defaults())?;
        let out = PathBuf::from(spec.out.clone().expect("validated"));
        self.transition(|jobs, _| jobs.claim_out(&out).map(|()| ((), Effects::default()))).0?;
        let mut claim = OutClaim { coord: self, out: out.clone(), armed: true };
        let limits = &self.config.limits;
        let in_flight = self.submits_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let _in_flight = InFlight(&self.submits_in_flight);
        if in_flight > limits.max_concurrent_submits + limits.max_pending_submits {
            return Err(CartoError::ResourceExhausted(format!(
                "{} submits are already being prepared: try again shortly",
                in_flight - 1
            )));
        }
        let active = self.read(|jobs, _| jobs.active());
        if active >= limits.max_active_jobs {
            return Err(CartoError::ResourceExhausted(format!(
                "{active} jobs are queued or running, the most this coordinator takes: wait for some to end"
            )));
        }

        let _permit = self.loading.acquire().await.map_err(|_| CartoError::internal("shutting down"))?;
        let external = spec.is_external().then(|| external_samples(&spec));
        // An external job's `data` is only named (for `carto select` and the
        // report's texts): its rows bring the labels.
        let external_data = spec.data.clone().filter(|d| !d.is_empty() && spec.is_external());
        let ds_spec = if external.is_none() { Some(spec.dataset_spec()?) } else { None };
        let eval_spec = spec.eval_dataset_spec()?;
        let out_dir = out.clone();
        let (info, num_classes, dataset_path) = tokio::task::spawn_blocking(move || -> Result<_> {
            let Some(ds_spec) = ds_spec else {
                outputs::prepare_out_dir(&out_dir, overwrite)?;
                let (info, k) = external.expect("an external job");
                let path = match external_data {
                    Some(d) => std::fs::canonicalize(&d)
                        .map_err(|e| CartoError::invalid(format!("data {d}: {e}")))?
                        .display()
                        .to_string(),
                    None => String::new(),
                };
                return Ok((info, k, path));
            };
            let ds = dataset::load(&ds_spec)?;
            if let Some(e) = eval_spec {
                check_held_out(&ds, &dataset::load(&e)?)?;
            }
            let path = std::fs::canonicalize(&ds.path).unwrap_or(ds.path.clone());
            outputs::prepare_out_dir(&out_dir, overwrite)?;
            let info = SampleInfo { labels: ds.labels, label_names: ds.label_names, ids: ds.ids };
            Ok((info, ds.num_classes, path.display().to_string()))
        })
        .await
        .map_err(|e| CartoError::internal(format!("loading the dataset: {e}")))??;

        let id = short_id("job");
        let dir = match &self.config.state_dir {
            Some(state) => state.join("jobs").join(&id),
            None => out.join(".carto"),
        };
        let num_classes = if spec.is_external() { spec.num_classes.unwrap_or(0) } else { num_classes as u32 };
        let job = Job::new(NewJob { id: id.clone(), spec, out, dir, info, num_classes, dataset_path });
        let (snapshot, pending) = self.transition(|jobs, reg| {
            let fx = jobs.add(job, reg);
            (jobs.get(&id), fx)
        });
        claim.armed = false;
        pending.done().await;
        snapshot
    }

    /// The spec with its paths resolved inside the data and output roots
    /// (symlinks followed); a path outside them is PERMISSION_DENIED.
    fn confine(&self, mut spec: JobSpec) -> Result<JobSpec> {
        let data = |field: &str, p: &Option<String>| -> Result<Option<String>> {
            p.as_deref().map(|p| self.roots.data_path(field, p).map(|p| p.display().to_string())).transpose()
        };
        spec.data = data("data", &spec.data)?;
        spec.eval_data = data("eval_data", &spec.eval_data)?;
        spec.pretrained = data("pretrained", &spec.pretrained)?;
        if let Some(out) = &spec.out {
            spec.out = Some(self.roots.out_path(out)?.display().to_string());
        }
        Ok(spec)
    }

    /// Resumes the jobs recorded in the state directory (a restarted
    /// `carto serve`): finished ones are listed again; unfinished ones are
    /// rebuilt from their committed epochs and wait for workers, to go on
    /// from their last checkpoint. A record that cannot be read, or a job
    /// that cannot be rebuilt, is marked failed with the reason; the others
    /// resume. Takes the state directory's lock first: a second coordinator
    /// on the same directory is refused. Returns the number of jobs resumed.
    pub fn restore(self: &Arc<Self>) -> Result<usize> {
        let Some(state) = self.config.state_dir.clone() else { return Ok(0) };
        self.lock_state_dir(&state)?;
        let mut resumed = 0;
        let mut done = Vec::new();
        for stored in crate::recovery::stored_jobs(&state)? {
            let mut job = match stored.record {
                Ok(rec) => Job::from_record(&rec, stored.dir.clone()),
                Err(reason) => crate::recovery::unreadable(&stored.dir, &reason),
            };
            if !job.is_terminal() {
                match crate::recovery::rebuild(&mut job) {
                    Ok(()) => resumed += 1,
                    Err(e) => {
                        job.state = pb::JobState::Failed;
                        job.error = format!("could not resume after a coordinator restart: {e}");
                        job.finished_ms = crate::jobs::now_ms();
                        warn!(job = %job.id, "{}", job.error);
                    }
                }
            }
            let finished = job.aggregator.is_some() && job.committed >= job.spec.epochs_total();
            let id = job.id.clone();
            let ((), _) = self.transition(|jobs, _| ((), jobs.add_restored(job)));
            if finished {
                done.push(id);
            }
        }
        for id in done {
            // Every epoch was committed before the crash: only the outputs are left.
            self.finish(&id, u64::MAX)?;
        }
        let ((), _) = self.transition(|jobs, reg| ((), jobs.place(reg)));
        Ok(resumed)
    }

    /// Takes `STATE/lock` for the life of this coordinator.
    fn lock_state_dir(&self, state: &Path) -> Result<()> {
        std::fs::create_dir_all(state).map_err(|e| CartoError::io(state, e))?;
        let path = state.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| CartoError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(CartoError::FailedPrecondition(format!(
                    "--state-dir {}: another carto serve is using it (it holds {})",
                    state.display(),
                    path.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(CartoError::io(&path, e)),
        }
        *lock(&self.state_dir_lock) = Some(file);
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<pb::Job> {
        self.read(|jobs, _| jobs.get(id))
    }

    /// Every job, in submission order.
    pub fn list(&self) -> Vec<pb::Job> {
        let mut all = Vec::new();
        let mut token = String::new();
        while let Ok((page, next)) = self.list_page(crate::jobs::MAX_PAGE as u32, &token) {
            all.extend(page);
            if next.is_empty() {
                break;
            }
            token = next;
        }
        all
    }

    /// One page of jobs and the next page's token (empty on the last page).
    pub fn list_page(&self, page_size: u32, token: &str) -> Result<(Vec<pb::Job>, String)> {
        self.read(|jobs, _| jobs.list(page_size, token))
    }

    /// A receiver of the job's snapshots, starting with the current one.
    pub fn watch(&self, id: &str) -> Result<watch::Receiver<pb::Job>> {
        self.read(|jobs, _| jobs.watch(id))
    }

    /// The job's data map as it stands (see [`crate::live`]).
    pub async fn data_map(self: &Arc<Self>, id: &str, with_texts: bool) -> Result<pb::DataMap> {
        let src = self.read(|jobs, _| -> Result<crate::live::Source> {
            let j = jobs.job(id)?;
            Ok(crate::live::Source {
                job_id: j.id.clone(),
                spec: j.spec.clone(),
                state: j.state,
                out: j.out.clone(),
                aggregator: j.aggregator.clone(),
                label_names: j.info.label_names.clone(),
                committed: j.committed,
            })
        })?;
        let coord = self.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || coord.maps.data_map(&src, with_texts).map_err(|e| crate::live::unavailable(&id, e)))
            .await
            .map_err(|e| CartoError::internal(format!("building the data map: {e}")))?
    }

    pub fn cancel(&self, id: &str) -> Result<pb::Job> {
        self.transition(|jobs, reg| jobs.cancel(id, reg)).0
    }

    // ------------------------------------------------------------- workers

    pub fn register(&self, req: pb::RegisterRequest) -> Result<pb::RegisterResponse> {
        let interval = self.config.heartbeat_interval;
        self.transition(|_, reg| reg.register(req, interval).map(|r| (r, Effects::default()))).0
    }

    /// Opens the worker's order stream; the worker becomes schedulable.
    pub fn open_control(&self, worker_id: &str, secret: &str) -> Result<ControlReceiver> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        self.transition(|jobs, reg| {
            reg.open_orders(worker_id, secret, tx)?;
            Ok(((), jobs.place(reg)))
        })
        .0?;
        Ok(rx)
    }

    pub fn heartbeat(&self, req: pb::HeartbeatRequest) -> Result<()> {
        self.transition(|jobs, reg| {
            let was_held_back = reg.is_held_back(&req.worker_id);
            let lease = reg.heartbeat(&req.worker_id, &req.worker_secret)?;
            let mut fx = match (lease, req.progress) {
                (Some(lease), Some(p)) => jobs.progress(&lease, p),
                _ => Effects::default(),
            };
            // Heard from after a fault: the job waiting for it re-forms now, not at the next tick.
            if was_held_back {
                fx.extend(jobs.place(reg));
            }
            Ok(((), fx))
        })
        .0
    }

    /// Closes every worker's order stream (server shutdown); with `exit`,
    /// workers are first told to exit (embedded mode: they are ours).
    pub fn close_worker_streams(&self, exit: Option<&str>) {
        let ((), _) = self.transition(|_, reg| ((), reg.close_streams(exit).into()));
    }

    /// The monitor's tick: drops workers that stopped heartbeating or closed
    /// their order stream (their jobs re-form or fail), re-forms generations
    /// past their progress deadline, and starts what can start.
    pub fn tick(&self) {
        let timeout = self.config.worker_timeout;
        let ((), _) = self.transition(|jobs, reg| {
            let lost = reg.reap(timeout);
            let mut fx = jobs.workers_lost(lost, reg);
            fx.extend(jobs.watchdog(reg));
            fx.extend(jobs.place(reg));
            ((), fx)
        });
    }

    // ------------------------------------------------------------- reports

    /// The running job's aggregator, if the caller acts for the current
    /// generation's `rank` and carries that rank's lease.
    pub fn running(&self, job_id: &str, generation: u64, rank: u32, lease: &str) -> Result<Arc<Mutex<Aggregator>>> {
        self.read(|jobs, reg| jobs.check_claim(reg, Claim { job_id, generation, rank, lease }))
    }

    /// Something broke inside the coordinator while handling a generation's
    /// report (a bug, a full disk): the generation re-forms within the restart budget.
    pub fn internal_fault(&self, job_id: &str, generation: u64, what: String) {
        let ((), _) = self.transition(|jobs, reg| {
            if !jobs.still_running(job_id, generation) {
                return ((), Effects::default());
            }
            ((), jobs.recover_or_fail(job_id, what, reg))
        });
    }

    /// A rank finished an epoch. Returns whether the rank should stop.
    pub fn epoch_done(&self, req: pb::EpochDoneRequest) -> Result<bool> {
        let agg = self.running(&req.job_id, req.generation, req.rank, &req.lease)?;
        let committed = lock(&agg).epoch_done(&req);
        let Committed { summary, last } = match committed {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(false),
            Err(e @ (CartoError::Internal(_) | CartoError::Io { .. })) => {
                self.internal_fault(&req.job_id, req.generation, format!("committing epoch {}: {e}", req.epoch));
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        {
            let _span = info_span!("job", job = %req.job_id, generation = req.generation, epoch = summary.epoch).entered();
            info!(loss = summary.loss, accuracy = summary.accuracy, samples_per_sec = summary.samples_per_sec, "epoch committed");
        }
        let ((), _) = self.transition(|jobs, _| ((), jobs.epoch_committed(&req.job_id, req.generation, summary)));
        if last {
            self.finish(&req.job_id, req.generation)?;
            return Ok(true);
        }
        self.read(|jobs, _| jobs.job(&req.job_id).map(Job::is_terminal))
    }

    /// After the last epoch: writes the metrics (a failure there fails the
    /// job), then the data map and the report (failures there are warnings),
    /// and ends the job. `generation` guards against a job re-formed meanwhile
    /// (`u64::MAX`: any).
    fn finish(&self, job_id: &str, generation: u64) -> Result<()> {
        let (agg, out, spec) = self.read(|jobs, _| jobs.finishing(job_id))?;
        let written = if spec.record_dynamics() {
            let summaries = self.read(|jobs, _| jobs.job(job_id).map(|j| j.epochs.clone()))?;
            let written = (|| {
                let agg = lock(&agg);
                let errors = agg.label_errors(&spec, &summaries)?;
                let path = agg.write_metrics_with(Some(&errors))?;
                let ((), _) = self.transition(|jobs, _| {
                    jobs.set_label_errors(job_id, errors.record);
                    ((), Effects::default())
                });
                Ok::<_, CartoError>(path)
            })()
            .map(Some);
            if written.is_ok() {
                let problems = crate::reports::write_job_reports(&out, &spec, crate::reports::job_texts(&spec));
                for p in &problems {
                    warn!(job = %job_id, "{p}");
                }
                let ((), _) = self.transition(|jobs, _| {
                    jobs.set_warnings(job_id, problems);
                    ((), Effects::default())
                });
            }
            written
        } else {
            // Benchmarks of the recording's cost: nothing was recorded, nothing to write.
            Ok(None)
        };
        let (result, _) = self.transition(|jobs, reg| {
            if !jobs.still_running(job_id, generation) {
                return (Ok(()), Effects::default());
            }
            match written {
                Ok(path) => {
                    if let Some(path) = path {
                        info!(job = %job_id, metrics = %path.display(), "metrics written");
                    }
                    (Ok(()), jobs.end(job_id, pb::JobState::Succeeded, String::new(), reg))
                }
                Err(e) => {
                    let fx = jobs.end(job_id, pb::JobState::Failed, format!("writing metrics: {e}"), reg);
                    (Err(e), fx)
                }
            }
        });
        result
    }

    /// A rank of an external job's training loop joins it; the answer waits
    /// for the job's stage to be open.
    pub async fn join_external(&self, req: pb::JoinExternalRequest) -> Result<pb::Assignment> {
        let (a, pending) = self.transition(|jobs, reg| {
            reg.authenticate(&req.worker_id, &req.worker_secret)?;
            jobs.join_external(&req.job_id, req.rank, req.world_size, &req.worker_id, reg)
        });
        let a = a?;
        pending.done().await;
        Ok(a)
    }

    /// For an external job: waits until `epoch` is committed (returns
    /// false) or the job ended (true). Other jobs return at once.
    pub async fn wait_external_commit(&self, job_id: &str, epoch: u32) -> Result<bool> {
        let external = self.read(|jobs, _| jobs.job(job_id).map(|j| j.spec.is_external()))?;
        if !external {
            return Ok(false);
        }
        let mut watch = self.watch(job_id)?;
        let terminal = |j: &pb::Job| {
            matches!(pb::JobState::try_from(j.state), Ok(pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Cancelled))
        };
        let job = watch
            .wait_for(|j| terminal(j) || j.epochs.len() > epoch as usize)
            .await
            .map_err(|_| CartoError::internal("the job's watchers were closed"))?;
        Ok(terminal(&job))
    }

    /// An external rank is done; once every rank is, the outputs are
    /// written. Returns the job when it has ended.
    pub async fn finish_external(self: &Arc<Self>, req: pb::FinishExternalRequest) -> Result<pb::Job> {
        let claim = Claim { job_id: &req.job_id, generation: req.generation, rank: req.rank, lease: &req.lease };
        let mut watch = self.watch(&req.job_id)?;
        let (last, _) = self.transition(|jobs, reg| jobs.finish_external(reg, claim).map(|b| (b, Effects::default())));
        if last? {
            let (coord, id, generation) = (self.clone(), req.job_id.clone(), req.generation);
            tokio::task::spawn_blocking(move || coord.finish(&id, generation))
                .await
                .map_err(|e| CartoError::internal(format!("finishing the job: {e}")))??;
        }
        let job = watch
            .wait_for(|j| matches!(pb::JobState::try_from(j.state), Ok(pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Cancelled)))
            .await
            .map_err(|_| CartoError::internal("the job's watchers were closed"))?
            .clone();
        Ok(job)
    }

    /// A rank could not go on (see [`JobManager::report_failure`]).
    pub fn report_failure(&self, req: pb::ReportFailureRequest) -> Result<()> {
        self.transition(|jobs, reg| jobs.report_failure(req, reg).map(|fx| ((), fx))).0
    }
}

/// What a transition closure returns: a value and the effects to carry out.
pub trait Transition {
    type Out;
    fn split(self) -> (Self::Out, Effects);
}

impl<T> Transition for (T, Effects) {
    type Out = T;
    fn split(self) -> (T, Effects) {
        self
    }
}

impl Transition for Effects {
    type Out = ();
    fn split(self) -> ((), Effects) {
        ((), self)
    }
}

impl<T> Transition for Result<(T, Effects)> {
    type Out = Result<T>;
    fn split(self) -> (Result<T>, Effects) {
        match self {
            Ok((t, fx)) => (Ok(t), fx),
            Err(e) => (Err(e), Effects::default()),
        }
    }
}

/// An external job's samples before any row arrives: unknown labels (-1),
/// the class names it was given; and its number of classes.
fn external_samples(spec: &JobSpec) -> (SampleInfo, usize) {
    let n = spec.num_samples.unwrap_or(0) as usize;
    let names = (!spec.label_names.is_empty()).then(|| spec.label_names.clone());
    (SampleInfo { labels: vec![-1; n], label_names: names, ids: None }, spec.num_classes.unwrap_or(0) as usize)
}

/// A held-out set must speak the training set's classes and features.
fn check_held_out(train: &dataset::Dataset, eval: &dataset::Dataset) -> Result<()> {
    let file = eval.path.display();
    match (&train.label_names, &eval.label_names) {
        (Some(t), Some(e)) => {
            if let Some(name) = e.iter().find(|n| !t.contains(n)) {
                return Err(CartoError::invalid(format!("{file}: label '{name}' does not occur in the training data")));
            }
        }
        (None, None) => {
            if eval.num_classes > train.num_classes {
                return Err(CartoError::invalid(format!(
                    "{file}: label {} is not one of the training data's {} classes",
                    eval.num_classes - 1,
                    train.num_classes
                )));
            }
        }
        _ => return Err(CartoError::invalid(format!("{file}: labels are not of the training data's kind (strings vs integers)"))),
    }
    match (&train.features, &eval.features) {
        (dataset::Features::Dense { dim: a, .. }, dataset::Features::Dense { dim: b, .. }) if a != b => {
            Err(CartoError::invalid(format!("{file}: {b} features per row, the training data has {a}")))
        }
        _ => Ok(()),
    }
}

/// Runs [`Coordinator::tick`] every heartbeat interval.
pub fn spawn_monitor(coord: Arc<Coordinator>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(coord.config.heartbeat_interval);
        loop {
            tick.tick().await;
            coord.tick();
        }
    })
}
