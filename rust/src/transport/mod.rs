//! Transports: where messages come from and how bytes go back out.
//!
//! UDP sockets are read on the thread that polls them (the Python event
//! loop's thread, so a datagram costs no thread crossing, or a reader thread:
//! decision 0019); stream transports run on a tokio runtime thread
//! (`stream`). `wire::Wire` is what the layers above use to send.

mod backoff;
pub mod listen;
pub mod stream;
#[cfg(test)]
pub mod testkit;
pub mod udp;
pub mod wire;
pub mod ws;

use std::fmt;
use std::net::SocketAddr;

pub use listen::ListenSpec;
pub use wire::{StartError, Wire};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }
    pub fn parse(s: &str) -> Option<Transport> {
        [
            ("udp", Transport::Udp),
            ("tcp", Transport::Tcp),
            ("tls", Transport::Tls),
            ("ws", Transport::Ws),
            ("wss", Transport::Wss),
        ]
        .into_iter()
        .find(|(name, _)| s.eq_ignore_ascii_case(name))
        .map(|(_, t)| t)
    }
    pub fn is_stream(self) -> bool {
        self != Transport::Udp
    }
    /// WebSocket clients are reachable only over the connection they opened.
    pub fn is_websocket(self) -> bool {
        matches!(self, Transport::Ws | Transport::Wss)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a message came from: enough to answer it (RFC 3261 §18.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// The local listener it arrived on.
    pub local: SocketAddr,
    /// For streams, the connection it arrived on (responses reuse it).
    pub conn: Option<u64>,
}

impl Source {
    /// A datagram from `addr` received on the UDP listener `local`.
    pub fn udp(addr: SocketAddr, local: SocketAddr) -> Source {
        Source {
            transport: Transport::Udp,
            addr,
            local,
            conn: None,
        }
    }
}

/// A resolved next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hop {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// Where to send bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// Reuse this connection when it is still open.
    pub conn: Option<u64>,
}
