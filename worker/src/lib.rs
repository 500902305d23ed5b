//! `carto-worker`: trains one data-parallel rank of a cartography job with
//! libtorch (tch) and streams every sample's per-epoch dynamics to the
//! coordinator. The only crate that links libtorch.
//!
//! - [`client`]: the gRPC session (register, heartbeats, orders, reports).
//! - [`trainer`]: the training loop and the dynamics recorder.
//! - [`model`], [`optim`], [`data`], [`text`]: models, Adam, inputs, hashing.
//! - [`collective`]: gradient all-reduce across ranks.
//! - [`transformer`]: BERT / RoBERTa from Hugging Face checkpoints.

pub mod autocast;
pub mod checkpoint;
pub mod client;
pub mod collective;
pub mod data;
pub mod dropout;
pub mod model;
pub mod optim;
pub mod text;
pub mod trainer;
pub mod transformer;

/// Why a rank stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The job's data or spec is wrong (not worth retrying elsewhere).
    #[error("{0}")]
    Invalid(String),
    /// This worker cannot run the job (device, model).
    #[error("{0}")]
    Unsupported(String),
    /// Loss or logits became NaN or infinite.
    #[error("{0}")]
    Diverged(String),
    /// The coordinator aborted this job or generation.
    #[error("aborted by the coordinator")]
    Aborted,
    /// Talking to the coordinator failed; `code` is the gRPC status code
    /// (FAILED_PRECONDITION: this generation has ended; UNAUTHENTICATED: a
    /// wrong token or lease; UNAVAILABLE: the coordinator went away).
    #[error("coordinator: {code:?}: {message}")]
    Rpc { code: tonic::Code, message: String },
    #[error("collective: {0}")]
    Collective(String),
    #[error("{0}")]
    Internal(String),
}

impl From<tonic::Status> for WorkerError {
    fn from(s: tonic::Status) -> Self {
        WorkerError::Rpc { code: s.code(), message: s.message().to_string() }
    }
}

impl From<carto_common::CartoError> for WorkerError {
    fn from(e: carto_common::CartoError) -> Self {
        match e {
            carto_common::CartoError::InvalidInput(m) => WorkerError::Invalid(m),
            other => WorkerError::Internal(other.to_string()),
        }
    }
}

impl WorkerError {
    /// Errors caused by the user's input, which the coordinator reports as the
    /// job's failure rather than retrying.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, WorkerError::Invalid(_) | WorkerError::Unsupported(_) | WorkerError::Diverged(_))
    }

    /// The coordinator says this generation is over (re-formed, cancelled,
    /// finished): the work stops, and there is no failure to report.
    pub fn generation_ended(&self) -> bool {
        matches!(self, WorkerError::Aborted | WorkerError::Rpc { code: tonic::Code::FailedPrecondition, .. })
    }
}
