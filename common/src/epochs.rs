//! Windows of epochs (`carto metrics --epochs`, `--suspect-epochs`): 0-based,
//! written like Rust and Python ranges.

use std::str::FromStr;

use crate::{CartoError, Result};

/// A window of epochs: `A..B` (B excluded, like Rust and Python ranges),
/// `A..=B` (B included), `A..`, `..B`, `..=B`, or one epoch `K`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochRange {
    pub start: u32,
    /// Exclusive end; `None` = no upper bound.
    pub end: Option<u32>,
}

impl EpochRange {
    pub const ALL: EpochRange = EpochRange { start: 0, end: None };

    pub fn contains(&self, epoch: u32) -> bool {
        epoch >= self.start && self.end.is_none_or(|e| epoch < e)
    }
}

impl FromStr for EpochRange {
    type Err = CartoError;
    fn from_str(s: &str) -> Result<Self> {
        EpochRange::parse(s, "--epochs")
    }
}

impl EpochRange {
    /// Parses `s`; errors name `flag`.
    pub fn parse(s: &str, flag: &str) -> Result<Self> {
        let bad = || {
            CartoError::invalid(format!(
                "{flag} '{s}': expected A..B (B excluded), A..=B, A.., ..B or K with non-negative integers"
            ))
        };
        let num = |t: &str| t.trim().parse::<u32>().map_err(|_| bad());
        let range = if let Some((a, b)) = s.split_once("..") {
            let start = if a.trim().is_empty() { 0 } else { num(a)? };
            let end = if let Some(b) = b.strip_prefix('=') {
                Some(num(b)?.checked_add(1).ok_or_else(bad)?)
            } else if b.trim().is_empty() {
                None
            } else {
                Some(num(b)?)
            };
            EpochRange { start, end }
        } else {
            let k = num(s)?;
            EpochRange { start: k, end: Some(k + 1) }
        };
        if range.end.is_some_and(|e| e <= range.start) {
            return Err(CartoError::invalid(format!("{flag} '{s}' selects no epoch")));
        }
        Ok(range)
    }
}


impl std::fmt::Display for EpochRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.end {
            Some(e) => write!(f, "{}..{e}", self.start),
            None => write!(f, "{}..", self.start),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_print_like_rust() {
        assert_eq!(EpochRange::parse("1..3", "--x").unwrap(), EpochRange { start: 1, end: Some(3) });
        assert_eq!(EpochRange::parse("1..=3", "--x").unwrap().to_string(), "1..4");
        assert_eq!(EpochRange::parse("2", "--x").unwrap().to_string(), "2..3");
        assert_eq!(EpochRange::parse("..2", "--x").unwrap().to_string(), "0..2");
        let e = EpochRange::parse("3..1", "--suspect-epochs").unwrap_err().to_string();
        assert!(e.contains("--suspect-epochs '3..1' selects no epoch"), "{e}");
    }
}
