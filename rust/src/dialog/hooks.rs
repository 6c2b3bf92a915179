//! What the dialog service sees of the traffic, through its `Service`
//! hooks: in-dialog requests and 2xx ACKs as they arrive (`on_request`),
//! relayed provisionals and the first relayed 2xx (`on_response`), every
//! final answer sent upstream (`on_final_sent`), answers to its own requests
//! (`on_client_response` / `on_client_failure`), and its timers.

use std::time::Instant;

use bytes::Bytes;

use super::events::EventKind;
use super::msg::{
    contact_uri, names_us, parse, record_id, route_destination, route_values, source_text,
};
use super::records::{reason_of, AccMark, Cdr, Record, RequestRecord};
use super::requests;
use super::state::{Dialog, EndReason, Leg, State};
use super::{DialogId, Dialogs, Table, MAX_STALE_TIMERS, SERVICE};
use crate::service::{Ctx, Node, ResponseAt, Service, Verdict};
use crate::sip::{HeaderId, Message, Method};
use crate::timer::TimerQueue;
use crate::transaction::client::Outcome;
use crate::transaction::{server_key_with, BranchId, Layer, Owner, TimerKey, TxnId, COARSE};
use crate::transport::{Destination, Source};

impl Service for Dialogs {
    fn name(&self) -> &'static str {
        SERVICE
    }

    fn on_request(&self, node: &Node, msg: &Message, _source: &Source) -> Verdict {
        if self.observing() {
            if msg.method() == Method::Ack {
                on_ack(self, node, msg);
            } else if msg.to_tag().is_some() {
                on_in_dialog_request(self, node, msg);
            }
        }
        Verdict::Continue
    }

    fn on_response(&self, cx: &mut Ctx<'_>, at: ResponseAt, msg: &Message) -> Verdict {
        if self.observing() {
            on_relayed_response(self, cx, at, msg);
        }
        Verdict::Continue
    }

    fn on_final_sent(&self, cx: &mut Ctx<'_>, txn: TxnId, status: u16, response: &Bytes) {
        if self.observing() {
            on_final_sent(self, cx, txn, status, response);
        }
    }

    fn on_timer(&self, cx: &mut Ctx<'_>, id: u64) {
        on_timer(self, cx, id);
    }

    fn on_client_response(
        &self,
        cx: &mut Ctx<'_>,
        id: u64,
        _branch: BranchId,
        outcome: Outcome,
        msg: &Message,
    ) {
        if matches!(outcome, Outcome::Success | Outcome::Failure) {
            on_local_response(self, cx, id, msg.status().unwrap_or(0));
        }
    }

    fn on_client_failure(&self, cx: &mut Ctx<'_>, id: u64, _branch: BranchId, status: u16) {
        on_local_response(self, cx, id, status);
    }
}

/// (Re)schedules the dialog's one timer for its next deadline.
pub(super) fn arm(timers: &mut TimerQueue<TimerKey>, table: &Table, d: &mut Dialog) {
    if let Some(t) = d.timer.take() {
        timers.cancel(t);
    }
    if let Some(at) = d.next_deadline(table.settings.setup_timeout) {
        let key = TimerKey::Service(Owner {
            service: SERVICE,
            id: d.id,
        });
        d.timer = Some(timers.schedule(at, COARSE, key));
    }
}

/// A provisional or 2xx on a proxied branch of a tracked INVITE, before the
/// proxy passes it upstream: early dialogs by To tag; the first 2xx
/// confirms, with the branch that answered as the callee's destination.
fn on_relayed_response(dialogs: &Dialogs, cx: &mut Ctx<'_>, at: ResponseAt, msg: &Message) {
    let status = msg.status().unwrap_or(0);
    if !(101..300).contains(&status) {
        return;
    }
    let mut table = dialogs.lock_cx(&mut cx.txns.timers);
    let Some(&id) = table.by_invite.get(&at.server) else {
        return;
    };
    // Once the transaction answered finally, nothing more goes up through it
    // (another fork's 2xx passes beside it and is not tracked).
    if cx.txns.servers.get(&at.server).is_none_or(|t| t.is_final()) {
        return;
    }
    if status < 200 {
        if let Some(tag) = msg.to_tag() {
            if let Some(d) = table.dialogs.get_mut(&id) {
                d.on_provisional(tag);
            }
        }
        return;
    }
    let branch_dest = cx.txns.client_dest(at.branch);
    answer(cx, &mut table, id, at.server, msg, branch_dest);
}

