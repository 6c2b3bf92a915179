//! State the Python layer keeps beside the core: futures of running
//! `relay()` calls and requests whose CANCEL arrived.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

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
        }
    }

    pub fn next_relay_id(&self) -> u64 {
        self.next_relay.fetch_add(1, Ordering::Relaxed)
    }
}
