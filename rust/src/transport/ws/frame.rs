//! WebSocket frames (RFC 6455 §5) for a server: client frames are decoded
//! (masked, possibly fragmented, size-bounded), server frames are encoded
//! unmasked. One complete data message carries one SIP message (RFC 7118 §5).

use bytes::{Buf, BufMut, Bytes, BytesMut};

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Control frames carry at most this much payload (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Close status codes (RFC 6455 §7.4.1) the server sends.
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const TOO_BIG: u16 = 1009;
}

/// What a client frame (or the last frame of a fragmented message) amounts to.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEvent {
    /// A complete text or binary message: one SIP message.
    Message(Bytes),
    /// Answer with a pong carrying the same payload.
    Ping(Bytes),
    Pong,
    /// The client closes; echo its code (RFC 6455 §5.5.1) and stop reading.
    Close(Option<u16>),
}

/// The client broke the protocol: close with `code` (RFC 6455 §7.1.7).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Violation {
    pub code: u16,
    pub reason: &'static str,
}

const fn violation(code: u16, reason: &'static str) -> Violation {
    Violation { code, reason }
}

/// Decodes client frames, reassembling fragmented messages up to
/// `max_message` bytes.
#[derive(Debug)]
pub struct FrameDecoder {
    max_message: usize,
    /// The text flag and payload so far of a fragmented message.
    partial: Option<(bool, BytesMut)>,
}

struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    header_len: usize,
    payload_len: usize,
}

impl FrameDecoder {
    pub fn new(max_message: usize) -> FrameDecoder {
        FrameDecoder {
            max_message,
            partial: None,
        }
    }

    /// Takes the next complete frame off the front of `buf`. `Ok(None)`: read
    /// more (a frame in progress, or a fragment that completed no message).
    /// Call again after `Ok(Some(_))`, as `buf` may hold more frames.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<WsEvent>, Violation> {
        loop {
            let Some(h) = self.header(buf)? else {
                return Ok(None);
            };
            if buf.len() < h.header_len + h.payload_len {
                // Room for the whole frame is bounded by the checks in header().
                buf.reserve(h.header_len + h.payload_len - buf.len());
                return Ok(None);
            }
            buf.advance(h.header_len);
            let mut payload = buf.split_to(h.payload_len);
            unmask(&mut payload, h.mask);
            if let Some(event) = self.on_frame(&h, payload)? {
                return Ok(Some(event));
            }
        }
    }

    /// Parses and checks a frame header without consuming it.
    fn header(&self, buf: &[u8]) -> Result<Option<Header>, Violation> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        if b0 & 0x70 != 0 {
            return Err(violation(
                close_code::PROTOCOL_ERROR,
                "reserved bits set (no extension negotiated)",
            ));
        }
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0F);
        if b1 & 0x80 == 0 {
            return Err(violation(
                close_code::PROTOCOL_ERROR,
                "client frame not masked",
            ));
        }
        let (len_bytes, short) = match b1 & 0x7F {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(n as u64)),
        };
        let header_len = 2 + len_bytes + 4;
        if buf.len() < header_len {
            return Ok(None);
        }
        let len = short.unwrap_or_else(|| {
            buf[2..2 + len_bytes]
                .iter()
                .fold(0u64, |acc, &b| acc << 8 | u64::from(b))
        });
        let is_control = opcode & 0x8 != 0;
        match opcode {
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
            _ => return Err(violation(close_code::PROTOCOL_ERROR, "unknown opcode")),
        }
        if is_control && (!fin || len > MAX_CONTROL_PAYLOAD as u64) {
            return Err(violation(
                close_code::PROTOCOL_ERROR,
                "control frame fragmented or over 125 bytes",
            ));
        }
        match (opcode, &self.partial) {
            (OP_CONTINUATION, None) => {
                return Err(violation(
                    close_code::PROTOCOL_ERROR,
                    "continuation frame without a message to continue",
                ))
            }
            (OP_TEXT | OP_BINARY, Some(_)) => {
                return Err(violation(
                    close_code::PROTOCOL_ERROR,
                    "new message before the fragmented one ended",
                ))
            }
            _ => {}
        }
        let so_far = self.partial.as_ref().map_or(0, |(_, p)| p.len()) as u64;
        if !is_control && so_far.saturating_add(len) > self.max_message as u64 {
            return Err(violation(
                close_code::TOO_BIG,
                "message over the SIP size limit",
            ));
        }
        let mask = [
            buf[header_len - 4],
            buf[header_len - 3],
            buf[header_len - 2],
            buf[header_len - 1],
        ];
        Ok(Some(Header {
            fin,
            opcode,
            mask,
            header_len,
            payload_len: len as usize,
        }))
    }

    fn on_frame(&mut self, h: &Header, payload: BytesMut) -> Result<Option<WsEvent>, Violation> {
        match h.opcode {
            OP_PING => Ok(Some(WsEvent::Ping(payload.freeze()))),
            OP_PONG => Ok(Some(WsEvent::Pong)),
            OP_CLOSE => close_payload(&payload).map(|code| Some(WsEvent::Close(code))),
            OP_TEXT | OP_BINARY if h.fin => complete(h.opcode == OP_TEXT, payload).map(Some),
            OP_TEXT | OP_BINARY => {
                self.partial = Some((h.opcode == OP_TEXT, payload));
                Ok(None)
            }
            _ => {
                let (text, mut so_far) = self.partial.take().expect("checked in header()");
                so_far.extend_from_slice(&payload);
                if h.fin {
                    complete(text, so_far).map(Some)
                } else {
                    self.partial = Some((text, so_far));
                    Ok(None)
                }
            }
        }
    }
}

