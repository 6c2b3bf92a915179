//! The WebSocket server side over arbitrary bytes, as a `ws:` connection
//! reads them: the opening handshake, then client frames until a violation.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sipr::transport::ws::{server_handshake, FrameDecoder, Handshake, WsEvent};

fuzz_target!(|data: &[u8]| {
    // The first byte picks a small message limit now and then, to reach the
    // too-large paths without megabyte inputs.
    let max_message = match data.first() {
        Some(&b) if b < 16 => 16 + 64 * b as usize,
        _ => 65_535,
    };
    let mut buf = BytesMut::from(data);
    if let Handshake::Accept { consumed, .. } = server_handshake(data) {
        assert!(consumed <= data.len());
        let _ = buf.split_to(consumed);
    }
    let mut decoder = FrameDecoder::new(max_message);
    while let Ok(Some(event)) = decoder.decode(&mut buf) {
        match event {
            WsEvent::Message(m) => assert!(m.len() <= max_message),
            WsEvent::Ping(p) => assert!(p.len() <= 125),
            WsEvent::Pong => {}
            WsEvent::Close(_) => break,
        }
    }
});
