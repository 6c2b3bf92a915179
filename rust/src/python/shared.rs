//! State the Python layer keeps beside the core: futures of running
//! `relay()` calls and requests whose CANCEL arrived.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use pyo3::prelude::*;

use crate::core::Core;
use crate::security::{Security, SecurityService};
use crate::topology::Topology;

pub struct Shared {
    pub core: Arc<Core>,
    /// Bans, flood detection, limits, address groups (a service of `core`
    /// from the start: its defaults are on).
    pub security: Arc<Security>,
    /// Topology hiding's dialog table (a service of `core` once turned on).
    pub topology: Arc<Topology>,
    pub futures: Mutex<HashMap<u64, Py<PyAny>>>,
    pub cancelled: Mutex<Vec<u64>>,
    /// `App(record_route=...)`: the default of `relay(record_route=None)`.
    pub record_route: AtomicBool,
    next_relay: AtomicU64,
    /// The server's event loop (`Core.set_loop`): `relay()` makes its future
    /// there without `asyncio.get_running_loop()`, which costs a `getpid`
    /// syscall per call on Python 3.11 (decision 0039).
    pub event_loop: Mutex<Option<Py<PyAny>>>,
    /// The `onreply` service, registered when the application first asks
    /// for replies (`python/onreply.rs`).
    pub onreply: OnceLock<Arc<crate::onreply::OnReply>>,
    /// Responses held for the application, not yet handed to Python.
    pub replies: Mutex<Vec<crate::service::HeldReply>>,
    /// Per-relay `on_reply` handlers, by server transaction.
    pub reply_handlers: Mutex<HashMap<u64, Py<PyAny>>>,
    /// NAT keepalives (`sipr.nat.keepalive`), once started.
    pub natping: OnceLock<Arc<crate::nat::keepalive::Keepalive>>,
}

impl Shared {
    pub fn new(core: Arc<Core>, record_route: bool) -> Shared {
        let security = Arc::new(Security::default());
        // A fresh core has no service of this name: the add cannot fail.
        let _ = core
            .node
            .hooks
            .add(Arc::new(SecurityService(security.clone())));
        Shared {
            core,
            security,
            topology: Arc::new(Topology::default()),
            futures: Mutex::new(HashMap::new()),
            cancelled: Mutex::new(Vec::new()),
            record_route: AtomicBool::new(record_route),
            // 0 is `proxy::stateful::UNAWAITED`.
            next_relay: AtomicU64::new(1),
            event_loop: Mutex::new(None),
            onreply: OnceLock::new(),
            replies: Mutex::new(Vec::new()),
            reply_handlers: Mutex::new(HashMap::new()),
            natping: OnceLock::new(),
        }
    }

    /// A new future on the server's loop (or, before `set_loop`, the running one).
    pub fn create_future<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let event_loop = self.event_loop.lock().as_ref().map(|l| l.clone_ref(py));
        match event_loop {
            Some(l) => l
                .into_bound(py)
                .call_method0(pyo3::intern!(py, "create_future")),
            None => py
                .import("asyncio")?
                .call_method0("get_running_loop")?
                .call_method0("create_future"),
        }
    }

    pub fn next_relay_id(&self) -> u64 {
        self.next_relay.fetch_add(1, Ordering::Relaxed)
    }
}