fn complete(text: bool, payload: BytesMut) -> Result<WsEvent, Violation> {
    if text && std::str::from_utf8(&payload).is_err() {
        return Err(violation(
            close_code::INVALID_PAYLOAD,
            "text message is not UTF-8",
        ));
    }
    Ok(WsEvent::Message(payload.freeze()))
}

/// The status code of a close frame: none, or two bytes and a UTF-8 reason.
fn close_payload(payload: &[u8]) -> Result<Option<u16>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(violation(
            close_code::PROTOCOL_ERROR,
            "close frame with a 1-byte payload",
        )),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            // Codes a peer may send (RFC 6455 §7.4.1-2): 1000-1003, 1007-1011, 3000-4999.
            let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid {
                return Err(violation(
                    close_code::PROTOCOL_ERROR,
                    "invalid close status code",
                ));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(violation(
                    close_code::INVALID_PAYLOAD,
                    "close reason is not UTF-8",
                ));
            }
            Ok(Some(code))
        }
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    out.put_u8(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.put_u8(n as u8),
        n @ 126..=0xFFFF => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    out.extend_from_slice(payload);
    out.freeze()
}

/// A server frame carrying one SIP message: text when it is UTF-8 (what
/// browsers expect), binary otherwise (RFC 7118 §5.3 allows both).
pub fn encode_message(sip: &[u8]) -> Bytes {
    let opcode = if std::str::from_utf8(sip).is_ok() {
        OP_TEXT
    } else {
        OP_BINARY
    };
    encode(opcode, sip)
}

pub fn encode_ping(payload: &[u8]) -> Bytes {
    encode(OP_PING, payload)
}

pub fn encode_pong(ping_payload: &[u8]) -> Bytes {
    encode(OP_PONG, ping_payload)
}

/// A close frame; the reason is cut to fit a control frame.
pub fn encode_close(code: Option<u16>, reason: &str) -> Bytes {
    let Some(code) = code else {
        return encode(OP_CLOSE, b"");
    };
    let mut payload = code.to_be_bytes().to_vec();
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    encode(OP_CLOSE, &payload)
}

#[cfg(test)]
mod tests {
    use super::close_code::*;
    use super::*;

    /// A client frame: masked, with the given first byte (FIN + opcode).
    fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![b0];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn decode_all(dec: &mut FrameDecoder, bytes: &[u8]) -> Result<Vec<WsEvent>, Violation> {
        let mut buf = BytesMut::from(bytes);
        let mut events = Vec::new();
        while let Some(e) = dec.decode(&mut buf)? {
            events.push(e);
        }
        Ok(events)
    }

    fn violation_code(bytes: &[u8]) -> u16 {
        decode_all(&mut FrameDecoder::new(1000), bytes)
            .expect_err("should be refused")
            .code
    }

    #[test]
    fn decodes_rfc6455_masked_hello() {
        // RFC 6455 §5.7: a single-frame masked text message "Hello".
        let frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let events = decode_all(&mut FrameDecoder::new(100), &frame).unwrap();
        assert_eq!(events, vec![WsEvent::Message(Bytes::from_static(b"Hello"))]);
    }

