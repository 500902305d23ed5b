//! The user commands that talk to a running coordinator over gRPC:
//! `carto submit | status | watch | list | cancel`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use carto_common::proto::v1 as pb;
use carto_common::proto::v1::job_service_client::JobServiceClient;
use carto_common::spec::JobSpec;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::auth::SendToken;
use crate::progress::Display;
use crate::coordinator::state_name;

/// Where the coordinator is and how to prove who we are.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Coordinator URL, e.g. http://10.0.0.1:7070.
    #[arg(long, env = "CARTO_COORDINATOR", value_name = "URL")]
    pub coordinator: String,
    /// Shared secret the coordinator was started with.
    #[arg(long, env = "CARTO_TOKEN", hide_env_values = true, value_name = "T")]
    pub token: Option<String>,
    /// CA certificate (PEM) to verify an https:// coordinator [default: the system's roots].
    #[arg(long, env = "CARTO_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

pub type Jobs = JobServiceClient<InterceptedService<Channel, SendToken>>;

impl Connection {
    pub async fn jobs(&self) -> anyhow::Result<Jobs> {
        let channel = carto_common::transport::endpoint(&self.coordinator, self.ca.as_deref())?
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the coordinator at {}: {}", self.coordinator, transport_cause(&e)))?;
        Ok(JobServiceClient::with_interceptor(channel, SendToken::new(self.token.as_deref())?))
    }
}

/// Reads a JOB.toml. Relative paths (`data`, `out`, `pretrained`) are resolved
/// against the file's directory and sent as absolute paths, since the
/// coordinator and workers read them on their own (shared) filesystem.
pub fn read_job_file(path: &Path) -> anyhow::Result<JobSpec> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut spec = JobSpec::from_toml(&text, &path.display().to_string())?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() { std::env::current_dir()? } else { std::path::absolute(base)? };
    for field in [&mut spec.data, &mut spec.out, &mut spec.pretrained] {
        if let Some(p) = field.as_mut() {
            let pb = PathBuf::from(&*p);
            if pb.is_relative() {
                *p = base.join(pb).display().to_string();
            }
        }
    }
    spec.validate()?;
    Ok(spec)
}

pub fn job_state(job: &pb::Job) -> pb::JobState {
    pb::JobState::try_from(job.state).unwrap_or(pb::JobState::Unspecified)
}

pub fn is_terminal(job: &pb::Job) -> bool {
    matches!(job_state(job), pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Cancelled)
}

/// A job as JSON, for `--json` output (stable, documented field names).
pub fn job_json(job: &pb::Job) -> serde_json::Value {
    let spec: JobSpec = job.spec.clone().unwrap_or_default().into();
    let p = job.progress.unwrap_or_default();
    serde_json::json!({
        "id": job.id,
        "state": state_name(job_state(job)),
        "name": spec.name,
        "generation": job.generation,
        "epoch": p.epoch,
        "epochs_total": job.epochs_total,
        "progress": {
            "epoch": p.epoch,
            "samples_done": p.samples_done,
            "samples_total": p.samples_total,
            "loss": p.loss,
            "accuracy": p.accuracy,
            "samples_per_sec": p.samples_per_sec,
        },
        "epochs": job.epochs.iter().map(|e| serde_json::json!({
            "epoch": e.epoch,
            "samples": e.samples,
            "loss": e.loss,
            "accuracy": e.accuracy,
            "samples_per_sec": e.samples_per_sec,
            "train_seconds": e.train_seconds,
            "wall_seconds": e.wall_seconds,
            "eval_loss": e.eval_loss,
            "eval_accuracy": e.eval_accuracy,
        })).collect::<Vec<_>>(),
        "num_samples": job.num_samples,
        "num_classes": job.num_classes,
        "workers": job.workers,
        "out": job.out,
        "error": if job.error.is_empty() { serde_json::Value::Null } else { job.error.clone().into() },
        "created_unix_ms": job.created_unix_ms,
        "started_unix_ms": job.started_unix_ms,
        "finished_unix_ms": job.finished_unix_ms,
        "spec": spec,
    })
}

