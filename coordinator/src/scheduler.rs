//! The coordinator's state: registered workers, the job queue, and each job's
//! lifecycle. Where a shard is assigned: [`Coordinator::schedule`] picks idle
//! workers for the oldest runnable job, gives them ranks and sends each its
//! [`pb::Assignment`] (the shard plan every rank derives its samples from).
//!
//! Locking: one `std::sync::Mutex` over the state, never held across an
//! `.await` or file I/O; each running job's [`Aggregator`] has its own mutex.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use carto_common::dataset;
use carto_common::proto::v1 as pb;
use carto_common::proto::{MAX_CHUNK_BYTES, PROTOCOL_VERSION};
use carto_common::spec::JobSpec;
use carto_common::{CartoError, Result};
use tokio::sync::{mpsc, watch};
use tonic::Status;
use tracing::{info, info_span, warn};

use crate::aggregator::{Aggregator, Committed};
use crate::outputs::{self, SampleInfo};

pub type ControlSender = mpsc::Sender<std::result::Result<pb::Order, Status>>;

pub use crate::config::CoordinatorConfig;

struct Worker {
    id: String,
    hostname: String,
    devices: Vec<String>,
    advertise_host: String,
    rendezvous_port: u32,
    last_seen: Instant,
    control: Option<ControlSender>,
    /// (job, rank) while assigned.
    job: Option<(String, u32)>,
}

impl Worker {
    fn has_cuda(&self) -> bool {
        self.devices.iter().any(|d| d.starts_with("cuda"))
    }
}

struct Job {
    id: String,
    spec: JobSpec,
    state: pb::JobState,
    out: PathBuf,
    created_ms: i64,
    started_ms: i64,
    finished_ms: i64,
    generation: u64,
    ranks: Vec<String>,
    epochs: Vec<pb::EpochSummary>,
    rank_progress: Vec<Option<pb::WorkerProgress>>,
    error: String,
    /// Outputs beyond the metrics that could not be written (data map, report).
    warnings: Vec<String>,
    info: Arc<SampleInfo>,
    num_samples: u64,
    num_classes: u32,
    dataset_path: String,
    aggregator: Option<Arc<Mutex<Aggregator>>>,
    watch: watch::Sender<pb::Job>,
    /// Re-formations after a lost rank so far.
    restarts: u32,
    /// Set while a job waits to be re-formed.
    recovering_since: Option<Instant>,
    /// Why the job last had to be re-formed (shown while it recovers).
    last_fault: String,
    /// This job's record and checkpoints.
    dir: PathBuf,
}

