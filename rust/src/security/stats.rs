//! Counters of the security services, for `stats.get` and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct SecurityStats {
    pub bans_flood: Counter,
    pub bans_auth: Counter,
    pub bans_scanner: Counter,
    pub bans_manual: Counter,
    /// Packets dropped unparsed because their source is banned.
    pub banned_drops: Counter,
    pub auth_failures: Counter,
    pub user_locks: Counter,
    /// Attempts refused because their user is locked.
    pub auth_locked_refusals: Counter,
    /// Requests answered 503 by a per-method limit.
    pub method_limited: Counter,
    pub sanity_refused: Counter,
    /// Requests dropped by the blocklist in the core.
    pub blocklist_drops: Counter,
}

impl SecurityStats {
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        [
            ("security.bans.flood", &self.bans_flood),
            ("security.bans.auth", &self.bans_auth),
            ("security.bans.scanner", &self.bans_scanner),
            ("security.bans.manual", &self.bans_manual),
            ("security.banned_drops", &self.banned_drops),
            ("security.auth.failures", &self.auth_failures),
            ("security.auth.user_locks", &self.user_locks),
            ("security.auth.locked_refusals", &self.auth_locked_refusals),
            ("security.method_limited", &self.method_limited),
            ("security.sanity_refused", &self.sanity_refused),
            ("security.blocklist_drops", &self.blocklist_drops),
        ]
        .into_iter()
        .map(|(k, c)| (k.to_string(), c.get()))
        .collect()
    }

    /// `stats.reset`.
    pub fn reset(&self) {
        for c in [
            &self.bans_flood,
            &self.bans_auth,
            &self.bans_scanner,
            &self.bans_manual,
            &self.banned_drops,
            &self.auth_failures,
            &self.user_locks,
            &self.auth_locked_refusals,
            &self.method_limited,
            &self.sanity_refused,
            &self.blocklist_drops,
        ] {
            c.set(0);
        }
    }
}
