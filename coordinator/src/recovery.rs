//! What a restarted coordinator resumes from: the job records in its
//! `--state-dir`, the committed epochs' dynamics in each job's output
//! directory (the durable form of the accumulators), and the last epoch
//! checkpoint that rank 0 wrote before reporting that epoch.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::{Array, AsArray};
use carto_common::dataset;
use carto_common::metrics::SampleAccumulators;
use carto_common::proto::v1 as pb;
use carto_common::spec::JobSpec;
use carto_common::{CartoError, Result};
use tracing::{info, warn};

use crate::aggregator::Aggregator;
use crate::jobs::{Job, NewJob};
use crate::outputs::{self, SampleInfo, DYNAMICS_DIR};
use crate::recompute::{self, EpochRange};
use crate::record::JobRecord;

/// `DIR/epoch-K.safetensors`: the name the worker writes (worker::checkpoint).
pub fn checkpoint_path(dir: &Path, epoch: u32) -> PathBuf {
    dir.join(format!("epoch-{epoch}.safetensors"))
}

/// A job record found in the state directory, or why it could not be read.
pub struct StoredJob {
    pub dir: PathBuf,
    pub record: std::result::Result<JobRecord, String>,
}

/// The job records under `STATE/jobs/*/job.json`, oldest first (unreadable ones first).
pub fn stored_jobs(state_dir: &Path) -> Result<Vec<StoredJob>> {
    let jobs = state_dir.join("jobs");
    let Ok(entries) = std::fs::read_dir(&jobs) else { return Ok(vec![]) };
    let mut found = Vec::new();
    for e in entries.filter_map(|e| e.ok()) {
        let path = e.path().join(outputs::JOB_FILE);
        let record = match std::fs::read(&path) {
            Ok(bytes) => JobRecord::parse(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => Err(format!("reading it: {e}")),
        };
        found.push(StoredJob { dir: e.path(), record });
    }
    found.sort_by_key(|j| j.record.as_ref().map(|r| r.created_unix_ms).unwrap_or(0));
    Ok(found)
}

/// A stored job whose record could not be read: listed as failed with the
/// reason, under its directory's name. The unreadable file is kept beside
/// as `job.json.unreadable` for inspection, and a readable failed record
/// replaces it.
pub fn unreadable(dir: &Path, reason: &str) -> Job {
    let id = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let path = dir.join(outputs::JOB_FILE);
    let kept = dir.join(format!("{}.unreadable", outputs::JOB_FILE));
    if let Err(e) = std::fs::rename(&path, &kept) {
        warn!(job = %id, "keeping {}: {e}", path.display());
    }
    warn!(job = %id, "{}: {reason}", path.display());
    let mut job = Job::new(NewJob {
        id,
        spec: JobSpec::default(),
        out: dir.to_path_buf(),
        dir: dir.to_path_buf(),
        info: SampleInfo { labels: vec![], label_names: None, ids: None },
        num_classes: 0,
        dataset_path: String::new(),
    });
    job.state = pb::JobState::Failed;
    job.error = format!("its record could not be read after a coordinator restart ({reason}); kept as {}", kept.display());
    job.finished_ms = crate::jobs::now_ms();
    job
}

/// Reloads an unfinished job's dataset and committed epochs, and queues it
/// to be re-formed from its last checkpoint.
pub fn rebuild(job: &mut Job) -> Result<()> {
    if job.spec.is_external() {
        return Err(CartoError::FailedPrecondition(
            "an external job's training loop lost its coordinator; rerun the loop as a new job".into(),
        ));
    }
    let ds = dataset::load(&job.spec.dataset_spec()?)?;
    let info = SampleInfo { labels: ds.labels, label_names: ds.label_names, ids: ds.ids };
    let (acc, mut committed) = committed_dynamics(&job.out, &info.labels)?;
    let runs_out = job.out.join(crate::label_errors::THRESHOLD_RUNS_DIR);
    if job.spec.threshold_samples() && committed == job.spec.epochs() {
        // The threshold runs' epochs count on in their own directory (their
        // rows are read again at the job's end, not folded into the map).
        clear_pending(&runs_out.join(DYNAMICS_DIR));
        while outputs::dynamics_part(&runs_out, committed, 0).parent().is_some_and(Path::is_dir) {
            committed += 1;
        }
    }
    if committed > 0 && !checkpoint_path(&job.checkpoint_dir(), committed - 1).exists() {
        return Err(CartoError::internal(format!(
            "the checkpoint of epoch {} is missing from {}",
            committed - 1,
            job.checkpoint_dir().display()
        )));
    }
    job.epochs.truncate(committed as usize);
    for epoch in job.epochs.len() as u32..committed {
        let out = if epoch < job.spec.epochs() { &job.out } else { &runs_out };
        job.epochs.push(epoch_summary(out, epoch)?);
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
    if job.spec.threshold_samples() {
        agg = agg.with_threshold_runs(job.spec.epochs(), job.spec.seed());
    }
    agg.restore(acc, committed)?;
    job.aggregator = Some(Arc::new(Mutex::new(agg)));
    job.committed = committed;
    job.state = pb::JobState::Queued;
    job.recovering_since = Some(Instant::now());
    job.last_fault = "the coordinator restarted".into();
    info!(job = %job.id, committed, "job resumes after a coordinator restart");
    Ok(())
}

/// The committed epochs of a job's output: removes unfinished (pending)
/// partitions, counts the contiguous `epoch=0..K` directories and folds them
/// into accumulators. Returns (accumulators, K).
pub fn committed_dynamics(out: &Path, labels: &[i64]) -> Result<(SampleAccumulators, u32)> {
    let dir = out.join(DYNAMICS_DIR);
    clear_pending(&dir);
    let mut committed = 0u32;
    while outputs::dynamics_part(out, committed, 0).parent().is_some_and(Path::is_dir) {
        committed += 1;
    }
    if committed == 0 {
        return Ok((SampleAccumulators::new(labels.len()), 0));
    }
    let r = recompute::recompute(&dir, EpochRange { start: 0, end: Some(committed) })?;
    if r.info.labels != labels {
        return Err(CartoError::internal(format!(
            "{}: the stored dynamics do not match the dataset's labels",
            dir.display()
        )));
    }
    Ok((r.acc, committed))
}

/// Removes the uncommitted partitions (`.epoch=K.pending`) of `dir`.
fn clear_pending(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".epoch=") && name.ends_with(".pending") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Loss and accuracy of one committed epoch, from its dynamics (for epochs
/// committed just before a crash, before the job record could say so).
pub fn epoch_summary(out: &Path, epoch: u32) -> Result<pb::EpochSummary> {
    let dir = outputs::dynamics_part(out, epoch, 0).parent().expect("epoch dir").to_path_buf();
    let mut samples = 0u64;
    let mut loss = 0f64;
    let mut correct = 0u64;
    for e in std::fs::read_dir(&dir).map_err(|e| CartoError::io(&dir, e))?.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".parquet") || name.starts_with('.') {
            continue;
        }
        let b = recompute::read_metrics(&e.path())?;
        let l = b.column_by_name("loss").ok_or_else(|| CartoError::internal("loss column"))?;
        let c = b.column_by_name("correct").ok_or_else(|| CartoError::internal("correct column"))?;
        samples += b.num_rows() as u64;
        loss += l.as_primitive::<arrow::datatypes::Float64Type>().values().iter().sum::<f64>();
        correct += c.as_boolean().true_count() as u64;
        debug_assert_eq!(c.null_count(), 0);
    }
    Ok(pb::EpochSummary {
        epoch,
        samples,
        loss: loss / samples.max(1) as f64,
        accuracy: correct as f64 / samples.max(1) as f64,
        ..Default::default()
    })
}
