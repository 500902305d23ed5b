//! Shared-secret authentication: with a token configured, every call but the
//! health check must carry `authorization: Bearer <token>` (so probes work
//! without it). Compared in constant time. Tokens come from a file, the
//! environment or a flag ([`resolve_token`]); an empty one is an error, never
//! "no authentication".

use std::path::Path;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Server side: checks the bearer token.
#[derive(Clone)]
pub struct RequireToken {
    expected: Expected,
}

#[derive(Clone)]
enum Expected {
    Open,
    Token(Vec<u8>),
    /// An empty token was configured: nothing matches it.
    Nothing,
}

impl RequireToken {
    /// `None`: every call passes. `Some("")` refuses every call (an empty
    /// secret is a mistake, not a way to turn authentication off; `carto
    /// serve` refuses to start with one).
    pub fn new(token: Option<&str>) -> Self {
        let expected = match token {
            None => Expected::Open,
            Some("") => Expected::Nothing,
            Some(t) => Expected::Token(format!("Bearer {t}").into_bytes()),
        };
        RequireToken { expected }
    }
}

/// Equality whose time does not depend on the contents of the inputs (nor on
/// where they first differ); lengths are compared in full.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Fold the whole length difference, not a truncation of it.
    let len_diff = (a.len() ^ b.len()) as u64;
    let mut diff: u8 = ((len_diff | len_diff.wrapping_neg()) >> 63) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    std::hint::black_box(diff) == 0
}

/// The prefix of the placeholder in `deploy/k8s/secret.yaml`.
pub const PLACEHOLDER_PREFIX: &str = "CHANGE-ME";

/// A token's value, checked: not empty, not the deploy files' placeholder.
/// `what` names where it came from, for the message.
pub fn check_token(token: &str, what: &str) -> anyhow::Result<()> {
    if token.is_empty() {
        anyhow::bail!("{what} is empty; an empty token does not turn authentication off (generate one with `openssl rand -hex 32`)");
    }
    if token.starts_with(PLACEHOLDER_PREFIX) {
        anyhow::bail!("{what} is still the placeholder {PLACEHOLDER_PREFIX}…; generate a secret with `openssl rand -hex 32`");
    }
    Ok(())
}

/// Reads a token file: its contents less one trailing newline (`\n` or
/// `\r\n`). Empty is an error. Warns on stderr when others than the owner may
/// read it.
pub fn read_token_file(path: &Path, flag: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path).with_context(|| format!("{flag} {}", path.display()))?;
    let token = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if token.is_empty() {
        anyhow::bail!("{flag} {}: the file is empty; put a secret in it (e.g. `openssl rand -hex 32 > FILE`)", path.display());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o077 != 0 {
                eprintln!(
                    "carto: warning: {flag} {} can be read by other users (mode {:o}); `chmod 600` it",
                    path.display(),
                    m.permissions().mode() & 0o777
                );
            }
        }
    }
    Ok(token.to_string())
}

/// One token from a file flag or a value (flag or environment), the file first.
/// `None` when neither is given.
pub fn resolve_token(file: Option<&Path>, value: Option<&str>, file_flag: &str, value_flag: &str) -> anyhow::Result<Option<String>> {
    match (file, value) {
        (Some(f), _) => read_token_file(f, file_flag).map(Some),
        (None, Some(v)) => {
            if v.is_empty() {
                anyhow::bail!("{value_flag} is empty; an empty token does not turn authentication off");
            }
            Ok(Some(v.to_string()))
        }
        (None, None) => Ok(None),
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let expected = match &self.expected {
            Expected::Open => return Ok(req),
            Expected::Nothing => return Err(Status::unauthenticated("this coordinator has an empty token and accepts no calls")),
            Expected::Token(t) => t,
        };
        match req.metadata().get("authorization") {
            Some(v) if constant_time_eq(v.as_bytes(), expected) => Ok(req),
            Some(_) => Err(Status::unauthenticated("wrong token")),
            None => Err(Status::unauthenticated("this coordinator needs a token: set CARTO_TOKEN or pass --token-file")),
        }
    }
}

/// Client side: adds the bearer token to every call.
#[derive(Clone, Default)]
pub struct SendToken(Option<MetadataValue<Ascii>>);

impl SendToken {
    pub fn new(token: Option<&str>) -> anyhow::Result<Self> {
        match token {
            None => Ok(SendToken(None)),
            Some("") => anyhow::bail!("the token is empty"),
            Some(t) => Ok(SendToken(Some(
                format!("Bearer {t}").parse().map_err(|_| anyhow::anyhow!("--token holds characters not allowed in a header"))?,
            ))),
        }
    }
}

impl Interceptor for SendToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abc", b"Bearer abd"));
        assert!(!constant_time_eq(b"Bearer abc", b"Bearer abcd"));
        assert!(!constant_time_eq(b"", b"x"));
        let mut check = RequireToken::new(Some("s3cret"));
        let mut ok = Request::new(());
        ok.metadata_mut().insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(check.call(ok).is_ok());
        let err = check.call(Request::new(())).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let mut open = RequireToken::new(None);
        assert!(open.call(Request::new(())).is_ok());
    }

    #[test]
    fn lengths_compare_in_full() {
        // A length difference of exactly 65536 (and any multiple of 2^16)
        // once folded to nothing.
        let t = b"Bearer s3cret".to_vec();
        let mut long = t.clone();
        long.extend(std::iter::repeat(0xFF).take(65536));
        assert!(!constant_time_eq(&t, &long));
        assert!(!constant_time_eq(&long, &t));
        let mut longer = t.clone();
        longer.extend(std::iter::repeat(0xFF).take(1 << 24));
        assert!(!constant_time_eq(&t, &longer));
        assert!(constant_time_eq(&long, &long.clone()));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn an_empty_token_refuses_everything() {
        let mut check = RequireToken::new(Some(""));
        let mut req = Request::new(());
        req.metadata_mut().insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(check.call(req).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(check.call(Request::new(())).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert!(SendToken::new(Some("")).is_err());
    }

    #[test]
    fn tokens_are_checked_and_read_from_files() {
        assert!(check_token("", "--token").is_err());
        let e = check_token("CHANGE-ME-use-openssl-rand-hex-32", "CARTO_TOKEN").unwrap_err().to_string();
        assert!(e.contains("openssl rand -hex 32"), "{e}");
        assert!(check_token("0123abcd", "--token").is_ok());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "abc123\n").unwrap();
        assert_eq!(read_token_file(&f, "--token-file").unwrap(), "abc123");
        std::fs::write(&f, "abc123\r\n").unwrap();
        assert_eq!(read_token_file(&f, "--token-file").unwrap(), "abc123");
        std::fs::write(&f, "\n").unwrap();
        assert!(read_token_file(&f, "--token-file").is_err());
        std::fs::write(&f, "").unwrap();
        assert!(read_token_file(&f, "--token-file").is_err());
        assert_eq!(resolve_token(Some(&f), Some("x"), "--token-file", "--token").is_err(), true);
        assert_eq!(resolve_token(None, Some("x"), "--token-file", "--token").unwrap().as_deref(), Some("x"));
        assert!(resolve_token(None, Some(""), "--token-file", "--token").is_err());
        assert_eq!(resolve_token(None, None, "--token-file", "--token").unwrap(), None);
    }
}