    #[test]
    fn decodes_text_binary_and_extended_lengths() {
        let long = vec![b'x'; 300];
        let huge = vec![7u8; 70_000];
        let mut bytes = client_frame(0x81, b"OPTIONS sip:a SIP/2.0\r\n\r\n");
        bytes.extend(client_frame(0x82, &long));
        bytes.extend(client_frame(0x82, &huge));
        let events = decode_all(&mut FrameDecoder::new(100_000), &bytes).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[1], WsEvent::Message(Bytes::from(long)));
        assert_eq!(events[2], WsEvent::Message(Bytes::from(huge)));
    }

    #[test]
    fn waits_for_partial_frames_byte_by_byte() {
        let bytes = client_frame(0x81, &[b'a'; 200]);
        let mut dec = FrameDecoder::new(1000);
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.put_u8(*b);
            let got = dec.decode(&mut buf).unwrap();
            assert_eq!(got.is_some(), i == bytes.len() - 1);
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn reassembles_fragments_with_interleaved_control_frames() {
        let mut bytes = client_frame(0x01, b"INVITE ");
        bytes.extend(client_frame(0x89, b"hb"));
        bytes.extend(client_frame(0x00, b"sip:b"));
        bytes.extend(client_frame(0x80, b" SIP/2.0"));
        let events = decode_all(&mut FrameDecoder::new(1000), &bytes).unwrap();
        assert_eq!(
            events,
            vec![
                WsEvent::Ping(Bytes::from_static(b"hb")),
                WsEvent::Message(Bytes::from_static(b"INVITE sip:b SIP/2.0")),
            ]
        );
    }

    #[test]
    fn close_and_pong() {
        let mut bytes = client_frame(0x8A, b"");
        bytes.extend(client_frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e']));
        bytes.extend(client_frame(0x88, b""));
        let events = decode_all(&mut FrameDecoder::new(1000), &bytes).unwrap();
        assert_eq!(
            events,
            vec![
                WsEvent::Pong,
                WsEvent::Close(Some(NORMAL)),
                WsEvent::Close(None)
            ]
        );
    }

    #[test]
    fn refuses_protocol_violations() {
        let mut unmasked = client_frame(0x81, b"hi");
        unmasked[1] &= 0x7F;
        assert_eq!(violation_code(&unmasked), PROTOCOL_ERROR);
        assert_eq!(violation_code(&client_frame(0xC1, b"x")), PROTOCOL_ERROR);
        assert_eq!(violation_code(&client_frame(0x83, b"x")), PROTOCOL_ERROR);
        assert_eq!(violation_code(&client_frame(0x09, b"x")), PROTOCOL_ERROR);
        assert_eq!(
            violation_code(&client_frame(0x89, &[0; 126])),
            PROTOCOL_ERROR
        );
        assert_eq!(violation_code(&client_frame(0x80, b"x")), PROTOCOL_ERROR);
        let mut two_starts = client_frame(0x01, b"a");
        two_starts.extend(client_frame(0x81, b"b"));
        assert_eq!(violation_code(&two_starts), PROTOCOL_ERROR);
        assert_eq!(violation_code(&client_frame(0x88, &[3])), PROTOCOL_ERROR);
        assert_eq!(
            violation_code(&client_frame(0x88, &[0x03, 0xed])),
            PROTOCOL_ERROR
        );
        assert_eq!(
            violation_code(&client_frame(0x88, &[0x03, 0xe8, 0xff])),
            INVALID_PAYLOAD
        );
        assert_eq!(
            violation_code(&client_frame(0x81, &[0xc3, 0x28])),
            INVALID_PAYLOAD
        );
    }

    #[test]
    fn bounds_message_size_before_buffering() {
        // Only the header of an announced 2^40-byte frame: refused at once.
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 40).to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(violation_code(&header), TOO_BIG);
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&u64::MAX.to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(violation_code(&header), TOO_BIG);
        // Fragments that add up past the limit.
        let mut bytes = client_frame(0x02, &[0; 600]);
        bytes.extend(client_frame(0x80, &[0; 600]));
        assert_eq!(violation_code(&bytes), TOO_BIG);
        assert!(decode_all(
            &mut FrameDecoder::new(1000),
            &client_frame(0x82, &[0; 1000])
        )
        .is_ok());
    }

    #[test]
    fn encodes_unmasked_server_frames() {
        assert_eq!(&encode_message(b"Hello")[..], b"\x81\x05Hello");
        assert_eq!(&encode_message(&[0xff])[..2], &[0x82, 0x01]);
        let mid = encode_message(&[b'a'; 300]);
        assert_eq!(&mid[..4], &[0x81, 126, 0x01, 0x2c]);
        let big = encode_message(&vec![b'a'; 70_000]);
        assert_eq!(&big[..2], &[0x81, 127]);
        assert_eq!(big.len(), 70_000 + 10);
        assert_eq!(&encode_pong(b"hb")[..], b"\x8a\x02hb");
        assert_eq!(&encode_ping(b"")[..], b"\x89\x00");
        assert_eq!(&encode_close(None, "")[..], b"\x88\x00");
        let close = encode_close(Some(PROTOCOL_ERROR), &"é".repeat(100));
        assert_eq!(close[0], 0x88);
        assert!(usize::from(close[1]) <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&close[4..]).is_ok());
    }
}
