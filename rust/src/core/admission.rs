//! Overload admission (docs/architecture.md): how many requests the application may
//! hold, and the 503 + Retry-After the core answers beyond that or while
//! draining.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use super::Core;
use crate::sip::{Message, Method};
use crate::transport::Source;

pub(super) struct Admission {
    pending: AtomicUsize,
    /// `Config::max_pending` and `retry_after`, changeable while running.
    max_pending: AtomicUsize,
    retry_after: AtomicU32,
    /// Shutting down: new transactions are refused, in-flight ones go on.
    draining: AtomicBool,
}

impl Admission {
    pub(super) fn new(max_pending: usize, retry_after: u32) -> Admission {
        Admission {
            pending: AtomicUsize::new(0),
            max_pending: AtomicUsize::new(max_pending.max(1)),
            retry_after: AtomicU32::new(retry_after),
            draining: AtomicBool::new(false),
        }
    }

    pub(super) fn retry_after_header(&self) -> Vec<(String, String)> {
        vec![(
            "Retry-After".to_string(),
            self.retry_after.load(Ordering::Relaxed).to_string(),
        )]
    }

    pub(super) fn hold(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
    }
}

impl Core {
    pub fn pending(&self) -> usize {
        self.admission.pending.load(Ordering::Relaxed)
    }

    /// The application finished with a request (it acted, or gave up).
    pub fn release(&self) {
        self.admission.pending.fetch_sub(1, Ordering::Relaxed);
    }

    /// The bound on requests the application holds (`Config::max_pending`).
    pub fn max_pending(&self) -> usize {
        self.admission.max_pending.load(Ordering::Relaxed)
    }

    pub fn set_max_pending(&self, n: usize) {
        self.admission
            .max_pending
            .store(n.max(1), Ordering::Relaxed);
    }

    /// Seconds in the Retry-After of the core's 503s.
    pub fn retry_after(&self) -> u32 {
        self.admission.retry_after.load(Ordering::Relaxed)
    }

    pub fn set_retry_after(&self, seconds: u32) {
        self.admission.retry_after.store(seconds, Ordering::Relaxed);
    }

    /// From now on new transactions (initial requests) are answered 503 +
    /// Retry-After, so callers try another server; requests inside dialogs,
    /// CANCELs and responses still flow, so calls in progress complete.
    pub fn start_drain(&self) {
        self.admission.draining.store(true, Ordering::Relaxed);
    }

    pub fn draining(&self) -> bool {
        self.admission.draining.load(Ordering::Relaxed)
    }

    /// Sheds load before any Python runs: 503 + Retry-After (ACKs are dropped).
    ///
    /// Requests inside a dialog (To tag: ACK, BYE, re-INVITE) belong to calls
    /// already admitted; shedding them would leave those calls hanging (a BYE
    /// refused with 503), so they get headroom up to twice the bound, which
    /// still caps what the application holds. An ACK gets four times: a lost
    /// one makes the callee retransmit its 2xx for 32 s (more load, and a
    /// caller that already moved on sees a stray 200), and it holds nothing
    /// once routed.
    ///
    /// While draining, every request outside a dialog is refused the same way.
    pub(super) fn overloaded(&self, msg: &Message, source: Source) -> bool {
        let in_dialog = msg.to_tag().is_some();
        if self.draining() && !in_dialog {
            self.stats.drain_rejects.fetch_add(1, Ordering::Relaxed);
        } else {
            let headroom = match (in_dialog, msg.method()) {
                (true, Method::Ack) => 4,
                (true, _) => 2,
                (false, _) => 1,
            };
            let limit = self.max_pending().saturating_mul(headroom);
            if self.pending() < limit {
                return false;
            }
            self.stats.overload_rejects.fetch_add(1, Ordering::Relaxed);
        }
        if msg.method() != Method::Ack {
            self.node
                .reply_stateless(msg, source, 503, None, &self.admission.retry_after_header());
        }
        true
    }
}
