//! Writing messages: responses to a received request (RFC 3261 §8.2.6) and
//! forwarded requests that copy every untouched header line byte-exact.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::header::HeaderId;
use super::message::Message;
use super::method::default_reason;
use super::span::{HeaderField, StartLine};
use super::via::Via;

/// A header change requested by the application, applied when a request is
/// forwarded or answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Append a header line.
    Add(String, String),
    /// Remove every header with this name (case-insensitive, compact forms folded).
    Remove(String),
    /// Send this body instead of the received one (Content-Length follows):
    /// an SDP rewritten for a media relay or NAT.
    Body(bytes::Bytes),
}

/// The body `edits` replace the message's with, if any (the last one wins).
pub fn body_override(edits: &[HeaderEdit]) -> Option<&[u8]> {
    edits.iter().rev().find_map(|e| match e {
        HeaderEdit::Body(b) => Some(&b[..]),
        _ => None,
    })
}

/// The `received` parameter RFC 3261 §18.2.1 and RFC 3581 §4 add to the top
/// Via of a request from `source` (with its leading `;`); empty when none is
/// needed because the sent-by already is the source address and no `rport`
/// was asked for.
pub fn via_received_params(msg: &Message, source: SocketAddr) -> String {
    received_params(&msg.top_via(), source)
}

fn received_params(via: &Via<'_>, source: SocketAddr) -> String {
    let host_is_source = via.host_ip() == Some(source.ip());
    if host_is_source && via.rport().is_none() {
        return String::new();
    }
    match source {
        SocketAddr::V6(a) => format!(";received=[{}]", a.ip()),
        SocketAddr::V4(a) => {
            let mut out = String::with_capacity(25);
            out.push_str(";received=");
            push_ipv4(&mut out, *a.ip());
            out
        }
    }
}

/// `a` as a Via sent-by or URI hostport (`1.2.3.4:5060`, `[::1]:5060`).
/// IPv4, what nearly every message carries, is written digit by digit:
/// `Display` for an address costs over a thousand instructions.
pub fn hostport(a: SocketAddr) -> String {
    let mut out = String::with_capacity(21);
    push_hostport(&mut out, a);
    out
}

/// `hostport(a)` appended to `out`, without a `String` of its own.
pub fn push_hostport(out: &mut String, a: SocketAddr) {
    match a {
        SocketAddr::V4(v4) => {
            push_ipv4(out, *v4.ip());
            out.push(':');
            push_decimal(out, u32::from(v4.port()));
        }
        SocketAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "[{}]:{}", v6.ip(), v6.port());
        }
    }
}

/// `n` in lower-case hex without leading zeros (`{:x}`), without the formatter.
pub fn push_hex(out: &mut String, n: u64) {
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for shift in (0..digits).rev() {
        out.push(char::from(
            b"0123456789abcdef"[((n >> (shift * 4)) & 0xf) as usize],
        ));
    }
}

/// `n` as 16 lower-case hex digits (`{:016x}`) without the formatter.
pub fn push_hex16(out: &mut String, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(char::from(DIGITS[((n >> (shift * 4)) & 0xf) as usize]));
    }
}

fn push_ipv4(out: &mut String, ip: std::net::Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        push_decimal(out, u32::from(octet));
    }
}

fn push_decimal(out: &mut String, n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits only.
    out.push_str(std::str::from_utf8(&digits[i..]).unwrap_or_default());
}

