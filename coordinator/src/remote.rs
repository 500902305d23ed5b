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
    /// Shared secret the coordinator was started with (prefer CARTO_TOKEN or
    /// --token-file: a flag's value shows in `ps`).
    #[arg(long, env = "CARTO_TOKEN", hide_env_values = true, value_name = "T")]
    pub token: Option<String>,
    /// Read the secret from this file (trailing newline ignored) [overrides --token].
    #[arg(long, env = "CARTO_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify an https:// coordinator [default: the system's roots].
    #[arg(long, env = "CARTO_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

pub type Jobs = JobServiceClient<InterceptedService<Channel, SendToken>>;

impl Connection {
    pub async fn jobs(&self) -> anyhow::Result<Jobs> {
        let token = crate::auth::resolve_token(self.token_file.as_deref(), self.token.as_deref(), "--token-file", "--token")?;
        let send = SendToken::new(token.as_deref())?;
        let channel = carto_common::transport::endpoint(&self.coordinator, self.ca.as_deref())?
            .connect()
            .await
            .map_err(|e| {
                anyhow::Error::new(RemoteError {
                    code: tonic::Code::Unavailable,
                    message: format!("cannot reach the coordinator at {}: {}", self.coordinator, transport_cause(&e)),
                })
            })?;
        Ok(JobServiceClient::with_interceptor(channel, send))
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

/// Every job, a page at a time until the coordinator's `next_page_token` is empty.
pub async fn list(conn: &Connection) -> anyhow::Result<Vec<pb::Job>> {
    let mut jobs = conn.jobs().await?;
    list_all(&mut jobs).await
}

/// The paging loop of [`list`], for any JobService client.
pub async fn list_all<T>(jobs: &mut JobServiceClient<T>) -> anyhow::Result<Vec<pb::Job>>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    /// A coordinator that hands back the token it was given would loop forever.
    const MAX_PAGES: usize = 1_000_000;
    let mut all = Vec::new();
    let mut page_token = String::new();
    for _ in 0..MAX_PAGES {
        let page = jobs
            .list_jobs(pb::ListJobsRequest { page_size: 0, page_token: page_token.clone() })
            .await
            .map_err(status_error)?
            .into_inner();
        all.extend(page.jobs);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        if page.next_page_token == page_token {
            bail!("the coordinator returned the same page token twice while listing jobs");
        }
        page_token = page.next_page_token;
    }
    bail!("the coordinator's job list did not end after {MAX_PAGES} pages")
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

/// A coordinator's answer that was an error: its status code (which decides
/// the exit code, see `cli::exit_code`) and one readable line.
#[derive(Debug)]
pub struct RemoteError {
    pub code: tonic::Code,
    pub message: String,
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RemoteError {}

impl RemoteError {
    /// Whether the fault is on the caller's side (their input, credentials
    /// or timing) rather than the coordinator's or the network's.
    pub fn is_user_error(&self) -> bool {
        use tonic::Code::*;
        matches!(
            self.code,
            InvalidArgument | NotFound | AlreadyExists | PermissionDenied | Unauthenticated | FailedPrecondition | OutOfRange | Cancelled | Aborted
        )
    }
}

/// A gRPC status as one readable line (a [`RemoteError`] underneath).
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    let what = match s.code() {
        tonic::Code::InvalidArgument => "invalid",
        tonic::Code::NotFound => "not found",
        tonic::Code::FailedPrecondition => "not possible now",
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::Unavailable => "coordinator unavailable",
        _ => "coordinator error",
    };
    anyhow::Error::new(RemoteError { code: s.code(), message: format!("{what}: {}", s.message()) })
}