/// A human summary of one job.
pub fn job_text(job: &pb::Job) -> String {
    let state = state_name(job_state(job));
    let mut s = format!("job {}  {}", job.id, state);
    let p = job.progress.unwrap_or_default();
    if job_state(job) == pb::JobState::Running {
        s += &format!(
            " (epoch {} of {}, {}/{} samples, generation {})",
            (p.epoch + 1).min(job.epochs_total),
            job.epochs_total,
            p.samples_done,
            p.samples_total,
            job.generation
        );
    }
    s += &format!("\n  data     {} rows, {} classes", job.num_samples, job.num_classes);
    s += &format!("\n  out      {}", job.out);
    if !job.workers.is_empty() {
        s += &format!("\n  workers  {}", job.workers.join(", "));
    }
    for e in &job.epochs {
        s += &format!(
            "\n  epoch {}/{}  loss {:.4}  accuracy {:.4}  {:.0} samples/s  {:.1} s",
            e.epoch + 1,
            job.epochs_total,
            e.loss,
            e.accuracy,
            e.samples_per_sec,
            e.wall_seconds
        );
    }
    if !job.error.is_empty() {
        s += &format!("\n  error    {}", job.error);
    }
    s
}

pub async fn submit(conn: &Connection, job_file: &Path) -> anyhow::Result<String> {
    let spec = read_job_file(job_file)?;
    let mut jobs = conn.jobs().await?;
    let resp = jobs.submit_job(pb::SubmitJobRequest { spec: Some(spec.into()) }).await.map_err(status_error)?;
    Ok(resp.into_inner().job_id)
}

pub async fn status(conn: &Connection, job_id: &str) -> anyhow::Result<pb::Job> {
    let mut jobs = conn.jobs().await?;
    Ok(jobs.get_job(pb::GetJobRequest { job_id: job_id.into() }).await.map_err(status_error)?.into_inner())
}

pub async fn list(conn: &Connection) -> anyhow::Result<Vec<pb::Job>> {
    let mut jobs = conn.jobs().await?;
    Ok(jobs.list_jobs(pb::ListJobsRequest::default()).await.map_err(status_error)?.into_inner().jobs)
}

pub async fn cancel(conn: &Connection, job_id: &str) -> anyhow::Result<pb::Job> {
    let mut jobs = conn.jobs().await?;
    Ok(jobs.cancel_job(pb::CancelJobRequest { job_id: job_id.into() }).await.map_err(status_error)?.into_inner())
}

/// Follows a job to its end: progress bars, or one JSON object per line.
/// Returns the final snapshot.
pub async fn watch(conn: &Connection, job_id: &str, json: bool) -> anyhow::Result<pb::Job> {
    let mut jobs = conn.jobs().await?;
    let mut stream =
        jobs.watch_job(pb::WatchJobRequest { job_id: job_id.into() }).await.map_err(status_error)?.into_inner();
    let mut display: Option<Display> = None;
    let mut last = None;
    while let Some(ev) = stream.message().await.map_err(status_error)? {
        let Some(job) = ev.job else { continue };
        if json {
            println!("{}", job_json(&job));
        } else {
            display.get_or_insert_with(|| Display::new(false, job.epochs_total)).update(&job);
        }
        last = Some(job);
    }
    if let Some(d) = display.as_mut() {
        d.clear();
    }
    match last {
        Some(job) if is_terminal(&job) => Ok(job),
        _ => bail!("the coordinator closed the watch of job {job_id} before it ended"),
    }
}

/// One line per job, for `carto list`.
pub fn list_text(jobs: &[pb::Job]) -> String {
    let mut s = format!("{:<16} {:<10} {:>9} {:>7} {:>9}  {}", "JOB", "STATE", "EPOCH", "WORKERS", "SAMPLES", "NAME / DATA");
    for j in jobs {
        let spec: JobSpec = j.spec.clone().unwrap_or_default().into();
        let epoch = match job_state(j) {
            pb::JobState::Running => format!("{}/{}", j.progress.unwrap_or_default().epoch + 1, j.epochs_total),
            _ => format!("{}/{}", j.epochs.len(), j.epochs_total),
        };
        let label = spec.name.clone().or(spec.data.clone()).unwrap_or_default();
        s += &format!(
            "\n{:<16} {:<10} {:>9} {:>7} {:>9}  {}",
            j.id,
            state_name(job_state(j)),
            epoch,
            spec.workers(),
            j.num_samples,
            label
        );
    }
    s
}

/// The innermost cause of a transport error (TLS and connect failures hide there).
pub fn transport_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    cause
}

/// A gRPC status as one readable line.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    let what = match s.code() {
        tonic::Code::InvalidArgument => "invalid",
        tonic::Code::NotFound => "not found",
        tonic::Code::FailedPrecondition => "not possible now",
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::Unavailable => "coordinator unavailable",
        _ => "coordinator error",
    };
    anyhow::anyhow!("{what}: {}", s.message())
}
