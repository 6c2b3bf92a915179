//! The app's event hooks the core calls itself (docs/decisions/0046):
//! `@app.on_send` (a request about to leave: allow or refuse by destination)
//! and `@app.on_timeout` (a proxied branch got no answer in time).
//!
//! The service is registered with the core only once an app has such a
//! hook; while none has, nothing here runs. Both hook points run on the loop
//! thread, inside a core call the Python server made, so the interpreter is
//! already attached; the transaction layer is locked, which is why the
//! Python side hands the hooks plain values and never a `Request`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use pyo3::prelude::*;

use crate::core::Core;
use crate::service::{BranchPlan, BranchTimeout, Ctx, Node, Service, Verdict};
use crate::sip::{Framing, Limits, Message};
use crate::transaction::BranchId;
use crate::transport::Hop;

const NAME: &str = "app-events";

/// The Python callables the hook points call (None: not called).
#[derive(Default)]
pub struct AppEvents {
    on_send: Mutex<Option<Py<PyAny>>>,
    on_timeout: Mutex<Option<Py<PyAny>>>,
    // Read before anything else at each hook point, so that an app without
    // the hook costs one atomic load per message once the service exists.
    any_send: AtomicBool,
    any_timeout: AtomicBool,
    /// Calls into Python made from the hook points (`events.core_calls`).
    calls: AtomicU64,
}

fn hop_parts(hop: Hop) -> (String, String, u16) {
    (
        hop.transport.as_str().to_ascii_lowercase(),
        hop.addr.ip().to_string(),
        hop.addr.port(),
    )
}

impl AppEvents {
    /// Calls into Python made from the hook points.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn callable(&self, slot: &Mutex<Option<Py<PyAny>>>, py: Python<'_>) -> Option<Py<PyAny>> {
        // Cloned out of the lock: the hook may install other hooks.
        let hook = slot.lock().as_ref().map(|f| f.clone_ref(py));
        if hook.is_some() {
            self.calls.fetch_add(1, Ordering::Relaxed);
        }
        hook
    }
}

impl Service for AppEvents {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_send(&self, _node: &Node, plan: &BranchPlan<'_>, request_uri: &str) -> Verdict {
        if !self.any_send.load(Ordering::Acquire) {
            return Verdict::Continue;
        }
        let msg = plan.request;
        let (transport, host, port) = hop_parts(plan.hop);
        Python::attach(|py| {
            let Some(hook) = self.callable(&self.on_send, py) else {
                return Verdict::Continue;
            };
            let args = (
                msg.method_str(),
                request_uri,
                transport,
                host,
                port,
                msg.call_id(),
            );
            match hook.call1(py, args).and_then(|v| v.bind(py).is_truthy()) {
                Ok(true) => Verdict::Continue,
                Ok(false) => Verdict::Stop,
                Err(e) => {
                    // The Python side catches the hooks' own errors; this is
                    // a broken callback: refuse, as a failing guard should.
                    e.write_unraisable(py, None);
                    Verdict::Stop
                }
            }
        })
    }

    fn on_branch_timeout(&self, cx: &mut Ctx<'_>, branch: BranchId, why: BranchTimeout) {
        if !self.any_timeout.load(Ordering::Acquire) {
            return;
        }
        let Some(c) = cx.txns.clients.get(&branch) else {
            return;
        };
        let limits = Limits {
            max_message_size: usize::MAX,
            ..Limits::default()
        };
        let sent = Message::parse(c.request.clone(), Framing::Stream, &limits).ok();
        let request_uri = sent
            .as_ref()
            .and_then(|m| m.request_uri_str())
            .unwrap_or_default();
        let call_id = sent.as_ref().map_or("", |m| m.call_id());
        let (transport, host, port) = hop_parts(Hop {
            transport: c.dest.transport,
            addr: c.dest.addr,
        });
        Python::attach(|py| {
            let Some(hook) = self.callable(&self.on_timeout, py) else {
                return;
            };
            let args = (
                why.as_str(),
                c.method_str(),
                request_uri,
                transport,
                host,
                port,
                call_id,
            );
            if let Err(e) = hook.call1(py, args) {
                e.write_unraisable(py, None);
            }
        });
    }
}

/// Installs (or, with None, removes) the callables `core` calls for
/// `on_send` and `on_timeout`. The service joins the core (kept in `slot`)
/// on the first hook and stays, empty (one atomic load per hook point),
/// after a reload to an app without hooks.
pub fn install(
    core: &Arc<Core>,
    slot: &OnceLock<Arc<AppEvents>>,
    on_send: Option<Py<PyAny>>,
    on_timeout: Option<Py<PyAny>>,
) -> PyResult<()> {
    let events = match slot.get() {
        Some(e) => e.clone(),
        None if on_send.is_none() && on_timeout.is_none() => return Ok(()),
        None => {
            let e = Arc::new(AppEvents::default());
            core.node
                .hooks
                .add(e.clone())
                .map_err(pyo3::exceptions::PyRuntimeError::new_err)?;
            let _ = slot.set(e.clone());
            e
        }
    };
    events.any_send.store(on_send.is_some(), Ordering::Release);
    events
        .any_timeout
        .store(on_timeout.is_some(), Ordering::Release);
    *events.on_send.lock() = on_send;
    *events.on_timeout.lock() = on_timeout;
    Ok(())
}
