//! The `carto` command line. Every error ends as one line on stderr; results
//! go to stdout. Exit codes: 0 success, 2 the user's input (flags, files,
//! job spec, credentials, paths outside a root; also `watch` of a job that
//! did not succeed), 3 an internal error (the coordinator's own state, or a
//! coordinator that is unreachable or answers INTERNAL / UNAVAILABLE). See
//! [`exit_code`].

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use carto_common::proto::v1 as pb;
use clap::{Parser, Subcommand};

use crate::outputs;
use crate::recompute::{self, EpochRange};
use crate::remote::{self, Connection};
use crate::run::{self, RunArgs};
use crate::config::CoordinatorConfig;
use crate::coordinator::Coordinator;

#[derive(Debug, Parser)]
#[command(
    name = "carto",
    version,
    about = "Dataset Cartography at cluster scale: train, record every sample's training dynamics, map the data."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train on a dataset and map it: an in-process coordinator plus local worker processes.
    Run(RunArgs),
    /// Recompute metrics.parquet from stored dynamics, optionally over a window of epochs.
    Metrics(MetricsArgs),
    /// Metrics from the paper's code's dynamics_epoch_K.jsonl files.
    #[command(name = "import-allenai")]
    ImportAllenai(ImportArgs),
    /// Select a subset of the dataset by a metric (hard-to-learn, ambiguous, easy-to-learn, …).
    Select(SelectArgs),
    /// Rank samples by how likely their label is wrong (CSV on stdout or --out).
    Suspects(SuspectsArgs),
    /// Apply review decisions (relabels.csv: sample_id, id, action keep|relabel|drop, new_label) to a dataset.
    Relabel(RelabelArgs),
    /// Draw the data map (variability × confidence, coloured by correctness).
    Map(MapArgs),
    /// Run a coordinator for a cluster: workers join it, users submit jobs to it.
    Serve(ServeArgs),
    /// Queue a job (JOB.toml: the same fields as `carto run`'s flags); prints its id.
    Submit {
        #[command(flatten)]
        conn: Connection,
        /// The job file.
        #[arg(value_name = "JOB.toml")]
        job: PathBuf,
    },
    /// A job's state and finished epochs.
    Status {
        #[command(flatten)]
        conn: Connection,
        job: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Follow a job live until it ends (exit 0 if it succeeded).
    Watch {
        #[command(flatten)]
        conn: Connection,
        job: String,
        /// One JSON object per line, one line per change.
        #[arg(long)]
        json: bool,
    },
    /// All jobs the coordinator knows.
    List {
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a queued or running job; its workers are freed.
    Cancel {
        #[command(flatten)]
        conn: Connection,
        job: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct SelectArgs {
    /// A job's metrics.parquet.
    #[arg(long, value_name = "FILE")]
    pub metrics: PathBuf,
    /// The dataset the metrics describe [default: the job's, from the job.json beside --metrics].
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// confidence | variability | correctness | forgetting_events | aum | threshold_closeness | el2n
    /// [required with --strategy top; default with --strategy coverage: aum].
    #[arg(long, required_unless_present = "strategy")]
    pub metric: Option<crate::select::Metric>,
    /// top: the head of the paper's order; coverage: coverage-centric selection (Zheng et al. 2023):
    /// drop the hardest --hard-prune, then sample evenly across --strata equal-width ranges of the metric.
    #[arg(long, value_name = "top|coverage", default_value = "top")]
    pub strategy: crate::select::Strategy,
    /// Fraction of samples to keep: k = ⌊fraction·n + 0.5⌋.
    #[arg(long, value_name = "F")]
    pub fraction: f64,
    /// Reverse the paper's order (e.g. easy-to-learn = --metric confidence --worst).
    #[arg(long)]
    pub worst: bool,
    /// The same fraction from every class.
    #[arg(long)]
    pub per_class: bool,
    /// Half from each end of the order.
    #[arg(long)]
    pub both_ends: bool,
    /// Coverage: the fraction of the hardest samples dropped before sampling (β, in [0, 1)) [default: 0.1].
    #[arg(long, value_name = "F")]
    pub hard_prune: Option<f64>,
    /// Coverage: the number of equal-width strata of the metric's range [default: 50].
    #[arg(long, value_name = "K")]
    pub strata: Option<usize>,
    /// Coverage: the seed of the random draw within each stratum [default: 42].
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// The subset: the dataset's rows with all their columns, plus the metrics.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct RelabelArgs {
    /// The dataset (Parquet, CSV or JSONL) the decisions are about.
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// The decisions: sample_id, id, action (keep | relabel | drop), new_label.
    #[arg(long, value_name = "CSV")]
    pub relabels: PathBuf,
    /// The label column of --data.
    #[arg(long, value_name = "COL", default_value = "label")]
    pub label_col: String,
    /// The id column the decisions' `id` is checked against [default: `id` when --data has it].
    #[arg(long, value_name = "COL")]
    pub id_col: Option<String>,
    /// The cleaned dataset (Parquet): every original column, dropped rows removed, plus carto_relabelled.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct SuspectsArgs {
    /// A job's metrics.parquet.
    #[arg(long, value_name = "FILE")]
    pub metrics: PathBuf,
    /// The dataset, for the text of each suspect [default: the job's].
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// The text column of --data [default: the job's --text-col].
    #[arg(long, value_name = "COL")]
    pub text_col: Option<String>,
    /// The job's dynamics, for the most predicted label [default: beside --metrics].
    #[arg(long, value_name = "DIR")]
    pub dynamics: Option<PathBuf>,
    /// How many suspects.
    #[arg(long, default_value_t = 50, value_name = "K")]
    pub top: usize,
    /// Write the CSV here instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct MapArgs {
    /// A job's metrics.parquet.
    #[arg(long, value_name = "FILE")]
    pub metrics: PathBuf,
    /// The image: .png or .svg.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The title line [default: the metrics file's name].
    #[arg(long)]
    pub title: Option<String>,
    /// .html: past this many samples, draw every suspect and a uniform sample
    /// of half as many over a density layer of all of them.
    #[arg(long, default_value_t = crate::datamap_html::MAX_POINTS as u64, value_name = "N", value_parser = clap::value_parser!(u64).range(2..))]
    pub max_points: u64,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port, printed at start). A
    /// non-loopback address needs tokens for users and workers, or --insecure.
    #[arg(long, default_value = "0.0.0.0:7070", value_name = "ADDR")]
    pub listen: String,
    /// Where the coordinator keeps its state.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Require this shared secret on every call but the health check (prefer
    /// CARTO_TOKEN or --token-file: a flag's value shows in `ps`).
    #[arg(long, env = "CARTO_TOKEN", hide_env_values = true, value_name = "T")]
    pub token: Option<String>,
    /// Read the shared secret from this file (trailing newline ignored) [overrides --token].
    #[arg(long, env = "CARTO_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// A separate secret for users' calls (JobService, reflection) [default: --token].
    #[arg(long, env = "CARTO_USER_TOKEN", hide_env_values = true, value_name = "T")]
    pub user_token: Option<String>,
    /// Read the users' secret from this file [overrides --user-token].
    #[arg(long, env = "CARTO_USER_TOKEN_FILE", value_name = "FILE")]
    pub user_token_file: Option<PathBuf>,
    /// A separate secret for workers' calls (WorkerService) [default: --token].
    #[arg(long, env = "CARTO_WORKER_TOKEN", hide_env_values = true, value_name = "T")]
    pub worker_token: Option<String>,
    /// Read the workers' secret from this file [overrides --worker-token].
    #[arg(long, env = "CARTO_WORKER_TOKEN_FILE", value_name = "FILE")]
    pub worker_token_file: Option<PathBuf>,
    /// Serve a non-loopback address even without tokens for both users and
    /// workers: anyone who can reach the port can submit jobs and join as a worker.
    #[arg(long)]
    pub insecure: bool,
    /// Jobs may read datasets (data, eval_data, pretrained) only under this
    /// directory, symlinks resolved; relative paths are taken from it.
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
    /// Jobs may write outputs only under this directory.
    #[arg(long, value_name = "DIR")]
    pub out_root: Option<PathBuf>,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Also serve the live page here (HTTP): the jobs with their progress and
    /// each job's data map, redrawn after every committed epoch. It asks for
    /// the users' token; a non-loopback address needs --insecure (plain HTTP).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// A worker silent for this long is considered lost.
    #[arg(long, default_value_t = 15, value_name = "SECS")]
    pub worker_timeout_secs: u64,
    /// Times a job is re-formed after losing a worker before it fails.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub max_restarts: u32,
    /// How long a re-forming job waits for a replacement before going on
    /// with the workers left (the global batch stays the same).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub rejoin_wait_secs: u64,
    /// A running job whose ranks train no sample and commit no epoch for
    /// this long (a hung training thread still heartbeats) is re-formed.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub progress_timeout_secs: u64,
}

#[derive(Debug, clap::Args)]
pub struct MetricsArgs {
    /// The dynamics directory of a job (OUT/dynamics).
    #[arg(long, value_name = "DIR")]
    pub dynamics: PathBuf,
    /// Epochs to use: A..B (B excluded), A..=B, A.., ..B or K [default: all].
    #[arg(long, value_name = "A..B")]
    pub epochs: Option<EpochRange>,
    /// The number of samples (sample_id 0..N); samples without any row get
    /// epochs = 0 and null metrics [default: max sample_id + 1].
    #[arg(long, value_name = "N")]
    pub num_samples: Option<usize>,
    /// Where to write the metrics.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Directory holding dynamics_epoch_K.jsonl (or its training_dynamics/ subdirectory).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Epochs to use, like the paper's --burn_out: ..3 = epochs 0, 1, 2 [default: all].
    #[arg(long, value_name = "A..B")]
    pub epochs: Option<EpochRange>,
    /// Where to write the metrics.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CARTO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// Exit code of an error in the user's input (and of clap's usage errors).
pub const EXIT_USER: u8 = 2;
/// Exit code of an internal error: carto's own state, or a coordinator that
/// cannot be reached or fails on its side.
pub const EXIT_INTERNAL: u8 = 3;

/// The exit code for an error: the first typed error in its chain decides
/// ([`carto_common::CartoError`], a coordinator's [`remote::RemoteError`], a
/// `tonic::Status`); anything untyped is the user's input (a file or flag).
pub fn exit_code(e: &anyhow::Error) -> u8 {
    use carto_common::CartoError;
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<CartoError>() {
            return match c {
                CartoError::Internal(_) | CartoError::Io { .. } => EXIT_INTERNAL,
                _ => EXIT_USER,
            };
        }
        if let Some(r) = cause.downcast_ref::<remote::RemoteError>() {
            return if r.is_user_error() { EXIT_USER } else { EXIT_INTERNAL };
        }
        if let Some(s) = cause.downcast_ref::<tonic::Status>() {
            let r = remote::RemoteError { code: s.code(), message: String::new() };
            return if r.is_user_error() { EXIT_USER } else { EXIT_INTERNAL };
        }
        if cause.downcast_ref::<tonic::transport::Error>().is_some() {
            return EXIT_INTERNAL;
        }
    }
    EXIT_USER
}

/// Parses the command line, runs it, and maps errors to one line and an
/// exit code ([`exit_code`]).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match execute(cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("carto: error: {}", msg.lines().next().unwrap_or_default());
            ExitCode::from(exit_code(&e))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

pub fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => {
            let job = runtime()?.block_on(run::run(args))?;
            match pb::JobState::try_from(job.state) {
                Ok(pb::JobState::Succeeded) => {
                    println!("{}", run::summary(&job));
                    Ok(ExitCode::SUCCESS)
                }
                _ => anyhow::bail!(
                    "job {} {}: {}",
                    job.id,
                    crate::coordinator::state_name(pb::JobState::try_from(job.state).unwrap_or(pb::JobState::Unspecified)),
                    job.error
                ),
            }
        }
        Command::Metrics(a) => {
            carto_common::memory::keep_freed_memory();
            let started = std::time::Instant::now();
            let partial = recompute::recompute_any(&a.dynamics, a.epochs.unwrap_or(EpochRange::ALL), a.num_samples)?;
            let folded = started.elapsed();
            outputs::write_parquet_atomic(&a.out, &partial.metrics_batch()?, partial.recomputed.info.label_names.as_deref())
                .with_context(|| format!("writing {}", a.out.display()))?;
            let r = &partial.recomputed;
            tracing::info!(
                samples = r.acc.len(),
                read_fold_s = folded.as_secs_f64(),
                write_s = (started.elapsed() - folded).as_secs_f64(),
                "metrics recomputed"
            );
            println!(
                "carto: wrote {} ({} samples, epochs {:?})",
                a.out.display(),
                r.acc.len(),
                r.epochs
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Select(a) => {
            use crate::select::{Coverage, Strategy};
            let what = a.metrics.display().to_string();
            let flag_error = |msg: String| -> anyhow::Error { carto_common::CartoError::invalid(msg).into() };
            let metric = match a.strategy {
                Strategy::Top => {
                    for (given, flag) in [(a.hard_prune.is_some(), "--hard-prune"), (a.strata.is_some(), "--strata"), (a.seed.is_some(), "--seed")] {
                        if given {
                            return Err(flag_error(format!("{flag} applies only to --strategy coverage")));
                        }
                    }
                    a.metric.ok_or_else(|| flag_error("--metric is required with --strategy top".into()))?
                }
                Strategy::Coverage => {
                    for (given, flag) in [(a.worst, "--worst"), (a.both_ends, "--both-ends")] {
                        if given {
                            return Err(flag_error(format!(
                                "{flag} does not apply to --strategy coverage (it drops the hard end and samples every range of the metric)"
                            )));
                        }
                    }
                    a.metric.unwrap_or(Coverage::DEFAULT_METRIC)
                }
            };
            let metrics = recompute::read_metrics(&a.metrics)?;
            let (values, labels) = crate::select::metric_values(&metrics, metric, &what)?;
            let chosen = match a.strategy {
                Strategy::Top => {
                    let sel = crate::select::Selection {
                        metric,
                        fraction: a.fraction,
                        worst: a.worst,
                        per_class: a.per_class,
                        both_ends: a.both_ends,
                    };
                    crate::select::select(&values, &labels, &sel)?
                }
                Strategy::Coverage => {
                    let cov = Coverage {
                        metric,
                        fraction: a.fraction,
                        hard_prune: a.hard_prune.unwrap_or(Coverage::DEFAULT_HARD_PRUNE),
                        strata: a.strata.unwrap_or(Coverage::DEFAULT_STRATA),
                        seed: a.seed.unwrap_or(Coverage::DEFAULT_SEED),
                        per_class: a.per_class,
                    };
                    crate::select::select_coverage(&values, &labels, &cov)?
                }
            };
            let data_path = match a.data {
                Some(d) => d,
                None => crate::select::job_dataset(&a.metrics)?,
            };
            let data = carto_common::dataset::read_table(&data_path)?;
            let subset = crate::select::selected_rows(&data, &metrics, &chosen, &data_path.display().to_string())?;
            outputs::write_parquet_atomic(&a.out, &subset, None)?;
            let by = match a.strategy {
                Strategy::Top => metric.column().to_string(),
                Strategy::Coverage => format!("coverage over {}", metric.column()),
            };
            println!("carto: wrote {} ({} of {} rows, by {by})", a.out.display(), chosen.len(), metrics.num_rows());
            Ok(ExitCode::SUCCESS)
        }
        Command::Suspects(a) => {
            let (rows, ctx) = crate::reports::suspects_report(
                &a.metrics,
                a.top,
                a.data.as_deref(),
                a.text_col.as_deref(),
                a.dynamics.as_deref(),
            )?;
            match &a.out {
                Some(path) => {
                    let mut buf = Vec::new();
                    crate::suspects::write_csv(&rows, &ctx, &mut buf)?;
                    outputs::write_text_atomic(path, &String::from_utf8_lossy(&buf))?;
                    eprintln!("carto: wrote {} ({} suspects)", path.display(), rows.len());
                }
                None => crate::suspects::write_csv(&rows, &ctx, std::io::stdout().lock())?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Relabel(a) => {
            if a.out.canonicalize().ok().is_some_and(|o| a.data.canonicalize().ok() == Some(o)) {
                return Err(carto_common::CartoError::invalid(format!(
                    "--out {} is --data: write the cleaned dataset to a new file (the original stays as it is)",
                    a.out.display()
                ))
                .into());
            }
            let data = carto_common::dataset::read_table(&a.data)?;
            let (decisions, ids) = crate::relabel::read_decisions(&a.relabels, data.num_rows())?;
            let id_col = a.id_col.clone().or_else(|| data.schema().index_of("id").ok().map(|_| "id".to_string()));
            let names = (a.data.display().to_string(), a.relabels.display().to_string());
            let (clean, summary) =
                crate::relabel::apply(&data, &a.label_col, id_col.as_deref(), &decisions, &ids, (&names.0, &names.1))?;
            outputs::write_parquet_atomic(&a.out, &clean, None)?;
            println!(
                "carto: wrote {} ({} of {} rows: {} relabelled, {} dropped)",
                a.out.display(),
                summary.rows_out,
                summary.rows_in,
                summary.relabelled,
                summary.dropped
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Map(a) => {
            let title = a.title.clone().unwrap_or_else(|| a.metrics.display().to_string());
            crate::reports::write_map(&a.metrics, &a.out, &title, a.max_points as usize)?;
            println!("carto: wrote {}", a.out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(a) => {
            runtime()?.block_on(serve(a))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit { conn, job } => {
            let id = runtime()?.block_on(remote::submit(&conn, &job))?;
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { conn, job, json } => {
            let j = runtime()?.block_on(remote::status(&conn, &job))?;
            println!("{}", if json { remote::job_json(&j).to_string() } else { remote::job_text(&j) });
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch { conn, job, json } => {
            let j = runtime()?.block_on(remote::watch(&conn, &job, json))?;
            if !json {
                println!("{}", remote::job_text(&j));
            }
            match remote::job_state(&j) {
                pb::JobState::Succeeded => Ok(ExitCode::SUCCESS),
                _ => Ok(ExitCode::from(2)),
            }
        }
        Command::List { conn, json } => {
            let jobs = runtime()?.block_on(remote::list(&conn))?;
            if json {
                println!("{}", serde_json::Value::Array(jobs.iter().map(remote::job_json).collect()));
            } else {
                println!("{}", remote::list_text(&jobs));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel { conn, job, json } => {
            let j = runtime()?.block_on(remote::cancel(&conn, &job))?;
            println!("{}", if json { remote::job_json(&j).to_string() } else { remote::job_text(&j) });
            Ok(ExitCode::SUCCESS)
        }
        Command::ImportAllenai(a) => {
            let r = crate::allenai::import(&a.dir, a.epochs.unwrap_or(EpochRange::ALL))?;
            write_metrics(&a.out, &r)?;
            println!(
                "carto: wrote {} ({} samples, epochs {:?})",
                a.out.display(),
                r.acc.len(),
                r.epochs
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn write_metrics(out: &std::path::Path, r: &recompute::Recomputed) -> anyhow::Result<()> {
    let batch = outputs::metrics_batch(&r.acc, &r.info)?;
    outputs::write_parquet_atomic(out, &batch, r.info.label_names.as_deref())
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// The tokens `carto serve` requires, from files, the environment or flags.
/// Any one given empty, or still the deploy files' placeholder, is an error.
pub fn serve_tokens(a: &ServeArgs) -> anyhow::Result<(Option<String>, Option<String>)> {
    use crate::auth::{check_token, resolve_token};
    let token = resolve_token(a.token_file.as_deref(), a.token.as_deref(), "--token-file", "--token (CARTO_TOKEN)")?;
    let user = resolve_token(a.user_token_file.as_deref(), a.user_token.as_deref(), "--user-token-file", "--user-token (CARTO_USER_TOKEN)")?
        .or(token.clone());
    let worker = resolve_token(
        a.worker_token_file.as_deref(),
        a.worker_token.as_deref(),
        "--worker-token-file",
        "--worker-token (CARTO_WORKER_TOKEN)",
    )?
    .or(token);
    if let Some(t) = &user {
        check_token(t, "the user token (--token / --user-token)")?;
    }
    if let Some(t) = &worker {
        check_token(t, "the worker token (--token / --worker-token)")?;
    }
    Ok((user, worker))
}

/// Whether `carto serve` may listen on `addr` with this security: loopback
/// always (warned when open); elsewhere only with tokens for both services,
/// or with `--insecure` (warned loudly). Returns the warning to print.
pub fn listen_policy(addr: std::net::SocketAddr, security: &crate::server::Security, insecure: bool) -> anyhow::Result<Option<String>> {
    let open = match (&security.user_token, &security.worker_token) {
        (None, None) => "users and workers",
        (None, Some(_)) => "users (JobService)",
        (Some(_), None) => "workers (WorkerService)",
        (Some(_), Some(_)) => return Ok(None),
    };
    if addr.ip().is_loopback() {
        return Ok(Some(format!(
            "carto: warning: no token for {open}: any program on this machine can call the coordinator on {addr}"
        )));
    }
    if insecure {
        return Ok(Some(format!(
            "carto: WARNING: --insecure: serving {addr} with no token for {open}; anyone who can reach this port can {}",
            if security.worker_token.is_none() { "join as a worker and be sent jobs' data" } else { "submit and cancel jobs" }
        )));
    }
    anyhow::bail!(
        "refusing to serve the non-loopback address {addr} with no token for {open}: set CARTO_TOKEN or --token-file \
         (or both --user-token-file and --worker-token-file), listen on 127.0.0.1, or pass --insecure"
    )
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let (user_token, worker_token) = serve_tokens(&a)?;
    let read = |p: &PathBuf, flag: &str| std::fs::read(p).with_context(|| format!("{flag} {}", p.display()));
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => Some((read(c, "--tls-cert")?, read(k, "--tls-key")?)),
        _ => None,
    };
    let security = crate::server::Security { user_token, worker_token, tls };
    let data_root = a.data_root.as_deref().map(|d| crate::roots::Roots::canonical_root(d, "--data-root")).transpose()?;
    let out_root = a.out_root.as_deref().map(|d| crate::roots::Roots::canonical_root(d, "--out-root")).transpose()?;
    let listener = tokio::net::TcpListener::bind(&a.listen).await.with_context(|| format!("--listen {}", a.listen))?;
    let addr = listener.local_addr()?;
    if let Some(warning) = listen_policy(addr, &security, a.insecure)? {
        eprintln!("{warning}");
    }
    std::fs::create_dir_all(&a.state_dir).with_context(|| format!("--state-dir {}", a.state_dir.display()))?;
    let coord = Coordinator::new(CoordinatorConfig {
        worker_timeout: std::time::Duration::from_secs(a.worker_timeout_secs),
        state_dir: Some(a.state_dir.clone()),
        max_restarts: a.max_restarts,
        rejoin_wait: std::time::Duration::from_secs(a.rejoin_wait_secs),
        progress_timeout: std::time::Duration::from_secs(a.progress_timeout_secs),
        data_root,
        out_root,
        ..Default::default()
    });
    let resumed = coord.restore().with_context(|| format!("resuming from --state-dir {}", a.state_dir.display()))?;
    if resumed > 0 {
        eprintln!("carto: resuming {resumed} unfinished job(s) from {}", a.state_dir.display());
    }
    let page = match &a.http {
        Some(http) => Some(crate::http::LivePage::start(coord.clone(), http, security.user_token.clone(), a.insecure).await?),
        None => None,
    };
    let scheme = if security.tls.is_some() { "https" } else { "http" };
    println!("carto: serving on {scheme}://{addr} (state in {})", a.state_dir.display());
    if let Some(page) = &page {
        println!("carto: live page on {}", page.url(None));
    }
    std::io::stdout().flush()?;
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let served = crate::server::serve(coord, listener, security, shutdown).await;
    if let Some(page) = page {
        page.shutdown().await?;
    }
    served
}
