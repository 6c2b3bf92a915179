//! Server side of the WebSocket opening handshake (RFC 6455 §4.2) for SIP
//! (RFC 7118 §4): an HTTP/1.1 `GET` with `Upgrade: websocket`, answered with
//! `101 Switching Protocols` only when the client offers the `sip` subprotocol.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// Larger handshakes are refused: browsers send well under 2 KB, and the
/// handshake is buffered before anything about the peer is known.
pub const MAX_HANDSHAKE: usize = 8192;

/// A client that has not completed its handshake by then is disconnected.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// RFC 6455 §1.3: appended to the client's key before hashing.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// RFC 7118 §4: the only subprotocol a SIP WebSocket server speaks.
pub const SUBPROTOCOL: &str = "sip";

/// What to do with the bytes read so far from a new WebSocket connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    /// No complete request yet: read more.
    Incomplete,
    /// Send `response` (101); the first `consumed` bytes were the request,
    /// anything after them is already WebSocket frames.
    Accept { consumed: usize, response: Vec<u8> },
    /// Send `response` (an HTTP error) and close the connection.
    Refuse {
        response: Vec<u8>,
        reason: &'static str,
    },
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_key(client_key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(client_key.as_bytes());
    sha.update(ACCEPT_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// Parses the client's opening handshake at the start of `buf`.
pub fn server_handshake(buf: &[u8]) -> Handshake {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HANDSHAKE {
            return refuse(431, "handshake too large");
        }
        return Handshake::Incomplete;
    };
    let consumed = end + 4;
    if consumed > MAX_HANDSHAKE {
        return refuse(431, "handshake too large");
    }
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return refuse(400, "handshake is not text");
    };
    match check_request(head) {
        Ok(key) => Handshake::Accept {
            consumed,
            response: format!(
                "HTTP/1.1 101 Switching Protocols\r\n\
                 Upgrade: websocket\r\n\
                 Connection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n\
                 Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n",
                accept_key(key)
            )
            .into_bytes(),
        },
        Err((status, reason)) => refuse(status, reason),
    }
}

/// Checks the request line and headers; returns the client's key.
fn check_request(head: &str) -> Result<&str, (u16, &'static str)> {
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    if method != Some("GET") || target.is_none_or(str::is_empty) || parts.next().is_some() {
        return Err((400, "expected GET <path> HTTP/1.1"));
    }
    if version != Some("HTTP/1.1") {
        return Err((400, "WebSocket needs HTTP/1.1"));
    }
    let (mut host, mut upgrade, mut connection) = (false, false, false);
    let (mut version13, mut key, mut sip) = (None, None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err((400, "malformed header line"));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("Host") {
            host = true;
        } else if name.eq_ignore_ascii_case("Upgrade") {
            upgrade |= has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("Connection") {
            connection |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("Sec-WebSocket-Version") {
            version13 = Some(value == "13");
        } else if name.eq_ignore_ascii_case("Sec-WebSocket-Key") {
            key = Some(value);
        } else if name.eq_ignore_ascii_case("Sec-WebSocket-Protocol") {
            sip |= has_token(value, SUBPROTOCOL);
        }
    }
    if !host {
        return Err((400, "missing Host"));
    }
    if !upgrade || !connection {
        return Err((426, "expected Upgrade: websocket and Connection: Upgrade"));
    }
    if version13 != Some(true) {
        return Err((426, "only Sec-WebSocket-Version 13 is supported"));
    }
    let key = key.ok_or((400, "missing Sec-WebSocket-Key"))?;
    if BASE64.decode(key).map(|k| k.len()) != Ok(16) {
        return Err((400, "Sec-WebSocket-Key must be 16 bytes in base64"));
    }
    if !sip {
        return Err((
            400,
            "subprotocol \"sip\" required (Sec-WebSocket-Protocol: sip)",
        ));
    }
    Ok(key)
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn refuse(status: u16, reason: &'static str) -> Handshake {
    let phrase = match status {
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Bad Request",
    };
    // 426 tells the client which version to retry with (RFC 6455 §4.4).
    let version = if status == 426 {
        "Sec-WebSocket-Version: 13\r\n"
    } else {
        ""
    };
    let response = format!(
        "HTTP/1.1 {status} {phrase}\r\n{version}Content-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{reason}\n",
        reason.len() + 1
    )
    .into_bytes();
    Handshake::Refuse { response, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: &str) -> String {
        format!(
            "GET /sip HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\n\
             Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    fn refused(h: Handshake) -> (u16, &'static str) {
        match h {
            Handshake::Refuse { response, reason } => {
                let text = String::from_utf8(response).unwrap();
                assert!(text.contains("Connection: close"), "{text}");
                assert!(text.ends_with(&format!("{reason}\n")), "{text}");
                (text[9..12].parse().unwrap(), reason)
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn accept_key_matches_rfc6455_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn accepts_sip_subprotocol_and_keeps_following_bytes() {
        let req = request("Sec-WebSocket-Protocol: chat, SIP\r\n");
        let mut buf = req.clone().into_bytes();
        buf.extend_from_slice(&[0x81, 0x80]);
        let Handshake::Accept { consumed, response } = server_handshake(&buf) else {
            panic!("refused");
        };
        assert_eq!(consumed, req.len());
        let text = String::from_utf8(response).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: sip\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn refuses_without_sip_subprotocol() {
        let (status, reason) = refused(server_handshake(request("").as_bytes()));
        assert_eq!(status, 400);
        assert!(reason.contains("sip"));
        let other = request("Sec-WebSocket-Protocol: chat, sipx\r\n");
        assert_eq!(refused(server_handshake(other.as_bytes())).0, 400);
    }

    #[test]
    fn waits_for_the_end_of_the_headers() {
        let req = request("Sec-WebSocket-Protocol: sip\r\n");
        assert_eq!(
            server_handshake(&req.as_bytes()[..req.len() - 2]),
            Handshake::Incomplete
        );
    }

    #[test]
    fn bounds_the_handshake_size() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HANDSHAKE + 1, b'a');
        assert_eq!(refused(server_handshake(&big)).0, 431);
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(refused(server_handshake(&big)).0, 431);
    }

    #[test]
    fn refuses_wrong_version_with_426_and_the_supported_one() {
        let req = request("Sec-WebSocket-Protocol: sip\r\n").replace("Version: 13", "Version: 8");
        let Handshake::Refuse { response, .. } = server_handshake(req.as_bytes()) else {
            panic!("accepted")
        };
        let text = String::from_utf8(response).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn refuses_malformed_requests() {
        let sip = "Sec-WebSocket-Protocol: sip\r\n";
        let cases = [
            request(sip).replace("GET", "POST"),
            request(sip).replace("HTTP/1.1", "HTTP/1.0"),
            request(sip).replace("Host: 127.0.0.1:8080\r\n", ""),
            request(sip).replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
            request(sip).replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            request(sip).replace("Upgrade: websocket", "Upgrade: h2c"),
            request(sip).replace("keep-alive, Upgrade", "keep-alive"),
            request("no colon here\r\n"),
            "GET  HTTP/1.1\r\n\r\n".to_string(),
        ];
        for c in cases {
            let (status, _) = refused(server_handshake(c.as_bytes()));
            assert!(status == 400 || status == 426, "{c}");
        }
        assert_eq!(
            refused(server_handshake(b"GET / HTTP/1.1\r\n\xff\r\n\r\n")).0,
            400
        );
    }
}
