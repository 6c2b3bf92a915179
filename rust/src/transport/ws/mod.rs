//! WebSocket transport for SIP (RFC 7118): the opening handshake, the frame
//! codec and the per-connection state machine, as pure functions over byte
//! buffers; the connection task in `stream` drives them.

pub mod frame;
pub mod handshake;
pub mod session;

pub use frame::{
    close_code, encode_close, encode_message, encode_ping, encode_pong, FrameDecoder, Violation,
    WsEvent,
};
pub use handshake::{server_handshake, Handshake, HANDSHAKE_TIMEOUT};
pub use session::{WsSession, WsStep};
