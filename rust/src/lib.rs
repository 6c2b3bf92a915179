//! sipr: an asynchronous SIP router. This crate is the Rust core: the SIP
//! parser, transports, the proxy core, and (behind the `python` feature) the
//! PyO3 bridge in `python/`, so everything else builds with plain `cargo test`.

pub mod core;
pub mod corelog;
pub mod dialog;
pub mod dispatcher;
pub mod dns;
pub mod nat;
pub mod onreply;
pub mod proxy;
pub mod registrar;
pub mod security;
pub mod service;
pub mod sip;
pub mod stats;
pub mod timer;
pub mod tls;
pub mod topology;
pub mod transaction;
pub mod transport;

#[cfg(feature = "python")]
mod python;