/// Writes the top via-parm stamped for `source`: a bare `rport` gets the
/// source port (RFC 3581 §4), any `received` the sender wrote itself is
/// replaced by ours (it names what we saw, §18.2.1), everything else is
/// copied as written. `force_rport` stamps `rport` and `received` even when
/// the sender did not ask for them.
fn write_top_via_line(
    msg: &Message,
    source: Option<SocketAddr>,
    force_rport: bool,
    out: &mut Vec<u8>,
) {
    let top = msg.str_at(msg.top_via_span());
    let Some(src) = source else {
        out.extend_from_slice(top.as_bytes());
        return;
    };
    let via = msg.top_via();
    let params = via.params;
    if params.is_empty() {
        out.extend_from_slice(top.as_bytes());
    } else {
        // `params` is a subslice of `top` that runs to its end.
        let params_off = params.as_ptr() as usize - top.as_ptr() as usize;
        out.extend_from_slice(&top.as_bytes()[..params_off]);
        let mut first = true;
        for p in split_params(params) {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            let name = name.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'));
            if name.eq_ignore_ascii_case("received") {
                continue;
            }
            if !first {
                out.push(b';');
            }
            first = false;
            if name.eq_ignore_ascii_case("rport") && value.trim().is_empty() {
                let _ = write!(VecWriter(out), "rport={}", src.port());
            } else {
                out.extend_from_slice(p.as_bytes());
            }
        }
        // Dropping `received` may have left the parameter list empty (the
        // text before it ends in ';').
        if first && out.last() == Some(&b';') {
            out.pop();
        }
    }
    if force_rport && via.rport().is_none() {
        let _ = write!(VecWriter(out), ";rport={}", src.port());
    }
    let received = received_params(&via, src);
    if received.is_empty() && force_rport {
        let _ = match src {
            SocketAddr::V4(a) => write!(VecWriter(out), ";received={}", a.ip()),
            SocketAddr::V6(a) => write!(VecWriter(out), ";received=[{}]", a.ip()),
        };
    } else {
        out.extend_from_slice(received.as_bytes());
    }
}

/// Splits raw parameter text at the `;`s outside quoted strings.
fn split_params(params: &str) -> impl Iterator<Item = &str> {
    let b = params.as_bytes();
    let mut start = 0;
    let mut i = 0;
    std::iter::from_fn(move || {
        if start > b.len() {
            return None;
        }
        while i < b.len() && b[i] != b';' {
            i = if b[i] == b'"' {
                super::scan::skip_quoted(b, i).unwrap_or(b.len())
            } else {
                i + 1
            };
        }
        let p = &params[start..i];
        i += 1;
        start = i;
        Some(p)
    })
}

struct VecWriter<'a>(&'a mut Vec<u8>);
impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Writes the Via header lines of `msg`, with the top via-parm stamped for
/// `source`. Each Via header line is rewritten only if it holds the top via-parm.
fn write_vias(msg: &Message, source: Option<SocketAddr>, out: &mut Vec<u8>) {
    let top = msg.top_via_span();
    for h in msg.headers().iter().filter(|h| h.id == HeaderId::Via) {
        if h.value.start <= top.start && top.end <= h.value.end {
            let b = msg.bytes();
            out.extend_from_slice(&b[h.line.start as usize..top.start as usize]);
            write_top_via_line(msg, source, false, out);
            out.extend_from_slice(&b[top.end as usize..h.line.end as usize]);
        } else {
            out.extend_from_slice(&msg.bytes()[h.line.range()]);
        }
    }
}

/// Builds a response to `req` per RFC 3261 §8.2.6: Via (stamped with
/// received/rport for `source`), From, To (with `to_tag` added if it has none
/// and the status is above 100), Call-ID and CSeq copied; then `extra` headers.
pub fn build_response(
    req: &Message,
    source: Option<SocketAddr>,
    status: u16,
    reason: Option<&str>,
    to_tag: Option<&str>,
    extra: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(req.headers_end() + 128 + body.len());
    let reason = reason.unwrap_or_else(|| default_reason(status));
    let _ = write!(VecWriter(&mut out), "SIP/2.0 {status} {reason}\r\n");
    write_vias(req, source, &mut out);
    let b = req.bytes();
    for h in req.headers() {
        match h.id {
            HeaderId::From | HeaderId::CallId | HeaderId::CSeq => {
                out.extend_from_slice(&b[h.line.range()]);
            }
            HeaderId::To => {
                let add_tag = status > 100 && req.to_tag().is_none();
                match to_tag.filter(|_| add_tag) {
                    Some(tag) => {
                        out.extend_from_slice(&b[h.line.start as usize..h.value.end as usize]);
                        let _ = write!(VecWriter(&mut out), ";tag={tag}\r\n");
                    }
                    None => out.extend_from_slice(&b[h.line.range()]),
                }
            }
            // RFC 3261 §12.1.1: a dialog-creating response copies Record-Route.
            HeaderId::RecordRoute if (101..300).contains(&status) => {
                out.extend_from_slice(&b[h.line.range()]);
            }
            _ => {}
        }
    }
    for (name, value) in extra {
        let _ = write!(VecWriter(&mut out), "{name}: {value}\r\n");
    }
    let _ = write!(
        VecWriter(&mut out),
        "Content-Length: {}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(body);
    out
}

/// What to change when forwarding a request.
#[derive(Debug, Default)]
pub struct ForwardEdits<'a> {
    /// Replacement Request-URI.
    pub request_uri: Option<&'a str>,
    /// Our Via value (without `Via: `), inserted above the others.
    pub via: &'a str,
    /// Stamp received/rport on the previous hop's Via for this source.
    pub source: Option<SocketAddr>,
    /// Add `rport=PORT` even when the Via did not ask (stream sources: the
    /// relayed response must find the connection again by address).
    pub force_rport: bool,
    /// How many leading Route values to drop (they named us: RFC 3261 §16.4;
    /// two after a double Record-Route).
    pub pop_routes: usize,
    /// A Record-Route value to insert (RFC 3261 §16.6 step 4).
    pub record_route: Option<&'a str>,
    pub header_edits: &'a [HeaderEdit],
}

