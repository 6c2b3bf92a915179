//! Name resolution for next hops. IP literals never touch the resolver; names
//! go through the system resolver with a small positive cache. (RFC 3263
//! NAPTR/SRV selection is future work; see docs/decisions.)

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

const TTL: Duration = Duration::from_secs(60);
const MAX_ENTRIES: usize = 4096;

#[derive(Default)]
pub struct Resolver {
    cache: Mutex<HashMap<(String, u16), (SocketAddr, Instant)>>,
}

impl Resolver {
    pub fn resolve(&self, host: &str, port: u16, prefer_v6: bool) -> Option<SocketAddr> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Some(SocketAddr::new(ip, port));
        }
        let key = (bare.to_ascii_lowercase(), port);
        if let Some((addr, at)) = self.cache.lock().get(&key) {
            if at.elapsed() < TTL {
                return Some(*addr);
            }
        }
        let addrs: Vec<SocketAddr> = (bare, port).to_socket_addrs().ok()?.collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv6() == prefer_v6)
            .or(addrs.first())
            .copied()?;
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(key, (addr, Instant::now()));
        Some(addr)
    }

    pub fn entries(&self) -> Vec<(String, u16, SocketAddr, u64)> {
        self.cache
            .lock()
            .iter()
            .map(|((h, p), (a, at))| {
                (
                    h.clone(),
                    *p,
                    *a,
                    TTL.saturating_sub(at.elapsed()).as_secs(),
                )
            })
            .collect()
    }
}
