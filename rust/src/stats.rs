//! Counters read by `stats.get` and the control interface. Relaxed atomics:
//! each is independent and read for monitoring only.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::sip::Method;

#[derive(Default)]
pub struct Stats {
    pub requests_in: [AtomicU64; 15],
    pub responses_in: AtomicU64,
    pub responses_out: AtomicU64,
    pub requests_forwarded: AtomicU64,
    pub responses_relayed: AtomicU64,
    pub parse_errors: AtomicU64,
    pub overload_rejects: AtomicU64,
    pub send_errors: AtomicU64,
    pub dropped: AtomicU64,
    pub retransmissions: AtomicU64,
    /// REGISTERs answered by the native registrar (no Python).
    pub native_registers: AtomicU64,
}

pub const METHOD_NAMES: [&str; 15] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "INFO",
    "UPDATE",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
    "other",
];

impl Stats {
    pub fn count_retransmission(&self) {
        self.retransmissions.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_request(&self, m: Method) {
        self.requests_in[m as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A flat name → value snapshot.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out: Vec<(String, u64)> = METHOD_NAMES
            .iter()
            .zip(&self.requests_in)
            .map(|(n, a)| (format!("requests_in.{n}"), get(a)))
            .collect();
        for (n, a) in [
            ("responses_in", &self.responses_in),
            ("responses_out", &self.responses_out),
            ("requests_forwarded", &self.requests_forwarded),
            ("responses_relayed", &self.responses_relayed),
            ("parse_errors", &self.parse_errors),
            ("overload_rejects", &self.overload_rejects),
            ("send_errors", &self.send_errors),
            ("dropped", &self.dropped),
            ("retransmissions", &self.retransmissions),
            ("registrar.native", &self.native_registers),
        ] {
            out.push((n.to_string(), get(a)));
        }
        out
    }
}
