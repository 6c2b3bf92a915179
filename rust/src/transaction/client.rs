//! Client transactions (RFC 3261 §17.1, RFC 6026 §7.2): send a request to one
//! next hop, retransmit it over UDP, time it out, and ACK non-2xx finals.

use std::time::Duration;

use bytes::Bytes;

use super::{end_granularity, BranchId, Layer, Owner, TimerKey, COARSE, FINE};
use crate::sip::{Framing, HeaderId, Message};
use crate::timer::TimerId;
use crate::transport::{Destination, Wire};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE: sent, no response yet (Timers A and B).
    Calling,
    /// Non-INVITE: sent, no response yet (Timers E and F).
    Trying,
    Proceeding,
    /// Non-2xx final received (INVITE: ACK sent, Timer D).
    Completed,
    /// INVITE 2xx received (RFC 6026 Timer M): later 2xx pass upstream.
    Accepted,
    Terminated,
}

pub struct ClientTxn {
    pub id: BranchId,
    /// Who hears its responses and failures.
    pub owner: Owner,
    pub branch: String,
    pub invite: bool,
    method: String,
    /// The request exactly as sent (retransmissions, CANCEL and ACK derive from it).
    pub request: Bytes,
    pub dest: Destination,
    pub state: ClientState,
    /// [retransmit A/E, timeout B/F, Timer C, end D/K/M]
    pub timers: [Option<TimerId>; 4],
    pub interval: Duration,
    /// CANCEL requested before any provisional arrived: send it on the first one.
    pub cancel_pending: bool,
    pub cancel_sent: bool,
    /// Cancelled because the relay timed out: its final counts as 408.
    pub timed_out: bool,
    pub final_status: Option<u16>,
    /// The same request built for UDP, when it went over TCP only for being
    /// too large (RFC 3261 §18.1.1): sent instead if the connection fails.
    pub udp_fallback: Option<Bytes>,
}

impl ClientTxn {
    pub fn method_str(&self) -> &str {
        &self.method
    }
    pub fn is_final(&self) -> bool {
        matches!(
            self.state,
            ClientState::Completed | ClientState::Accepted | ClientState::Terminated
        )
    }
    fn reliable(&self) -> bool {
        self.dest.transport.is_stream()
    }
    /// Once a 2xx (INVITE) or any final (non-INVITE) arrived, nothing is
    /// derived from the request any more (no retransmission, CANCEL or
    /// non-2xx ACK): only the keys stay for the rest of Timer M / K.
    fn forget_request(&mut self) {
        self.request = Bytes::new();
        self.udp_fallback = None;
    }
}

/// Sends `request` (already carrying our Via with `branch`) and starts timers.
pub fn start(
    wire: &Wire,
    layer: &mut Layer,
    owner: Owner,
    branch: String,
    method: &str,
    request: Bytes,
    dest: Destination,
) -> BranchId {
    let id = layer.next_id();
    let invite = method == "INVITE";
    let timing = layer.timing.clone();
    let now = layer.timers.now();
    wire.send(dest, request.clone());
    let mut txn = ClientTxn {
        id,
        owner,
        branch,
        invite,
        method: method.to_string(),
        request,
        dest,
        state: if invite {
            ClientState::Calling
        } else {
            ClientState::Trying
        },
        timers: [None; 4],
        interval: timing.t1,
        cancel_pending: false,
        cancel_sent: false,
        timed_out: false,
        final_status: None,
        udp_fallback: None,
    };
    if !txn.reliable() {
        txn.timers[0] = Some(layer.timers.schedule(
            now + timing.t1,
            FINE,
            TimerKey::ClientRetransmit(id),
        ));
    }
    txn.timers[1] = Some(layer.timers.schedule(
        now + timing.t1x64(),
        COARSE,
        TimerKey::ClientTimeout(id),
    ));
    if invite {
        txn.timers[2] = Some(layer.timers.schedule(
            now + timing.timer_c,
            COARSE,
            TimerKey::ClientTimerC(id),
        ));
    }
    layer.insert_client(txn);
    id
}