impl Job {
    fn is_terminal(&self) -> bool {
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

    fn snapshot(&self) -> pb::Job {
        pb::Job {
            id: self.id.clone(),
            spec: Some(self.spec.clone().into()),
            state: self.state as i32,
            epochs_total: self.spec.epochs(),
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

    fn notify(&self) {
        self.watch.send_replace(self.snapshot());
    }

    /// `job.json`: the spec, per-epoch loss/accuracy/throughput and timings.
    fn record(&self) -> serde_json::Value {
        let state = state_name(self.state);
        let run_seconds = if self.started_ms > 0 {
            let end = if self.finished_ms > 0 { self.finished_ms } else { now_ms() };
            (end - self.started_ms) as f64 / 1000.0
        } else {
            0.0
        };
        let epochs: Vec<serde_json::Value> = self
            .epochs
            .iter()
            .map(|e| {
                serde_json::json!({
                    "epoch": e.epoch,
                    "samples": e.samples,
                    "loss": e.loss,
                    "accuracy": e.accuracy,
                    "samples_per_sec": e.samples_per_sec,
                    "train_seconds": e.train_seconds,
                    "wall_seconds": e.wall_seconds,
                    "eval_loss": e.eval_loss,
                    "eval_accuracy": e.eval_accuracy,
                })
            })
            .collect();
        let total_train: f64 = self.epochs.iter().map(|e| e.train_seconds).sum();
        serde_json::json!({
            "carto_version": env!("CARGO_PKG_VERSION"),
            "id": self.id,
            "name": self.spec.name,
            "state": state,
            "error": if self.error.is_empty() { serde_json::Value::Null } else { self.error.clone().into() },
            "warnings": self.warnings,
            "spec": self.spec,
            "restarts": self.restarts,
            "faults": if self.last_fault.is_empty() { serde_json::Value::Null } else { self.last_fault.clone().into() },
            "created_unix_ms": self.created_ms,
            "dataset": {
                "path": self.dataset_path,
                "rows": self.num_samples,
                "classes": self.num_classes,
                "label_names": self.info.label_names,
            },
            "world_size": self.spec.workers(),
            "generation": self.generation,
            "workers": self.ranks,
            "epochs": epochs,
            "timings": {
                "created_unix_ms": self.created_ms,
                "started_unix_ms": self.started_ms,
                "finished_unix_ms": self.finished_ms,
                "queued_seconds": if self.started_ms > 0 { (self.started_ms - self.created_ms) as f64 / 1000.0 } else { 0.0 },
                "run_seconds": run_seconds,
                "train_seconds": total_train,
            },
            "outputs": {
                "metrics": outputs::METRICS_FILE,
                "dynamics": outputs::DYNAMICS_DIR,
                "datamap": [crate::reports::DATAMAP_PNG, crate::reports::DATAMAP_SVG],
                "suspects": crate::reports::SUSPECTS_CSV,
            },
        })
    }

    /// Writes `OUT/job.json` and the same record in the job's state
    /// directory, from which a restarted coordinator resumes.
    fn write_record(&self) {
        let text = serde_json::to_string_pretty(&self.record()).expect("job record serialises") + "\n";
        let _ = std::fs::create_dir_all(&self.dir);
        for path in [self.out.join(outputs::JOB_FILE), self.dir.join(outputs::JOB_FILE)] {
            if let Err(e) = outputs::write_text_atomic(&path, &text) {
                warn!(job = %self.id, "writing {}: {e}", path.display());
            }
        }
    }

    fn checkpoint_dir(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }
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

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn short_id(prefix: &str) -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &u[..10])
}

#[derive(Default)]
struct State {
    workers: BTreeMap<String, Worker>,
    /// Jobs in submission order.
    jobs: Vec<Job>,
}

impl State {
    fn job(&self, id: &str) -> Result<&Job> {
        self.jobs.iter().find(|j| j.id == id).ok_or_else(|| CartoError::NotFound(format!("no job '{id}'")))
    }
    fn job_mut(&mut self, id: &str) -> Result<&mut Job> {
        self.jobs.iter_mut().find(|j| j.id == id).ok_or_else(|| CartoError::NotFound(format!("no job '{id}'")))
    }
}

/// The coordinator: shared by the gRPC services, `carto run` and tests.
pub struct Coordinator {
    config: CoordinatorConfig,
    state: Mutex<State>,
}

/// A job's running aggregator, checked against the caller's generation and rank.
pub struct JobHandle {
    pub aggregator: Arc<Mutex<Aggregator>>,
}

impl Coordinator {
    pub fn new(config: CoordinatorConfig) -> Arc<Self> {
        Arc::new(Coordinator { config, state: Mutex::new(State::default()) })
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    // ---------------------------------------------------------------- jobs

    /// Validates `spec` and its dataset, prepares the output directory, and
    /// queues the job. Bad input fails here, before anything is written.
    pub async fn submit(self: &Arc<Self>, spec: JobSpec, overwrite: bool) -> Result<pb::Job> {
        spec.validate()?;
        let spec = spec.with_defaults();
        let ds_spec = spec.dataset_spec()?;
        let eval_spec = spec.eval_dataset_spec()?;
        let (info, num_classes, dataset_path) = tokio::task::spawn_blocking(move || -> Result<_> {
            let ds = dataset::load(&ds_spec)?;
            if let Some(e) = eval_spec {
                check_held_out(&ds, &dataset::load(&e)?)?;
            }
            let path = std::fs::canonicalize(&ds.path).unwrap_or(ds.path.clone());
            let info = SampleInfo { labels: ds.labels, label_names: ds.label_names, ids: ds.ids };
            Ok((info, ds.num_classes, path.display().to_string()))
        })
        .await
        .map_err(|e| CartoError::internal(format!("loading the dataset: {e}")))??;
        let out = PathBuf::from(spec.out.clone().expect("validated"));
        {
            let st = self.state.lock().unwrap();
            if let Some(other) = st.jobs.iter().find(|j| !j.is_terminal() && j.out == out) {
                return Err(CartoError::invalid(format!(
                    "out {}: job {} is already writing there",
                    out.display(),
                    other.id
                )));
            }
        }
        outputs::prepare_out_dir(&out, overwrite)?;

        let id = short_id("job");
        let (watch, _) = watch::channel(pb::Job::default());
        let dir = match &self.config.state_dir {
            Some(state) => state.join("jobs").join(&id),
            None => out.join(".carto"),
        };
        let job = Job {
            id: id.clone(),
            spec,
            state: pb::JobState::Queued,
            dir,
            restarts: 0,
            recovering_since: None,
            last_fault: String::new(),
            num_samples: info.len() as u64,
            out,
            created_ms: now_ms(),
            started_ms: 0,
            finished_ms: 0,
            generation: 0,
            ranks: vec![],
            epochs: vec![],
            rank_progress: vec![],
            error: String::new(),
            warnings: vec![],
            info: Arc::new(info),
            num_classes: num_classes as u32,
            dataset_path,
            aggregator: None,
            watch,
        };
        job.write_record();
        job.notify();
        info!(job = %id, rows = job.num_samples, classes = num_classes, "job queued");
        let mut st = self.state.lock().unwrap();
        st.jobs.push(job);
        self.schedule(&mut st);
        Ok(st.job(&id)?.snapshot())
    }

    /// Resumes the jobs recorded in the state directory (a restarted
    /// `carto serve`): finished ones are listed again; unfinished ones are
    /// rebuilt from their committed epochs and wait for workers, to go on
    /// from their last checkpoint. Returns the number of jobs resumed.
    pub fn restore(self: &Arc<Self>) -> Result<usize> {
        let Some(state) = self.config.state_dir.clone() else { return Ok(0) };
        let mut resumed = 0;
        for stored in crate::recovery::stored_jobs(&state)? {
            let rec = &stored.record;
            let id = rec["id"].as_str().unwrap_or_default().to_string();
            let mut spec: JobSpec = serde_json::from_value(rec["spec"].clone())
                .map_err(|e| CartoError::internal(format!("{}: spec: {e}", stored.dir.display())))?;
            let dataset_path = rec["dataset"]["path"].as_str().unwrap_or_default().to_string();
            spec.data = Some(dataset_path.clone());
            let state_name = rec["state"].as_str().unwrap_or_default();
            let (watch, _) = watch::channel(pb::Job::default());
            let mut job = Job {
                id: id.clone(),
                out: PathBuf::from(spec.out.clone().unwrap_or_default()),
                spec,
                state: match state_name {
                    "succeeded" => pb::JobState::Succeeded,
                    "failed" => pb::JobState::Failed,
                    "cancelled" => pb::JobState::Cancelled,
                    _ => pb::JobState::Queued,
                },
                created_ms: rec["created_unix_ms"].as_i64().unwrap_or(0),
                started_ms: rec["timings"]["started_unix_ms"].as_i64().unwrap_or(0),
                finished_ms: rec["timings"]["finished_unix_ms"].as_i64().unwrap_or(0),
                generation: rec["generation"].as_u64().unwrap_or(0),
                ranks: vec![],
                epochs: rec["epochs"].as_array().map(|a| a.iter().map(crate::recovery::summary_from_record).collect()).unwrap_or_default(),
                rank_progress: vec![],
                error: rec["error"].as_str().unwrap_or_default().to_string(),
                warnings: vec![],
                info: Arc::new(SampleInfo { labels: vec![], label_names: None, ids: None }),
                num_samples: rec["dataset"]["rows"].as_u64().unwrap_or(0),
                num_classes: rec["dataset"]["classes"].as_u64().unwrap_or(0) as u32,
                dataset_path,
                aggregator: None,
                watch,
                restarts: rec["restarts"].as_u64().unwrap_or(0) as u32,
                recovering_since: None,
                last_fault: String::new(),
                dir: stored.dir.clone(),
            };
            if !job.is_terminal() {
                if let Err(e) = self.rebuild(&mut job) {
                    job.state = pb::JobState::Failed;
                    job.error = format!("could not resume after a coordinator restart: {e}");
                    job.finished_ms = now_ms();
                    warn!(job = %id, "{}", job.error);
                } else {
                    resumed += 1;
                }
            }
            job.write_record();
            job.notify();
            let finished = job.aggregator.as_ref().is_some_and(|a| a.lock().unwrap().committed() >= job.spec.epochs());
            self.state.lock().unwrap().jobs.push(job);
            if finished {
                // Every epoch was committed before the crash: only the outputs are left.
                self.finish(&id, u64::MAX)?;
            }
        }
        let mut st = self.state.lock().unwrap();
        self.schedule(&mut st);
        Ok(resumed)
    }

    /// Reloads an unfinished job's dataset and committed epochs.
    fn rebuild(&self, job: &mut Job) -> Result<()> {
        let ds = dataset::load(&job.spec.dataset_spec()?)?;
        let info = SampleInfo { labels: ds.labels, label_names: ds.label_names, ids: ds.ids };
        let (acc, committed) = crate::recovery::committed_dynamics(&job.out, &info.labels)?;
        if committed > 0 && !crate::recovery::checkpoint_path(&job.checkpoint_dir(), committed - 1).exists() {
            return Err(CartoError::internal(format!(
                "the checkpoint of epoch {} is missing from {}",
                committed - 1,
                job.checkpoint_dir().display()
            )));
        }
        job.epochs.truncate(committed as usize);
        for epoch in job.epochs.len() as u32..committed {
            job.epochs.push(crate::recovery::epoch_summary(&job.out, epoch)?);
        }
        job.num_samples = info.labels.len() as u64;
        job.info = Arc::new(info);
        let mut agg = Aggregator::new(
            &job.out,
            job.info.clone(),
            job.num_classes as usize,
            job.spec.seed(),
            job.spec.workers(),
            job.spec.epochs(),
            job.spec.record_dynamics(),
        );
        agg.restore(acc, committed)?;
        job.aggregator = Some(Arc::new(Mutex::new(agg)));
        job.state = pb::JobState::Queued;
        job.recovering_since = Some(Instant::now());
        job.last_fault = "the coordinator restarted".into();
        info!(job = %job.id, committed, "job resumes after a coordinator restart");
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<pb::Job> {
        Ok(self.state.lock().unwrap().job(id)?.snapshot())
    }

    pub fn list(&self) -> Vec<pb::Job> {
        self.state.lock().unwrap().jobs.iter().map(Job::snapshot).collect()
    }

    /// A receiver of the job's snapshots, starting with the current one.
    pub fn watch(&self, id: &str) -> Result<watch::Receiver<pb::Job>> {
        let st = self.state.lock().unwrap();
        let job = st.job(id)?;
        job.notify();
        Ok(job.watch.subscribe())
    }

    pub fn cancel(&self, id: &str) -> Result<pb::Job> {
        let mut st = self.state.lock().unwrap();
        let job = st.job(id)?;
        if job.is_terminal() {
            return Err(CartoError::FailedPrecondition(format!(
                "job {id} already {}",
                state_name(job.state)
            )));
        }
        self.end_job(&mut st, id, pb::JobState::Cancelled, "cancelled by the user".into());
        Ok(st.job(id)?.snapshot())
    }

    /// Ends a job in a terminal state: aborts its ranks, frees its workers,
    /// discards an unfinished epoch, records the outcome.
    fn end_job(&self, st: &mut State, id: &str, state: pb::JobState, error: String) {
        let Ok(job) = st.job_mut(id) else { return };
        if job.is_terminal() {
            return;
        }
        let was_running = job.state == pb::JobState::Running;
        job.state = state;
        job.error = if state == pb::JobState::Succeeded { String::new() } else { error.clone() };
        job.finished_ms = now_ms();
        job.recovering_since = None;
        if let Some(agg) = job.aggregator.take() {
            agg.lock().unwrap().discard_stage();
        }
        if state != pb::JobState::Failed {
            // A failed job keeps its last checkpoints for inspection.
            let _ = std::fs::remove_dir_all(job.checkpoint_dir());
        }
        let ranks = job.ranks.clone();
        let generation = job.generation;
        job.write_record();
        if self.config.state_dir.is_none() && state != pb::JobState::Failed {
            // `carto run` keeps its state in OUT/.carto only while it runs.
            let _ = std::fs::remove_dir_all(&job.dir);
        }
        job.notify();
        match state {
            pb::JobState::Succeeded => info!(job = %id, "job succeeded"),
            pb::JobState::Cancelled => info!(job = %id, %error, "job cancelled"),
            _ => warn!(job = %id, state = state_name(state), %error, "job failed"),
        }
        for wid in &ranks {
            if let Some(w) = st.workers.get_mut(wid) {
                if w.job.as_ref().is_some_and(|(j, _)| j == id) {
                    w.job = None;
                    if was_running && state != pb::JobState::Succeeded {
                        send(w, pb::order::Kind::Abort(pb::Abort {
                            job_id: id.to_string(),
                            generation,
                            reason: error.clone(),
                        }));
                    }
                }
            }
        }
        self.schedule(st);
    }

    // ------------------------------------------------------------- workers

    pub fn register(&self, req: pb::RegisterRequest) -> Result<pb::RegisterResponse> {
        if req.protocol_version != PROTOCOL_VERSION {
            return Err(CartoError::FailedPrecondition(format!(
                "worker speaks protocol {}, this coordinator {}: use the same carto version",
                req.protocol_version, PROTOCOL_VERSION
            )));
        }
        let id = short_id("w");
        info!(worker = %id, host = %req.hostname, devices = ?req.devices, "worker registered");
        self.state.lock().unwrap().workers.insert(
            id.clone(),
            Worker {
                id: id.clone(),
                advertise_host: if req.advertise_host.is_empty() { req.hostname.clone() } else { req.advertise_host },
                rendezvous_port: req.rendezvous_port,
                hostname: req.hostname,
                devices: req.devices,
                last_seen: Instant::now(),
                control: None,
                job: None,
            },
        );
        Ok(pb::RegisterResponse {
            worker_id: id,
            heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u32,
            max_chunk_bytes: MAX_CHUNK_BYTES as u32,
            worker_secret: String::new(),
        })
    }

    /// Opens the worker's order stream; the worker becomes schedulable.
    pub fn open_control(&self, worker_id: &str) -> Result<mpsc::Receiver<std::result::Result<pb::Order, Status>>> {
        let (tx, rx) = mpsc::channel(64);
        let mut st = self.state.lock().unwrap();
        let w = st
            .workers
            .get_mut(worker_id)
            .ok_or_else(|| CartoError::NotFound(format!("no worker '{worker_id}': register first")))?;
        w.control = Some(tx);
        w.last_seen = Instant::now();
        self.schedule(&mut st);
        Ok(rx)
    }

    pub fn heartbeat(&self, req: pb::HeartbeatRequest) -> Result<()> {
        let mut st = self.state.lock().unwrap();
        let w = st
            .workers
            .get_mut(&req.worker_id)
            .ok_or_else(|| CartoError::NotFound(format!("no worker '{}': register again", req.worker_id)))?;
        w.last_seen = Instant::now();
        let assigned = w.job.clone();
        if let (Some(p), Some((job_id, rank))) = (req.progress, assigned) {
            if p.job_id == job_id && p.rank == rank {
                if let Ok(job) = st.job_mut(&job_id) {
                    if p.generation == job.generation && (rank as usize) < job.rank_progress.len() {
                        job.rank_progress[rank as usize] = Some(p);
                        job.notify();
                    }
                }
            }
        }
        Ok(())
    }

    /// Closes every worker's order stream (server shutdown); with `exit`,
    /// workers are first told to exit (embedded mode: they are ours).
    pub fn close_worker_streams(&self, exit: Option<&str>) {
        let mut st = self.state.lock().unwrap();
        for w in st.workers.values_mut() {
            if let Some(reason) = exit {
                send(w, pb::order::Kind::Shutdown(pb::Shutdown { reason: reason.into() }));
            }
            w.control = None;
        }
    }

    /// Drops workers that stopped heartbeating or closed their order stream;
    /// their jobs fail (recovery comes with generations).
    pub fn reap_lost_workers(&self) {
        let mut st = self.state.lock().unwrap();
        let timeout = self.config.worker_timeout;
        let lost: Vec<(String, String, Option<(String, u32)>)> = st
            .workers
            .values()
            .filter(|w| {
                w.last_seen.elapsed() > timeout || w.control.as_ref().is_some_and(|c| c.is_closed())
            })
            .map(|w| (w.id.clone(), w.hostname.clone(), w.job.clone()))
            .collect();
        for (id, host, job) in lost {
            st.workers.remove(&id);
            if job.is_none() {
                info!(worker = %id, %host, "worker left");
            }
            if let Some((job_id, rank)) = job {
                warn!(worker = %id, %host, "worker lost");
                self.recover_or_fail(&mut st, &job_id, format!("worker {id} on {host} (rank {rank}) was lost"));
            }
        }
        // Re-forming jobs may now go on with fewer workers.
        self.schedule(&mut st);
    }

    /// A running job lost a rank: within the restart budget its generation
    /// ends (ranks aborted, the unfinished epoch's dynamics discarded) and it
    /// waits to be re-formed from its last checkpoint; past it, it fails.
    fn recover_or_fail(&self, st: &mut State, job_id: &str, fault: String) {
        let max = self.config.max_restarts;
        let Ok(job) = st.job_mut(job_id) else { return };
        if job.state != pb::JobState::Running {
            return;
        }
        if job.restarts >= max {
            let msg = format!("{fault}; gave up after {max} restart(s)");
            self.end_job(st, job_id, pb::JobState::Failed, msg);
            return;
        }
        job.restarts += 1;
        job.state = pb::JobState::Queued;
        job.recovering_since = Some(Instant::now());
        job.last_fault = fault.clone();
        if let Some(agg) = &job.aggregator {
            agg.lock().unwrap().discard_stage();
        }
        let (ranks, generation, restarts) = (std::mem::take(&mut job.ranks), job.generation, job.restarts);
        job.rank_progress.clear();
        job.write_record();
        job.notify();
        warn!(job = %job_id, generation, restarts, %fault, "re-forming the job from its last finished epoch");
        for wid in &ranks {
            if let Some(w) = st.workers.get_mut(wid) {
                if w.job.as_ref().is_some_and(|(j, _)| j == job_id) {
                    w.job = None;
                    send(w, pb::order::Kind::Abort(pb::Abort {
                        job_id: job_id.to_string(),
                        generation,
                        reason: fault.clone(),
                    }));
                }
            }
        }
        self.schedule(st);
    }

    /// Starts queued jobs on idle workers, oldest job first; a job that does
    /// not fit yet lets smaller ones behind it start.
    fn schedule(&self, st: &mut State) {
        let queued: Vec<String> =
            st.jobs.iter().filter(|j| j.state == pb::JobState::Queued).map(|j| j.id.clone()).collect();
        for job_id in queued {
            let (want, cuda, batch, waited) = {
                let j = st.job(&job_id).expect("listed");
                let waited = j.recovering_since.map(|t| t.elapsed() >= self.config.rejoin_wait);
                (j.spec.workers() as usize, j.spec.device() != "cpu", j.spec.batch_size() as usize, waited)
            };
            let mut idle: Vec<String> = st
                .workers
                .values()
                .filter(|w| w.job.is_none() && w.control.as_ref().is_some_and(|c| !c.is_closed()))
                .filter(|w| !cuda || w.has_cuda())
                .map(|w| w.id.clone())
                .take(want)
                .collect();
            if idle.len() < want {
                // A re-forming job that waited long enough goes on with the
                // workers it has, as many as split the global batch evenly.
                if waited != Some(true) {
                    continue;
                }
                let Some(world) = (1..=idle.len()).rev().find(|w| batch % w == 0) else { continue };
                idle.truncate(world);
            }
            self.start_job(st, &job_id, idle);
        }
        if self.config.shutdown_idle_workers
            && !st.jobs.is_empty()
            && st.jobs.iter().all(Job::is_terminal)
        {
            for w in st.workers.values_mut() {
                if w.job.is_none() {
                    send(w, pb::order::Kind::Shutdown(pb::Shutdown { reason: "no jobs left".into() }));
                }
            }
        }
    }

    fn start_job(&self, st: &mut State, job_id: &str, workers: Vec<String>) {
        let world = workers.len() as u32;
        // Rank 0 hosts the collectives' store, on the port it holds for that.
        let (rdv_host, rdv_port) = match st.workers.get(&workers[0]) {
            Some(w) if world > 1 => (w.advertise_host.clone(), w.rendezvous_port),
            _ => (String::new(), 0),
        };
        let job = st.job_mut(job_id).expect("scheduled job exists");
        job.generation += 1;
        job.state = pb::JobState::Running;
        if job.started_ms == 0 {
            job.started_ms = now_ms();
        }
        job.recovering_since = None;
        job.ranks = workers.clone();
        job.rank_progress = vec![None; workers.len()];
        // Later generations keep the accumulators of the committed epochs.
        let agg = job.aggregator.get_or_insert_with(|| {
            Arc::new(Mutex::new(Aggregator::new(
                &job.out,
                job.info.clone(),
                job.num_classes as usize,
                job.spec.seed(),
                world,
                job.spec.epochs(),
                job.spec.record_dynamics(),
            )))
        });
        let start_epoch = {
            let mut agg = agg.lock().unwrap();
            agg.set_world(world);
            let start = agg.committed();
            agg.begin_epoch(start, job.generation);
            start
        };
        let checkpoint_dir = job.checkpoint_dir();
        let checkpoint = if start_epoch > 0 {
            crate::recovery::checkpoint_path(&checkpoint_dir, start_epoch - 1).display().to_string()
        } else {
            String::new()
        };
        let _span = info_span!("job", job = %job_id, generation = job.generation).entered();
        info!(world, start_epoch, rendezvous = %format!("{rdv_host}:{rdv_port}"), "job started");
        let assignments: Vec<pb::Assignment> = (0..world)
            .map(|rank| pb::Assignment {
                job_id: job_id.to_string(),
                generation: job.generation,
                rank,
                world_size: world,
                rendezvous_host: rdv_host.clone(),
                rendezvous_port: rdv_port,
                spec: Some(job.spec.clone().into()),
                shard: Some(pb::ShardPlan {
                    num_samples: job.info.len() as u64,
                    seed: job.spec.seed(),
                    world_size: world,
                    rank,
                    global_batch: job.spec.batch_size(),
                }),
                start_epoch,
                checkpoint: checkpoint.clone(),
                checkpoint_dir: checkpoint_dir.display().to_string(),
                num_classes: job.num_classes,
                lease: String::new(),
            })
            .collect();
        job.write_record();
        job.notify();
        for (rank, (wid, a)) in workers.iter().zip(assignments).enumerate() {
            if let Some(w) = st.workers.get_mut(wid) {
                w.job = Some((job_id.to_string(), rank as u32));
                send(w, pb::order::Kind::Assignment(a));
            }
        }
    }

    // ------------------------------------------------------------- reports

    /// The running job's aggregator, if `generation` is current and `rank` in range.
    pub fn running(&self, job_id: &str, generation: u64, rank: u32) -> Result<JobHandle> {
        let st = self.state.lock().unwrap();
        let job = st.job(job_id)?;
        if job.state != pb::JobState::Running {
            return Err(CartoError::FailedPrecondition(format!(
                "job {job_id} is {}",
                state_name(job.state)
            )));
        }
        if generation != job.generation {
            return Err(CartoError::FailedPrecondition(format!(
                "stale generation {generation} for job {job_id} (current {})",
                job.generation
            )));
        }
        if rank as usize >= job.ranks.len() {
            return Err(CartoError::invalid(format!(
                "rank {rank} is outside job {job_id}'s world of {}",
                job.ranks.len()
            )));
        }
        let aggregator = job.aggregator.clone().ok_or_else(|| CartoError::internal("running job without aggregator"))?;
        Ok(JobHandle { aggregator })
    }

    /// A rank finished an epoch. Returns whether the rank should stop.
    pub fn epoch_done(&self, req: pb::EpochDoneRequest) -> Result<bool> {
        let handle = self.running(&req.job_id, req.generation, req.rank)?;
        let committed = handle.aggregator.lock().unwrap().epoch_done(&req);
        let committed = match committed {
            Ok(c) => c,
            Err(e @ CartoError::Internal(_)) => {
                let mut st = self.state.lock().unwrap();
                self.end_job(&mut st, &req.job_id, pb::JobState::Failed, e.to_string());
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let Some(Committed { summary, last }) = committed else { return Ok(false) };
        let _span = info_span!("job", job = %req.job_id, generation = req.generation, epoch = summary.epoch).entered();
        info!(loss = summary.loss, accuracy = summary.accuracy, samples_per_sec = summary.samples_per_sec, "epoch committed");
        if last {
            {
                let mut st = self.state.lock().unwrap();
                let job = st.job_mut(&req.job_id)?;
                if job.generation != req.generation || job.is_terminal() {
                    return Ok(true);
                }
                if job.epochs.len() == summary.epoch as usize {
                    job.epochs.push(summary);
                }
            }
            self.finish(&req.job_id, req.generation)?;
            return Ok(true);
        }
        let mut st = self.state.lock().unwrap();
        let job = st.job_mut(&req.job_id)?;
        if job.generation == req.generation && !job.is_terminal() && job.epochs.len() == summary.epoch as usize {
            job.epochs.push(summary);
            job.write_record();
            job.notify();
        }
        Ok(job.is_terminal())
    }

    /// After the last epoch: writes the metrics (a failure there fails the
    /// job), then the data map and the report (failures there are warnings),
    /// and ends the job. `generation` guards against a job re-formed meanwhile
    /// (`u64::MAX`: any).
    fn finish(&self, job_id: &str, generation: u64) -> Result<()> {
        let (agg, out, spec) = {
            let st = self.state.lock().unwrap();
            let job = st.job(job_id)?;
            let agg = job.aggregator.clone().ok_or_else(|| CartoError::internal("finishing a job without aggregator"))?;
            (agg, job.out.clone(), job.spec.clone())
        };
        if !spec.record_dynamics() {
            // Benchmarks of the recording's cost: nothing was recorded, nothing to write.
            let mut st = self.state.lock().unwrap();
            self.end_job(&mut st, job_id, pb::JobState::Succeeded, String::new());
            return Ok(());
        }
        let written = agg.lock().unwrap().write_metrics();
        // The data map and the report: useful, but a job's metrics stand without them.
        let problems = match &written {
            Ok(_) => crate::reports::write_job_reports(&out, &spec, crate::reports::job_texts(&spec)),
            Err(_) => vec![],
        };
        for p in &problems {
            warn!(job = %job_id, "{p}");
        }
        let mut st = self.state.lock().unwrap();
        let job = st.job_mut(job_id)?;
        if (generation != u64::MAX && job.generation != generation) || job.is_terminal() {
            return Ok(());
        }
        job.warnings = problems;
        match written {
            Ok(path) => {
                info!(job = %job_id, metrics = %path.display(), "metrics written");
                self.end_job(&mut st, job_id, pb::JobState::Succeeded, String::new());
                Ok(())
            }
            Err(e) => {
                self.end_job(&mut st, job_id, pb::JobState::Failed, format!("writing metrics: {e}"));
                Err(e)
            }
        }
    }

    /// A rank could not go on. Bad input (the data, the spec, a diverging
    /// loss) fails the job at once; anything else (a crash, a collective that
    /// lost its peer) re-forms it within the restart budget.
    pub fn report_failure(&self, req: pb::ReportFailureRequest) -> Result<()> {
        let mut st = self.state.lock().unwrap();
        let job = st.job(&req.job_id)?;
        if job.generation != req.generation || job.state != pb::JobState::Running {
            return Ok(());
        }
        let message = if job.ranks.len() > 1 { format!("rank {}: {}", req.rank, req.message) } else { req.message };
        if req.invalid_input {
            self.end_job(&mut st, &req.job_id, pb::JobState::Failed, message);
        } else {
            self.recover_or_fail(&mut st, &req.job_id, message);
        }
        Ok(())
    }
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

fn send(w: &mut Worker, kind: pb::order::Kind) {
    if let Some(c) = &w.control {
        match c.try_send(Ok(pb::Order { kind: Some(kind) })) {
            Ok(()) => {}
            // A worker that already left is reaped by the monitor.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => warn!(worker = %w.id, "order stream full; order dropped"),
        }
    }
}

/// Runs [`Coordinator::reap_lost_workers`] every heartbeat interval.
pub fn spawn_monitor(coord: Arc<Coordinator>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(coord.config.heartbeat_interval);
        loop {
            tick.tick().await;
            coord.reap_lost_workers();
        }
    })
}
