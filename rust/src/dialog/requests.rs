//! Requests the dialog module sends itself inside a dialog: BYE when it ends
//! a call (timeout, failed keepalive, `dlg.end`) and keepalive OPTIONS. Each
//! goes through a client transaction of its own (retransmitted over UDP,
//! timed out by Timer F), owned by the dialog service; its answer comes back
//! to `hooks::on_local_response`.

use bytes::Bytes;

use super::state::{Dialog, Leg};
use super::{LocalRequest, Table, SERVICE};
use crate::service::{mix64, Node};
use crate::sip::write::hostport as fmt_hostport;
use crate::transaction::{client, Layer, Owner};

/// Branch prefix of requests the dialog module originates.
const BRANCH_PREFIX: &str = "z9hG4bKdlg";

/// Sends `method` towards the callee (`to_callee`) or the caller, as the
/// other side would: From is the other side's header, CSeq continues the
/// other side's numbering. Returns false when that side cannot be reached.
pub fn send(
    node: &Node,
    layer: &mut Layer,
    table: &mut Table,
    d: &mut Dialog,
    to_callee: bool,
    method: &str,
) -> bool {
    let Some(callee) = d.callee.as_deref_mut() else {
        return false;
    };
    let (from, to) = if to_callee {
        (&mut d.caller, callee)
    } else {
        (callee, &mut d.caller)
    };
    let Some(dest) = to.dest else {
        return false;
    };
    // A BYE takes the next number; a keepalive reuses the last one, so the
    // side's own next request (with that number + 1) is still in order
    // (RFC 3261 §12.2.2 refuses only lower numbers).
    let cseq = if method == "BYE" {
        from.cseq = from.cseq.saturating_add(1);
        from.cseq
    } else {
        from.cseq.max(1)
    };
    let unique = layer.next_id();
    let branch = format!("{BRANCH_PREFIX}{:x}.{unique:x}", mix64(d.id ^ unique));
    let local = node.wire.advertised(dest.transport, dest.addr);
    let bytes = build(
        method,
        from,
        to,
        &d.call_id,
        cseq,
        &branch,
        &fmt_hostport(local),
        dest.transport.as_str(),
    );
    let id = layer.next_id();
    table.local.insert(
        id,
        LocalRequest {
            dialog: d.id,
            to_callee,
            keepalive: method == "OPTIONS",
        },
    );
    let owner = Owner {
        service: SERVICE,
        id,
    };
    client::start(
        &node.wire,
        layer,
        owner,
        branch,
        method,
        Bytes::from(bytes),
        dest,
    );
    table.stats.requests_sent += 1;
    true
}

#[allow(clippy::too_many_arguments)]
fn build(
    method: &str,
    from: &Leg,
    to: &Leg,
    call_id: &str,
    cseq: u32,
    branch: &str,
    via_host: &str,
    transport: &str,
) -> Vec<u8> {
    let rport = if transport == "UDP" { ";rport" } else { "" };
    let mut out = format!(
        "{method} {} SIP/2.0\r\nVia: SIP/2.0/{transport} {via_host};branch={branch}{rport}\r\nMax-Forwards: 70\r\n",
        to.contact
    );
    for r in to.route.iter() {
        out.push_str("Route: ");
        out.push_str(r);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "From: {}\r\nTo: {}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        from.header, to.header
    ));
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bye_carries_the_other_sides_identity_and_route_set() {
        let caller = Leg {
            tag: "a".into(),
            header: "<sip:alice@h>;tag=a".into(),
            contact: "sip:alice@10.0.0.1:5070".into(),
            route: Box::new([]),
            dest: None,
            cseq: 1,
            keepalive_pending: false,
        };
        let callee = Leg {
            tag: "b".into(),
            header: "<sip:bob@h>;tag=b".into(),
            contact: "sip:bob@10.0.0.2:5090".into(),
            route: Box::new(["<sip:p2.example;lr>".into()]),
            dest: None,
            cseq: 0,
            keepalive_pending: false,
        };
        let bye = String::from_utf8(build(
            "BYE",
            &caller,
            &callee,
            "c1",
            2,
            "z9hG4bKdlg1",
            "127.0.0.1:5060",
            "UDP",
        ))
        .unwrap();
        assert!(
            bye.starts_with("BYE sip:bob@10.0.0.2:5090 SIP/2.0\r\n"),
            "{bye}"
        );
        assert!(bye.contains("\r\nRoute: <sip:p2.example;lr>\r\n"));
        assert!(bye.contains("\r\nFrom: <sip:alice@h>;tag=a\r\nTo: <sip:bob@h>;tag=b\r\n"));
        assert!(bye.contains("\r\nCSeq: 2 BYE\r\n"));
        assert!(bye.contains(";rport\r\n"));
        let m = crate::sip::Message::parse(
            Bytes::from(bye),
            crate::sip::Framing::Datagram,
            &crate::sip::Limits::default(),
        )
        .unwrap();
        assert_eq!(m.from_tag(), Some("a"));
        assert_eq!(m.to_tag(), Some("b"));
    }
}
