//! The end of a relay round (RFC 3261 §16.7): every branch is final, the
//! best answer is chosen, handed to the waiting `relay()` calls, and sent
//! upstream unless the handler may still act on it. Also the answers the
//! proxy makes itself (408, 487, 503, ...).

use bytes::Bytes;

use super::context::{best_index, Final};
use super::Proxy;
use crate::service::{Ctx, Event, Node};
use crate::sip::write::build_response;
use crate::sip::{Framing, HeaderId, Limits, Message};
use crate::transaction::{CtxId, Layer, TxnId};

pub(super) fn parse_own(bytes: Bytes) -> Option<Message> {
    Message::parse(
        bytes,
        Framing::Stream,
        &Limits {
            max_message_size: usize::MAX,
            ..Limits::default()
        },
    )
    .ok()
}

/// A final answer made by the proxy itself (408, 503, ...) for `txn`.
pub(super) fn synthesize(node: &Node, txns: &mut Layer, txn: TxnId, status: u16) -> Option<Final> {
    synthesize_with(node, txns, txn, status, &[])
}

pub(super) fn synthesize_with(
    node: &Node,
    txns: &mut Layer,
    txn: TxnId,
    status: u16,
    extra: &[(String, String)],
) -> Option<Final> {
    let tag = node.new_tag();
    let t = txns.servers.get_mut(&txn)?;
    let tag = t.to_tag.get_or_insert(tag).clone();
    let bytes = Bytes::from(build_response(
        &t.request,
        Some(t.source.addr),
        status,
        None,
        Some(&tag),
        extra,
        b"",
    ));
    Some(Final {
        status,
        message: parse_own(bytes.clone())?,
        upstream: bytes,
    })
}

impl Proxy {
    /// Whether every branch of the round is final.
    pub(super) fn round_complete(&self, txns: &Layer, ctx_id: CtxId) -> bool {
        let Some(ctx) = self.ctxs.get(&ctx_id) else {
            return true;
        };
        if ctx.held_replies > 0 {
            return false;
        }
        ctx.branches
            .iter()
            .all(|b| txns.clients.get(b).is_none_or(|c| c.is_final()))
    }

    /// Every branch of the round is final: pick the best answer (§16.7),
    /// hand it to the waiting `relay()` calls, and send it upstream unless
    /// the handler may still act on it.
    pub(super) fn complete_round(&mut self, cx: &mut Ctx<'_>, ctx_id: CtxId) {
        let Some(ctx) = self.ctxs.get_mut(&ctx_id) else {
            return;
        };
        if ctx.final_sent {
            return;
        }
        if let Some(t) = ctx.relay_timer.take() {
            cx.txns.timers.cancel(t);
        }
        let Some(i) = best_index(&ctx.finals) else {
            return;
        };
        let mut best = ctx.finals[i].clone();
        if matches!(best.status, 401 | 407) {
            best.upstream = merge_challenges(&best, &ctx.finals);
        }
        if best.status == 503 {
            // §16.7 step 6: a 503 downstream must not make upstream elements
            // think this proxy is overloaded.
            best.upstream = restatus(&best.upstream, 500, "Server Internal Error");
        }
        for relay in std::mem::take(&mut ctx.waiting) {
            cx.events.push(Event::RelayDone {
                relay,
                result: best.clone(),
            });
        }
        if ctx.handler_active {
            ctx.held = Some(Box::new(best));
        } else {
            self.send_final_upstream(cx, ctx_id, best);
        }
    }

    pub(super) fn send_final_upstream(&mut self, cx: &mut Ctx<'_>, ctx_id: CtxId, f: Final) {
        let Some(ctx) = self.ctxs.get_mut(&ctx_id) else {
            return;
        };
        ctx.final_sent = true;
        ctx.held = None;
        let server_id = ctx.server;
        super::send_final(cx, server_id, f.status, f.upstream, false);
    }
}

/// Adds every other 401/407's challenge headers to the chosen one (§16.7 step 7).
fn merge_challenges(best: &Final, finals: &[Final]) -> Bytes {
    let mut extra = Vec::new();
    for f in finals.iter().filter(|f| matches!(f.status, 401 | 407)) {
        if std::ptr::eq(f.message.bytes().as_ptr(), best.message.bytes().as_ptr()) {
            continue;
        }
        for h in f.message.headers() {
            if matches!(
                h.id,
                HeaderId::WwwAuthenticate | HeaderId::ProxyAuthenticate
            ) {
                extra.extend_from_slice(&f.message.bytes()[h.line.range()]);
            }
        }
    }
    if extra.is_empty() {
        return best.upstream.clone();
    }
    let up = &best.upstream;
    let Some(end) = memchr::memmem::find(up, b"\r\n\r\n") else {
        return up.clone();
    };
    let mut out = Vec::with_capacity(up.len() + extra.len());
    out.extend_from_slice(&up[..end + 2]);
    out.extend_from_slice(&extra);
    out.extend_from_slice(&up[end + 2..]);
    Bytes::from(out)
}

fn restatus(resp: &Bytes, status: u16, reason: &str) -> Bytes {
    let Some(eol) = memchr::memchr(b'\n', resp) else {
        return resp.clone();
    };
    let mut out = format!("SIP/2.0 {status} {reason}\r\n").into_bytes();
    out.extend_from_slice(&resp[eol + 1..]);
    Bytes::from(out)
}
