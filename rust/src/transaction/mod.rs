//! The RFC 3261 §17 transaction layer (with RFC 6026's Accepted states).
//!
//! Everything here runs on the event loop's thread (see decision 0001), so
//! the tables are plain maps behind one uncontended lock in `Core`. Timers are
//! scheduled in a [`TimerQueue`] and fire through one timerfd.

pub mod client;
pub mod server;

use std::collections::HashMap;
use std::time::Duration;

use crate::proxy::context::ProxyCtx;
use crate::sip::{Message, Method};
use crate::timer::TimerQueue;

pub use client::{ClientState, ClientTxn};
pub use server::{ServerState, ServerTxn};

pub type TxnId = u64;
pub type BranchId = u64;
pub type CtxId = u64;

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
    /// The overall timeout of one `relay()` round.
    Relay(CtxId),
}

/// Retransmission timers need ~10 ms precision; clean-up timers need none and
/// are rounded to whole seconds so they share wake-ups.
pub const FINE: Duration = Duration::from_millis(10);
pub const COARSE: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Layer {
    pub timing: Timing,
    pub servers: HashMap<TxnId, ServerTxn>,
    server_index: HashMap<String, TxnId>,
    /// UAS-generated 2xx to INVITE awaiting their ACK, by dialog-ish key.
    ack_index: HashMap<String, TxnId>,
    pub clients: HashMap<BranchId, ClientTxn>,
    client_index: HashMap<String, BranchId>,
    pub ctxs: HashMap<CtxId, ProxyCtx>,
    pub timers: TimerQueue<TimerKey>,
    next_id: u64,
}

impl Layer {
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn find_server(&self, msg: &Message) -> Option<TxnId> {
        self.server_index.get(&server_key(msg, None)).copied()
    }

    /// The INVITE server transaction a CANCEL or ACK refers to (same branch).
    pub fn find_invite_server(&self, msg: &Message) -> Option<TxnId> {
        self.server_index
            .get(&server_key(msg, Some("INVITE")))
            .copied()
    }

    pub fn insert_server(&mut self, txn: ServerTxn) {
        self.server_index.insert(txn.key.clone(), txn.id);
        self.servers.insert(txn.id, txn);
    }

    pub fn remove_server(&mut self, id: TxnId) -> Option<ServerTxn> {
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

    pub fn index_ack(&mut self, key: String, id: TxnId) {
        self.ack_index.insert(key, id);
    }

    pub fn find_ack_target(&self, ack: &Message) -> Option<TxnId> {
        let tag = ack.to_tag()?;
        self.ack_index
            .get(&ack_key(ack.call_id(), ack.cseq(), tag))
            .copied()
    }

    pub fn insert_client(&mut self, txn: ClientTxn) {
        self.client_index
            .insert(client_key(&txn.branch, txn.method_str()), txn.id);
        self.clients.insert(txn.id, txn);
    }

    pub fn find_client(&self, branch: &str, cseq_method: &str) -> Option<BranchId> {
        self.client_index
            .get(&client_key(branch, cseq_method))
            .copied()
    }

    pub fn remove_client(&mut self, id: BranchId) -> Option<ClientTxn> {
        let txn = self.clients.remove(&id)?;
        self.client_index
            .remove(&client_key(&txn.branch, txn.method_str()));
        for t in txn.timers.iter().flatten() {
            self.timers.cancel(*t);
        }
        Some(txn)
    }
}

/// RFC 3261 §17.2.3 matching key: branch, sent-by, and method (ACK matches
/// INVITE). Pre-RFC 3261 branches fall back to the §17.2.3 legacy fields.
pub fn server_key(msg: &Message, method_override: Option<&str>) -> String {
    let via = msg.top_via();
    let method = method_override.unwrap_or(match msg.method() {
        Method::Ack => "INVITE",
        _ => msg.method_str(),
    });
    match msg
        .branch()
        .filter(|b| b.starts_with("z9hG4bK") && b.len() > 7)
    {
        Some(b) => format!(
            "{b}\u{0}{}:{}\u{0}{method}",
            via.host,
            via.port.unwrap_or(0)
        ),
        None => format!(
            "2543\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{method}",
            msg.request_uri_str().unwrap_or_default(),
            msg.call_id(),
            msg.cseq(),
            msg.from_tag().unwrap_or_default(),
            via.raw
        ),
    }
}

pub fn client_key(branch: &str, method: &str) -> String {
    let m = if method == "ACK" { "INVITE" } else { method };
    format!("{branch}\u{0}{m}")
}

pub fn ack_key(call_id: &str, cseq: u32, to_tag: &str) -> String {
    format!("{call_id}\u{0}{cseq}\u{0}{to_tag}")
}