/// What a response means for the proxy context above the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Absorbed (100 Trying, retransmitted final, stray).
    Absorb,
    Provisional,
    /// A 2xx: the first one, or a retransmission / another fork's (pass up).
    Success,
    /// A 3xx-6xx final, seen for the first time.
    Failure,
}

pub fn on_response(wire: &Wire, layer: &mut Layer, id: BranchId, resp: &Message) -> Outcome {
    let timing = layer.timing.clone();
    let now = layer.timers.now();
    let status = resp.status().unwrap_or(0);
    let Some(txn) = layer.clients.get_mut(&id) else {
        return layer
            .held_client_outcome(id, status)
            .unwrap_or(Outcome::Absorb);
    };
    let mut cancel = Vec::new();
    let mut schedule = Vec::new();
    let mut cancel_request = None;
    let outcome = match (txn.state, status) {
        (ClientState::Calling | ClientState::Trying | ClientState::Proceeding, 100..=199) => {
            let first = txn.state != ClientState::Proceeding;
            txn.state = ClientState::Proceeding;
            if txn.invite {
                // A provisional stops INVITE retransmission and Timer B; Timer C restarts.
                cancel.extend([
                    txn.timers[0].take(),
                    txn.timers[1].take(),
                    txn.timers[2].take(),
                ]);
                schedule.push((timing.timer_c, COARSE, TimerKey::ClientTimerC(id), 2));
            } else if first && !txn.reliable() {
                // Non-INVITE keeps retransmitting, at T2 (§17.1.2.2).
                txn.interval = timing.t2;
            }
            if txn.cancel_pending && !txn.cancel_sent {
                txn.cancel_pending = false;
                cancel_request = build_cancel(txn);
            }
            if status == 100 {
                Outcome::Absorb
            } else {
                Outcome::Provisional
            }
        }
        (ClientState::Calling | ClientState::Proceeding, 200..=299) if txn.invite => {
            txn.state = ClientState::Accepted;
            txn.final_status = Some(status);
            txn.forget_request();
            cancel.extend(txn.timers.iter_mut().map(Option::take));
            schedule.push((timing.t1x64(), COARSE, TimerKey::ClientEnd(id), 3));
            Outcome::Success
        }
        (ClientState::Accepted, 200..=299) => Outcome::Success,
        (ClientState::Calling | ClientState::Trying | ClientState::Proceeding, 200..=699) => {
            txn.final_status = Some(status);
            cancel.extend(txn.timers.iter_mut().map(Option::take));
            txn.state = ClientState::Completed;
            let reliable = txn.reliable();
            if txn.invite {
                send_ack(wire, txn, resp);
                let d = if reliable {
                    Duration::ZERO
                } else {
                    Duration::from_secs(32)
                };
                schedule.push((d, end_granularity(d), TimerKey::ClientEnd(id), 3));
            } else {
                txn.forget_request();
                let k = if reliable { Duration::ZERO } else { timing.t4 };
                schedule.push((k, end_granularity(k), TimerKey::ClientEnd(id), 3));
            }
            if status < 300 {
                Outcome::Success
            } else {
                Outcome::Failure
            }
        }
        (ClientState::Completed, 300..=699) if txn.invite => {
            // The final was retransmitted: our ACK was lost.
            send_ack(wire, txn, resp);
            Outcome::Absorb
        }
        _ => Outcome::Absorb,
    };
    for t in cancel.into_iter().flatten() {
        layer.timers.cancel(t);
    }
    for (after, g, key, slot) in schedule {
        let tid = layer.timers.schedule(now + after, g, key);
        if let Some(txn) = layer.clients.get_mut(&id) {
            txn.timers[slot] = Some(tid);
        }
    }
    if let Some(c) = cancel_request {
        start_cancel(wire, layer, id, c);
    }
    outcome
}

