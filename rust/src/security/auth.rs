//! Authentication-failure bans (fail2ban inside the server). Failed digest
//! attempts are counted per source and per user over a window:
//!
//! - `source_failures` from one source → the source is banned (every packet
//!   dropped), whatever users it tried;
//! - `user_failures` for one user from anywhere → the user is locked for
//!   `user_lock`: attempts for it are refused without checking the password,
//!   *except* from sources that authenticated as that user before (within
//!   `known_for`). An attacker spreading guesses over many addresses thus
//!   cannot lock the owner out of the phone it already uses, and a single
//!   attacking address is banned long before it locks anyone.
//!
//! The digest code reports through `Security::digest_failed` /
//! `digest_succeeded` and asks `Security::user_locked` before checking.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::net::SourceKey;

#[derive(Debug, Clone, PartialEq)]
pub struct AuthBanConfig {
    pub enabled: bool,
    pub source_failures: u32,
    pub window: Duration,
    pub source_ban: Duration,
    pub user_failures: u32,
    pub user_lock: Duration,
    pub known_for: Duration,
    /// Entries per table at most (sources, users, known pairs).
    pub max_entries: usize,
}

impl Default for AuthBanConfig {
    fn default() -> Self {
        AuthBanConfig {
            enabled: true,
            source_failures: 10,
            window: Duration::from_secs(60),
            source_ban: Duration::from_secs(600),
            user_failures: 30,
            user_lock: Duration::from_secs(300),
            known_for: Duration::from_secs(7 * 24 * 3600),
            max_entries: 100_000,
        }
    }
}

/// User names longer than this are cut (they are table keys).
const MAX_USER_LEN: usize = 256;

#[derive(Debug, Clone, Copy)]
struct Tally {
    first: Instant,
    count: u32,
}

/// What one more failure leads to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Consequence {
    pub ban_source: bool,
    pub lock_user: bool,
    /// Failures counted for the source / the user in their windows.
    pub source_count: u32,
    pub user_count: u32,
}

pub struct AuthFailures {
    pub config: AuthBanConfig,
    sources: HashMap<SourceKey, Tally, ahash::RandomState>,
    users: HashMap<String, Tally, ahash::RandomState>,
    locks: HashMap<String, Instant, ahash::RandomState>,
    known: HashMap<(String, SourceKey), Instant, ahash::RandomState>,
}

fn user_key(user: &str) -> String {
    let mut end = user.len().min(MAX_USER_LEN);
    while !user.is_char_boundary(end) {
        end -= 1;
    }
    user[..end].to_string()
}

fn bounded_insert<K: std::hash::Hash + Eq + Clone, V>(
    map: &mut HashMap<K, V, ahash::RandomState>,
    max: usize,
    key: K,
    value: V,
) {
    if map.len() >= max.max(1) && !map.contains_key(&key) {
        if let Some(k) = map.keys().next().cloned() {
            map.remove(&k);
        }
    }
    map.insert(key, value);
}

impl AuthFailures {
    pub fn new(config: AuthBanConfig) -> AuthFailures {
        AuthFailures {
            config,
            sources: HashMap::default(),
            users: HashMap::default(),
            locks: HashMap::default(),
            known: HashMap::default(),
        }
    }

    fn bump<K: std::hash::Hash + Eq + Clone>(
        map: &mut HashMap<K, Tally, ahash::RandomState>,
        max: usize,
        key: K,
        window: Duration,
        now: Instant,
    ) -> u32 {
        match map.get_mut(&key) {
            Some(t) if now.saturating_duration_since(t.first) <= window => {
                t.count = t.count.saturating_add(1);
                t.count
            }
            _ => {
                bounded_insert(
                    map,
                    max,
                    key,
                    Tally {
                        first: now,
                        count: 1,
                    },
                );
                1
            }
        }
    }

    /// Whether `user` is locked against `source` (not one it used before).
    pub fn locked(&mut self, user: &str, source: SourceKey, now: Instant) -> bool {
        if !self.config.enabled {
            return false;
        }
        let user = user_key(user);
        match self.locks.get(&user) {
            Some(until) if *until > now => {}
            Some(_) => {
                self.locks.remove(&user);
                return false;
            }
            None => return false,
        }
        !self.is_known(&user, source, now)
    }

    fn is_known(&self, user: &str, source: SourceKey, now: Instant) -> bool {
        self.known
            .get(&(user.to_string(), source))
            .is_some_and(|at| now.saturating_duration_since(*at) <= self.config.known_for)
    }

