//! Reading the messages a dialog is built from, and naming records.

use bytes::Bytes;

use std::sync::atomic::Ordering;

use super::Dialogs;
use crate::service::{mix64, Node};
use crate::sip::{Framing, HeaderId, Limits, Message, NameAddr};
use crate::transport::{Destination, Source, Transport};

pub(super) fn parse(bytes: &Bytes) -> Option<Message> {
    Message::parse(
        bytes.clone(),
        Framing::Stream,
        &Limits {
            max_message_size: usize::MAX,
            ..Limits::default()
        },
    )
    .ok()
}

/// Every value of the (Record-)Route headers of `msg`, in order, as written.
pub(super) fn route_values(msg: &Message, id: HeaderId) -> Vec<Box<str>> {
    let mut out = Vec::new();
    for h in msg.headers().iter().filter(|h| h.id == id) {
        let v = msg.header_value(h);
        let Some(parts) = crate::sip::scan::split_commas(v.as_bytes(), 0, v.len()) else {
            continue;
        };
        out.extend(parts.into_iter().map(|(a, b)| v[a..b].trim().into()));
    }
    out
}

pub(super) fn names_us(node: &Node, value: &str) -> bool {
    NameAddr::parse(value).is_ok_and(|n| {
        node.wire.is_local(
            n.uri.host,
            n.uri.port,
            n.uri.param("transport").and_then(Transport::parse),
        )
    })
}

/// Where a request whose first Route is `value` goes.
pub(super) fn route_destination(node: &Node, value: &str) -> Option<Destination> {
    let n = NameAddr::parse(value).ok()?;
    let hop = crate::proxy::resolve(node, &n.uri).ok()?;
    Some(Destination {
        transport: hop.transport,
        addr: hop.addr,
        conn: None,
    })
}

/// The caller is reached where its INVITE came from (its connection for
/// streams): the address a NATed phone can be reached at.
pub(super) fn source_destination(s: &Source) -> Destination {
    Destination {
        transport: s.transport,
        addr: s.addr,
        conn: s.conn,
    }
}

pub(super) fn contact_uri(msg: &Message) -> String {
    msg.header(HeaderId::Contact)
        .and_then(|c| NameAddr::parse_list(c).ok())
        .and_then(|l| l.first().map(|n| n.uri.raw.to_string()))
        .unwrap_or_else(|| msg.to().uri.raw.to_string())
}

pub(super) fn source_text(s: &Source) -> String {
    format!("{}:{}", s.transport.as_str().to_ascii_lowercase(), s.addr)
}

/// A record's id: unique in this run (a counter) and across runs (mixed
/// with the node's per-run secret).
pub(super) fn record_id(node: &Node, dialogs: &Dialogs) -> String {
    let n = dialogs.next_record.fetch_add(1, Ordering::Relaxed);
    super::format_id(mix64(node.branch_key().rotate_left(29) ^ n))
}
