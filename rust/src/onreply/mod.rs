//! `@app.on_reply` and `req.relay(..., on_reply=fn)` (Kamailio's
//! `onreply_route`): responses on proxied branches are held and handed to
//! the application, which may change their headers and body before the
//! proxy passes them upstream (`Proxy::deliver_held`).
//!
//! The service is registered only when an application asks for replies
//! (decision 0042): without it no response costs a hook call, an event or a
//! Python call. With it, only the transactions it watches (or all, for
//! `@app.on_reply`) are held.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::service::{Ctx, Event, HeldReply, ResponseAt, Service, Verdict};
use crate::sip::Message;
use crate::transaction::TxnId;

/// The owner name of this service.
pub const SERVICE: &str = "onreply";

/// Upper bound on transactions watched one by one (`relay(on_reply=)`): a
/// bound like every table; beyond it a relay's replies are not held (and
/// the refusal is counted).
pub const MAX_WATCHED: usize = 200_000;

#[derive(Default)]
pub struct OnReply {
    /// `@app.on_reply`: every proxied response goes to the application.
    all: AtomicBool,
    /// Server transactions whose relays asked for their replies.
    watched: Mutex<HashSet<TxnId>>,
    /// Responses handed to the application.
    pub handed: AtomicU64,
    /// `watch` refused because `MAX_WATCHED` were watched.
    pub refused: AtomicU64,
}

impl OnReply {
    pub fn set_all(&self, on: bool) {
        self.all.store(on, Ordering::Relaxed);
    }

    pub fn all(&self) -> bool {
        self.all.load(Ordering::Relaxed)
    }

    /// Hands the responses of server transaction `txn`'s relays to the
    /// application. False when the table is full.
    pub fn watch(&self, txn: TxnId) -> bool {
        let mut w = self.watched.lock();
        if w.len() >= MAX_WATCHED && !w.contains(&txn) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        w.insert(txn);
        true
    }

    pub fn watched(&self) -> usize {
        self.watched.lock().len()
    }

    fn wants(&self, txn: TxnId) -> bool {
        self.all() || self.watched.lock().contains(&txn)
    }
}

impl Service for OnReply {
    fn name(&self) -> &'static str {
        SERVICE
    }

    fn on_response(&self, cx: &mut Ctx<'_>, at: ResponseAt, msg: &Message) -> Verdict {
        if !self.wants(at.server) {
            return Verdict::Continue;
        }
        self.handed.fetch_add(1, Ordering::Relaxed);
        cx.events.push(Event::Reply(HeldReply {
            server: at.server,
            branch: at.branch,
            outcome: at.outcome,
            msg: msg.clone(),
            source: cx.txns.client_dest(at.branch).map(|d| d.addr),
        }));
        Verdict::Stop
    }

    fn on_transaction_end(&self, cx: &mut Ctx<'_>, txn: TxnId, _final_status: Option<u16>) {
        if self.watched.lock().remove(&txn) {
            cx.events.push(Event::ReplyWatchEnded(txn));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_transactions_are_bounded_and_all_covers_the_rest() {
        let s = OnReply::default();
        assert!(!s.wants(1));
        assert!(s.watch(1));
        assert!(s.wants(1) && !s.wants(2));
        for txn in 2..=MAX_WATCHED as TxnId {
            s.watch(txn);
        }
        assert_eq!(s.watched(), MAX_WATCHED);
        // Full: a new one is refused and counted, one already watched is fine.
        assert!(!s.watch(TxnId::MAX));
        assert!(s.watch(1));
        assert_eq!(s.refused.load(Ordering::Relaxed), 1);
        assert!(!s.wants(TxnId::MAX));
        s.set_all(true);
        assert!(s.wants(TxnId::MAX));
    }
}
