//! For the layers' unit tests: a `Wire` on a real 127.0.0.1 UDP socket and
//! peers that receive what it sends. Loopback delivery completes inside
//! `sendto`, so what a call sent is readable as soon as it returns: tests
//! read without waiting, and "nothing was sent" is exact.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use bytes::Bytes;

use super::{Destination, ListenSpec, Source, Transport, Wire};
use crate::sip::{Framing, Limits, Message};
use crate::stats::Stats;
use crate::tls::TlsSettings;

/// A wire with one UDP listener on 127.0.0.1 (port chosen by the kernel).
pub fn udp_wire() -> Wire {
    let listen = [ListenSpec::parse("udp:127.0.0.1:0").expect("valid")];
    let (wire, streams) = Wire::bind(
        &listen,
        &TlsSettings::default(),
        Vec::new(),
        Arc::new(Stats::default()),
    )
    .expect("bind 127.0.0.1");
    assert!(streams.is_empty());
    wire
}

pub fn parse(text: &str) -> Message {
    Message::parse(
        Bytes::from(text.to_string()),
        Framing::Datagram,
        &Limits::default(),
    )
    .unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A SIP element on 127.0.0.1 that the wire sends to.
pub struct Peer {
    socket: UdpSocket,
    pub addr: SocketAddr,
}

impl Default for Peer {
    fn default() -> Self {
        Peer::new()
    }
}

impl Peer {
    pub fn new() -> Peer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_nonblocking(true).expect("nonblocking");
        let addr = socket.local_addr().expect("addr");
        Peer { socket, addr }
    }

    pub fn send_to(&self, bytes: &[u8], to: SocketAddr) {
        self.socket.send_to(bytes, to).expect("send");
    }

    /// Every datagram received so far, as text, oldest first.
    pub fn take(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, _)) = self.socket.recv_from(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    /// The one datagram received since the last read; fails on none or more.
    pub fn one(&self) -> String {
        let mut got = self.take();
        assert_eq!(got.len(), 1, "expected one datagram, got {got:#?}");
        got.remove(0)
    }

    /// The one datagram received, parsed.
    pub fn one_message(&self) -> Message {
        parse(&self.one())
    }

    pub fn nothing(&self) {
        let got = self.take();
        assert!(got.is_empty(), "expected nothing, got {got:#?}");
    }

    /// Where the wire's answers to this peer's requests go.
    pub fn source(&self, wire: &Wire) -> Source {
        Source::udp(self.addr, wire.udp()[0].local)
    }

    pub fn destination(&self) -> Destination {
        Destination {
            transport: Transport::Udp,
            addr: self.addr,
            conn: None,
        }
    }

    /// A request from this peer, its Via naming it (so answers come here).
    pub fn request(&self, method: &str, branch: &str, extra: &str) -> Message {
        parse(&format!(
            "{method} sip:bob@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP {addr};branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@127.0.0.1>;tag=a1\r\n\
             To: <sip:bob@127.0.0.1>\r\n\
             Call-ID: {branch}@test\r\n\
             CSeq: 1 {method}\r\n\
             {extra}Content-Length: 0\r\n\r\n",
            addr = self.addr,
        ))
    }
}

/// First line of a SIP message ("SIP/2.0 180 Ringing", "CANCEL sip:...").
pub fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}
