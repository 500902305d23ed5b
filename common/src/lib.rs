//! carto's shared core. Everything here builds without libtorch, so the
//! coordinator and its tests never need it.
//!
//! Where things are:
//! - [`metrics`]: the metric formulas (one row of logits → gold_prob, margin, …;
//!   per-sample accumulators → confidence, variability, …).
//! - [`dynamics`]: the Arrow schema of the raw per-epoch dynamics and its builder.
//! - [`ipc`]: Arrow IPC chunking of dynamics for the wire (≤ 2 MiB a chunk).
//! - [`dataset`]: Parquet / CSV / JSONL readers with row- and column-precise errors.
//! - [`sampler`]: the DistributedSampler shard plan every rank and the coordinator share.
//! - [`spec`]: the job spec (flags, JOB.toml, wire form) and its defaults.
//! - [`proto`]: the generated gRPC API.

pub mod cluster_env;
pub mod dataset;
pub mod dynamics;
pub mod epochs;
pub mod error;
pub mod ipc;
pub mod logits;
pub mod metrics;
pub mod memory;
pub mod proto;
pub mod sampler;
pub mod spec;
pub mod threshold;
pub mod transport;

pub use error::{CartoError, Result};
