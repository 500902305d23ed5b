//! carto's coordinator and command line. No libtorch: everything here builds
//! and tests without it.
//!
//! Where things are:
//! - [`coordinator`]: the state behind one lock, and the effects carried out after it.
//! - [`placement`]: where a shard is assigned (which free workers start which job).
//! - [`jobs`]: the job manager (queue, generations, lifecycle); [`registry`]: workers and leases.
//! - [`record`]: `job.json`, the one typed reader and writer.
//! - [`aggregator`]: where a batch is merged (validation, staging, commit).
//! - [`service`] / [`server`]: the gRPC services, health and reflection.
//! - [`datamap_html`]: `datamap.html`; [`live`]: a job's map as it stands (GetDataMap);
//!   [`http`]: the live page of `carto serve --http` / `carto run --ui`, a gateway over JobService.
//! - [`outputs`]: `metrics.parquet`, dynamics partitions, `job.json`.
//! - [`recompute`] / [`allenai`]: metrics from stored dynamics, or from the paper's files.
//! - [`run`] / [`cli`]: `carto run` (embedded coordinator + worker processes) and the CLI.
//!
//! The metric formulas themselves live in `carto_common::metrics`.

pub mod aggregator;
pub mod allenai;
pub mod auth;
pub mod datamap;
pub mod datamap_html;
pub mod effects;
pub mod cli;
pub mod config;
pub mod coordinator;
pub mod http;
pub mod jobs;
pub mod label_errors;
pub mod live;
pub mod locking;
pub mod outputs;
pub mod placement;
pub mod progress;
pub mod recompute;
pub mod record;
pub mod recovery;
pub mod registry;
pub mod relabel;
pub mod remote;
pub mod reports;
pub mod roots;
pub mod run;
pub mod select;
pub mod server;
pub mod service;
pub mod suspects;
