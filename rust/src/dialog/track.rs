//! What the route asks for: `req.track_dialog()` starts tracking the dialog
//! an INVITE creates, `req.account()` marks a transaction for a record.

use std::sync::Arc;
use std::time::Instant;

use super::hooks::arm;
use super::msg::{
    contact_uri, record_id, route_destination, route_values, source_destination, source_text,
};
use super::records::{reason_of, AccMark, Record, RequestRecord};
use super::state::{Dialog, Leg, State, TrackSpec};
use super::{DialogId, Dialogs, Table};
use crate::service::{mix64, Ctx};
use crate::sip::{HeaderId, Message, Method};
use crate::transaction::TxnId;
use crate::transport::Source;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackError {
    #[error("only an initial INVITE (no To tag) creates a dialog")]
    NotInitialInvite,
    #[error("the request has no transaction (already forwarded statelessly?)")]
    NoTransaction,
    #[error("the request was already answered")]
    AlreadyAnswered,
    #[error("the INVITE has no From tag")]
    NoFromTag,
    #[error("dialog table full ({0} dialogs)")]
    Full(usize),
}

/// Starts tracking the dialog the INVITE of server transaction `txn` creates
/// (`req.track_dialog()`). Marking the same INVITE again updates the spec.
pub fn track(
    dialogs: &Arc<Dialogs>,
    cx: &mut Ctx<'_>,
    txn: TxnId,
    spec: TrackSpec,
) -> Result<DialogId, TrackError> {
    dialogs.serve(cx);
    let node = cx.node;
    let id = mix64(node.branch_key() ^ cx.txns.next_id().rotate_left(17));
    let t = cx.txns.servers.get(&txn).ok_or(TrackError::NoTransaction)?;
    if t.is_final() {
        return Err(TrackError::AlreadyAnswered);
    }
    let req = &t.request;
    if req.method() != Method::Invite || req.to_tag().is_some() {
        return Err(TrackError::NotInitialInvite);
    }
    let from_tag = req.from_tag().ok_or(TrackError::NoFromTag)?;
    let key = t.key;
    let mut table = dialogs.lock_cx(&mut cx.txns.timers);
    if let Some(&id) = table.by_invite.get(&txn) {
        update(&mut table, id, spec);
        if table.dialogs.get(&id).is_some_and(|d| d.account) {
            table.mark(key, AccMark::new(Vec::new()));
        }
        return Ok(id);
    }
    if table.dialogs.len() >= table.settings.max_dialogs {
        table.stats.refused += 1;
        return Err(TrackError::Full(table.settings.max_dialogs));
    }
    let route = route_values(req, HeaderId::RecordRoute);
    let dest = match route.first() {
        Some(first) => route_destination(node, first),
        None => Some(source_destination(&t.source)),
    };
    let caller = Leg {
        tag: from_tag.into(),
        header: req.header(HeaderId::From).unwrap_or_default().into(),
        contact: contact_uri(req).into(),
        route: route.into_boxed_slice(),
        dest,
        cseq: req.cseq(),
        keepalive_pending: false,
    };
    let now = Instant::now();
    let timeout = spec.timeout.unwrap_or(table.settings.default_timeout);
    let mut d = Dialog {
        id,
        state: State::Unconfirmed,
        call_id: req.call_id().into(),
        caller,
        callee: None,
        forks: Vec::new(),
        invite_txn: Some(txn),
        started: now,
        answered: None,
        timeout,
        keepalive: spec.keepalive,
        next_keepalive: None,
        timer: None,
        profiles: spec.profiles,
        account: spec.account,
        extra: spec.extra,
        caller_uri: req.from().uri.raw.into(),
        callee_uri: req.to().uri.raw.into(),
        source: (t.source.transport, t.source.addr),
        destination: None,
        final_status: 0,
        final_reason: "".into(),
        acked_cseq: 0,
    };
    // `req.account()` may come before `track_dialog()`.
    d.account |= table.marks.contains_key(&key);
    arm(&mut cx.txns.timers, &table, &mut d);
    if d.account {
        table.mark(key, AccMark::new(Vec::new()));
    }
    table.insert(d);
    Ok(id)
}

/// `req.account()`: a record for this request when its final answer goes
/// upstream; for an INVITE that creates a tracked dialog, for every request
/// inside it too. A request without a transaction (ACK, or one forwarded
/// statelessly) is recorded at once, with no code.
pub fn account(
    dialogs: &Arc<Dialogs>,
    cx: &mut Ctx<'_>,
    txn: Option<TxnId>,
    msg: &Message,
    source: &Source,
    extra: Vec<(Box<str>, Box<str>)>,
) {
    dialogs.serve(cx);
    let node = cx.node;
    let mut table = dialogs.lock_cx(&mut cx.txns.timers);
    let Some(t) = txn.and_then(|id| cx.txns.servers.get(&id)) else {
        if msg.method() == Method::Ack {
            let (Some(from), Some(to)) = (msg.from_tag(), msg.to_tag()) else {
                return;
            };
            if let Some((id, _)) = table.find(msg.call_id(), from, to) {
                if table.dialogs.get(&id).is_some_and(|d| d.account) {
                    return; // recorded by `on_ack` already
                }
            }
        }
        let id = record_id(node, dialogs);
        let rec = RequestRecord::of(id, msg, 0, "", None, source_text(source), extra);
        table.emit(Record::Request(rec));
        return;
    };
    if let Some(status) = t.final_status {
        let reason = t
            .last_response
            .as_ref()
            .map(|b| reason_of(b).to_string())
            .unwrap_or_default();
        let (req, src) = (t.request.clone(), t.source);
        let id = record_id(node, dialogs);
        let rec = RequestRecord::of(id, &req, status, &reason, None, source_text(&src), extra);
        table.emit(Record::Request(rec));
        return;
    }
    let key = t.key;
    if let Some(&id) = txn.and_then(|x| table.by_invite.get(&x)) {
        if let Some(d) = table.dialogs.get_mut(&id) {
            d.account = true;
        }
    }
    table.mark(key, AccMark::new(extra));
}

fn update(table: &mut Table, id: DialogId, spec: TrackSpec) {
    let Some(mut d) = table.dialogs.remove(&id) else {
        return;
    };
    for p in spec.profiles {
        if !d.profiles.contains(&p) && d.profiles.len() < super::state::MAX_PROFILES {
            table.profiles.add(&p);
            d.profiles.push(p);
        }
    }
    if let Some(t) = spec.timeout {
        d.timeout = t;
    }
    if spec.keepalive.is_some() {
        d.keepalive = spec.keepalive;
    }
    for (k, v) in spec.extra {
        match d.extra.iter_mut().find(|(n, _)| *n == k) {
            Some(slot) => slot.1 = v,
            None => d.extra.push((k, v)),
        }
    }
    d.account |= spec.account;
    table.dialogs.insert(id, d);
}
