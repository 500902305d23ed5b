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
    /// The caller is known but may not do this: e.g. a path outside the
    /// coordinator's `--data-root` / `--out-root`.
    #[error("{0}")]
    PermissionDenied(String),
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
    pub fn denied(msg: impl Into<String>) -> Self {
        CartoError::PermissionDenied(msg.into())
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
            CartoError::PermissionDenied(_) => Code::PermissionDenied,
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
            Code::Unauthenticated => CartoError::Unauthenticated(msg),
            Code::PermissionDenied => CartoError::PermissionDenied(msg),
            Code::Cancelled => CartoError::Cancelled(msg),
            Code::ResourceExhausted => CartoError::ResourceExhausted(msg),
            code => CartoError::Internal(format!("{code:?}: {msg}")),
        }
    }
}

/// What a remote caller gets in place of values read from a file.
pub const WITHHELD: &str = "…";

/// The text after which the dataset readers list a file's column names:
/// `PATH: column 'C' not found (columns: a, b, c)`. Always the end of the message.
pub const COLUMNS_MARKER: &str = " (columns: ";

/// The message of an error for a caller on another machine: the same text,
/// less anything read from the caller's files (column names, cell values),
/// so that a coordinator that can read more than its users never shows them
/// what a file holds. The location — file, row, line, column asked for — and
/// the kind of problem stay, so the user can find the cell themselves.
///
/// The dataset readers (`carto_common::dataset`) write file contents in only
/// these forms, and this function withholds each:
/// - the column list of a header, after [`COLUMNS_MARKER`] to the end of the
///   message → ` (columns not listed)`;
/// - a cell's text, always double-quoted with escapes (`"abc"`, `"a\"b"…`)
///   → `"…"`;
/// - a value in words: the token after `label ` or `value ` when it reads as
///   a number (`negative label -1`, `feature value 1e300`) → `…`, and a
///   parenthesised value after `class `, `label ` or `value `
///   (`only one class (cat)`, `infinite label (inf)`) → `(…)`;
/// - a conversion error of the Parquet reader (`cannot convert: …`, which
///   may quote a cell) → `cannot convert (details withheld)`.
///
/// Anything else (flags, paths the caller sent, counts, row and line
/// numbers) is kept, so messages about the user's own spec read the same.
/// Local commands show the full message; apply this where a message crosses
/// the network (the coordinator's answers to SubmitJob).
pub fn redact_for_remote(msg: &str) -> String {
    let mut msg = msg.to_string();
    if let Some(i) = msg.find(COLUMNS_MARKER) {
        msg.truncate(i);
        msg.push_str(" (columns not listed)");
    }
    if let Some(i) = msg.find("cannot convert: ") {
        msg.truncate(i);
        msg.push_str("cannot convert (details withheld)");
    }
    let chars: Vec<char> = msg.chars().collect();
    let mut out = String::with_capacity(msg.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            // A quoted cell: skip to the closing quote, honouring escapes.
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            out.push('"');
            out.push_str(WITHHELD);
            out.push('"');
            i = (j + 1).min(chars.len());
            // snippet()'s truncation mark
            if chars.get(i) == Some(&'…') {
                i += 1;
            }
            continue;
        }
        out.push(c);
        i += 1;
        let after = |word: &str| out.ends_with(word) && {
            let before = out.len() - word.len();
            before == 0 || !out[..before].chars().next_back().is_some_and(|p| p.is_alphanumeric() || p == '_')
        };
        if c == ' ' && (after("label ") || after("value ") || after("class ")) {
            if chars.get(i) == Some(&'(') {
                // a parenthesised value: up to the matching ')'
                let mut depth = 0usize;
                let mut j = i;
                while j < chars.len() {
                    match chars[j] {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                out.push('(');
                out.push_str(WITHHELD);
                out.push(')');
                i = (j + 1).min(chars.len());
            } else if looks_numeric(&chars[i..]) {
                let mut j = i;
                while j < chars.len() && !chars[j].is_whitespace() && !matches!(chars[j], ';' | ',' | ')') {
                    j += 1;
                }
                out.push_str(WITHHELD);
                i = j;
            }
        }
    }
    out
}

/// Whether text starts like a number as Rust prints one (`-1`, `0.5`, `1e300`, `inf`, `NaN`).
fn looks_numeric(rest: &[char]) -> bool {
    let s: String = rest.iter().take(4).collect();
    let body = s.trim_start_matches(['-', '+']);
    body.starts_with(|c: char| c.is_ascii_digit() || c == '.') || body.starts_with("inf") || body.starts_with("NaN")
}
