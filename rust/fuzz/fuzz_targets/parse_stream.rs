//! frame_stream over an arbitrary buffer, as the TCP reader does, then each
//! framed message through Message::parse with stream framing.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sipr::sip::{frame_stream, Framing, Limits, Message, StreamFrame};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    // The first byte picks a small limit now and then, to reach the
    // too-large paths without megabyte inputs.
    let limits = match data.first() {
        Some(&b) if b < 16 => Limits {
            max_message_size: 64 + 16 * b as usize,
            ..Limits::default()
        },
        _ => Limits::default(),
    };
    let mut rest = data;
    while !rest.is_empty() {
        match frame_stream(rest, &limits) {
            StreamFrame::Incomplete | StreamFrame::Invalid(_) => break,
            StreamFrame::KeepAlive { consumed, .. } => {
                assert!(consumed > 0 && consumed <= rest.len());
                rest = &rest[consumed..];
            }
            StreamFrame::Unframed(n) => {
                // The reader answers 400 and closes the connection.
                assert!(n > 0 && n <= rest.len() && n <= limits.max_message_size);
                break;
            }
            StreamFrame::Message(n) => {
                assert!(n > 0 && n <= rest.len() && n <= limits.max_message_size);
                let buf = Bytes::copy_from_slice(&rest[..n]);
                if let Ok(m) = Message::parse(buf, Framing::Stream, &limits) {
                    common::touch_message(&m);
                    common::check_writers(&m);
                }
                rest = &rest[n..];
            }
        }
    }
});
