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
//!
//! Client transactions the same way, once a 2xx was delivered to their
//! owner: an INVITE's (RFC 6026 Accepted, Timer M, 32 s) passes retransmitted
//! 2xx to its owner; a non-INVITE's (Completed, Timer K) absorbs. They keep
//! their key, a hash of the branch (the collision check `find_client` did on
//! the string), the owner and where the request went (hooks name it).
//! A non-2xx final is not held: the branch may still fail over, and an
//! INVITE's ACK is rebuilt from the request.

use bytes::Bytes;

use super::client::{ClientState, Outcome};
use super::server::ServerState;
use super::{BranchId, ClientTxn, CtxId, Layer, Owner, ServerTxn, TxnId};
use crate::sip::Message;
use crate::timer::TimerId;
use crate::transport::{wire, Destination, Source};

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

pub struct HeldClient {
    /// Its key in `Layer::client_index`.
    pub key: u64,
    /// The branch, hashed (`find_client` checks it as it checked the string).
    pub branch: u64,
    pub owner: Owner,
    pub dest: Destination,
    /// Timer M or K.
    pub end: Option<TimerId>,
    /// An INVITE's: later 2xx still go to the owner.
    pub accepted: bool,
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
        self.held_servers.insert(id, Box::new(held));
        true
    }

    /// Ends held server transaction `id` (its Timer L or J fired).
    pub fn remove_held_server(&mut self, id: TxnId) -> Option<Box<HeldServer>> {
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

    /// Moves client transaction `id` to its held form once a 2xx settled it
    /// (INVITE Accepted, non-INVITE Completed). Returns whether it did.
    pub fn hold_client(&mut self, id: BranchId) -> bool {
        let settled = |c: &ClientTxn| {
            c.final_status.is_some_and(|s| (200..300).contains(&s))
                && !c.timed_out
                && match c.state {
                    ClientState::Accepted => c.invite,
                    ClientState::Completed => !c.invite,
                    _ => false,
                }
        };
        if !self.clients.get(&id).is_some_and(|c| settled(c)) {
            return false;
        }
        let txn = self.clients.remove(&id).expect("checked above");
        let [retransmit, timeout, timer_c, end] = txn.timers;
        for t in [retransmit, timeout, timer_c].into_iter().flatten() {
            self.timers.cancel(t);
        }
        let held = HeldClient {
            key: self.client_key(&txn.branch, txn.method_str()),
            branch: self.branch_hash(&txn.branch),
            owner: txn.owner,
            dest: txn.dest,
            end,
            accepted: txn.state == ClientState::Accepted,
        };
        self.held_clients.insert(id, Box::new(held));
        true
    }

    /// Ends held client transaction `id` (its Timer M or K fired).
    pub fn remove_held_client(&mut self, id: BranchId) -> Option<Box<HeldClient>> {
        let held = self.held_clients.remove(&id)?;
        if self.client_index.get(&held.key) == Some(&id) {
            self.client_index.remove(&held.key);
        }
        if let Some(t) = held.end {
            self.timers.cancel(t);
        }
        Some(held)
    }

    /// What a response means to held client transaction `id`: a 2xx to an
    /// INVITE's goes to its owner (RFC 6026), anything else is absorbed.
    /// None when `id` is not held.
    pub fn held_client_outcome(&self, id: BranchId, status: u16) -> Option<Outcome> {
        let held = self.held_clients.get(&id)?;
        Some(if held.accepted && (200..300).contains(&status) {
            Outcome::Success
        } else {
            Outcome::Absorb
        })
    }

    /// The owner of client transaction `id`, held or not.
    pub fn client_owner(&self, id: BranchId) -> Option<Owner> {
        match self.clients.get(&id) {
            Some(c) => Some(c.owner),
            None => self.held_clients.get(&id).map(|h| h.owner),
        }
    }

    /// Where client transaction `id` sent its request, held or not.
    pub fn client_dest(&self, id: BranchId) -> Option<Destination> {
        match self.clients.get(&id) {
            Some(c) => Some(c.dest),
            None => self.held_clients.get(&id).map(|h| h.dest),
        }
    }

    /// Client transactions in the tables, held ones included.
    pub fn client_count(&self) -> usize {
        self.clients.len() + self.held_clients.len()
    }

    pub(super) fn branch_hash(&self, branch: &str) -> u64 {
        self.hasher.hash_one((branch, 0x6272u16))
    }

    fn request_hash(&self, msg: &Message) -> u64 {
        self.hasher.hash_one((msg.call_id(), msg.cseq()))
    }
}
