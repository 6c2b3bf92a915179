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
    /// Requests refused with 503 while shutting down.
    pub drain_rejects: AtomicU64,
    pub send_errors: AtomicU64,
    pub dropped: AtomicU64,
    /// Responses matching no transaction and no branch of ours (dropped).
    pub stray_responses: AtomicU64,
    pub retransmissions: AtomicU64,
    /// By status class: index 0 is 1xx … 5 is 6xx.
    pub responses_in_class: [AtomicU64; 6],
    pub responses_out_class: [AtomicU64; 6],
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

    pub fn count_response_in(&self, status: u16) {
        self.responses_in.fetch_add(1, Ordering::Relaxed);
        if let Some(a) = class_slot(&self.responses_in_class, status) {
            a.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `response` is the serialized status line onwards (`SIP/2.0 200 OK…`).
    pub fn count_response_out(&self, response: &[u8]) {
        self.responses_out.fetch_add(1, Ordering::Relaxed);
        let status = response
            .get(8..11)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        if let Some(a) = class_slot(&self.responses_out_class, status) {
            a.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Zeroes every counter (`stats.reset`).
    pub fn reset(&self) {
        let singles = [
            &self.responses_in,
            &self.responses_out,
            &self.requests_forwarded,
            &self.responses_relayed,
            &self.parse_errors,
            &self.overload_rejects,
            &self.drain_rejects,
            &self.send_errors,
            &self.dropped,
            &self.stray_responses,
            &self.retransmissions,
            &self.native_registers,
        ];
        let grouped = self
            .requests_in
            .iter()
            .chain(&self.responses_in_class)
            .chain(&self.responses_out_class);
        for a in singles.into_iter().chain(grouped) {
            a.store(0, Ordering::Relaxed);
        }
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
            ("drain_rejects", &self.drain_rejects),
            ("send_errors", &self.send_errors),
            ("dropped", &self.dropped),
            ("stray_responses", &self.stray_responses),
            ("retransmissions", &self.retransmissions),
            ("registrar.native", &self.native_registers),
        ] {
            out.push((n.to_string(), get(a)));
        }
        for (dir, classes) in [
            ("responses_in", &self.responses_in_class),
            ("responses_out", &self.responses_out_class),
        ] {
            for (i, a) in classes.iter().enumerate() {
                out.push((format!("{dir}.{}xx", i + 1), get(a)));
            }
        }
        out
    }
}

fn class_slot(classes: &[AtomicU64; 6], status: u16) -> Option<&AtomicU64> {
    classes.get(usize::from(status / 100).checked_sub(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_counted_by_class() {
        let s = Stats::default();
        s.count_response_in(180);
        s.count_response_in(200);
        s.count_response_in(99); // no class: only the total
        s.count_response_out(b"SIP/2.0 486 Busy Here\r\n");
        s.count_response_out(b"garbage");
        let snap: std::collections::HashMap<_, _> = s.snapshot().into_iter().collect();
        assert_eq!(snap["responses_in"], 3);
        assert_eq!(snap["responses_in.1xx"], 1);
        assert_eq!(snap["responses_in.2xx"], 1);
        assert_eq!(snap["responses_out"], 2);
        assert_eq!(snap["responses_out.4xx"], 1);
        assert_eq!(snap["responses_out.6xx"], 0);
        s.count_request(Method::Invite);
        s.reset();
        assert!(s.snapshot().iter().all(|(_, v)| *v == 0));
    }
}
