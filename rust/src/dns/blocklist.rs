//! The destination blocklist (Kamailio `dst_blocklist`): destinations that
//! timed out or refused the connection are remembered for a while, and
//! requests with other choices try them last.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::transport::Hop;
use crate::transport::Transport;

const MAX_ENTRIES: usize = 10_000;

pub struct Blocklist {
    entries: Mutex<HashMap<(Transport, SocketAddr), Entry>>,
    /// Milliseconds an entry lives; 0 turns the blocklist off.
    lifetime_ms: AtomicU64,
    pub added: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub until: Instant,
    pub reason: &'static str,
    pub hits: u64,
}

impl Default for Blocklist {
    fn default() -> Self {
        Blocklist {
            entries: Mutex::new(HashMap::new()),
            lifetime_ms: AtomicU64::new(60_000),
            added: AtomicU64::new(0),
        }
    }
}

impl Blocklist {
    pub fn lifetime(&self) -> Duration {
        Duration::from_millis(self.lifetime_ms.load(Ordering::Relaxed))
    }

    pub fn set_lifetime(&self, d: Duration) {
        self.lifetime_ms.store(
            d.as_millis().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    pub fn add(&self, hop: Hop, reason: &'static str) {
        let life = self.lifetime();
        if life.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut map = self.entries.lock();
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, e| e.until > now);
            if map.len() >= MAX_ENTRIES {
                // Still full of live entries: the one closest to expiry goes.
                if let Some(k) = map.iter().min_by_key(|(_, e)| e.until).map(|(k, _)| *k) {
                    map.remove(&k);
                }
            }
        }
        let e = map.entry((hop.transport, hop.addr)).or_insert(Entry {
            until: now,
            reason,
            hits: 0,
        });
        e.until = now + life;
        e.reason = reason;
        e.hits += 1;
        self.added.fetch_add(1, Ordering::Relaxed);
    }

    pub fn contains(&self, hop: &Hop) -> bool {
        let map = self.entries.lock();
        if map.is_empty() {
            return false;
        }
        map.get(&(hop.transport, hop.addr))
            .is_some_and(|e| e.until > Instant::now())
    }

    /// Moves blocklisted destinations to the end, keeping the order otherwise:
    /// they are tried only when nothing else is left.
    pub fn demote(&self, hops: &mut Vec<Hop>) {
        if hops.len() < 2 || self.entries.lock().is_empty() {
            return;
        }
        let (ok, blocked): (Vec<Hop>, Vec<Hop>) = hops.iter().partition(|h| !self.contains(h));
        if !blocked.is_empty() {
            *hops = ok.into_iter().chain(blocked).collect();
        }
    }

    /// Live entries: (transport, address, seconds left, reason, hits).
    pub fn entries(&self) -> Vec<(Transport, SocketAddr, f64, &'static str, u64)> {
        let now = Instant::now();
        let mut map = self.entries.lock();
        map.retain(|_, e| e.until > now);
        map.iter()
            .map(|((t, a), e)| (*t, *a, (e.until - now).as_secs_f64(), e.reason, e.hits))
            .collect()
    }

    pub fn remove(&self, addr: Option<SocketAddr>) -> usize {
        let mut map = self.entries.lock();
        let before = map.len();
        match addr {
            Some(a) => map.retain(|(_, x), _| *x != a),
            None => map.clear(),
        }
        before - map.len()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(port: u16) -> Hop {
        Hop {
            transport: Transport::Udp,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    #[test]
    fn blocklisted_go_last_and_expire() {
        let b = Blocklist::default();
        b.add(hop(1), "timeout");
        let mut hops = vec![hop(1), hop(2), hop(3)];
        b.demote(&mut hops);
        assert_eq!(hops, vec![hop(2), hop(3), hop(1)]);
        assert_eq!(b.entries().len(), 1);
        b.set_lifetime(Duration::ZERO);
        b.add(hop(2), "timeout");
        assert!(!b.contains(&hop(2)));
        assert_eq!(b.remove(None), 1);
        let mut hops = vec![hop(1), hop(2)];
        b.demote(&mut hops);
        assert_eq!(hops, vec![hop(1), hop(2)]);
    }
}
