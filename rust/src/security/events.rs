//! Security events for the log: one line per ban, lift or lock, never one
//! per packet. The core has no logger of its own, so they queue here
//! (bounded) and the Python side drains them into the `sipr.security` log.

use std::collections::VecDeque;

use parking_lot::Mutex;

/// Events kept for the log at most; beyond, they are counted as lost.
const CAPACITY: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `banned`, `unbanned`, `locked`, `unlocked`.
    pub kind: &'static str,
    /// A source (`192.0.2.7`, `2001:db8::/64`) or a user (`alice@realm`).
    pub subject: String,
    /// Why: `flood`, `auth`, `scanner`, `manual`, `expired`, ...
    pub reason: String,
    /// Seconds the ban or lock lasts (0 for lifts).
    pub seconds: u64,
    /// Free text for the operator (the rate seen, the user agent matched).
    pub detail: String,
}

#[derive(Default)]
pub struct Events {
    queue: Mutex<(VecDeque<Event>, u64)>,
}

impl Events {
    pub fn push(&self, e: Event) {
        let mut q = self.queue.lock();
        if q.0.len() >= CAPACITY {
            q.1 += 1;
            return;
        }
        q.0.push_back(e);
    }

    /// The queued events and how many were lost since the last call.
    pub fn take(&self) -> (Vec<Event>, u64) {
        let mut q = self.queue.lock();
        let lost = std::mem::take(&mut q.1);
        (q.0.drain(..).collect(), lost)
    }
}
