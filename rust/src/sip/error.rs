//! Parse errors carry the status code a server should answer with, so the
//! transport can turn any rejection into a clear response.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 400 for malformed messages; 505 for an unknown SIP version; 413/431-like
    /// limits map to 513 (Message Too Large) as RFC 3261 §21.5.14 defines it.
    pub status: u16,
    pub reason: &'static str,
}

impl ParseError {
    pub const fn new(status: u16, reason: &'static str) -> Self {
        ParseError { status, reason }
    }
    pub const fn bad(reason: &'static str) -> Self {
        ParseError::new(400, reason)
    }
    pub const fn bad_uri(reason: &'static str) -> Self {
        ParseError::new(400, reason)
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

impl std::error::Error for ParseError {}
