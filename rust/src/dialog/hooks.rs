//! Where the core tells the dialog module what it saw. Each entry point is
//! called from one place: responses sent upstream by a server transaction
//! (`transaction::server::send_response`), in-dialog requests and 2xx ACKs
//! as they arrive (`Core::process`), answers to the module's own requests
//! (`proxy::stateful`), and its timers.

use std::time::Instant;

use bytes::Bytes;

use super::msg::{
    contact_uri, names_us, parse, record_id, route_destination, route_values, source_text,
};
use super::records::{reason_of, AccMark, Cdr, Record, RequestRecord};
use super::requests;
use super::state::{Dialog, EndReason, Leg, State};
use super::{DialogId, Table};
use crate::core::Core;
use crate::sip::{HeaderId, Message, Method};
use crate::transaction::{ClientState, CtxId, Layer, TimerKey, TxnId, COARSE};

/// (Re)schedules the dialog's one timer for its next deadline.
pub(super) fn arm(layer: &mut Layer, table: &Table, d: &mut Dialog) {
    if let Some(t) = d.timer.take() {
        layer.timers.cancel(t);
    }
    if let Some(at) = d.next_deadline(table.settings.setup_timeout) {
        d.timer = Some(layer.timers.schedule(at, COARSE, TimerKey::Dialog(d.id)));
    }
}

/// A response went upstream through server transaction `txn`.
pub fn on_response_sent(core: &Core, layer: &mut Layer, txn: TxnId, status: u16, bytes: &Bytes) {
    let mut table = core.dialogs.lock();
    if let Some(&id) = table.by_invite.get(&txn) {
        match status {
            101..=199 => {
                if let Some(tag) = parse(bytes).as_ref().and_then(Message::to_tag) {
                    if let Some(d) = table.dialogs.get_mut(&id) {
                        d.on_provisional(tag);
                    }
                }
            }
            200..=299 => answer(core, layer, &mut table, id, txn, status, bytes),
            300.. => fail(layer, &mut table, id, status, reason_of(bytes)),
            _ => {}
        }
    }
    if status < 200 {
        return;
    }
    let Some(key) = layer.servers.get(&txn).map(|t| t.key) else {
        return;
    };
    if let Some(mark) = table.marks.remove(&key) {
        let id = record_id(core, layer);
        let resp = parse(bytes);
        if let Some(t) = layer.servers.get(&txn) {
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
        refresh_session(layer, &mut table, txn);
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
        arm(layer, table, &mut d);
        table.dialogs.insert(id, d);
    }
}

fn answer(
    core: &Core,
    layer: &mut Layer,
    table: &mut Table,
    id: DialogId,
    txn: TxnId,
    status: u16,
    bytes: &Bytes,
) {
    table.by_invite.remove(&txn);
    let Some(mut d) = table.dialogs.remove(&id) else {
        return;
    };
    let Some(resp) = parse(bytes) else {
        table.dialogs.insert(id, d);
        return;
    };
    // The branch that answered, if the 2xx was relayed (not a local answer).
    let branch_dest = layer
        .servers
        .get(&txn)
        .and_then(|t| t.ctx)
        .and_then(|c| layer.ctxs.get(&c))
        .and_then(|ctx| {
            ctx.branches
                .iter()
                .filter_map(|b| layer.clients.get(b))
                .find(|c| c.state == ClientState::Accepted)
                .map(|c| c.dest)
        });
    let rr = route_values(&resp, HeaderId::RecordRoute);
    // Values above our own were added by proxies towards the callee; we
    // reach the callee through them in reverse order.
    let ours = rr.iter().position(|v| names_us(core, v));
    let upstream = match ours {
        Some(i) => i,
        None => rr.len().saturating_sub(d.caller.route.len()),
    };
    let route: Vec<Box<str>> = rr[..upstream].iter().rev().cloned().collect();
    let dest = match route.first() {
        Some(first) => route_destination(core, first),
        None => branch_dest,
    };
    let callee = Leg {
        tag: resp.to_tag().unwrap_or_default().into(),
        header: resp.header(HeaderId::To).unwrap_or_default().into(),
        contact: contact_uri(&resp).into(),
        route: route.into_boxed_slice(),
        dest,
        cseq: 0,
        keepalive_pending: false,
    };
    d.destination = branch_dest.map(|b| b.addr);
    if d.on_answer(callee, status, reason_of(bytes), Instant::now()) {
        table.stats.answered += 1;
    }
    arm(layer, table, &mut d);
    table.dialogs.insert(id, d);
}

fn fail(layer: &mut Layer, table: &mut Table, id: DialogId, status: u16, reason: &str) {
    let Some(mut d) = table.remove(id) else {
        return;
    };
    if let Some(t) = d.timer.take() {
        layer.timers.cancel(t);
    }
    d.on_failure(status, reason);
    table.stats.failed += 1;
    let cdr = Cdr::of(&d, EndReason::Failed, Instant::now());
    table.emit(Record::Cdr(cdr));
}

/// An in-dialog request (not ACK) arrived, before it is routed.
pub fn on_in_dialog_request(core: &Core, layer: &mut Layer, msg: &Message) {
    let (Some(from), Some(to)) = (msg.from_tag(), msg.to_tag()) else {
        return;
    };
    let mut table = core.dialogs.lock();
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
        table.mark(layer.server_key(msg, None), AccMark::new(Vec::new()));
    }
    if msg.method() == Method::Bye {
        let reason = if from_caller {
            EndReason::CallerBye
        } else {
            EndReason::CalleeBye
        };
        finish(core, layer, &mut table, id, reason, false);
    }
}

