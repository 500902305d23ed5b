//! carto's coordinator and command line. No libtorch: everything here builds
//! and tests without it.
//!
//! Where things are:
//! - [`scheduler`]: workers, the job queue, and where a shard is assigned.
//! - [`aggregator`]: where a batch is merged (validation, staging, commit).
//! - [`service`] / [`server`]: the gRPC services, health and reflection.
//! - [`outputs`]: `metrics.parquet`, dynamics partitions, `job.json`.
//! - [`recompute`] / [`allenai`]: metrics from stored dynamics, or from the paper's files.
//! - [`run`] / [`cli`]: `carto run` (embedded coordinator + worker processes) and the CLI.
//!
//! The metric formulas themselves live in `carto_common::metrics`.

pub mod aggregator;
pub mod allenai;
pub mod auth;
pub mod datamap;
pub mod cli;
pub mod config;
pub mod coordinator;
pub mod outputs;
pub mod progress;
pub mod recompute;
pub mod recovery;
pub mod remote;
pub mod reports;
pub mod roots;
pub mod run;
pub mod scheduler;
pub mod select;
pub mod server;
pub mod service;
pub mod suspects;
