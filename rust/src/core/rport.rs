//! Symmetric responses for peers that did not ask for them (Kamailio's
//! `force_rport()`): the top Via of a UDP request gets a bare `rport`, as if
//! the sender had written it (RFC 3581 §4). Everything downstream then
//! follows RFC 3581 unchanged: responses carry `received` and `rport=PORT`
//! and go back to the source address and port; a relayed request carries
//! that stamped Via, so replies from downstream come back the same way.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{Core, Incoming};
use crate::sip::{Framing, Limits, Message};
use crate::transport::Source;

impl Core {
    /// `App(force_rport=True)`: every UDP request from now on.
    pub fn set_force_rport(&self, on: bool) {
        self.force_rport.store(on, Ordering::Relaxed);
    }

    pub fn force_rport(&self) -> bool {
        self.force_rport.load(Ordering::Relaxed)
    }

    /// `msg` as the core should treat it: with `rport` added when
    /// force_rport is on and the request came over UDP without it (streams
    /// answer over their connection and are stamped anyway).
    pub(super) fn apply_force_rport(&self, msg: Message, source: Source) -> Message {
        if !self.force_rport() || source.transport.is_stream() {
            return msg;
        }
        with_rport(&msg, &self.config.limits).unwrap_or(msg)
    }

    /// `req.force_rport()`: the held request `inc`, and its server
    /// transaction's copy (what answers and relays are built from), get
    /// `rport`. UDP only: streams answer over their connection.
    pub fn force_rport_of(&self, inc: &mut Incoming) {
        if inc.source.transport.is_stream() {
            return;
        }
        let Some(msg) = with_rport(&inc.msg, &self.config.limits) else {
            return;
        };
        if let Some(txn) = inc.txn {
            self.with_services(|cx, _| {
                if let Some(t) = cx.txns.servers.get_mut(&txn) {
                    t.request = msg.clone();
                }
            });
        }
        inc.msg = msg;
    }
}

/// A copy of request `msg` whose top Via ends in `;rport`; None when it is a
/// response or already has one.
pub fn with_rport(msg: &Message, limits: &Limits) -> Option<Message> {
    if !msg.is_request() || msg.top_via().rport().is_some() {
        return None;
    }
    let end = msg.top_via_span().end as usize;
    let old = msg.bytes();
    let mut out = Vec::with_capacity(old.len() + 6);
    out.extend_from_slice(&old[..end]);
    out.extend_from_slice(b";rport");
    out.extend_from_slice(&old[end..]);
    let limits = Limits {
        max_message_size: limits.max_message_size + 6,
        ..limits.clone()
    };
    Message::parse(Bytes::from(out), Framing::Datagram, &limits).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Message {
        Message::parse(
            Bytes::from(text.replace('\n', "\r\n")),
            Framing::Datagram,
            &Limits::default(),
        )
        .unwrap()
    }

    const REQ: &str = "OPTIONS sip:b@example.com SIP/2.0\n\
        Via: SIP/2.0/UDP 10.0.0.7:5070;branch=z9hG4bK1 , SIP/2.0/UDP h2;branch=z9hG4bK2\n\
        From: <sip:a@example.com>;tag=1\nTo: <sip:b@example.com>\nCall-ID: c\n\
        CSeq: 1 OPTIONS\nContent-Length: 4\n\nbody";

    #[test]
    fn adds_a_bare_rport_to_the_top_via_only() {
        let m = with_rport(&parse(REQ), &Limits::default()).unwrap();
        let vias = m.vias();
        assert_eq!(vias[0].rport(), Some(None));
        assert_eq!(vias[0].branch(), Some("z9hG4bK1"));
        assert_eq!(vias[1].rport(), None);
        assert_eq!(m.body(), b"body");
        assert_eq!(m.call_id(), "c");
        // Already there (bare or with a value): unchanged.
        assert!(with_rport(&m, &Limits::default()).is_none());
        let stamped = REQ.replace(";branch=z9hG4bK1", ";rport=9;branch=z9hG4bK1");
        assert!(with_rport(&parse(&stamped), &Limits::default()).is_none());
    }

    #[test]
    fn responses_are_left_alone() {
        let resp = "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 10.0.0.7:5070;branch=z9hG4bK1\n\
            From: <sip:a@x>;tag=1\nTo: <sip:b@x>;tag=2\nCall-ID: c\nCSeq: 1 OPTIONS\n\
            Content-Length: 0\n\n";
        assert!(with_rport(&parse(resp), &Limits::default()).is_none());
    }
}
