//! The NAT tests (`nat::detect`) by name for `Request.nat_test`, and the
//! keepalive service (`nat::keepalive`) started from `sipr.nat.keepalive`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use std::sync::Arc;

use super::shared::Shared;
use crate::nat::keepalive::{Keepalive, KeepaliveConfig};
use crate::nat::{nat_test, NatTest};
use crate::registrar::Store;
use crate::sip::Message;
use crate::transport::Source;

/// The names of the tests in `names` (all when None) that fire.
pub fn run_tests(
    msg: &Message,
    source: &Source,
    names: Option<Vec<String>>,
) -> PyResult<Vec<&'static str>> {
    let mut bits = 0;
    match names {
        None => bits = u32::MAX,
        Some(list) => {
            for n in list {
                let t = NatTest::from_name(&n).ok_or_else(|| {
                    let known: Vec<_> = NatTest::ALL.iter().map(|t| t.name()).collect();
                    PyValueError::new_err(format!(
                        "unknown NAT test {n:?}: use {}",
                        known.join(", ")
                    ))
                })?;
                bits |= t.bit();
            }
        }
    }
    let fired = nat_test(msg, source, bits);
    Ok(NatTest::ALL
        .into_iter()
        .filter(|t| fired & t.bit() != 0)
        .map(NatTest::name)
        .collect())
}

/// Starts pinging the NATed bindings of `store` (once per core).
pub fn start_keepalive(
    shared: &Shared,
    store: Arc<dyn Store>,
    config: KeepaliveConfig,
) -> PyResult<()> {
    if shared.natping.get().is_some() {
        // A reload runs the startup hooks again: the pings go on as they were.
        tracing::info!("natping: already running; keeping its first configuration");
        return Ok(());
    }
    let service = Arc::new(Keepalive::new(store, config));
    if shared.natping.set(service.clone()).is_err() {
        return Ok(());
    }
    let core = &shared.core;
    if core.node.hooks.add(service.clone()).is_err() {
        return Err(PyValueError::new_err("NAT keepalives already registered"));
    }
    core.with_services(|cx, _| service.arm(cx));
    Ok(())
}

/// Counters of the keepalive service (zero until it runs).
pub fn stats(shared: &Shared) -> Vec<(String, u64)> {
    match shared.natping.get() {
        Some(k) => k.stats(),
        None => Keepalive::idle_stats(),
    }
}

/// `nat.show`: `[(aor, contact, transport, host, port, misses)]` of the
/// bindings pinged (empty until keepalives run).
pub fn rows(shared: &Shared) -> Vec<(String, String, String, String, u16, u32)> {
    let Some(k) = shared.natping.get() else {
        return Vec::new();
    };
    k.rows()
        .into_iter()
        .map(|(aor, contact, t, addr, misses)| {
            (
                aor,
                contact,
                t.as_str().to_ascii_lowercase(),
                addr.ip().to_string(),
                addr.port(),
                misses,
            )
        })
        .collect()
}
