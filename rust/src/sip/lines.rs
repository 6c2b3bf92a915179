//! The line structure of a message (RFC 3261 §7): the start line and the
//! header section, split into header fields with their folds, before any
//! header value is interpreted.

use super::header::HeaderId;
use super::method::Method;
use super::scan::{is_token, parse_decimal, skip_lws, trim_end};
use super::span::{Framing, HeaderField, Span, StartLine};
use super::uri::{Uri, UriSpans};
use super::{Limits, ParseError};

/// Finds the end of the line starting at `pos`: returns (end of content, start
/// of next line). A bare LF is accepted as a line end, as RFC 3261 §7.5 asks
/// of tolerant implementations.
pub(crate) fn find_line_end(b: &[u8], pos: usize) -> Option<(usize, usize)> {
    let lf = memchr::memchr(b'\n', b.get(pos..)?)? + pos;
    let end = if lf > pos && b[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    };
    Some((end, lf + 1))
}

/// The start line, and for a request where its Request-URI's parts are.
pub(crate) fn parse_start_line(
    b: &[u8],
    pos: usize,
    end: usize,
) -> Result<(StartLine, Option<UriSpans>), ParseError> {
    let line = &b[pos..end];
    if line.starts_with(b"SIP/") {
        return Ok((parse_status_line(line, pos)?, None));
    }
    // Request-Line = Method SP Request-URI SP SIP-Version, single spaces only:
    // the method is a token and the version has no SP, so the first and last
    // SP delimit the Request-URI and any other SP is an error.
    let bad = ParseError::bad;
    let (Some(sp1), Some(sp2)) = (
        line.iter().position(|&c| c == b' '),
        line.iter().rposition(|&c| c == b' '),
    ) else {
        return Err(bad("malformed request line"));
    };
    let (m, v) = (&line[..sp1], &line[sp2 + 1..]);
    if m.is_empty() || !m.iter().all(|&c| is_token(c)) {
        return Err(bad("malformed method"));
    }
    if sp1 == sp2 {
        return Err(bad("malformed request line"));
    }
    let u = &line[sp1 + 1..sp2];
    // RFC 4475 §3.1.2.9 and §3.1.2.10: several SP between elements, or SP
    // after the version, may be rejected; a proxy must never forward them.
    if u.first() == Some(&b' ') || u.last() == Some(&b' ') || v.is_empty() {
        return Err(bad("malformed request line: extra SP between elements"));
    }
    // §3.1.2.8: LWS inside the Request-URI.
    if u.contains(&b' ') {
        return Err(bad("malformed Request-URI: contains white space"));
    }
    // §3.1.2.7: the Request-URI is never enclosed in <>.
    if u.starts_with(b"<") {
        return Err(bad("malformed Request-URI: enclosed in <>"));
    }
    check_version(v)?;
    let uri_str = std::str::from_utf8(u).map_err(|_| bad("malformed Request-URI"))?;
    let uri = Uri::parse(uri_str).map_err(|_| bad("malformed Request-URI"))?;
    if uri.is_sip() && uri.headers.is_some() {
        // RFC 3261 §19.1.5 / RFC 4475 §3.1.2.11: headers are not allowed in a
        // Request-URI, and a proxy must never turn them into header fields.
        return Err(bad("Request-URI carries URI headers"));
    }
    let u_start = pos + sp1 + 1;
    let start = StartLine::Request {
        method: Method::from_bytes(m),
        method_span: Span::new(pos, pos + m.len()),
        uri: Span::new(u_start, u_start + u.len()),
    };
    Ok((start, UriSpans::of(&uri)))
}

/// Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
fn parse_status_line(line: &[u8], pos: usize) -> Result<StartLine, ParseError> {
    let sp1 = line
        .iter()
        .position(|&c| c == b' ')
        .ok_or(ParseError::bad("malformed status line"))?;
    check_version(&line[..sp1])?;
    let rest = &line[sp1 + 1..];
    // Exactly three digits (RFC 4475 §3.1.2.19: 4294967301 is dropped, never
    // truncated or wrapped into a valid code).
    let code_len = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if code_len != 3 || (rest.len() > 3 && rest[3] != b' ') {
        return Err(ParseError::bad("malformed status code"));
    }
    let status =
        parse_decimal(&rest[..3], 699).ok_or(ParseError::bad("status code out of range"))? as u16;
    if status < 100 {
        return Err(ParseError::bad("status code out of range"));
    }
    // The reason phrase may be empty (§3.1.1.13) or any UTF-8 (§3.1.1.12).
    let end = pos + line.len();
    let reason_start = (pos + sp1 + 1 + 4).min(end);
    Ok(StartLine::Response {
        status,
        reason: Span::new(reason_start, end),
    })
}

