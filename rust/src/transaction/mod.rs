//! The RFC 3261 §17 transaction layer (with RFC 6026's Accepted states).
//!
//! Everything here runs on the event loop's thread (see decision 0001), so
//! the tables are plain maps behind one uncontended lock in the dispatcher (`core`). Timers are
//! scheduled in a [`TimerQueue`] and fire through one timerfd; `timers`
//! turns a fired one into what the transaction's owner must hear.
//!
//! The layer sends through [`Wire`](crate::transport::Wire) and knows nothing
//! above it: a client transaction names its [`Owner`] (the proxy, or another
//! service) and reports to it; a server transaction carries its proxy
//! context id as an opaque number.

pub mod client;
pub mod held;
pub mod server;
#[cfg(test)]
pub mod testkit;
mod timers;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::Duration;

use crate::sip::{Message, Method};
use crate::timer::TimerQueue;

pub use client::{ClientState, ClientTxn};
pub use held::{HeldClient, HeldServer};
pub use server::{ServerState, ServerTxn};
pub use timers::{on_timer, Expiry};

pub type TxnId = u64;
pub type BranchId = u64;
pub type CtxId = u64;

/// The maps of the per-message path: keyed by our own ids or by keyed hashes,
/// still hashed with a per-process random key (ahash), just more cheaply than
/// std's SipHash (~16k Ir per sf_rr call went to SipHash).
pub type IdMap<K, V> = HashMap<K, V, ahash::RandomState>;

/// RFC 3261 timer base values (§17.1.1.1, table 4). Changeable at runtime.
#[derive(Debug, Clone)]
pub struct Timing {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
    /// Proxy INVITE timer (§16.8): longer than 3 minutes.
    pub timer_c: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_c: Duration::from_secs(181),
        }
    }
}

impl Timing {
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }
}

/// Which timer of which object fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKey {
    /// G (retransmit final / UAS 2xx), H/I/J/L (end of the transaction).
    ServerRetransmit(TxnId),
    /// 100 Trying for an INVITE the application has not answered in 200 ms.
    ServerTrying(TxnId),
    ServerEnd(TxnId),
    /// A/E (retransmit), B/F (timeout), C (proxy INVITE), D/K/M (end).
    ClientRetransmit(BranchId),
    ClientTimeout(BranchId),
    ClientTimerC(BranchId),
    ClientEnd(BranchId),
    /// A timer of a service above this layer (the proxy's relay timeout,
    /// a dialog's, ...): handed back to its owner.
    Service(Owner),
}

/// Who a client transaction or a service timer belongs to: a service above
/// the transaction layer, by name (`"proxy"`, or a registered service's
/// `Service::name`), and that service's own id (a proxy context, a
/// dialog, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    pub service: &'static str,
    pub id: u64,
}

/// Retransmission timers need ~10 ms precision; clean-up timers need none and
/// are rounded to whole seconds so they share wake-ups.
pub const FINE: Duration = Duration::from_millis(10);
pub const COARSE: Duration = Duration::from_secs(1);

/// Granularity of an end-of-transaction timer set `after` from now: a zero
/// wait (Timers I, J, D, K over reliable transports) has nothing to absorb,
/// so it ends at the next fine tick instead of holding the transaction (and
/// its memory) until the next whole second.
pub fn end_granularity(after: Duration) -> Duration {
    if after.is_zero() {
        FINE
    } else {
        COARSE
    }
}

pub struct Layer {
    pub timing: Timing,
    /// Boxed: a `ServerTxn` is ~500 bytes; inline, every empty slot of the
    /// table (and the old table at each growth) would cost that much too.
    pub servers: IdMap<TxnId, Box<ServerTxn>>,
    /// Server transactions after their final answer, in the small form that
    /// absorbing retransmissions needs (`held`); they keep their id and key.
    /// Boxed like `servers`: ~250,000 are held at 4000 cps, and a table of
    /// that size is half empty after it doubles.
    pub held_servers: IdMap<TxnId, Box<HeldServer>>,
    /// Keys are 64-bit hashes (random per process, so not forgeable) of the
    /// matching fields; no string is built per message.
    server_index: IdMap<u64, TxnId>,
    /// UAS-generated 2xx to INVITE awaiting their ACK, by dialog-ish key.
    ack_index: IdMap<u64, TxnId>,
    /// Boxed, as `servers`: a `ClientTxn` is ~300 bytes.
    pub clients: IdMap<BranchId, Box<ClientTxn>>,
    /// Client transactions settled by a 2xx, in their small form (`held`).
    pub held_clients: IdMap<BranchId, Box<HeldClient>>,
    client_index: IdMap<u64, BranchId>,
    pub timers: TimerQueue<TimerKey>,
    /// Transactions created since start (for `tm.stats`).
    pub servers_created: u64,
    pub clients_created: u64,
    next_id: u64,
    hasher: ahash::RandomState,
}

