//! The PyO3 layer: every Python-facing type lives here, so the core above it
//! builds and tests without Python. Exposed as the private `sipr._core`.

mod core;
mod defaults;
mod dialogs;
mod digest;
mod dispatcher;
mod dns;
mod eager;
mod events;
mod headers;
mod logbridge;
mod message;
mod nat;
mod onreply;
mod registrar;
mod reply_watch;
mod request;
mod security;
mod shared;
mod targets;
mod topology;

use pyo3::prelude::*;

/// The core's allocator in the wheel (decision 0063): with glibc's malloc a
/// proxy's CPU per call crept up 19 % over a 10-minute run at 2500 cps as the
/// heap of short-lived messages and 32 s-held transactions fragmented; with
/// mimalloc it stays flat. `cargo test` keeps the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pyo3::create_exception!(
    _core,
    SiprError,
    pyo3::exceptions::PyException,
    "Base class for sipr errors."
);
pyo3::create_exception!(
    _core,
    TransactionError,
    SiprError,
    "An action on a request that was already answered or forwarded."
);

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("SiprError", m.py().get_type::<SiprError>())?;
    m.add("TransactionError", m.py().get_type::<TransactionError>())?;
    m.add_class::<core::PyCore>()?;
    m.add_class::<eager::PyTaskStarter>()?;
    m.add_class::<request::PyRequest>()?;
    m.add_class::<headers::PyHeaders>()?;
    m.add_class::<headers::PyResponse>()?;
    m.add_class::<onreply::PyReply>()?;
    m.add_class::<message::PyUri>()?;
    m.add_class::<message::PyAddress>()?;
    m.add_class::<message::PyCSeq>()?;
    m.add_class::<message::PySource>()?;
    m.add_class::<registrar::PyBinding>()?;
    m.add_class::<registrar::PyStore>()?;
    m.add_class::<registrar::PyRegistrarRules>()?;
    m.add_class::<digest::PyDigestRules>()?;
    m.add_class::<digest::PyAttempt>()?;
    m.add_class::<digest::PySharedNonceCounts>()?;
    m.add_function(wrap_pyfunction!(registrar::aor_key, m)?)?;
    m.add_function(wrap_pyfunction!(digest::digest_ha1, m)?)?;
    m.add_class::<dns::PyDns>()?;
    m.add_class::<targets::PySerial>()?;
    m.add_class::<dispatcher::PyDispatcher>()?;
    m.add_class::<targets::PySelection>()?;
    m.add_class::<security::PySecurity>()?;
    m.add_class::<security::PyTokenBuckets>()?;
    m.add_function(wrap_pyfunction!(message::parse_uri, m)?)?;
    m.add_function(wrap_pyfunction!(core::parse_listen, m)?)?;
    m.add_function(wrap_pyfunction!(defaults::core_defaults, m)?)?;
    m.add_function(wrap_pyfunction!(logbridge::log_fd, m)?)?;
    m.add_function(wrap_pyfunction!(logbridge::drain_logs, m)?)?;
    m.add_function(wrap_pyfunction!(logbridge::set_log_level, m)?)?;
    m.add_function(wrap_pyfunction!(logbridge::log_rate_limit, m)?)?;
    dialogs::register(m)?;
    Ok(())
}
