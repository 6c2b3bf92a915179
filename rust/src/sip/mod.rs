//! SIP messages: parsing (zero-copy over the received bytes), the grammar
//! pieces (URI, Via, name-addr), and writing responses and forwarded requests.

mod address_memo;
pub mod edits;
mod error;
mod framing;
mod header;
mod lines;
mod memo;
mod message;
#[cfg(test)]
mod message_tests;
mod method;
mod nameaddr;
pub mod rewrite;
pub mod scan;
mod span;
mod uri;
mod via;
pub mod write;

pub use edits::HeaderEdits;
pub use error::ParseError;
pub use framing::{frame_stream, StreamFrame};
pub use header::HeaderId;
pub use message::{Message, MAGIC_COOKIE};
pub use method::{default_reason, Method};
pub use nameaddr::NameAddr;
pub use span::{Framing, HeaderField, Span, StartLine};
pub use uri::{find_param, host_ip, split_hostport, unescape, Scheme, Uri};
pub use via::{param_lookup, param_pairs, Via};

/// Hard limits applied before and during parsing; a message over any of them
/// is refused with a clear error instead of costing unbounded memory.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_size: usize,
    pub max_headers: usize,
    pub max_line_length: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 65_535,
            max_headers: 128,
            max_line_length: 8_192,
        }
    }
}