    /// Counts a failed attempt of `source` for `user`.
    pub fn failed(&mut self, user: &str, source: SourceKey, now: Instant) -> Consequence {
        if !self.config.enabled {
            return Consequence::default();
        }
        let (window, max) = (self.config.window, self.config.max_entries);
        let source_count = Self::bump(&mut self.sources, max, source, window, now);
        let user = user_key(user);
        let user_count = if user.is_empty() {
            0
        } else {
            Self::bump(&mut self.users, max, user.clone(), window, now)
        };
        let ban_source = source_count >= self.config.source_failures;
        if ban_source {
            self.sources.remove(&source);
        }
        let lock_user = !user.is_empty()
            && user_count >= self.config.user_failures
            && self.locks.get(&user).is_none_or(|until| *until <= now);
        if lock_user {
            self.users.remove(&user);
            bounded_insert(&mut self.locks, max, user, now + self.config.user_lock);
        }
        Consequence {
            ban_source,
            lock_user,
            source_count,
            user_count,
        }
    }

    /// `source` authenticated as `user`: it stays exempt from that user's locks.
    pub fn succeeded(&mut self, user: &str, source: SourceKey, now: Instant) {
        if !self.config.enabled || user.is_empty() {
            return;
        }
        let max = self.config.max_entries;
        bounded_insert(&mut self.known, max, (user_key(user), source), now);
    }

    pub fn unlock(&mut self, user: &str) -> bool {
        self.locks.remove(&user_key(user)).is_some()
    }

    /// Live locks: (user, seconds left).
    pub fn locks(&self, now: Instant) -> Vec<(String, Duration)> {
        let mut out: Vec<_> = self
            .locks
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(u, until)| (u.clone(), *until - now))
            .collect();
        out.sort();
        out
    }

    /// Forgets finished windows and locks; returns the users unlocked.
    pub fn sweep(&mut self, now: Instant) -> Vec<String> {
        let (window, known_for) = (self.config.window, self.config.known_for);
        self.sources
            .retain(|_, t| now.saturating_duration_since(t.first) <= window);
        self.users
            .retain(|_, t| now.saturating_duration_since(t.first) <= window);
        self.known
            .retain(|_, at| now.saturating_duration_since(*at) <= known_for);
        let ended: Vec<String> = self
            .locks
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(u, _)| u.clone())
            .collect();
        for u in &ended {
            self.locks.remove(u);
        }
        ended
    }

    pub fn sizes(&self) -> (usize, usize) {
        (self.locks.len(), self.known.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AuthBanConfig {
        AuthBanConfig {
            source_failures: 5,
            user_failures: 8,
            ..AuthBanConfig::default()
        }
    }

    fn src(s: &str) -> SourceKey {
        SourceKey::parse(s).unwrap()
    }

    #[test]
    fn one_source_is_banned_at_the_threshold() {
        let mut a = AuthFailures::new(cfg());
        let now = Instant::now();
        for i in 1..5 {
            let c = a.failed("alice@r", src("192.0.2.9"), now);
            assert!(!c.ban_source, "failure {i}");
        }
        assert!(a.failed("bob@r", src("192.0.2.9"), now).ban_source);
        // A window later the count starts again.
        let later = now + Duration::from_secs(61);
        assert!(!a.failed("alice@r", src("192.0.2.9"), later).ban_source);
    }

    #[test]
    fn a_user_lock_spares_sources_the_user_already_used() {
        let mut a = AuthFailures::new(cfg());
        let now = Instant::now();
        let home = src("198.51.100.1");
        a.succeeded("alice@r", home, now);
        // Eight attackers, one guess each: none is banned, alice is locked.
        let mut locked = false;
        for i in 0..8 {
            let c = a.failed("alice@r", SourceKey::V4(0xC000_0200 + i), now);
            assert!(!c.ban_source);
            locked |= c.lock_user;
        }
        assert!(locked);
        assert!(a.locked("alice@r", src("203.0.113.50"), now));
        assert!(
            !a.locked("alice@r", home, now),
            "alice's own phone still gets in"
        );
        assert!(!a.locked("bob@r", src("203.0.113.50"), now));
        assert_eq!(a.locks(now).len(), 1);
        let after = now + Duration::from_secs(301);
        assert!(!a.locked("alice@r", src("203.0.113.50"), after));
        assert!(a.unlock("alice@r") || a.locks(after).is_empty());
    }

    #[test]
    fn tables_are_bounded() {
        let mut a = AuthFailures::new(AuthBanConfig {
            max_entries: 10,
            ..cfg()
        });
        let now = Instant::now();
        for i in 0..1000u32 {
            a.failed(&format!("user{i}"), SourceKey::V4(i), now);
            a.succeeded(&format!("user{i}"), SourceKey::V4(i), now);
        }
        assert!(a.sources.len() <= 10 && a.users.len() <= 10 && a.known.len() <= 10);
        let long = "x".repeat(10_000);
        a.failed(&long, SourceKey::V4(1), now);
        assert!(a.users.keys().all(|u| u.len() <= MAX_USER_LEN));
    }
}
