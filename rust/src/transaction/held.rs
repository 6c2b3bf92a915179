//! Server transactions held after their final answer (decision 0065).
//!
//! A server transaction that answered finally lives on for Timer L (INVITE,
//! 2xx: RFC 6026 Accepted) or Timer J (non-INVITE, Completed) only to absorb
//! retransmitted requests, resend a non-INVITE's final to them, and pass
//! retransmitted 2xx upstream: 32 s over UDP, far longer than it was active.
//! What that needs is small: the matching key, where answers go, the final
//! (non-INVITE only) and the proxy context. So a settled transaction leaves
//! `Layer::servers` for `Layer::held_servers` in this form, and its boxed
//! `ServerTxn` (~470 bytes) and its request go (~600 bytes less per held
//! transaction; two per call).
//!
//! Not held this way, and kept whole to their end instead: an INVITE whose
//! final was a non-2xx (it retransmits until the ACK), a 2xx the application
//! generated (the same, over UDP), a transaction whose request the
//! application's handler still holds, and every transaction while a service
//! reads completed requests (`Service::reads_completed_requests`, topology
//! hiding rewriting retransmitted 2xx).

use bytes::Bytes;

use super::server::ServerState;
use super::{CtxId, Layer, ServerTxn, TxnId};
use crate::sip::Message;
use crate::timer::TimerId;
use crate::transport::{wire, Source};

pub struct HeldServer {
    /// Its key in `Layer::server_index`.
    pub key: u64,
    /// Call-ID and CSeq, hashed: a request reusing the branch with another
    /// Call-ID or CSeq is not a retransmission (some peers reuse branches).
    pub request: u64,
    pub ctx: Option<CtxId>,
    /// Timer L or J.
    pub end: Option<TimerId>,
    /// Where answers go (`wire::reply_to` of the request).
    pub reply_to: Source,
    /// The final a retransmitted non-INVITE request gets again; none for an
    /// INVITE in Accepted, whose retransmissions are absorbed (RFC 6026).
    pub answer: Option<Bytes>,
    pub final_status: u16,
}

/// Whether `txn` has nothing left to do but absorb (see the module's doc).
fn settled(txn: &ServerTxn) -> bool {
    let Some(status) = txn.final_status else {
        return false;
    };
    if txn.app_holds || status < 200 || txn.ack_key.is_some() || txn.uas_2xx {
        return false;
    }
    match txn.state {
        ServerState::Accepted => txn.invite,
        ServerState::Completed => !txn.invite,
        _ => false,
    }
}

impl Layer {
    /// Moves server transaction `id` to its held form if it is settled.
    /// Returns whether it did.
    pub fn hold_server(&mut self, id: TxnId) -> bool {
        if !self.servers.get(&id).is_some_and(|t| settled(t)) {
            return false;
        }
        let txn = self.servers.remove(&id).expect("checked above");
        let [retransmit, end, trying] = txn.timers;
        for t in [retransmit, trying].into_iter().flatten() {
            self.timers.cancel(t);
        }
        let held = HeldServer {
            key: txn.key,
            request: self.request_hash(&txn.request),
            ctx: txn.ctx,
            end,
            reply_to: wire::reply_to(&txn.request, txn.source),
            answer: txn.last_response,
            final_status: txn.final_status.unwrap_or(0),
        };
        self.held_servers.insert(id, held);
        true
    }

    /// Ends held server transaction `id` (its Timer L or J fired).
    pub fn remove_held_server(&mut self, id: TxnId) -> Option<HeldServer> {
        let held = self.held_servers.remove(&id)?;
        if self.server_index.get(&held.key) == Some(&id) {
            self.server_index.remove(&held.key);
        }
        if let Some(t) = held.end {
            self.timers.cancel(t);
        }
        Some(held)
    }

    /// `msg` is a retransmission of server transaction `id`'s request (same
    /// Call-ID and CSeq), held or not.
    pub fn is_retransmission(&self, id: TxnId, msg: &Message) -> bool {
        if let Some(t) = self.servers.get(&id) {
            return t.request.call_id() == msg.call_id() && t.request.cseq() == msg.cseq();
        }
        self.held_servers
            .get(&id)
            .is_some_and(|h| h.request == self.request_hash(msg))
    }

    /// The proxy context of server transaction `id`, held or not.
    pub fn server_ctx(&self, id: TxnId) -> Option<CtxId> {
        match self.servers.get(&id) {
            Some(t) => t.ctx,
            None => self.held_servers.get(&id).and_then(|h| h.ctx),
        }
    }

    /// Server transactions in the tables, held ones included.
    pub fn server_count(&self) -> usize {
        self.servers.len() + self.held_servers.len()
    }

    fn request_hash(&self, msg: &Message) -> u64 {
        self.hasher.hash_one((msg.call_id(), msg.cseq()))
    }
}