/// A final answer went upstream through server transaction `txn`.
fn on_final_sent(dialogs: &Dialogs, cx: &mut Ctx<'_>, txn: TxnId, status: u16, bytes: &Bytes) {
    let mut table = dialogs.lock_cx(&mut cx.txns.timers);
    if let Some(&id) = table.by_invite.get(&txn) {
        match status {
            // The application's own 2xx (a relayed one was taken in
            // `on_relayed_response`): no branch to reach the callee by.
            200..=299 => {
                if let Some(resp) = parse(bytes) {
                    answer(cx, &mut table, id, txn, &resp, None);
                }
            }
            300.. => fail(
                &mut cx.txns.timers,
                &mut table,
                id,
                status,
                reason_of(bytes),
            ),
            _ => {}
        }
    }
    let Some(key) = cx.txns.servers.get(&txn).map(|t| t.key) else {
        return;
    };
    if let Some(mark) = table.marks.remove(&key) {
        let id = record_id(cx.node, dialogs);
        let resp = parse(bytes);
        if let Some(t) = cx.txns.servers.get(&txn) {
            let rec = RequestRecord::of(
                id,
                &t.request,
                status,
                reason_of(bytes),
                resp.as_ref().and_then(Message::to_tag),
                source_text(&t.source),
                mark.extra,
            );
            table.emit(Record::Request(rec));
        }
    }
    if (200..300).contains(&status) && !table.dialogs.is_empty() {
        refresh_session(cx.txns, &mut table, txn);
    }
}

/// A 2xx to a re-INVITE or UPDATE restarts its dialog's lifetime.
fn refresh_session(layer: &mut Layer, table: &mut Table, txn: TxnId) {
    let Some(t) = layer.servers.get(&txn) else {
        return;
    };
    let req = &t.request;
    if !matches!(req.method(), Method::Invite | Method::Update) {
        return;
    }
    let (Some(from), Some(to)) = (req.from_tag(), req.to_tag()) else {
        return;
    };
    let Some((id, _)) = table.find(req.call_id(), from, to) else {
        return;
    };
    if let Some(mut d) = table.dialogs.remove(&id) {
        d.refresh(Instant::now());
        arm(&mut layer.timers, table, &mut d);
        table.dialogs.insert(id, d);
    }
}

fn answer(
    cx: &mut Ctx<'_>,
    table: &mut Table,
    id: DialogId,
    txn: TxnId,
    resp: &Message,
    branch_dest: Option<Destination>,
) {
    table.by_invite.remove(&txn);
    let Some(mut d) = table.dialogs.remove(&id) else {
        return;
    };
    let rr = route_values(resp, HeaderId::RecordRoute);
    // Values above our own were added by proxies towards the callee; we
    // reach the callee through them in reverse order.
    let ours = rr.iter().position(|v| names_us(cx.node, v));
    let upstream = match ours {
        Some(i) => i,
        None => rr.len().saturating_sub(d.caller.route.len()),
    };
    let route: Vec<Box<str>> = rr[..upstream].iter().rev().cloned().collect();
    let dest = match route.first() {
        Some(first) => route_destination(cx.node, first),
        None => branch_dest,
    };
    let callee = Leg {
        tag: resp.to_tag().unwrap_or_default().into(),
        header: resp.header(HeaderId::To).unwrap_or_default().into(),
        contact: contact_uri(resp).into(),
        route: route.into_boxed_slice(),
        dest,
        cseq: 0,
        keepalive_pending: false,
    };
    d.destination = branch_dest.map(|b| b.addr);
    let status = resp.status().unwrap_or(200);
    let now = Instant::now();
    if d.on_answer(callee, status, reason_of(resp.bytes()), now) {
        table.stats.answered += 1;
        table.dialog_event(&d, EventKind::Start, None, now);
    }
    arm(&mut cx.txns.timers, table, &mut d);
    table.dialogs.insert(id, d);
}

