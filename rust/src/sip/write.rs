//! Writing messages: responses to a received request (RFC 3261 §8.2.6) and
//! forwarded requests that copy every untouched header line byte-exact.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::header::HeaderId;
use super::message::{Message, StartLine};
use super::method::default_reason;

/// A header change requested by the application, applied when a request is
/// forwarded or answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Append a header line.
    Add(String, String),
    /// Remove every header with this name (case-insensitive, compact forms folded).
    Remove(String),
}

/// The `received` / `rport` parameters RFC 3261 §18.2.1 and RFC 3581 §4 add to
/// the top Via of a request from `source`; empty when none are needed.
pub fn via_received_params(msg: &Message, source: SocketAddr) -> String {
    let via = msg.top_via();
    let mut out = String::new();
    let ip = source.ip().to_string();
    let host_is_ip = via.host_unbracketed().parse::<std::net::IpAddr>().ok() == Some(source.ip());
    let bare_rport = via.rport() == Some(None);
    if (!host_is_ip || bare_rport) && via.received().is_none() {
        if source.is_ipv6() {
            let _ = write!(out, ";received=[{ip}]");
        } else {
            let _ = write!(out, ";received={ip}");
        }
    }
    out
}

/// Writes the top via-parm with received/rport filled in for `source`.
fn write_top_via_line(msg: &Message, source: Option<SocketAddr>, force_rport: bool, out: &mut Vec<u8>) {
    let span = msg.top_via_span();
    let top = msg.str_at(span);
    let Some(src) = source else {
        out.extend_from_slice(top.as_bytes());
        return;
    };
    let via = msg.top_via();
    if via.rport() == Some(None) {
        // Replace the bare `rport` with `rport=PORT` (RFC 3581 §4).
        let params = via.params;
        let params_off = params.as_ptr() as usize - top.as_ptr() as usize;
        out.extend_from_slice(&top.as_bytes()[..params_off]);
        let mut first = true;
        for p in params.split(';') {
            if !first {
                out.push(b';');
            }
            first = false;
            if p.trim().eq_ignore_ascii_case("rport") {
                let _ = write!(VecWriter(out), "rport={}", src.port());
            } else {
                out.extend_from_slice(p.as_bytes());
            }
        }
    } else {
        out.extend_from_slice(top.as_bytes());
        if force_rport && via.rport().is_none() {
            let _ = write!(VecWriter(out), ";rport={}", src.port());
        }
    }
    let received = via_received_params(msg, src);
    let received = if force_rport && received.is_empty() && via.received().is_none() {
        match src {
            SocketAddr::V4(a) => format!(";received={}", a.ip()),
            SocketAddr::V6(a) => format!(";received=[{}]", a.ip()),
        }
    } else {
        received
    };
    out.extend_from_slice(received.as_bytes());
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
    let _ = write!(VecWriter(&mut out), "Content-Length: {}\r\n\r\n", body.len());
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
    /// Drop the first Route value (it named us: RFC 3261 §16.4).
    pub pop_route: bool,
    /// A Record-Route value to insert (RFC 3261 §16.6 step 4).
    pub record_route: Option<&'a str>,
    pub header_edits: &'a [HeaderEdit],
}

/// Writes a forwarded copy of `req`: Max-Forwards decremented (70 when absent,
/// §16.6 step 3), our Via on top, everything else byte-exact.
pub fn build_forward(req: &Message, edits: &ForwardEdits<'_>) -> Vec<u8> {
    let b = req.bytes();
    let mut out = Vec::with_capacity(req.as_bytes().len() + edits.via.len() + 64);
    let StartLine::Request { method_span, uri, .. } = req.start_line() else {
        return out;
    };
    out.extend_from_slice(&b[method_span.range()]);
    out.push(b' ');
    match edits.request_uri {
        Some(u) => out.extend_from_slice(u.as_bytes()),
        None => out.extend_from_slice(&b[uri.range()]),
    }
    out.extend_from_slice(b" SIP/2.0\r\n");
    let _ = write!(VecWriter(&mut out), "Via: {}\r\n", edits.via);
    if let Some(rr) = edits.record_route {
        let _ = write!(VecWriter(&mut out), "Record-Route: {rr}\r\n");
    }
    let removed = |name: &str| {
        edits.header_edits.iter().any(|e| match e {
            HeaderEdit::Remove(n) => {
                let id = HeaderId::from_name(n.as_bytes());
                if id == HeaderId::Other {
                    n.eq_ignore_ascii_case(name)
                } else {
                    id == HeaderId::from_name(name.as_bytes())
                }
            }
            HeaderEdit::Add(..) => false,
        })
    };
    let top_via = req.top_via_span();
    let mut route_popped = !edits.pop_route;
    let mut saw_max_forwards = false;
    for h in req.headers() {
        let name = req.header_name(h);
        if h.id != HeaderId::Via && removed(name) {
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
            HeaderId::Route if !route_popped => {
                route_popped = true;
                let value = req.header_value(h);
                match super::scan::split_commas(value.as_bytes(), 0, value.len()) {
                    Some(parts) if parts.len() > 1 => {
                        let _ = write!(VecWriter(&mut out), "{}: {}\r\n", name, &value[parts[1].0..]);
                    }
                    _ => {}
                }
            }
            _ => out.extend_from_slice(&b[h.line.range()]),
        }
    }
    if !saw_max_forwards {
        out.extend_from_slice(b"Max-Forwards: 69\r\n");
    }
    for e in edits.header_edits {
        if let HeaderEdit::Add(n, v) = e {
            let _ = write!(VecWriter(&mut out), "{n}: {v}\r\n");
        }
    }
    let body = req.body();
    let _ = write!(VecWriter(&mut out), "Content-Length: {}\r\n\r\n", body.len());
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
            let value = resp.header_value(h);
            if let Some(parts) = super::scan::split_commas(value.as_bytes(), 0, value.len()) {
                if parts.len() > 1 {
                    let rest = &value[parts[1].0..];
                    let _ = write!(VecWriter(&mut out), "{}: {}\r\n", resp.header_name(h), rest);
                }
            }
            debug_assert!(h.value.start <= top.start);
            continue;
        }
        out.extend_from_slice(&b[h.line.range()]);
    }
    out.extend_from_slice(&b[resp.headers_end()..resp.body_span().end as usize]);
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
