//! WebSocket transport for SIP (RFC 7118): the opening handshake and the
//! frame codec, as pure functions over byte buffers; the connection loop in
//! `stream` drives them.

pub mod frame;
pub mod handshake;

pub use frame::{encode_close, encode_message, encode_pong, FrameDecoder, Violation, WsEvent};
pub use handshake::{server_handshake, Handshake};