fn fail(
    timers: &mut TimerQueue<TimerKey>,
    table: &mut Table,
    id: DialogId,
    status: u16,
    reason: &str,
) {
    let Some(mut d) = table.remove(id) else {
        return;
    };
    if let Some(t) = d.timer.take() {
        timers.cancel(t);
    }
    d.on_failure(status, reason);
    table.stats.failed += 1;
    let now = Instant::now();
    let cdr = Cdr::of(&d, EndReason::Failed, now);
    table.emit(Record::Cdr(cdr));
    table.dialog_event(&d, EventKind::End, Some(EndReason::Failed), now);
}

/// An in-dialog request (not ACK) arrived, before it is routed. Runs where
/// the request is read (possibly a UDP reader thread), without the layer.
fn on_in_dialog_request(dialogs: &Dialogs, node: &Node, msg: &Message) {
    let (Some(from), Some(to)) = (msg.from_tag(), msg.to_tag()) else {
        return;
    };
    let mut table = dialogs.lock();
    let Some((id, from_caller)) = table.find(msg.call_id(), from, to) else {
        return;
    };
    let Some(d) = table.dialogs.get_mut(&id) else {
        return;
    };
    let leg = if from_caller {
        Some(&mut d.caller)
    } else {
        d.callee.as_deref_mut()
    };
    if let Some(leg) = leg {
        leg.cseq = leg.cseq.max(msg.cseq());
    }
    if d.account {
        if let Some(h) = dialogs.txn_hasher.get() {
            table.mark(server_key_with(h, msg, None), AccMark::new(Vec::new()));
        }
    }
    if msg.method() == Method::Bye {
        let reason = if from_caller {
            EndReason::CallerBye
        } else {
            EndReason::CalleeBye
        };
        finish(node, None, &mut table, id, reason, false);
    }
}

/// An ACK for a 2xx arrived (it has no transaction of its own).
fn on_ack(dialogs: &Dialogs, node: &Node, msg: &Message) {
    let (Some(from), Some(to)) = (msg.from_tag(), msg.to_tag()) else {
        return;
    };
    let mut table = dialogs.lock();
    let Some((id, true)) = table.find(msg.call_id(), from, to) else {
        return;
    };
    let Some(d) = table.dialogs.get_mut(&id) else {
        return;
    };
    if d.state != State::Confirmed || msg.cseq() <= d.acked_cseq {
        return; // an ACK retransmission
    }
    d.acked_cseq = msg.cseq();
    if d.account {
        let (code, reason) = (d.final_status, d.final_reason.to_string());
        let source = format!(
            "{}:{}",
            d.source.0.as_str().to_ascii_lowercase(),
            d.source.1
        );
        let rec = RequestRecord::of(
            record_id(node, dialogs),
            msg,
            code,
            &reason,
            None,
            source,
            Vec::new(),
        );
        table.emit(Record::Request(rec));
    }
}

/// The dialog's timer fired: setup bound, lifetime, or keepalive.
fn on_timer(dialogs: &Dialogs, cx: &mut Ctx<'_>, id: DialogId) {
    let node = cx.node;
    let mut table = dialogs.lock_cx(&mut cx.txns.timers);
    let now = Instant::now();
    let Some(mut d) = table.dialogs.remove(&id) else {
        return;
    };
    d.timer = None;
    match d.state {
        State::Unconfirmed | State::Early => {
            if now >= d.started + table.settings.setup_timeout {
                table.dialogs.insert(id, d);
                table.stats.failed += 1;
                finish(
                    node,
                    Some(cx.txns),
                    &mut table,
                    id,
                    EndReason::Failed,
                    false,
                );
                return;
            }
        }
        State::Confirmed if d.expired(now) => {
            table.dialogs.insert(id, d);
            finish(
                node,
                Some(cx.txns),
                &mut table,
                id,
                EndReason::Timeout,
                true,
            );
            return;
        }
        State::Confirmed => {
            if d.next_keepalive.is_some_and(|k| now >= k) {
                let callee_silent = d.callee.as_ref().is_some_and(|c| c.keepalive_pending);
                if d.caller.keepalive_pending || callee_silent {
                    table.dialogs.insert(id, d);
                    let reason = EndReason::Keepalive;
                    finish(node, Some(cx.txns), &mut table, id, reason, true);
                    return;
                }
                for to_callee in [true, false] {
                    if requests::send(node, cx.txns, &mut table, &mut d, to_callee, "OPTIONS") {
                        table.stats.keepalives_sent += 1;
                        match to_callee {
                            true => {
                                if let Some(c) = d.callee.as_deref_mut() {
                                    c.keepalive_pending = true;
                                }
                            }
                            false => d.caller.keepalive_pending = true,
                        }
                    }
                }
                d.next_keepalive = d.keepalive.map(|k| now + k);
            }
        }
        State::Terminated => {}
    }
    arm(&mut cx.txns.timers, &table, &mut d);
    table.dialogs.insert(id, d);
}