/// Writes a forwarded copy of `req`: Max-Forwards decremented (70 when absent,
/// §16.6 step 3), our Via on top, everything else byte-exact.
pub fn build_forward(req: &Message, edits: &ForwardEdits<'_>) -> Vec<u8> {
    let b = req.bytes();
    let mut out = Vec::with_capacity(req.as_bytes().len() + edits.via.len() + 64);
    let StartLine::Request {
        method_span, uri, ..
    } = req.start_line()
    else {
        return out;
    };
    out.extend_from_slice(&b[method_span.range()]);
    out.push(b' ');
    match edits.request_uri {
        Some(u) => out.extend_from_slice(u.as_bytes()),
        None => out.extend_from_slice(&b[uri.range()]),
    }
    out.extend_from_slice(b" SIP/2.0\r\n");
    for (name, value) in [
        ("Via", Some(edits.via)),
        ("Record-Route", edits.record_route),
    ] {
        if let Some(value) = value {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    // Header names are read only when there are edits to match them against.
    let edited = !edits.header_edits.is_empty();
    let removed = |h: &HeaderField| edited && removed_by(edits.header_edits, req.header_name(h));
    let top_via = req.top_via_span();
    let mut to_pop = edits.pop_routes;
    let mut saw_max_forwards = false;
    for h in req.headers() {
        if h.id != HeaderId::Via && removed(h) {
            continue;
        }
        match h.id {
            HeaderId::Via if h.value.start <= top_via.start && top_via.end <= h.value.end => {
                out.extend_from_slice(&b[h.line.start as usize..top_via.start as usize]);
                write_top_via_line(req, edits.source, edits.force_rport, &mut out);
                out.extend_from_slice(&b[top_via.end as usize..h.line.end as usize]);
            }
            HeaderId::MaxForwards => {
                saw_max_forwards = true;
                let n = req.max_forwards().unwrap_or(70).saturating_sub(1);
                let _ = write!(VecWriter(&mut out), "Max-Forwards: {n}\r\n");
            }
            HeaderId::ContentLength => {}
            HeaderId::Route if to_pop > 0 => {
                let value = req.header_value(h);
                let parts =
                    super::scan::split_commas(value.as_bytes(), 0, value.len()).unwrap_or_default();
                let dropped = to_pop.min(parts.len().max(1));
                to_pop -= dropped;
                if let Some(rest) = parts.get(dropped) {
                    let name = req.header_name(h);
                    let _ = write!(VecWriter(&mut out), "{}: {}\r\n", name, &value[rest.0..]);
                }
            }
            _ => out.extend_from_slice(&b[h.line.range()]),
        }
    }
    if !saw_max_forwards {
        // §16.6 step 3: a request without Max-Forwards gets one, of 70.
        out.extend_from_slice(b"Max-Forwards: 70\r\n");
    }
    for e in edits.header_edits {
        if let HeaderEdit::Add(n, v) = e {
            let _ = write!(VecWriter(&mut out), "{n}: {v}\r\n");
        }
    }
    let body = body_override(edits.header_edits).unwrap_or(req.body());
    let _ = write!(
        VecWriter(&mut out),
        "Content-Length: {}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(body);
    out
}

/// Removes the top via-parm of a response (ours) for relaying it upstream.
pub fn strip_top_via(resp: &Message) -> Vec<u8> {
    let b = resp.bytes();
    let top = resp.top_via_span();
    let mut out = Vec::with_capacity(resp.as_bytes().len());
    let mut done = false;
    out.extend_from_slice(&b[..resp.headers_start()]);
    for h in resp.headers() {
        if !done && h.id == HeaderId::Via {
            done = true;
            // The top via-parm was checked at parse time and ends where the
            // next one's comma is (LWS between): what follows the comma is
            // the rest of this line, if anything.
            debug_assert!(h.value.start <= top.start && top.end <= h.value.end);
            let after_top = &b[top.end as usize..h.value.end as usize];
            if let Some(comma) = memchr::memchr(b',', after_top) {
                let rest = &after_top[comma + 1..];
                let rest = &rest[super::scan::skip_lws(rest, 0)..];
                out.extend_from_slice(resp.header_name(h).as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(rest);
                out.extend_from_slice(b"\r\n");
            }
            continue;
        }
        out.extend_from_slice(&b[h.line.range()]);
    }
    // Not copied from the input: a datagram may lack the empty line.
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(resp.body());
    out
}

/// Builds an error response for bytes that failed to parse, copying the raw
/// Via, From, To, Call-ID and CSeq lines; `None` when the bytes are not a
/// request or carry no Via (nothing can route a response: drop silently).
pub fn error_response_raw(bytes: &[u8], status: u16, reason: &str) -> Option<Vec<u8>> {
    let start = bytes.iter().position(|&c| c != b'\r' && c != b'\n')?;
    let first_end = memchr::memchr(b'\n', &bytes[start..])? + start;
    let first = &bytes[start..first_end];
    if first.starts_with(b"SIP/") || !first.contains(&b' ') {
        return None;
    }
    let mut out = Vec::with_capacity(512);
    let _ = write!(VecWriter(&mut out), "SIP/2.0 {status} {reason}\r\n");
    let mut saw_via = false;
    let mut keep = false;
    let mut pos = first_end + 1;
    while pos < bytes.len() {
        let end = memchr::memchr(b'\n', &bytes[pos..]).map_or(bytes.len(), |e| e + pos + 1);
        let line = &bytes[pos..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if matches!(line[0], b' ' | b'\t') {
            if keep {
                out.extend_from_slice(line);
            }
        } else {
            let colon = line.iter().position(|&c| c == b':').unwrap_or(0);
            let id = HeaderId::from_name(line[..colon].trim_ascii_end());
            keep = matches!(
                id,
                HeaderId::Via | HeaderId::From | HeaderId::To | HeaderId::CallId | HeaderId::CSeq
            );
            saw_via |= id == HeaderId::Via;
            if keep {
                out.extend_from_slice(line);
                if !line.ends_with(b"\n") {
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
        pos = end;
    }
    if !saw_via {
        return None;
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Some(out)
}

/// Whether `edits` remove the header `name` (compact and long forms match).
pub fn removed_by(edits: &[HeaderEdit], name: &str) -> bool {
    edits.iter().any(|e| match e {
        HeaderEdit::Remove(n) => {
            let id = HeaderId::from_name(n.as_bytes());
            if id == HeaderId::Other {
                n.eq_ignore_ascii_case(name)
            } else {
                id == HeaderId::from_name(name.as_bytes())
            }
        }
        HeaderEdit::Add(..) | HeaderEdit::Body(_) => false,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn hostport_matches_display() {
        for a in [
            "0.0.0.0:0",
            "127.0.0.1:5060",
            "255.255.255.255:65535",
            "10.20.3.4:9",
            "[::1]:5060",
            "[2001:db8::7]:1",
        ] {
            let addr: std::net::SocketAddr = a.parse().unwrap();
            assert_eq!(super::hostport(addr), addr.to_string());
            let source = addr;
            if let std::net::SocketAddr::V4(v4) = source {
                let via = super::Via::parse("SIP/2.0/UDP host;rport").unwrap();
                assert_eq!(
                    super::received_params(&via, source),
                    format!(";received={}", v4.ip())
                );
            }
        }
    }

    use super::*;
    use crate::sip::{Framing, Limits};
    use bytes::Bytes;

    fn parse(text: &str) -> Message {
        Message::parse(
            Bytes::from(text.replace('\n', "\r\n")),
            Framing::Datagram,
            &Limits::default(),
        )
        .unwrap()
    }

    fn request(via: &str, extra: &str) -> Message {
        parse(&format!(
            "OPTIONS sip:bob@example.com SIP/2.0\nVia: {via}\nFrom: <sip:a@example.com>;tag=1\n\
             To: <sip:bob@example.com>\nCall-ID: c1\nCSeq: 1 OPTIONS\n{extra}Content-Length: 0\n\n"
        ))
    }

    fn forward(req: &Message, source: &str) -> Message {
        let edits = ForwardEdits {
            via: "SIP/2.0/UDP p.example.net;branch=z9hG4bKp",
            source: Some(source.parse().unwrap()),
            ..Default::default()
        };
        let out = build_forward(req, &edits);
        Message::parse(Bytes::from(out), Framing::Datagram, &Limits::default()).unwrap()
    }

    #[test]
    fn max_forwards_added_as_70_or_decremented() {
        // RFC 3261 §16.6 step 3 (RFC 4475 §3.4.1 has no Max-Forwards).
        let req = request("SIP/2.0/UDP a.example.com;branch=z9hG4bK1", "");
        assert_eq!(forward(&req, "192.0.2.1:5060").max_forwards(), Some(70));
        let req = request(
            "SIP/2.0/UDP a.example.com;branch=z9hG4bK1",
            "Max-Forwards: 0068\n",
        );
        assert_eq!(forward(&req, "192.0.2.1:5060").max_forwards(), Some(67));
    }

    #[test]
    fn received_is_ours_and_rport_filled() {
        // A `received` the sender wrote (RFC 5118 §4.5) is replaced, not doubled.
        let req = request(
            "SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];rport;branch=z9hG4bK1",
            "",
        );
        let fwd = forward(&req, "[2001:db8::7]:5070");
        let prev = fwd.vias()[1];
        assert_eq!(
            prev.raw,
            "SIP/2.0/UDP [2001:db8::9:1];rport=5070;branch=z9hG4bK1;received=[2001:db8::7]"
        );
        // Sent-by is the source address and no rport: nothing to add.
        let req = request("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1", "");
        assert_eq!(
            forward(&req, "192.0.2.1:5060").vias()[1].raw,
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1"
        );
        // A stale received is dropped even then, leaving no dangling ';'.
        let req = request("SIP/2.0/UDP 192.0.2.1;received=192.0.2.9", "");
        assert_eq!(
            forward(&req, "192.0.2.1:5060").vias()[1].raw,
            "SIP/2.0/UDP 192.0.2.1"
        );
    }

    #[test]
    fn strip_top_via_writes_the_empty_line() {
        // A datagram may end without it (RFC 4475 §3.1.2.15 style).
        let text = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP p.example.net;branch=z9hG4bKp\r\n\
                    Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\nFrom: <sip:a@example.com>;tag=1\r\n\
                    To: <sip:bob@example.com>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n";
        let resp =
            Message::parse(Bytes::from(text), Framing::Datagram, &Limits::default()).unwrap();
        let out = strip_top_via(&resp);
        assert!(out.ends_with(b"CSeq: 1 OPTIONS\r\n\r\n"));
        let relayed =
            Message::parse(Bytes::from(out), Framing::Stream, &Limits::default()).unwrap();
        assert_eq!(relayed.top_via().host, "a.example.com");
    }

    #[test]
    fn strip_top_via_keeps_the_rest_of_a_shared_line() {
        let via = |first: &str| {
            format!(
                "SIP/2.0 200 OK\r\nVia: {first}\r\nFrom: <sip:a@example.com>;tag=1\r\n\
                 To: <sip:bob@example.com>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\r\n"
            )
        };
        for (line, left) in [
            (
                "SIP/2.0/UDP p;x=\"a,b\";branch=z9hG4bKp ,\r\n SIP/2.0/TCP q:5;branch=z9hG4bK2, SIP/2.0/UDP r",
                Some("Via: SIP/2.0/TCP q:5;branch=z9hG4bK2, SIP/2.0/UDP r\r\n"),
            ),
            ("SIP/2.0/UDP p;branch=z9hG4bKp", None),
        ] {
            let resp = Message::parse(Bytes::from(via(line)), Framing::Stream, &Limits::default())
                .unwrap();
            let out = String::from_utf8(strip_top_via(&resp)).unwrap();
            match left {
                Some(rest) => assert!(out.contains(&format!("\r\n{rest}From:")), "{out}"),
                None => assert!(!out.contains("Via"), "{out}"),
            }
        }
    }
}
