//! Flood detection (Kamailio `pike`): the request rate of each source over a
//! sliding window. A source above the threshold is reported once, so the
//! caller bans it; the table of tracked sources is bounded.
//!
//! The window slides by weighting the previous fixed window by how much of
//! it still overlaps (`previous * (1 - elapsed/window) + current`): two
//! counters per source, no per-request timestamps, and a burst straddling a
//! window edge is still seen whole.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::net::SourceKey;

#[derive(Debug, Clone, PartialEq)]
pub struct FloodConfig {
    pub enabled: bool,
    /// Requests allowed per `window` from one source.
    pub limit: u32,
    pub window: Duration,
    /// How long a flooding source stays banned.
    pub ban: Duration,
    /// Sources tracked at most (memory bound: ~40 bytes each).
    pub max_sources: usize,
}

impl Default for FloodConfig {
    fn default() -> Self {
        FloodConfig {
            enabled: true,
            limit: 400,
            window: Duration::from_secs(2),
            ban: Duration::from_secs(300),
            max_sources: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    /// Index of the fixed window `current` counts (time since `epoch` / window).
    window: u64,
    current: u32,
    previous: u32,
}

pub struct FloodTable {
    pub config: FloodConfig,
    epoch: Instant,
    counters: HashMap<SourceKey, Counter, ahash::RandomState>,
    /// Sources forgotten to make room (a table full of live sources).
    pub evicted: u64,
}

/// A source went over the threshold: its estimated rate over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exceeded {
    pub requests: f64,
}

impl FloodTable {
    pub fn new(config: FloodConfig) -> FloodTable {
        FloodTable {
            config,
            epoch: Instant::now(),
            counters: HashMap::default(),
            evicted: 0,
        }
    }

    pub fn tracked(&self) -> usize {
        self.counters.len()
    }

    pub fn set_config(&mut self, config: FloodConfig) {
        if config.window != self.config.window {
            // Window indices change meaning: start counting afresh.
            self.counters.clear();
        }
        self.config = config;
    }

    /// Counts one request from `key` at `now`; `Some` when this request takes
    /// the source over the limit (the caller bans it and forgets it here).
    pub fn count(&mut self, key: SourceKey, now: Instant) -> Option<Exceeded> {
        let window_ns = self.config.window.as_nanos().max(1);
        let since = now.saturating_duration_since(self.epoch).as_nanos();
        let index = (since / window_ns) as u64;
        let elapsed = (since % window_ns) as f64 / window_ns as f64;
        if !self.counters.contains_key(&key) && self.counters.len() >= self.config.max_sources {
            self.make_room(index);
        }
        let c = self.counters.entry(key).or_insert(Counter {
            window: index,
            current: 0,
            previous: 0,
        });
        if c.window != index {
            c.previous = if c.window + 1 == index { c.current } else { 0 };
            c.current = 0;
            c.window = index;
        }
        c.current = c.current.saturating_add(1);
        let estimate = f64::from(c.previous) * (1.0 - elapsed) + f64::from(c.current);
        if estimate > f64::from(self.config.limit) {
            self.counters.remove(&key);
            return Some(Exceeded { requests: estimate });
        }
        None
    }

    /// Forgets sources idle for two windows; if none are, an arbitrary one
    /// (the hasher is randomly seeded, so an attacker cannot choose which).
    fn make_room(&mut self, index: u64) {
        let before = self.counters.len();
        self.counters.retain(|_, c| c.window + 1 >= index);
        if self.counters.len() == before {
            if let Some(k) = self.counters.keys().next().copied() {
                self.counters.remove(&k);
                self.evicted += 1;
            }
        }
    }

    /// Drops counters of sources idle for two windows.
    pub fn sweep(&mut self, now: Instant) {
        let window_ns = self.config.window.as_nanos().max(1);
        let index = (now.saturating_duration_since(self.epoch).as_nanos() / window_ns) as u64;
        self.counters.retain(|_, c| c.window + 1 >= index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(limit: u32, window_ms: u64, max_sources: usize) -> FloodTable {
        FloodTable::new(FloodConfig {
            limit,
            window: Duration::from_millis(window_ms),
            max_sources,
            ..FloodConfig::default()
        })
    }

    #[test]
    fn a_source_over_the_limit_is_reported_once() {
        let mut t = table(10, 1000, 100);
        let k = SourceKey::parse("192.0.2.1").unwrap();
        let other = SourceKey::parse("192.0.2.2").unwrap();
        let now = t.epoch;
        for _ in 0..10 {
            assert_eq!(t.count(k, now), None);
            assert_eq!(t.count(other, now), None);
        }
        let over = t.count(k, now).expect("11th request is over 10/s");
        assert!(over.requests > 10.0);
        // Forgotten once reported: the caller's ban takes over.
        assert_eq!(t.tracked(), 1);
    }

    #[test]
    fn the_window_slides() {
        let mut t = table(10, 1000, 100);
        let k = SourceKey::parse("192.0.2.1").unwrap();
        let start = t.epoch + Duration::from_millis(900);
        for _ in 0..8 {
            assert_eq!(t.count(k, start), None);
        }
        // 200 ms later, 100 ms into the next fixed window: 90% of the
        // previous 8 still count (7.2), so the third more makes 10.2.
        let later = start + Duration::from_millis(200);
        for _ in 0..2 {
            assert_eq!(t.count(k, later), None);
        }
        assert!(t.count(k, later).is_some());
        // A steady rate under the limit never trips it (7/s against 10/s:
        // the weighted estimate may overshoot the true rate by one window's
        // rounding).
        let mut t = table(10, 1000, 100);
        for i in 0..100u64 {
            let at = t.epoch + Duration::from_millis(i * 143);
            assert_eq!(t.count(k, at), None, "request {i}");
        }
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = table(1000, 1000, 50);
        let now = t.epoch;
        for i in 0..500u32 {
            t.count(SourceKey::V4(i), now);
        }
        assert_eq!(t.tracked(), 50);
        assert!(t.evicted >= 450);
        // Idle sources go first.
        let much_later = now + Duration::from_secs(10);
        t.count(SourceKey::V4(9999), much_later);
        assert_eq!(t.tracked(), 1);
        t.sweep(much_later + Duration::from_secs(10));
        assert_eq!(t.tracked(), 0);
    }
}
