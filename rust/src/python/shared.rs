//! State the Python layer keeps beside the core: futures of running
//! `relay()` calls and requests whose CANCEL arrived.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;

use crate::core::Core;

pub struct Shared {
    pub core: Arc<Core>,
    pub futures: Mutex<HashMap<u64, Py<PyAny>>>,
    pub cancelled: Mutex<Vec<u64>>,
    /// `App(record_route=...)`: the default of `relay(record_route=None)`.
    pub record_route: AtomicBool,
    next_relay: AtomicU64,
}

impl Shared {
    pub fn new(core: Arc<Core>, record_route: bool) -> Shared {
        Shared {
            core,
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
