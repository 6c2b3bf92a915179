//! The WebSocket server side over arbitrary bytes, as a `ws:` connection
//! reads them: the opening handshake, then client frames until it closes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sipr::transport::ws::{WsSession, WsStep};

fuzz_target!(|data: &[u8]| {
    // The first byte picks a small message limit now and then, to reach the
    // too-large paths without megabyte inputs; the second, how the input is
    // split into reads (a frame cut anywhere must decode the same).
    let max_message = match data.first() {
        Some(&b) if b < 16 => 16 + 64 * b as usize,
        _ => 65_535,
    };
    let chunk = usize::from(data.get(1).copied().unwrap_or(0)).max(1);
    let mut session = WsSession::new(max_message);
    let mut buf = BytesMut::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match session.step(&mut buf) {
                WsStep::Need => break,
                WsStep::Write(bytes) => assert!(!bytes.is_empty()),
                WsStep::Message(m) => assert!(!m.is_empty() && m.len() <= max_message),
                WsStep::Close { last, .. } => {
                    assert!(!last.is_empty());
                    return;
                }
            }
        }
    }
});
