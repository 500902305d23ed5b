//! Typed errors shared by all crates. Each kind maps to one gRPC status code and
//! one process exit code, so a bad input reads the same on the CLI and the wire.

/// carto's error type.
#[derive(Debug, thiserror::Error)]
pub enum CartoError {
    /// The user's data, flags or job spec are wrong. The message names the
    /// file, row, column or field at fault.
    #[error("{0}")]
    InvalidInput(String),
    /// A job, worker or file that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is valid but not now (stale generation, job already finished…).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A bound on what one caller may make the coordinator hold was reached.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The job was cancelled.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// Anything else; the message is for logs and never carries debug dumps.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = CartoError> = std::result::Result<T, E>;

impl CartoError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        CartoError::InvalidInput(msg.into())
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        CartoError::Internal(msg.into())
    }
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        CartoError::Io { path: path.as_ref().display().to_string(), source }
    }
}

impl From<CartoError> for tonic::Status {
    fn from(e: CartoError) -> Self {
        use tonic::Code;
        let code = match &e {
            CartoError::InvalidInput(_) => Code::InvalidArgument,
            CartoError::NotFound(_) => Code::NotFound,
            CartoError::FailedPrecondition(_) => Code::FailedPrecondition,
            CartoError::Unauthenticated(_) => Code::Unauthenticated,
            CartoError::Cancelled(_) => Code::Cancelled,
            CartoError::ResourceExhausted(_) => Code::ResourceExhausted,
            CartoError::Io { .. } | CartoError::Internal(_) => Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}

impl From<tonic::Status> for CartoError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let msg = s.message().to_string();
        match s.code() {
            Code::InvalidArgument | Code::OutOfRange => CartoError::InvalidInput(msg),
            Code::NotFound => CartoError::NotFound(msg),
            Code::FailedPrecondition | Code::Aborted => CartoError::FailedPrecondition(msg),
            Code::Unauthenticated | Code::PermissionDenied => CartoError::Unauthenticated(msg),
            Code::Cancelled => CartoError::Cancelled(msg),
            Code::ResourceExhausted => CartoError::ResourceExhausted(msg),
            code => CartoError::Internal(format!("{code:?}: {msg}")),
        }
    }
}
