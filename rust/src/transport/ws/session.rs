//! One server-side WebSocket connection as a state machine over its read
//! buffer: the opening handshake, then frames. The connection task feeds it
//! bytes and carries out each [`WsStep`] ([`WsSession::drive`] does it over
//! the connection's write queue); no I/O happens here.

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::mpsc;

use super::frame::{encode_close, encode_pong, FrameDecoder, WsEvent};
use super::handshake::{server_handshake, Handshake};

/// What the connection task must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum WsStep {
    /// Read more bytes.
    Need,
    /// Write these bytes (the 101 answer, a pong) and continue.
    Write(Bytes),
    /// One SIP message arrived.
    Message(Bytes),
    /// Write these bytes (an HTTP refusal or a close frame), then close.
    Close { last: Bytes, why: &'static str },
}

#[derive(Debug)]
enum State {
    Handshake,
    Open(FrameDecoder),
    Closed,
}

#[derive(Debug)]
pub struct WsSession {
    state: State,
    max_message: usize,
}

impl WsSession {
    /// A new connection whose messages may be up to `max_message` bytes.
    pub fn new(max_message: usize) -> WsSession {
        WsSession {
            state: State::Handshake,
            max_message,
        }
    }

    /// Whether the opening handshake is still to come.
    pub fn awaiting_handshake(&self) -> bool {
        matches!(self.state, State::Handshake)
    }

    /// Consumes what it can from the front of `buf`; call again until `Need`.
    pub fn step(&mut self, buf: &mut BytesMut) -> WsStep {
        match &mut self.state {
            State::Closed => WsStep::Need,
            State::Handshake => match server_handshake(buf) {
                Handshake::Incomplete => WsStep::Need,
                Handshake::Accept { consumed, response } => {
                    buf.advance(consumed);
                    self.state = State::Open(FrameDecoder::new(self.max_message));
                    WsStep::Write(Bytes::from(response))
                }
                Handshake::Refuse { response, reason } => {
                    self.state = State::Closed;
                    WsStep::Close {
                        last: Bytes::from(response),
                        why: reason,
                    }
                }
            },
            State::Open(decoder) => match decoder.decode(buf) {
                Ok(None) => WsStep::Need,
                // Empty or CRLF-only messages are keep-alives some clients send.
                Ok(Some(WsEvent::Message(m))) if m.iter().all(|b| matches!(b, b'\r' | b'\n')) => {
                    self.step(buf)
                }
                Ok(Some(WsEvent::Message(m))) => WsStep::Message(m),
                Ok(Some(WsEvent::Ping(p))) => WsStep::Write(encode_pong(&p)),
                Ok(Some(WsEvent::Pong)) => self.step(buf),
                Ok(Some(WsEvent::Close(code))) => {
                    self.state = State::Closed;
                    // Echo the client's status code (RFC 6455 §5.5.1).
                    WsStep::Close {
                        last: encode_close(code, ""),
                        why: "client closed the WebSocket",
                    }
                }
                Err(v) => {
                    self.state = State::Closed;
                    WsStep::Close {
                        last: encode_close(Some(v.code), v.reason),
                        why: v.reason,
                    }
                }
            },
        }
    }
}

impl WsSession {
    /// Runs the state machine over what was read: the handshake answer and
    /// pongs go on the connection's write queue `out`, SIP messages to
    /// `on_message`. False: close the connection (after the refusal or close
    /// frame queued here is written).
    pub fn drive(
        &mut self,
        buf: &mut BytesMut,
        out: &mpsc::Sender<Bytes>,
        peer: std::net::SocketAddr,
        mut on_message: impl FnMut(Bytes),
    ) -> bool {
        loop {
            match self.step(buf) {
                WsStep::Need => return true,
                WsStep::Write(bytes) => {
                    if out.try_send(bytes).is_err() {
                        return false;
                    }
                }
                WsStep::Message(msg) => on_message(msg),
                WsStep::Close { last, why } => {
                    tracing::info!(%peer, why, "closing WebSocket connection");
                    let _ = out.try_send(last);
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HANDSHAKE: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n";

    fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![b0, 0x80 | payload.len() as u8];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn steps(session: &mut WsSession, buf: &mut BytesMut) -> Vec<WsStep> {
        let mut out = Vec::new();
        loop {
            match session.step(buf) {
                WsStep::Need => return out,
                s @ WsStep::Close { .. } => {
                    out.push(s);
                    return out;
                }
                s => out.push(s),
            }
        }
    }

    #[test]
    fn handshake_then_messages_ping_and_close() {
        let mut session = WsSession::new(1000);
        assert!(session.awaiting_handshake());
        let mut buf = BytesMut::from(HANDSHAKE);
        buf.extend_from_slice(&masked(0x81, b"OPTIONS sip:a SIP/2.0\r\n\r\n"));
        buf.extend_from_slice(&masked(0x82, b""));
        buf.extend_from_slice(&masked(0x81, b"\r\n\r\n"));
        buf.extend_from_slice(&masked(0x89, b"hb"));
        buf.extend_from_slice(&masked(0x8A, b""));
        buf.extend_from_slice(&masked(0x88, &1001u16.to_be_bytes()));
        buf.extend_from_slice(&masked(0x81, b"after close"));
        let got = steps(&mut session, &mut buf);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(matches!(&got[0], WsStep::Write(b) if b.starts_with(b"HTTP/1.1 101 ")));
        assert_eq!(
            got[1],
            WsStep::Message(Bytes::from_static(b"OPTIONS sip:a SIP/2.0\r\n\r\n"))
        );
        assert_eq!(got[2], WsStep::Write(Bytes::from_static(b"\x8a\x02hb")));
        assert!(matches!(&got[3], WsStep::Close { last, .. } if last[..] == [0x88, 2, 0x03, 0xe9]));
        assert_eq!(session.step(&mut buf), WsStep::Need);
        assert!(!session.awaiting_handshake());
    }

    #[test]
    fn refused_handshake_closes() {
        let mut session = WsSession::new(1000);
        let text = String::from_utf8_lossy(HANDSHAKE).replace("Protocol: sip", "Protocol: chat");
        let mut buf = BytesMut::from(text.as_bytes());
        match session.step(&mut buf) {
            WsStep::Close { last, why } => {
                assert!(last.starts_with(b"HTTP/1.1 400 "));
                assert!(why.contains("sip"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unmasked_frame_closes_with_1002() {
        let mut session = WsSession::new(1000);
        let mut buf = BytesMut::from(HANDSHAKE);
        buf.extend_from_slice(b"\x81\x02hi");
        let got = steps(&mut session, &mut buf);
        assert!(
            matches!(&got[1], WsStep::Close { last, .. } if last[..4] == [0x88, last[1], 0x03, 0xea])
        );
    }
}