/// An ACK for a 2xx arrived (it has no transaction of its own).
pub fn on_ack(core: &Core, layer: &mut Layer, msg: &Message) {
    let (Some(from), Some(to)) = (msg.from_tag(), msg.to_tag()) else {
        return;
    };
    let mut table = core.dialogs.lock();
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
            record_id(core, layer),
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
pub fn on_timer(core: &Core, layer: &mut Layer, id: DialogId) {
    let mut table = core.dialogs.lock();
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
                finish(core, layer, &mut table, id, EndReason::Failed, false);
                return;
            }
        }
        State::Confirmed if d.expired(now) => {
            table.dialogs.insert(id, d);
            finish(core, layer, &mut table, id, EndReason::Timeout, true);
            return;
        }
        State::Confirmed => {
            if d.next_keepalive.is_some_and(|k| now >= k) {
                let callee_silent = d.callee.as_ref().is_some_and(|c| c.keepalive_pending);
                if d.caller.keepalive_pending || callee_silent {
                    table.dialogs.insert(id, d);
                    finish(core, layer, &mut table, id, EndReason::Keepalive, true);
                    return;
                }
                for to_callee in [true, false] {
                    if requests::send(core, layer, &mut table, &mut d, to_callee, "OPTIONS") {
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
    arm(layer, &table, &mut d);
    table.dialogs.insert(id, d);
}

/// A final answer (or Timer F's 408, or a transport error's 503) to a
/// request the module sent (`requests::send`, context `ctx`).
pub fn on_local_response(core: &Core, layer: &mut Layer, ctx: CtxId, status: u16) {
    if status < 200 {
        return;
    }
    let mut table = core.dialogs.lock();
    let Some(lr) = table.local.remove(&ctx) else {
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
        finish(
            core,
            layer,
            &mut table,
            lr.dialog,
            EndReason::Keepalive,
            true,
        );
    }
}

/// Ends a confirmed dialog with BYEs to both sides (`dlg.end`). False when
/// there is no such confirmed dialog.
pub fn end(core: &Core, layer: &mut Layer, id: DialogId) -> bool {
    let mut table = core.dialogs.lock();
    if table
        .dialogs
        .get(&id)
        .is_none_or(|d| d.state != State::Confirmed)
    {
        return false;
    }
    finish(core, layer, &mut table, id, EndReason::Admin, true);
    true
}

/// At shutdown: every dialog still tracked gets its CDR (no BYE is sent:
/// the calls may outlive this process only if its Record-Route does not
/// matter to them). Returns how many.
pub fn end_all(core: &Core, layer: &mut Layer) -> usize {
    let mut table = core.dialogs.lock();
    let ids: Vec<DialogId> = table.dialogs.keys().copied().collect();
    for &id in &ids {
        finish(core, layer, &mut table, id, EndReason::Shutdown, false);
    }
    ids.len()
}

/// Removes a dialog, sends BYEs when asked (confirmed dialogs only) and
/// queues its CDR.
fn finish(
    core: &Core,
    layer: &mut Layer,
    table: &mut Table,
    id: DialogId,
    reason: EndReason,
    send_bye: bool,
) {
    let Some(mut d) = table.remove(id) else {
        return;
    };
    if let Some(t) = d.timer.take() {
        layer.timers.cancel(t);
    }
    if send_bye && d.state == State::Confirmed {
        requests::send(core, layer, table, &mut d, true, "BYE");
        requests::send(core, layer, table, &mut d, false, "BYE");
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
}
