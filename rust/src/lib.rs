//! sipr: an asynchronous SIP router. This crate is the Rust core: the SIP
//! parser, transports, and (behind the `python` feature) the PyO3 bridge.

pub mod sip;

#[cfg(feature = "python")]
mod python;
