//! Server transactions (RFC 3261 §17.2, RFC 6026 §7.1): absorb and answer
//! retransmitted requests, retransmit final answers over UDP until ACKed.

use std::time::Duration;

use bytes::Bytes;

use super::{end_granularity, CtxId, Layer, TimerKey, TxnId, COARSE, FINE};
use crate::sip::{Message, Method};
use crate::timer::TimerId;
use crate::transport::{Source, Wire};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE, nothing sent yet.
    Trying,
    Proceeding,
    /// A non-2xx final was sent (INVITE: waiting for the ACK).
    Completed,
    /// INVITE: the ACK arrived; absorbing its retransmissions (Timer I).
    Confirmed,
    /// INVITE: a 2xx was sent (RFC 6026); absorbing INVITE retransmissions.
    Accepted,
}

pub struct ServerTxn {
    pub id: TxnId,
    pub key: u64,
    pub ack_key: Option<u64>,
    pub request: Message,
    pub source: Source,
    pub invite: bool,
    pub state: ServerState,
    pub last_response: Option<Bytes>,
    pub final_status: Option<u16>,
    /// The To tag of our own answers, the same for every response.
    pub to_tag: Option<String>,
    pub ctx: Option<CtxId>,
    /// [retransmission, end of transaction, 100 Trying]
    pub timers: [Option<TimerId>; 3],
    pub retransmit_interval: Duration,
    /// We generated a 2xx to this INVITE and retransmit it until the ACK.
    pub uas_2xx: bool,
    /// The application holds the request (its handler has not returned).
    pub app_holds: bool,
    /// A 100 Trying was sent. It is not kept in `last_response` (rebuilt for
    /// the rare retransmitted INVITE): ~300 bytes less per suspended INVITE.
    pub trying_sent: bool,
}

impl ServerTxn {
    pub fn is_final(&self) -> bool {
        self.final_status.is_some()
    }
    fn reliable(&self) -> bool {
        self.source.transport.is_stream()
    }
}

/// Creates the server transaction for a new request. An INVITE gets a 100
/// Trying when it is relayed, or after 200 ms without an answer (§17.2.1).
pub fn create(layer: &mut Layer, msg: Message, source: Source) -> TxnId {
    let id = layer.next_id();
    let invite = msg.method() == Method::Invite;
    let key = layer.server_key(&msg, None);
    let mut txn = ServerTxn {
        id,
        key,
        ack_key: None,
        request: msg,
        source,
        invite,
        state: if invite {
            ServerState::Proceeding
        } else {
            ServerState::Trying
        },
        last_response: None,
        final_status: None,
        to_tag: None,
        ctx: None,
        timers: [None, None, None],
        retransmit_interval: layer.timing.t1,
        uas_2xx: false,
        app_holds: false,
        trying_sent: false,
    };
    if invite {
        let at = layer.timers.now() + Duration::from_millis(200);
        txn.timers[2] = Some(layer.timers.schedule(at, FINE, TimerKey::ServerTrying(id)));
    }
    layer.insert_server(txn);
    id
}

/// Sends 100 Trying unless something was already answered.
pub fn send_trying(wire: &Wire, layer: &mut Layer, id: TxnId) {
    let Some(txn) = layer.servers.get_mut(&id) else {
        return;
    };
    if let Some(t) = txn.timers[2].take() {
        layer.timers.cancel(t);
    }
    if !txn.invite || txn.last_response.is_some() || txn.trying_sent {
        return;
    }
    wire.send_response(&txn.request, txn.source, trying(txn));
    txn.trying_sent = true;
}

fn trying(txn: &ServerTxn) -> Bytes {
    Bytes::from(crate::sip::write::build_response(
        &txn.request,
        Some(txn.source.addr),
        100,
        None,
        None,
        &[],
        b"",
    ))
}

/// A retransmission of the request arrived: answer with the last response.
pub fn on_retransmission(wire: &Wire, layer: &mut Layer, id: TxnId) {
    let Some(txn) = layer.servers.get(&id) else {
        if let Some(held) = layer.held_servers.get(&id) {
            wire.stats().count_retransmission();
            if let Some(answer) = &held.answer {
                wire.send_reply(held.reply_to, answer.clone());
            }
        }
        return;
    };
    wire.stats().count_retransmission();
    let resend = match txn.state {
        ServerState::Trying | ServerState::Confirmed => None,
        // RFC 6026: retransmitted INVITEs in Accepted are absorbed; the 2xx
        // is retransmitted by its own timer (or by the UAS downstream).
        ServerState::Accepted => None,
        ServerState::Proceeding | ServerState::Completed => txn
            .last_response
            .clone()
            .or_else(|| txn.trying_sent.then(|| trying(txn))),
    };
    if let Some(r) = resend {
        wire.send_response(&txn.request, txn.source, r);
    }
}

