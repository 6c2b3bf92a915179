//! Writing hidden messages: a request for the other side with only our Via,
//! no Record-Route, our Contact and the other side's Call-ID; and a response
//! for the requester with its own Vias, Call-ID and Record-Route put back.
//! Every other header line is copied byte-exact.

use std::fmt::Write as _;

use crate::sip::write::{removed_by, HeaderEdit};
use crate::sip::{HeaderId, Message, StartLine};

/// What replaces the hidden parts of a forwarded request.
pub struct RequestEdits<'a> {
    pub request_uri: Option<&'a str>,
    /// Our Via value (without `Via: `): the only one the next hop sees.
    pub via: &'a str,
    /// Leading Route values of the received request to drop (they name us).
    pub pop_routes: usize,
    /// In-dialog: the whole Route set, replacing the received one.
    pub routes: Option<&'a [String]>,
    /// Our Contact value, replacing the sender's (if it sent one).
    pub contact: Option<&'a str>,
    pub call_id: &'a str,
    pub header_edits: &'a [HeaderEdit],
}

fn push(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

pub fn hidden_request(req: &Message, e: &RequestEdits<'_>) -> Vec<u8> {
    let b = req.bytes();
    let mut out = Vec::with_capacity(req.as_bytes().len() + 128);
    let StartLine::Request {
        method_span, uri, ..
    } = req.start_line()
    else {
        return out;
    };
    out.extend_from_slice(&b[method_span.range()]);
    out.push(b' ');
    match e.request_uri {
        Some(u) => push(&mut out, u),
        None => out.extend_from_slice(&b[uri.range()]),
    }
    push(&mut out, " SIP/2.0\r\n");
    let _ = write!(Text(&mut out), "Via: {}\r\n", e.via);
    if let Some(routes) = e.routes.filter(|r| !r.is_empty()) {
        let _ = write!(Text(&mut out), "Route: {}\r\n", routes.join(", "));
    }
    let mut to_pop = e.pop_routes;
    let mut saw_max_forwards = false;
    for h in req.headers() {
        let name = req.header_name(h);
        if removed_by(e.header_edits, name) {
            continue;
        }
        match h.id {
            HeaderId::Via | HeaderId::RecordRoute | HeaderId::ContentLength => {}
            HeaderId::Route if e.routes.is_some() => {}
            HeaderId::Route if to_pop > 0 => {
                let value = req.header_value(h);
                let parts = crate::sip::scan::split_commas(value.as_bytes(), 0, value.len())
                    .unwrap_or_default();
                let dropped = to_pop.min(parts.len().max(1));
                to_pop -= dropped;
                if let Some(rest) = parts.get(dropped) {
                    let _ = write!(Text(&mut out), "{name}: {}\r\n", &value[rest.0..]);
                }
            }
            HeaderId::Contact => {
                if let Some(c) = e.contact {
                    let _ = write!(Text(&mut out), "Contact: {c}\r\n");
                }
            }
            HeaderId::CallId => {
                let _ = write!(Text(&mut out), "Call-ID: {}\r\n", e.call_id);
            }
            HeaderId::MaxForwards => {
                saw_max_forwards = true;
                let n = req.max_forwards().unwrap_or(70).saturating_sub(1);
                let _ = write!(Text(&mut out), "Max-Forwards: {n}\r\n");
            }
            _ => out.extend_from_slice(&b[h.line.range()]),
        }
    }
    if !saw_max_forwards {
        push(&mut out, "Max-Forwards: 70\r\n");
    }
    for edit in e.header_edits {
        if let HeaderEdit::Add(n, v) = edit {
            let _ = write!(Text(&mut out), "{n}: {v}\r\n");
        }
    }
    let body = req.body();
    let _ = write!(Text(&mut out), "Content-Length: {}\r\n\r\n", body.len());
    out.extend_from_slice(body);
    out
}

/// A response from the other side made fit for the requester: the Vias and
/// Call-ID of `original` (the request as the requester sent it), its
/// Record-Routes when `record_route` (a dialog-creating answer), and
/// `contact` instead of the responder's Contact.
pub fn hidden_response(
    resp: &Message,
    original: &Message,
    contact: Option<&str>,
    record_route: bool,
) -> Vec<u8> {
    let b = resp.bytes();
    let ob = original.bytes();
    let mut out = Vec::with_capacity(resp.as_bytes().len() + 256);
    out.extend_from_slice(&b[..resp.headers_start()]);
    for h in original.headers() {
        if h.id == HeaderId::Via || (record_route && h.id == HeaderId::RecordRoute) {
            out.extend_from_slice(&ob[h.line.range()]);
        }
    }
    for h in resp.headers() {
        match h.id {
            HeaderId::Via | HeaderId::RecordRoute | HeaderId::ContentLength => {}
            HeaderId::CallId => {
                let _ = write!(Text(&mut out), "Call-ID: {}\r\n", original.call_id());
            }
            HeaderId::Contact => {
                if let Some(c) = contact {
                    let _ = write!(Text(&mut out), "Contact: {c}\r\n");
                }
            }
            _ => out.extend_from_slice(&b[h.line.range()]),
        }
    }
    let body = resp.body();
    let _ = write!(Text(&mut out), "Content-Length: {}\r\n\r\n", body.len());
    out.extend_from_slice(body);
    out
}

struct Text<'a>(&'a mut Vec<u8>);
impl std::fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Framing, Limits};
    use bytes::Bytes;

    fn parse(s: &str) -> Message {
        Message::parse(
            Bytes::from(s.to_string()),
            Framing::Datagram,
            &Limits::default(),
        )
        .unwrap()
    }

    const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bKa;rport=5062;received=192.0.2.2\r\n\
        Via: SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKb\r\n\
        Record-Route: <sip:10.9.9.9;lr>\r\n\
        Route: <sip:proxy.example.com;lr>, <sip:next.example.net;lr>\r\n\
        From: <sip:alice@example.com>;tag=at\r\nTo: <sip:bob@example.com>\r\n\
        Call-ID: abc@10.0.0.2\r\nCSeq: 1 INVITE\r\n\
        Contact: <sip:alice@10.0.0.2:5062>\r\nMax-Forwards: 69\r\n\
        X-Keep: yes\r\nContent-Length: 4\r\n\r\nbody";

    #[test]
    fn hidden_request_keeps_nothing_of_the_sender() {
        let req = parse(INVITE);
        let out = hidden_request(
            &req,
            &RequestEdits {
                request_uri: Some("sip:bob@192.0.2.50"),
                via: "SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKsr1",
                pop_routes: 1,
                routes: None,
                contact: Some("<sip:sr-a-42@198.51.100.1:5060>"),
                call_id: "ours-1",
                header_edits: &[HeaderEdit::Remove("X-Keep".into())],
            },
        );
        let text = String::from_utf8(out).unwrap();
        for leak in [
            "10.0.0.2",
            "10.9.9.9",
            "192.0.2.2",
            "abc@",
            "proxy.example.com",
        ] {
            assert!(!text.contains(leak), "{leak} leaked:\n{text}");
        }
        let fwd = parse(&text);
        assert_eq!(fwd.vias().len(), 1);
        assert_eq!(fwd.call_id(), "ours-1");
        assert_eq!(fwd.max_forwards(), Some(68));
        assert_eq!(fwd.body(), b"body");
        assert_eq!(
            fwd.header(HeaderId::Route),
            Some("<sip:next.example.net;lr>")
        );
        assert!(fwd.header(HeaderId::RecordRoute).is_none());
        // In dialog: the Route set is ours to give.
        let routes = vec!["<sip:p1;lr>".to_string(), "<sip:p2;lr>".to_string()];
        let out = hidden_request(
            &req,
            &RequestEdits {
                request_uri: None,
                via: "SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKsr2",
                pop_routes: 0,
                routes: Some(&routes),
                contact: None,
                call_id: "x",
                header_edits: &[],
            },
        );
        let fwd = parse(&String::from_utf8(out).unwrap());
        assert_eq!(
            fwd.header(HeaderId::Route),
            Some("<sip:p1;lr>, <sip:p2;lr>")
        );
        assert!(fwd.header(HeaderId::Contact).is_none());
    }

    #[test]
    fn hidden_response_gets_the_requesters_parts_back() {
        let original = parse(INVITE);
        let resp = parse(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKsr1\r\n\
             Record-Route: <sip:192.0.2.77;lr>\r\n\
             From: <sip:alice@example.com>;tag=at\r\nTo: <sip:bob@example.com>;tag=bt\r\n\
             Call-ID: ours-1\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@192.0.2.50>\r\n\
             Content-Length: 0\r\n\r\n",
        );
        let out = hidden_response(&resp, &original, Some("<sip:sr-b-42@203.0.113.1>"), true);
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.contains("192.0.2.50") && !text.contains("192.0.2.77"),
            "{text}"
        );
        let up = parse(&text);
        assert_eq!(up.vias().len(), 2);
        assert_eq!(up.call_id(), "abc@10.0.0.2");
        assert_eq!(up.header(HeaderId::RecordRoute), Some("<sip:10.9.9.9;lr>"));
        assert_eq!(
            up.header(HeaderId::Contact),
            Some("<sip:sr-b-42@203.0.113.1>")
        );
        assert_eq!(up.to_tag(), Some("bt"));
        let no_rr = hidden_response(&resp, &original, None, false);
        assert!(parse(&String::from_utf8(no_rr).unwrap())
            .header(HeaderId::RecordRoute)
            .is_none());
    }
}
