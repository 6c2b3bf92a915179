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
    let Some(hdr_end) = memchr::memmem::find(buf, b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| memchr::memmem::find(buf, b"\n\n").map(|p| p + 2))
    else {
        if buf.len() > limits.max_message_size {
            return StreamFrame::Invalid("header section too large");
        }
        return StreamFrame::Incomplete;
    };
    let mut cl = None;
    for line in buf[..hdr_end].split(|&c| c == b'\n') {
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii_end();
        if HeaderId::from_name(name) == HeaderId::ContentLength {
            // Two Content-Length values leave the message end unknowable
            // (RFC 4475 §3.3.9): the stream cannot be resynchronised.
            if cl.is_some() {
                return StreamFrame::Invalid("multiple Content-Length headers on a stream");
            }
            match parse_decimal(
                line[colon + 1..].trim_ascii(),
                limits.max_message_size as u64,
            ) {
                Some(n) => cl = Some(n as usize),
                None => return StreamFrame::Invalid("malformed Content-Length on a stream"),
            }
        }
    }
    let total = hdr_end + cl.unwrap_or(0);
    if total > limits.max_message_size {
        return StreamFrame::Invalid("message too large");
    }
    if buf.len() < total {
        StreamFrame::Incomplete
    } else {
        StreamFrame::Message(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let huge = vec![b'a'; 70_000];
        assert!(matches!(frame_stream(&huge, &l), StreamFrame::Invalid(_)));
    }
}
