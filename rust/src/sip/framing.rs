//! Message framing on stream transports (RFC 3261 §18.3): the header section
//! ends at the first empty line, the body is exactly Content-Length octets.

use super::header::HeaderId;
use super::scan::parse_decimal;
use super::Limits;

#[derive(Debug, PartialEq, Eq)]
pub enum StreamFrame {
    /// Not enough bytes yet.
    Incomplete,
    /// Keep-alive CRLFs to discard (RFC 5626 §3.5.1): `pong` is true for a
    /// double-CRLF ping that must be answered with a single CRLF.
    KeepAlive { consumed: usize, pong: bool },
    /// A whole message of this many bytes is at the front of the buffer.
    Message(usize),
    /// A header section of this many bytes without Content-Length, which
    /// RFC 3261 §18.3 requires on streams: where its body ends is unknowable,
    /// so it is handed up to be answered 400 and the connection is closed.
    Unframed(usize),
    /// The stream cannot be framed (oversized or unparseable header section):
    /// the connection must be closed.
    Invalid(&'static str),
}

pub fn frame_stream(buf: &[u8], limits: &Limits) -> StreamFrame {
    let leading = buf
        .iter()
        .take_while(|&&c| c == b'\r' || c == b'\n')
        .count();
    if leading > 0 {
        let pong = buf[..leading].windows(4).any(|w| w == b"\r\n\r\n");
        if pong || leading == buf.len() && leading >= 2 || leading < buf.len() {
            return StreamFrame::KeepAlive {
                consumed: if pong { 4 } else { leading },
                pong,
            };
        }
        return StreamFrame::Incomplete;
    }
    let Some(hdr_end) = header_end(buf) else {
        if buf.len() > limits.max_message_size {
            return StreamFrame::Invalid("header section too large");
        }
        return StreamFrame::Incomplete;
    };
    if hdr_end > limits.max_message_size {
        return StreamFrame::Invalid("header section too large");
    }
    let mut cl = None;
    for (name, value) in logical_lines(&buf[..hdr_end]) {
        if HeaderId::from_name(name.trim_ascii_end()) != HeaderId::ContentLength {
            continue;
        }
        // Two Content-Length values leave the message end unknowable
        // (RFC 4475 §3.3.9): the stream cannot be resynchronised.
        if cl.is_some() {
            return StreamFrame::Invalid("multiple Content-Length headers on a stream");
        }
        let digits: Vec<u8> = value
            .iter()
            .copied()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        match parse_decimal(&digits, limits.max_message_size as u64) {
            Some(n) => cl = Some(n as usize),
            None => return StreamFrame::Invalid("malformed Content-Length on a stream"),
        }
    }
    let Some(cl) = cl else {
        return StreamFrame::Unframed(hdr_end);
    };
    let total = hdr_end + cl;
    if total > limits.max_message_size {
        return StreamFrame::Invalid("message too large");
    }
    if buf.len() < total {
        StreamFrame::Incomplete
    } else {
        StreamFrame::Message(total)
    }
}

/// The end of the header section: just past the first empty line, whether
/// lines end in CRLF or a bare LF.
fn header_end(buf: &[u8]) -> Option<usize> {
    for lf in memchr::memchr_iter(b'\n', buf) {
        match buf.get(lf + 1) {
            Some(b'\n') => return Some(lf + 2),
            Some(b'\r') if buf.get(lf + 2) == Some(&b'\n') => return Some(lf + 3),
            _ => {}
        }
    }
    None
}

/// Header lines with folds joined: (name, value with fold bytes kept).
fn logical_lines(head: &[u8]) -> Vec<(&[u8], Vec<u8>)> {
    let mut out: Vec<(&[u8], Vec<u8>)> = Vec::new();
    for line in head.split(|&c| c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if matches!(line[0], b' ' | b'\t') {
            if let Some(last) = out.last_mut() {
                last.1.extend_from_slice(line);
            }
            continue;
        }
        if let Some(colon) = line.iter().position(|&c| c == b':') {
            out.push((&line[..colon], line[colon + 1..].to_vec()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_section_over_the_limit_is_invalid_even_when_complete() {
        let limits = Limits {
            max_message_size: 64,
            ..Limits::default()
        };
        let head = format!("OPTIONS sip:a SIP/2.0\r\nX: {}\r\n\r\n", "y".repeat(80));
        assert_eq!(
            frame_stream(head.as_bytes(), &limits),
            StreamFrame::Invalid("header section too large")
        );
    }

    #[test]
    fn frames_by_content_length() {
        let l = Limits::default();
        let m = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 3\r\n\r\nabcNEXT";
        assert_eq!(frame_stream(m, &l), StreamFrame::Message(m.len() - 4));
        assert_eq!(frame_stream(&m[..20], &l), StreamFrame::Incomplete);
        assert_eq!(
            frame_stream(b"OPTIONS sip:a SIP/2.0\r\nl: 10\r\n\r\nabc", &l),
            StreamFrame::Incomplete
        );
    }

    #[test]
    fn folded_content_length_and_bare_lf_heads() {
        let l = Limits::default();
        let m = b"OPTIONS sip:a SIP/2.0\r\nContent-Length:\r\n 3\r\n\r\nabc";
        assert_eq!(frame_stream(m, &l), StreamFrame::Message(m.len()));
        let lf = b"OPTIONS sip:a SIP/2.0\nl: 0\n\nINVITE sip:b SIP/2.0\r\nl: 5\r\n\r\n";
        assert_eq!(frame_stream(lf, &l), StreamFrame::Message(28));
    }

    #[test]
    fn keepalives() {
        let l = Limits::default();
        assert_eq!(
            frame_stream(b"\r\n\r\n", &l),
            StreamFrame::KeepAlive {
                consumed: 4,
                pong: true
            }
        );
        assert_eq!(
            frame_stream(b"\r\nINVITE", &l),
            StreamFrame::KeepAlive {
                consumed: 2,
                pong: false
            }
        );
        assert_eq!(frame_stream(b"\r", &l), StreamFrame::Incomplete);
    }

    #[test]
    fn rejects_bad_streams() {
        let l = Limits::default();
        assert!(matches!(
            frame_stream(b"A: b\r\nContent-Length: -1\r\n\r\n", &l),
            StreamFrame::Invalid(_)
        ));
        let two = b"A: b\r\nContent-Length: 3\r\nl: 3\r\n\r\nabc";
        assert!(matches!(frame_stream(two, &l), StreamFrame::Invalid(_)));
        let bare = b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\nrest";
        assert_eq!(
            frame_stream(bare, &l),
            StreamFrame::Unframed(bare.len() - 4)
        );
        let huge = vec![b'a'; 70_000];
        assert!(matches!(frame_stream(&huge, &l), StreamFrame::Invalid(_)));
    }
}
