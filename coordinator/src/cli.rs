//! The `carto` command line. Every error ends as one line on stderr and exit
//! code 2; results go to stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use carto_common::proto::v1 as pb;
use clap::{Parser, Subcommand};

use crate::outputs;
use crate::recompute::{self, EpochRange};
use crate::run::{self, RunArgs};

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
}

#[derive(Debug, clap::Args)]
pub struct MetricsArgs {
    /// The dynamics directory of a job (OUT/dynamics).
    #[arg(long, value_name = "DIR")]
    pub dynamics: PathBuf,
    /// Epochs to use: A..B (B excluded), A..=B, A.., ..B or K [default: all].
    #[arg(long, value_name = "A..B")]
    pub epochs: Option<EpochRange>,
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

/// Parses the command line, runs it, and maps errors to one line and exit 2.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match execute(cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("carto: error: {}", msg.lines().next().unwrap_or_default());
            ExitCode::from(2)
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
                    crate::scheduler::state_name(pb::JobState::try_from(job.state).unwrap_or(pb::JobState::Unspecified)),
                    job.error
                ),
            }
        }
        Command::Metrics(a) => {
            let r = recompute::recompute(&a.dynamics, a.epochs.unwrap_or(EpochRange::ALL))?;
            write_metrics(&a.out, &r)?;
            println!(
                "carto: wrote {} ({} samples, epochs {:?})",
                a.out.display(),
                r.acc.len(),
                r.epochs
            );
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