/// Accepts `SIP/2.0`; another well-formed version is 505 (RFC 4475 §3.1.2.16),
/// anything else a malformed message.
fn check_version(v: &[u8]) -> Result<(), ParseError> {
    if v.eq_ignore_ascii_case(b"SIP/2.0") {
        return Ok(());
    }
    let Some(num) = v.get(4..).filter(|_| v[..4].eq_ignore_ascii_case(b"SIP/")) else {
        return Err(ParseError::bad("malformed SIP version"));
    };
    let ok = num
        .split(|&c| c == b'.')
        .all(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
        && num.contains(&b'.');
    if ok {
        Err(ParseError::new(505, "Version Not Supported"))
    } else {
        Err(ParseError::bad("malformed SIP version"))
    }
}

/// The header section split into fields.
pub(crate) struct HeaderSection {
    pub fields: Vec<HeaderField>,
    /// Offset of the empty line that ends the section (the end of the
    /// datagram when it has none, see `split_headers`).
    pub end: usize,
    /// Offset of the body.
    pub body_start: usize,
}

/// Splits the header section starting at `pos` into fields.
pub(crate) fn split_headers(
    b: &[u8],
    mut pos: usize,
    framing: Framing,
    limits: &Limits,
) -> Result<HeaderSection, ParseError> {
    let mut fields: Vec<HeaderField> = Vec::with_capacity(16);
    loop {
        // A datagram is a whole message (RFC 3261 §18.3), so one that ends
        // right after a complete header line has an empty body even without the
        // empty line (RFC 4475 §3.1.2.15's archive file is such a datagram).
        // A line cut short is not accepted: that is more likely truncation.
        if pos == b.len() && framing == Framing::Datagram && !fields.is_empty() {
            return Ok(HeaderSection {
                fields,
                end: pos,
                body_start: pos,
            });
        }
        let (end, next) = find_line_end(b, pos).ok_or(ParseError::bad(
            "header section not terminated by an empty line",
        ))?;
        if end == pos {
            return Ok(HeaderSection {
                fields,
                end: pos,
                body_start: next,
            });
        }
        if end - pos > limits.max_line_length {
            return Err(ParseError::bad("header line too long"));
        }
        if matches!(b[pos], b' ' | b'\t') {
            // A fold continues the previous header's value.
            let last = fields
                .last_mut()
                .ok_or(ParseError::bad("header section starts with white space"))?;
            if last.value.is_empty() {
                last.value.start = skip_lws(b, last.value.start as usize) as u32;
            }
            last.value.end = trim_end(b, last.value.start as usize, end) as u32;
            last.line.end = next as u32;
            pos = next;
            continue;
        }
        // header-name HCOLON: LWS is allowed before the colon (§3.1.1.1).
        let name_end = pos + b[pos..end].iter().take_while(|&&c| is_token(c)).count();
        let colon = name_end
            + b[name_end..end]
                .iter()
                .take_while(|&&c| c == b' ' || c == b'\t')
                .count();
        if name_end == pos || colon >= end || b[colon] != b':' {
            return Err(ParseError::bad("malformed header line"));
        }
        if fields.len() >= limits.max_headers {
            return Err(ParseError::bad("too many headers"));
        }
        let vstart = colon
            + 1
            + b[colon + 1..end]
                .iter()
                .take_while(|&&c| c == b' ' || c == b'\t')
                .count();
        fields.push(HeaderField {
            id: HeaderId::from_name(&b[pos..name_end]),
            name: Span::new(pos, name_end),
            value: Span::new(vstart, trim_end(b, vstart, end)),
            line: Span::new(pos, next),
        });
        pos = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(line: &str) -> Result<StartLine, ParseError> {
        parse_start_line(line.as_bytes(), 0, line.len()).map(|(s, _)| s)
    }

    #[test]
    fn request_line_spacing_errors_are_named() {
        // RFC 4475 §3.1.2.8 - §3.1.2.10
        let e = start("INVITE sip:user@example.com; lr SIP/2.0").unwrap_err();
        assert_eq!(e.reason, "malformed Request-URI: contains white space");
        let e = start("INVITE  sip:user@example.com  SIP/2.0").unwrap_err();
        assert_eq!(
            e.reason,
            "malformed request line: extra SP between elements"
        );
        let e = start("OPTIONS sip:user@example.com SIP/2.0  ").unwrap_err();
        assert_eq!(
            e.reason,
            "malformed request line: extra SP between elements"
        );
        let e = start("INVITE <sip:user@example.com> SIP/2.0").unwrap_err();
        assert_eq!(e.reason, "malformed Request-URI: enclosed in <>");
        assert!(start("INVITE sip:user@example.com").is_err());
        assert!(start("INVITE").is_err());
        assert!(matches!(
            start("INVITE sip:a@b SIP/2.0"),
            Ok(StartLine::Request { .. })
        ));
    }

    #[test]
    fn versions_and_status_codes() {
        assert_eq!(start("INVITE sip:a@b SIP/7.0").unwrap_err().status, 505);
        assert_eq!(start("INVITE sip:a@b SIP/x").unwrap_err().status, 400);
        assert!(start("SIP/2.0 4294967301 better not break the receiver").is_err());
        assert!(matches!(
            start("SIP/2.0 100 "),
            Ok(StartLine::Response { status: 100, .. })
        ));
    }

    #[test]
    fn datagram_may_end_without_the_empty_line() {
        let l = Limits::default();
        let h = b"Via: x\r\nl: 0\r\n";
        let s = split_headers(h, 0, Framing::Datagram, &l).unwrap();
        assert_eq!((s.fields.len(), s.end, s.body_start), (2, h.len(), h.len()));
        assert!(split_headers(h, 0, Framing::Stream, &l).is_err());
        // A header line cut short is truncation, not a message.
        assert!(split_headers(b"Via: x\r\nl: 0", 0, Framing::Datagram, &l).is_err());
        // Nothing at all after the start line is not a message either.
        assert!(split_headers(b"", 0, Framing::Datagram, &l).is_err());
    }
}
