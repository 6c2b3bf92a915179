//! A received message written again with header edits and, optionally, a new
//! body: what an `on_reply` handler (or a media relay rewriting SDP) changed
//! in a response before it goes upstream. Untouched header lines are copied
//! byte-exact; Content-Length is always written for the body that goes out.

use std::io::Write as _;

use super::header::HeaderId;
use super::message::Message;
use super::write::HeaderEdit;

/// Whether `edits` remove the header called `name` (compact forms folded).
pub fn edits_remove(edits: &[HeaderEdit], name: &str) -> bool {
    edits.iter().any(|e| match e {
        HeaderEdit::Remove(n) => same_name(n, name),
        HeaderEdit::Add(..) | HeaderEdit::Body(_) => false,
    })
}

fn same_name(a: &str, b: &str) -> bool {
    let (ia, ib) = (
        HeaderId::from_name(a.as_bytes()),
        HeaderId::from_name(b.as_bytes()),
    );
    if ia == HeaderId::Other || ib == HeaderId::Other {
        a.eq_ignore_ascii_case(b)
    } else {
        ia == ib
    }
}

/// `msg` with `edits` applied (removals, then additions after the last
/// header) and `body` (else a `HeaderEdit::Body`) in place of its own.
pub fn rewrite(msg: &Message, edits: &[HeaderEdit], body: Option<&[u8]>) -> Vec<u8> {
    let b = msg.bytes();
    let body = body
        .or_else(|| super::write::body_override(edits))
        .unwrap_or(msg.body());
    let mut out = Vec::with_capacity(msg.as_bytes().len() + body.len() + 64);
    out.extend_from_slice(&b[..msg.headers_start()]);
    for h in msg.headers() {
        if h.id == HeaderId::ContentLength {
            continue;
        }
        if h.id != HeaderId::Via && edits_remove(edits, msg.header_name(h)) {
            continue;
        }
        out.extend_from_slice(&b[h.line.range()]);
    }
    for e in edits {
        if let HeaderEdit::Add(n, v) = e {
            let _ = write!(out, "{n}: {v}\r\n");
        }
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Framing, Limits};
    use bytes::Bytes;

    fn parse(raw: &str) -> Message {
        Message::parse(
            Bytes::from(raw.to_string()),
            Framing::Datagram,
            &Limits::default(),
        )
        .unwrap()
    }

    const RESP: &str = "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP p;branch=z9hG4bK1\r\nv: SIP/2.0/UDP a;branch=z9hG4bK2\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nX-Old: 1\r\nl: 4\r\n\r\nabcd";

    fn named<'a>(m: &'a Message, name: &'a str) -> Option<&'a str> {
        m.headers_named(name).next().map(|h| m.header_value(h))
    }

    #[test]
    fn edits_and_body_apply_and_length_follows() {
        let m = parse(RESP);
        let edits = vec![
            HeaderEdit::Remove("x-old".into()),
            HeaderEdit::Remove("Via".into()),
            HeaderEdit::Add("X-New".into(), "yes".into()),
        ];
        let out = parse(std::str::from_utf8(&rewrite(&m, &edits, Some(b"v=0\r\n"))).unwrap());
        assert_eq!(out.status(), Some(180));
        assert_eq!(out.vias().len(), 2, "Via is never removed");
        assert!(named(&out, "X-Old").is_none());
        assert_eq!(named(&out, "X-New"), Some("yes"));
        assert_eq!(out.body(), b"v=0\r\n");
        assert_eq!(out.header(HeaderId::ContentLength), Some("5"));
    }

    #[test]
    fn no_edits_keeps_the_message() {
        let m = parse(RESP);
        let out = parse(std::str::from_utf8(&rewrite(&m, &[], None)).unwrap());
        assert_eq!(out.body(), b"abcd");
        assert_eq!(named(&out, "X-Old"), Some("1"));
    }
}
