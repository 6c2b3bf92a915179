//! The ban table: sources whose packets are dropped before parsing, with no
//! answer and no Python call, until their ban expires. Bounded: when full,
//! the ban closest to its end makes room.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use super::events::{Event, Events};
use super::net::SourceKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanReason {
    /// Request rate above the flood threshold (Kamailio `pike`).
    Flood,
    /// Too many failed digest authentications (fail2ban).
    Auth,
    /// A blocklisted User-Agent or From user (a scanner).
    Scanner,
    /// `sipr ctl ban.add`.
    Manual,
}

impl BanReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BanReason::Flood => "flood",
            BanReason::Auth => "auth",
            BanReason::Scanner => "scanner",
            BanReason::Manual => "manual",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Ban {
    pub reason: BanReason,
    pub since: SystemTime,
    pub until: Instant,
    /// Packets dropped because of this ban.
    pub dropped: u64,
    pub detail: String,
}

/// One row of `ban.list`.
#[derive(Debug, Clone)]
pub struct BanRow {
    pub source: SourceKey,
    pub reason: BanReason,
    pub since: SystemTime,
    pub remaining: Duration,
    pub dropped: u64,
    pub detail: String,
}

pub struct BanTable {
    bans: Mutex<HashMap<SourceKey, Ban, ahash::RandomState>>,
    /// Mirrors the table's size, so the per-packet check costs no lock
    /// while nobody is banned.
    count: AtomicUsize,
    capacity: usize,
}

impl BanTable {
    pub fn new(capacity: usize) -> BanTable {
        BanTable {
            bans: Mutex::new(HashMap::default()),
            count: AtomicUsize::new(0),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key` is banned now; counts the dropped packet if so. An
    /// expired ban found here is lifted (and logged) at once.
    pub fn hit(&self, key: SourceKey, now: Instant, events: &Events) -> bool {
        if self.is_empty() {
            return false;
        }
        let mut bans = self.bans.lock();
        let Some(ban) = bans.get_mut(&key) else {
            return false;
        };
        if ban.until > now {
            ban.dropped += 1;
            return true;
        }
        if let Some(ban) = bans.remove(&key) {
            self.count.store(bans.len(), Ordering::Relaxed);
            events.push(lifted(key, &ban));
        }
        false
    }

    /// Bans `key` for `seconds` (an existing ban is extended, never
    /// shortened). True when the source was not banned before.
    pub fn add(
        &self,
        key: SourceKey,
        reason: BanReason,
        seconds: Duration,
        detail: String,
        now: Instant,
        events: &Events,
    ) -> bool {
        let until = now + seconds;
        let mut bans = self.bans.lock();
        if let Some(b) = bans.get_mut(&key) {
            if b.until > now {
                if until > b.until {
                    b.until = until;
                }
                return false;
            }
        }
        if bans.len() >= self.capacity && !bans.contains_key(&key) {
            let soonest = bans.iter().min_by_key(|(_, b)| b.until).map(|(k, _)| *k);
            if let Some(k) = soonest {
                bans.remove(&k);
            }
        }
        events.push(Event {
            kind: "banned",
            subject: key.to_string(),
            reason: reason.as_str().to_string(),
            seconds: seconds.as_secs(),
            detail: detail.clone(),
        });
        bans.insert(
            key,
            Ban {
                reason,
                since: SystemTime::now(),
                until,
                dropped: 0,
                detail,
            },
        );
        self.count.store(bans.len(), Ordering::Relaxed);
        true
    }

    pub fn remove(&self, key: SourceKey) -> Option<Ban> {
        let mut bans = self.bans.lock();
        let ban = bans.remove(&key);
        self.count.store(bans.len(), Ordering::Relaxed);
        ban
    }

    /// Lifts every expired ban (logged); returns how many.
    pub fn sweep(&self, now: Instant, events: &Events) -> usize {
        let mut bans = self.bans.lock();
        let expired: Vec<SourceKey> = bans
            .iter()
            .filter(|(_, b)| b.until <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in &expired {
            if let Some(ban) = bans.remove(k) {
                events.push(lifted(*k, &ban));
            }
        }
        self.count.store(bans.len(), Ordering::Relaxed);
        expired.len()
    }

    /// The live bans, soonest to end first.
    pub fn list(&self, now: Instant) -> Vec<BanRow> {
        let bans = self.bans.lock();
        let mut rows: Vec<BanRow> = bans
            .iter()
            .filter(|(_, b)| b.until > now)
            .map(|(k, b)| BanRow {
                source: *k,
                reason: b.reason,
                since: b.since,
                remaining: b.until - now,
                dropped: b.dropped,
                detail: b.detail.clone(),
            })
            .collect();
        rows.sort_by_key(|r| (r.remaining, r.source));
        rows
    }
}

fn lifted(key: SourceKey, ban: &Ban) -> Event {
    Event {
        kind: "unbanned",
        subject: key.to_string(),
        reason: ban.reason.as_str().to_string(),
        seconds: 0,
        detail: format!("{} packets dropped while banned", ban.dropped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> SourceKey {
        SourceKey::parse(s).unwrap()
    }

    #[test]
    fn bans_drop_until_they_expire() {
        let (t, ev) = (BanTable::new(10), Events::default());
        let now = Instant::now();
        assert!(!t.hit(key("192.0.2.1"), now, &ev));
        let secs = Duration::from_secs(5);
        assert!(t.add(
            key("192.0.2.1"),
            BanReason::Flood,
            secs,
            String::new(),
            now,
            &ev
        ));
        assert!(!t.add(
            key("192.0.2.1"),
            BanReason::Flood,
            secs,
            String::new(),
            now,
            &ev
        ));
        assert!(t.hit(key("192.0.2.1"), now + Duration::from_secs(4), &ev));
        assert!(!t.hit(key("192.0.2.2"), now, &ev));
        assert_eq!(t.list(now)[0].dropped, 1);
        // Expired: lifted on the next packet, logged once.
        assert!(!t.hit(key("192.0.2.1"), now + Duration::from_secs(6), &ev));
        assert!(t.is_empty());
        let (events, lost) = ev.take();
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["banned", "unbanned"]);
        assert_eq!(lost, 0);
    }

    #[test]
    fn full_table_drops_the_ban_closest_to_its_end() {
        let (t, ev) = (BanTable::new(2), Events::default());
        let now = Instant::now();
        let s = Duration::from_secs;
        t.add(
            key("192.0.2.1"),
            BanReason::Manual,
            s(10),
            String::new(),
            now,
            &ev,
        );
        t.add(
            key("192.0.2.2"),
            BanReason::Manual,
            s(100),
            String::new(),
            now,
            &ev,
        );
        t.add(
            key("192.0.2.3"),
            BanReason::Manual,
            s(50),
            String::new(),
            now,
            &ev,
        );
        assert_eq!(t.len(), 2);
        assert!(!t.hit(key("192.0.2.1"), now, &ev));
        assert!(t.hit(key("192.0.2.2"), now, &ev) && t.hit(key("192.0.2.3"), now, &ev));
        assert_eq!(t.sweep(now + s(60), &ev), 1);
        assert_eq!(t.list(now + s(60)).len(), 1);
    }
}