/// A final answer (or Timer F's 408, or a transport error's 503) to a
/// request the module sent (`requests::send`, owner id `id`).
fn on_local_response(dialogs: &Dialogs, cx: &mut Ctx<'_>, id: u64, status: u16) {
    if status < 200 {
        return;
    }
    let mut table = dialogs.lock_cx(&mut cx.txns.timers);
    let Some(lr) = table.local.remove(&id) else {
        return;
    };
    if !lr.keepalive {
        return;
    }
    let Some(d) = table.dialogs.get_mut(&lr.dialog) else {
        return;
    };
    let leg = if lr.to_callee {
        d.callee.as_deref_mut()
    } else {
        Some(&mut d.caller)
    };
    if let Some(leg) = leg {
        leg.keepalive_pending = false;
    }
    // Kamailio dlg_keepalive: no answer, or "no such dialog", ends the call.
    if matches!(status, 408 | 481) {
        let reason = EndReason::Keepalive;
        finish(cx.node, Some(cx.txns), &mut table, lr.dialog, reason, true);
    }
}

/// Ends a confirmed dialog with BYEs to both sides (`dlg.end`). False when
/// there is no such confirmed dialog.
pub fn end(dialogs: &Dialogs, cx: &mut Ctx<'_>, id: DialogId) -> bool {
    let mut table = dialogs.lock_cx(&mut cx.txns.timers);
    if table
        .dialogs
        .get(&id)
        .is_none_or(|d| d.state != State::Confirmed)
    {
        return false;
    }
    finish(
        cx.node,
        Some(cx.txns),
        &mut table,
        id,
        EndReason::Admin,
        true,
    );
    true
}

/// At shutdown: every dialog still tracked gets its CDR (no BYE is sent:
/// the calls may outlive this process only if its Record-Route does not
/// matter to them). Returns how many.
pub fn end_all(dialogs: &Dialogs, cx: &mut Ctx<'_>) -> usize {
    let mut table = dialogs.lock_cx(&mut cx.txns.timers);
    let ids: Vec<DialogId> = table.dialogs.keys().copied().collect();
    for &id in &ids {
        finish(
            cx.node,
            Some(&mut *cx.txns),
            &mut table,
            id,
            EndReason::Shutdown,
            false,
        );
    }
    ids.len()
}

/// Removes a dialog, sends BYEs when asked (confirmed dialogs only, and only
/// with the layer at hand) and queues its CDR. Without the layer its timer
/// is left for the next `lock_cx` to cancel.
fn finish(
    node: &Node,
    layer: Option<&mut Layer>,
    table: &mut Table,
    id: DialogId,
    reason: EndReason,
    send_bye: bool,
) {
    let Some(mut d) = table.remove(id) else {
        return;
    };
    match layer {
        Some(layer) => {
            if let Some(t) = d.timer.take() {
                layer.timers.cancel(t);
            }
            if send_bye && d.state == State::Confirmed {
                requests::send(node, layer, table, &mut d, true, "BYE");
                requests::send(node, layer, table, &mut d, false, "BYE");
            }
        }
        None => {
            if let Some(t) = d.timer.take() {
                if table.stale_timers.len() < MAX_STALE_TIMERS {
                    table.stale_timers.push(t);
                }
            }
        }
    }
    let s = &mut table.stats;
    match reason {
        EndReason::CallerBye | EndReason::CalleeBye => s.ended_bye += 1,
        EndReason::Timeout => s.ended_timeout += 1,
        EndReason::Keepalive => s.ended_keepalive += 1,
        EndReason::Admin => s.ended_admin += 1,
        EndReason::Shutdown => s.ended_shutdown += 1,
        EndReason::Failed => {}
    }
    let now = Instant::now();
    let cdr = Cdr::of(&d, reason, now);
    d.state = State::Terminated;
    table.emit(Record::Cdr(cdr));
    table.dialog_event(&d, EventKind::End, Some(reason), now);
}