/// Sends a response through the transaction and moves its state on.
/// Returns false when the transaction is already final (nothing sent).
pub fn send_response(
    wire: &Wire,
    layer: &mut Layer,
    id: TxnId,
    status: u16,
    bytes: Bytes,
    local: bool,
) -> bool {
    let timing = layer.timing.clone();
    let hasher = layer.hasher();
    let mut ack_to_index = None;
    let now = layer.timers.now();
    let Some(txn) = layer.servers.get_mut(&id) else {
        return false;
    };
    if txn.final_status.is_some() {
        return false;
    }
    wire.send_response(&txn.request, txn.source, bytes.clone());
    if let Some(t) = txn.timers[2].take() {
        layer.timers.cancel(t);
    }
    let Some(txn) = layer.servers.get_mut(&id) else {
        return false;
    };
    if status < 200 {
        txn.state = ServerState::Proceeding;
        txn.last_response = Some(bytes);
        return true;
    }
    let first_final = txn.final_status.is_none();
    txn.final_status = Some(status);
    txn.last_response = Some(bytes);
    let reliable = txn.reliable();
    let mut schedule: Vec<(Duration, Duration, TimerKey, usize)> = Vec::new();
    if txn.invite && status < 300 {
        txn.state = ServerState::Accepted;
        if first_final {
            // Timer L: absorb retransmitted INVITEs for 64*T1.
            schedule.push((timing.t1x64(), COARSE, TimerKey::ServerEnd(id), 1));
            if local && !reliable {
                // RFC 3261 §13.3.1.4: the UAS core retransmits its 2xx until the ACK.
                txn.uas_2xx = true;
                schedule.push((timing.t1, FINE, TimerKey::ServerRetransmit(id), 0));
            } else {
                // Accepted absorbs INVITE retransmissions without answering
                // them (RFC 6026): a relayed 2xx is not kept for 32 s.
                txn.last_response = None;
            }
            if local {
                if let Some(tag) = txn
                    .to_tag
                    .clone()
                    .or_else(|| txn.request.to_tag().map(str::to_string))
                {
                    let key = super::ack_key_with(
                        &hasher,
                        txn.request.call_id(),
                        txn.request.cseq(),
                        &tag,
                    );
                    txn.ack_key = Some(key);
                    ack_to_index = Some(key);
                }
            }
        }
    } else if txn.invite {
        txn.state = ServerState::Completed;
        // Timer G (retransmit, UDP only) and Timer H (give up waiting for ACK).
        if !reliable {
            schedule.push((timing.t1, FINE, TimerKey::ServerRetransmit(id), 0));
        }
        schedule.push((timing.t1x64(), COARSE, TimerKey::ServerEnd(id), 1));
    } else {
        txn.state = ServerState::Completed;
        // Timer J: 64*T1 over UDP, zero over reliable transports.
        let j = if reliable {
            Duration::ZERO
        } else {
            timing.t1x64()
        };
        schedule.push((j, end_granularity(j), TimerKey::ServerEnd(id), 1));
    }
    if let Some(key) = ack_to_index {
        layer.index_ack(key, id);
    }
    for (after, granularity, key, slot) in schedule {
        let tid = layer.timers.schedule(now + after, granularity, key);
        if let Some(txn) = layer.servers.get_mut(&id) {
            if let Some(old) = txn.timers[slot].replace(tid) {
                layer.timers.cancel(old);
            }
        }
    }
    true
}

/// The ACK for a non-2xx final (same branch) or for our own 2xx arrived.
pub fn on_ack(layer: &mut Layer, id: TxnId) {
    let t4 = layer.timing.t4;
    let now = layer.timers.now();
    let Some(txn) = layer.servers.get_mut(&id) else {
        return;
    };
    if let Some(t) = txn.timers[0].take() {
        layer.timers.cancel(t);
    }
    if txn.state == ServerState::Completed {
        txn.state = ServerState::Confirmed;
        let i = if txn.reliable() { Duration::ZERO } else { t4 };
        if let Some(old) = txn.timers[1].take() {
            layer.timers.cancel(old);
        }
        let tid = layer
            .timers
            .schedule(now + i, end_granularity(i), TimerKey::ServerEnd(id));
        if let Some(txn) = layer.servers.get_mut(&id) {
            txn.timers[1] = Some(tid);
        }
    } else {
        txn.uas_2xx = false;
    }
}

/// Timer G / 2xx retransmission: resend and back off (capped at T2).
pub fn on_retransmit_timer(wire: &Wire, layer: &mut Layer, id: TxnId) {
    let t2 = layer.timing.t2;
    let Some(txn) = layer.servers.get_mut(&id) else {
        return;
    };
    txn.timers[0] = None;
    let active = match txn.state {
        ServerState::Completed => true,
        ServerState::Accepted => txn.uas_2xx,
        _ => false,
    };
    if !active {
        return;
    }
    if let Some(r) = txn.last_response.clone() {
        wire.send_response(&txn.request, txn.source, r);
    }
    txn.retransmit_interval = (txn.retransmit_interval * 2).min(t2);
    let next = layer.timers.now() + txn.retransmit_interval;
    let tid = layer
        .timers
        .schedule(next, FINE, TimerKey::ServerRetransmit(id));
    if let Some(txn) = layer.servers.get_mut(&id) {
        txn.timers[0] = Some(tid);
    }
}

/// Sends `bytes` (another 2xx, or a retransmitted one) upstream through
/// server transaction `id`, held or not. False when it is gone.
pub fn send_upstream(wire: &Wire, layer: &Layer, id: TxnId, bytes: Bytes) -> bool {
    if let Some(t) = layer.servers.get(&id) {
        wire.send_response(&t.request, t.source, bytes);
    } else if let Some(h) = layer.held_servers.get(&id) {
        wire.send_reply(h.reply_to, bytes);
    } else {
        return false;
    }
    true
}

/// Once a final is sent and the services have seen it, the transaction is
/// held only to absorb retransmissions (until Timer L/H/J). `holdable`: no
/// service reads completed requests, so a settled transaction takes its
/// held form (`Layer::hold_server`, decision 0065); otherwise, or when not
/// settled yet, its request keeps what matching and answering need
/// (`Message::compact_for_hold`), not the received datagram, its body and
/// its header index.
pub fn compact_request(layer: &mut Layer, id: TxnId, holdable: bool) {
    if holdable && layer.hold_server(id) {
        return;
    }
    if let Some(txn) = layer.servers.get_mut(&id) {
        if txn.final_status.is_some_and(|s| s >= 200) {
            txn.request.compact_for_hold();
        }
    }
}

#[cfg(test)]
mod tests;