/// Timer A / E: retransmit with back-off.
pub fn on_retransmit_timer(wire: &Wire, layer: &mut Layer, id: BranchId) {
    let t2 = layer.timing.t2;
    let Some(txn) = layer.clients.get_mut(&id) else {
        return;
    };
    txn.timers[0] = None;
    if !matches!(
        txn.state,
        ClientState::Calling | ClientState::Trying | ClientState::Proceeding
    ) || (txn.invite && txn.state == ClientState::Proceeding)
    {
        return;
    }
    wire.stats().count_retransmission();
    wire.send(txn.dest, txn.request.clone());
    txn.interval = if txn.invite {
        txn.interval * 2
    } else {
        (txn.interval * 2).min(t2)
    };
    let next = layer.timers.now() + txn.interval;
    let tid = layer
        .timers
        .schedule(next, FINE, TimerKey::ClientRetransmit(id));
    if let Some(txn) = layer.clients.get_mut(&id) {
        txn.timers[0] = Some(tid);
    }
}

/// The stream carrying this transaction failed before any response: send
/// its UDP form instead (§18.1.1), retransmitted like any UDP request.
/// Returns false when it has none (the caller fails the branch).
pub fn retry_over_udp(wire: &Wire, layer: &mut Layer, id: BranchId) -> bool {
    let t1 = layer.timing.t1;
    let Some(txn) = layer.clients.get_mut(&id) else {
        return false;
    };
    let Some(request) = txn.udp_fallback.take() else {
        return false;
    };
    txn.request = request;
    txn.dest.transport = crate::transport::Transport::Udp;
    txn.dest.conn = None;
    txn.interval = t1;
    wire.send(txn.dest, txn.request.clone());
    let tid = layer.timers.schedule(
        layer.timers.now() + t1,
        FINE,
        TimerKey::ClientRetransmit(id),
    );
    if let Some(old) = layer
        .clients
        .get_mut(&id)
        .and_then(|t| t.timers[0].replace(tid))
    {
        layer.timers.cancel(old);
    }
    true
}

/// Requests a CANCEL of an INVITE branch (RFC 3261 §9.1: only once a
/// provisional arrived; before that it is sent when one does).
pub fn cancel(wire: &Wire, layer: &mut Layer, id: BranchId) {
    let Some(txn) = layer.clients.get_mut(&id) else {
        return;
    };
    if !txn.invite || txn.cancel_sent || txn.is_final() {
        return;
    }
    match txn.state {
        ClientState::Proceeding => {
            if let Some(c) = build_cancel(txn) {
                start_cancel(wire, layer, id, c);
            }
        }
        ClientState::Calling => txn.cancel_pending = true,
        _ => {}
    }
}

/// Marks the transaction finished without a response (Timer B/F, or a relay
/// timeout while still Calling); the caller synthesises a 408.
pub fn terminate(layer: &mut Layer, id: BranchId) {
    if let Some(txn) = layer.clients.get_mut(&id) {
        txn.state = ClientState::Terminated;
        txn.final_status.get_or_insert(408);
        let timers: Vec<TimerId> = txn.timers.iter_mut().filter_map(Option::take).collect();
        for t in timers {
            layer.timers.cancel(t);
        }
    }
}

/// Ends client transaction `id` as if it had answered `status` (408: no
/// answer in time; 503: the transport failed), to be removed at the next
/// timer run; its owner is told by the caller.
pub fn fail(layer: &mut Layer, id: BranchId, status: u16) {
    terminate(layer, id);
    if let Some(c) = layer.clients.get_mut(&id) {
        c.final_status = Some(status);
    }
    let end = layer
        .timers
        .schedule(layer.timers.now(), COARSE, TimerKey::ClientEnd(id));
    match layer.clients.get_mut(&id) {
        Some(c) => c.timers[3] = Some(end),
        None => {
            layer.timers.cancel(end);
        }
    }
}

