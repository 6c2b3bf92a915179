//! Addresses a connect just failed to: for a short while, messages for them
//! fail at once instead of each opening a connect of its own.
//!
//! RFC 3261 §18.2.2 sends a response whose connection is gone over a new
//! connection to the request's source. When we closed that connection
//! ourselves (its peer stopped reading) hundreds of answers may still be on
//! their way to it: each was a connect to a closed port, refused, one after
//! another (~2,300 a second in the slow-peer test), and the same holds for
//! requests relayed to a TCP next hop that is down. Kamailio's answer is its
//! destination blocklist (`dst_blocklist`); this is that, for connects only.
//! Bounded: at most `MAX_ENTRIES` addresses, expired ones dropped first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Transport;

const MAX_ENTRIES: usize = 4096;

pub(super) struct ConnectBackoff {
    window: Duration,
    failed: Mutex<HashMap<(Transport, SocketAddr), Instant>>,
}

impl ConnectBackoff {
    /// `window` zero: never refuse.
    pub(super) fn new(window: Duration) -> ConnectBackoff {
        ConnectBackoff {
            window,
            failed: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a new connect to `addr` is refused: one failed less than the
    /// window ago.
    pub(super) fn refuses(&self, transport: Transport, addr: SocketAddr) -> bool {
        if self.window.is_zero() {
            return false;
        }
        let mut failed = self.failed.lock();
        match failed.get(&(transport, addr)) {
            Some(at) if at.elapsed() < self.window => true,
            Some(_) => {
                failed.remove(&(transport, addr));
                false
            }
            None => false,
        }
    }

    pub(super) fn connect_failed(&self, transport: Transport, addr: SocketAddr) {
        if self.window.is_zero() {
            return;
        }
        let mut failed = self.failed.lock();
        if failed.len() >= MAX_ENTRIES {
            let window = self.window;
            failed.retain(|_, at| at.elapsed() < window);
            if failed.len() >= MAX_ENTRIES {
                return; // a flood of distinct addresses: they connect as before
            }
        }
        failed.insert((transport, addr), Instant::now());
    }

    pub(super) fn connected(&self, transport: Transport, addr: SocketAddr) {
        let mut failed = self.failed.lock();
        if !failed.is_empty() {
            failed.remove(&(transport, addr));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_failed_address_is_refused_for_the_window_only() {
        let b = ConnectBackoff::new(Duration::from_millis(50));
        assert!(!b.refuses(Transport::Tcp, addr(1)));
        b.connect_failed(Transport::Tcp, addr(1));
        assert!(b.refuses(Transport::Tcp, addr(1)));
        // Another address, or the same one over another transport, is not.
        assert!(!b.refuses(Transport::Tcp, addr(2)));
        assert!(!b.refuses(Transport::Tls, addr(1)));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!b.refuses(Transport::Tcp, addr(1)));
        assert!(b.failed.lock().is_empty(), "an expired entry is dropped");
    }

    #[test]
    fn a_connect_that_succeeds_clears_it() {
        let b = ConnectBackoff::new(Duration::from_secs(60));
        b.connect_failed(Transport::Tcp, addr(1));
        b.connected(Transport::Tcp, addr(1));
        assert!(!b.refuses(Transport::Tcp, addr(1)));
    }

    #[test]
    fn zero_window_never_refuses_and_keeps_nothing() {
        let b = ConnectBackoff::new(Duration::ZERO);
        b.connect_failed(Transport::Tcp, addr(1));
        assert!(!b.refuses(Transport::Tcp, addr(1)));
        assert!(b.failed.lock().is_empty());
    }

    #[test]
    fn the_table_is_bounded() {
        let b = ConnectBackoff::new(Duration::from_secs(60));
        for port in 0..(MAX_ENTRIES as u16 + 100) {
            b.connect_failed(Transport::Tcp, addr(port));
        }
        assert_eq!(b.failed.lock().len(), MAX_ENTRIES);
        // The oldest are kept (still in their window); the newest connect as before.
        assert!(b.refuses(Transport::Tcp, addr(0)));
        assert!(!b.refuses(Transport::Tcp, addr(MAX_ENTRIES as u16 + 50)));
    }
}