impl Default for Layer {
    fn default() -> Self {
        Layer {
            timing: Timing::default(),
            servers: IdMap::default(),
            held_servers: IdMap::default(),
            server_index: IdMap::default(),
            ack_index: IdMap::default(),
            clients: IdMap::default(),
            held_clients: IdMap::default(),
            client_index: IdMap::default(),
            timers: TimerQueue::default(),
            servers_created: 0,
            clients_created: 0,
            next_id: 0,
            hasher: ahash::RandomState::new(),
        }
    }
}

impl Layer {
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn find_server(&self, msg: &Message) -> Option<TxnId> {
        self.server_index.get(&self.server_key(msg, None)).copied()
    }

    /// The INVITE server transaction a CANCEL or ACK refers to (same branch).
    pub fn find_invite_server(&self, msg: &Message) -> Option<TxnId> {
        self.server_index
            .get(&self.server_key(msg, Some("INVITE")))
            .copied()
    }

    pub fn insert_server(&mut self, txn: ServerTxn) {
        self.servers_created += 1;
        self.server_index.insert(txn.key, txn.id);
        self.servers.insert(txn.id, Box::new(txn));
    }

    pub fn remove_server(&mut self, id: TxnId) -> Option<Box<ServerTxn>> {
        let txn = self.servers.remove(&id)?;
        if self.server_index.get(&txn.key) == Some(&id) {
            self.server_index.remove(&txn.key);
        }
        if let Some(k) = &txn.ack_key {
            self.ack_index.remove(k);
        }
        for t in txn.timers.iter().flatten() {
            self.timers.cancel(*t);
        }
        Some(txn)
    }

    pub fn index_ack(&mut self, key: u64, id: TxnId) {
        self.ack_index.insert(key, id);
    }

    pub fn find_ack_target(&self, ack: &Message) -> Option<TxnId> {
        let tag = ack.to_tag()?;
        self.ack_index
            .get(&self.ack_key(ack.call_id(), ack.cseq(), tag))
            .copied()
    }

    pub fn insert_client(&mut self, txn: ClientTxn) {
        self.clients_created += 1;
        let key = self.client_key(&txn.branch, txn.method_str());
        self.client_index.insert(key, txn.id);
        self.clients.insert(txn.id, Box::new(txn));
    }

    pub fn find_client(&self, branch: &str, cseq_method: &str) -> Option<BranchId> {
        let id = *self
            .client_index
            .get(&self.client_key(branch, cseq_method))?;
        // A 64-bit collision is astronomically unlikely; check anyway.
        match self.clients.get(&id) {
            Some(c) => (c.branch == branch).then_some(id),
            None => self
                .held_clients
                .get(&id)
                .filter(|h| h.branch == self.branch_hash(branch))
                .map(|_| id),
        }
    }

    pub fn remove_client(&mut self, id: BranchId) -> Option<Box<ClientTxn>> {
        let txn = self.clients.remove(&id)?;
        let key = self.client_key(&txn.branch, txn.method_str());
        if self.client_index.get(&key) == Some(&id) {
            self.client_index.remove(&key);
        }
        for t in txn.timers.iter().flatten() {
            self.timers.cancel(*t);
        }
        Some(txn)
    }

    /// The server transaction matching key (RFC 3261 §17.2.3): branch,
    /// sent-by and method, ACK counting as INVITE; pre-RFC 3261 branches use
    /// the legacy fields.
    pub fn server_key(&self, msg: &Message, method_override: Option<&str>) -> u64 {
        server_key_with(&self.hasher, msg, method_override)
    }

    pub fn client_key(&self, branch: &str, method: &str) -> u64 {
        let m = if method == "ACK" { "INVITE" } else { method };
        self.hasher.hash_one((branch, m))
    }

    pub fn ack_key(&self, call_id: &str, cseq: u32, to_tag: &str) -> u64 {
        ack_key_with(&self.hasher, call_id, cseq, to_tag)
    }

    pub fn hasher(&self) -> ahash::RandomState {
        self.hasher.clone()
    }
}

/// `Layer::server_key` with the layer's hasher (`Layer::hasher`): a service
/// that keeps state per server transaction computes the same key on threads
/// without the layer.
pub fn server_key_with(
    hasher: &ahash::RandomState,
    msg: &Message,
    method_override: Option<&str>,
) -> u64 {
    let method = method_override.unwrap_or(match msg.method() {
        Method::Ack => "INVITE",
        _ => msg.method_str(),
    });
    let via = msg.str_at(msg.top_via_span());
    let sent_by = via.split(';').next().unwrap_or(via);
    let mut h = hasher.build_hasher();
    match msg
        .branch()
        .filter(|b| b.starts_with("z9hG4bK") && b.len() > 7)
    {
        Some(b) => (0u8, b, sent_by, method).hash(&mut h),
        None => (
            1u8,
            msg.request_uri_str(),
            msg.call_id(),
            msg.cseq(),
            msg.from_tag(),
            via,
            method,
        )
            .hash(&mut h),
    }
    h.finish()
}

/// The key under which a UAS 2xx waits for its ACK (Call-ID, CSeq, To tag).
pub fn ack_key_with(h: &ahash::RandomState, call_id: &str, cseq: u32, to_tag: &str) -> u64 {
    h.hash_one((call_id, cseq, to_tag))
}