/// The stream to `addr` over `transport` failed (connect refused or timed
/// out, the peer stopped reading): client transactions still waiting there
/// for a first response either go out over UDP instead (sent over TCP only
/// for their size, §18.1.1) or are returned, for their owners to fail.
pub fn on_transport_error(
    wire: &Wire,
    layer: &mut Layer,
    transport: crate::transport::Transport,
    addr: std::net::SocketAddr,
) -> Vec<(BranchId, Owner)> {
    let waiting: Vec<BranchId> = layer
        .clients
        .values()
        .filter(|c| {
            c.dest.transport == transport
                && c.dest.addr == addr
                && matches!(c.state, ClientState::Calling | ClientState::Trying)
        })
        .map(|c| c.id)
        .collect();
    let mut failed = Vec::new();
    for id in waiting {
        if !retry_over_udp(wire, layer, id) {
            if let Some(c) = layer.clients.get(&id) {
                failed.push((id, c.owner));
            }
        }
    }
    failed
}

/// The CANCEL for INVITE branch `txn` (RFC 3261 §9.1), built while the branch
/// is borrowed and sent by [`start_cancel`] once it is not.
pub struct CancelRequest {
    owner: Owner,
    branch: String,
    bytes: Bytes,
    dest: Destination,
}

fn build_cancel(txn: &mut ClientTxn) -> Option<CancelRequest> {
    txn.cancel_sent = true;
    let cancel = derived_request(&txn.request, "CANCEL", None)?;
    Some(CancelRequest {
        owner: txn.owner,
        branch: txn.branch.clone(),
        bytes: Bytes::from(cancel),
        dest: txn.dest,
    })
}

/// Sends a CANCEL through a non-INVITE client transaction of its own (same
/// branch as the INVITE, §9.1): it is retransmitted by Timer E when lost and
/// its 200 is absorbed. The INVITE branch then gets 64*T1 for its final
/// (normally a 487) before it ends as if it had answered 408 (§9.1).
fn start_cancel(wire: &Wire, layer: &mut Layer, invite: BranchId, c: CancelRequest) {
    start(wire, layer, c.owner, c.branch, "CANCEL", c.bytes, c.dest);
    let at = layer.timers.now() + layer.timing.t1x64();
    let tid = layer
        .timers
        .schedule(at, COARSE, TimerKey::ClientTimeout(invite));
    match layer.clients.get_mut(&invite) {
        Some(txn) => {
            if let Some(old) = txn.timers[1].replace(tid) {
                layer.timers.cancel(old);
            }
        }
        None => {
            layer.timers.cancel(tid);
        }
    }
}

fn send_ack(wire: &Wire, txn: &ClientTxn, resp: &Message) {
    let to = resp.header(HeaderId::To);
    if let Some(ack) = derived_request(&txn.request, "ACK", to) {
        wire.send(txn.dest, Bytes::from(ack));
    }
}

/// Builds the CANCEL (§9.1) or non-2xx ACK (§17.1.1.3) for a request we sent:
/// same Request-URI, top Via, Route, From, Call-ID and CSeq number; To from
/// the response for an ACK.
pub fn derived_request(sent: &Bytes, method: &str, to: Option<&str>) -> Option<Vec<u8>> {
    let req = Message::parse(
        sent.clone(),
        Framing::Stream,
        &crate::sip::Limits {
            max_message_size: usize::MAX,
            ..Default::default()
        },
    )
    .ok()?;
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.request_uri_str()?.as_bytes());
    out.extend_from_slice(b" SIP/2.0\r\n");
    out.extend_from_slice(format!("Via: {}\r\n", req.top_via().raw).as_bytes());
    let b = req.bytes();
    for h in req.headers() {
        match h.id {
            HeaderId::Route | HeaderId::From | HeaderId::CallId => {
                out.extend_from_slice(&b[h.line.range()])
            }
            HeaderId::To => match to {
                Some(t) => out.extend_from_slice(format!("To: {t}\r\n").as_bytes()),
                None => out.extend_from_slice(&b[h.line.range()]),
            },
            _ => {}
        }
    }
    out.extend_from_slice(
        format!(
            "CSeq: {} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            req.cseq()
        )
        .as_bytes(),
    );
    Some(out)
}

#[cfg(test)]
mod tests;
