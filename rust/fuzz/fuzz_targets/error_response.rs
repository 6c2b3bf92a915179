//! write::error_response_raw on arbitrary bytes: never panics; the status line
//! and closing Content-Length are always there, and for bytes that parse as a
//! request the response parses too (everything it copies was validated).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sipr::sip::write::error_response_raw;
use sipr::sip::{Framing, Limits, Message};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let parsed = Message::parse(
        Bytes::copy_from_slice(data),
        Framing::Datagram,
        &Limits::default(),
    );
    match &parsed {
        Ok(m) => common::check_error_response(data, Some(m)),
        Err(e) => {
            common::check_error_response(data, None);
            std::hint::black_box(error_response_raw(data, e.status, e.reason));
        }
    }
});
