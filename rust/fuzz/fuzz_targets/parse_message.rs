//! Bytes -> Message::parse (datagram and stream framing); every accessor of
//! a parsed message, and the writers' output must parse again.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let parsed = common::parse_both(data);
    for m in parsed.iter().flatten() {
        common::touch_message(m);
        common::check_writers(m);
    }
    common::check_error_response(data, parsed.iter().flatten().next());
});
