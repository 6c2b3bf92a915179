//! The pieces of a parsed message that the line scanner (`lines`) and the
//! message (`message`) share: byte spans into the received buffer, header
//! fields, the start line, and how the message was framed.

use super::header::HeaderId;
use super::method::Method;

/// A byte range into the message buffer. `u32` keeps headers small; message
/// size limits keep every offset well inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub(crate) fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderField {
    pub id: HeaderId,
    pub name: Span,
    /// The value without surrounding LWS; folds inside are kept as received.
    pub value: Span,
    /// The whole header line including its line end, for byte-exact copying.
    pub line: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine {
    Request {
        method: Method,
        method_span: Span,
        uri: Span,
    },
    Response {
        status: u16,
        reason: Span,
    },
}

/// How the message arrived: datagrams may carry trailing octets beyond
/// Content-Length (ignored) and may omit it; streams are framed beforehand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Datagram,
    Stream,
}
