//! Responses on proxied branches (RFC 3261 §16.7): provisionals and 2xx go
//! upstream at once, other finals wait for the round's best choice; and what
//! the application's own answer or return means for the relay.

use bytes::Bytes;

use super::context::Final;
use super::round::synthesize;
use super::Proxy;
use crate::service::{Ctx, Event, ResponseAt, Verdict};
use crate::sip::write::strip_top_via;
use crate::sip::Message;
use crate::transaction::client::{self, Outcome};
use crate::transaction::{server, BranchId, CtxId, TxnId};

impl Proxy {
    /// A response its client transaction `bid` (one of ours) took, with
    /// what it meant there: the services' `on_response` hooks see it, then
    /// the proxy acts on it (`deliver_response`).
    pub fn on_response(&mut self, cx: &mut Ctx<'_>, bid: BranchId, outcome: Outcome, msg: Message) {
        // A held one (settled by a 2xx) was an INVITE's or a non-INVITE's
        // other than a CANCEL, whose own 200 ends here.
        if cx
            .txns
            .clients
            .get(&bid)
            .is_some_and(|c| c.method_str() == "CANCEL")
        {
            return;
        }
        let Some(owner) = cx.txns.client_owner(bid) else {
            return;
        };
        let ctx_id = owner.id;
        let Some(server) = self.server_of(ctx_id) else {
            return;
        };
        let node = cx.node;
        if outcome != Outcome::Absorb && !node.hooks.is_empty() {
            let at = ResponseAt {
                server,
                branch: bid,
                outcome,
            };
            if node.hooks.on_response(cx, at, &msg) == Verdict::Stop {
                if let Some(ctx) = self.ctxs.get_mut(&ctx_id) {
                    ctx.held_replies += 1;
                }
                return;
            }
        }
        self.deliver_response(cx, bid, outcome, msg);
    }

    /// A response a service held in `on_response` comes back (changed or
    /// not) for server transaction `server`: the proxy acts on it now. Its
    /// client transaction may have ended meanwhile (Timer K on a stream is
    /// zero), so the context is found through the server transaction.
    pub fn deliver_held(
        &mut self,
        cx: &mut Ctx<'_>,
        server: TxnId,
        bid: BranchId,
        outcome: Outcome,
        msg: Message,
    ) {
        let Some(ctx_id) = cx.txns.server_ctx(server) else {
            return;
        };
        if let Some(ctx) = self.ctxs.get_mut(&ctx_id) {
            ctx.held_replies = ctx.held_replies.saturating_sub(1);
        }
        self.deliver_in(cx, ctx_id, bid, outcome, msg);
    }

    /// Acts on a response of branch `bid`: passes it upstream or keeps it
    /// for the round's choice. A service that held a response in its
    /// `on_response` hook hands it back here.
    pub fn deliver_response(
        &mut self,
        cx: &mut Ctx<'_>,
        bid: BranchId,
        outcome: Outcome,
        msg: Message,
    ) {
        let Some(ctx_id) = cx.txns.client_owner(bid).map(|o| o.id) else {
            return;
        };
        self.deliver_in(cx, ctx_id, bid, outcome, msg);
    }

    fn deliver_in(
        &mut self,
        cx: &mut Ctx<'_>,
        ctx_id: CtxId,
        bid: BranchId,
        outcome: Outcome,
        msg: Message,
    ) {
        let node = cx.node;
        let Some(ctx) = self.ctxs.get_mut(&ctx_id) else {
            // Settled: a late or retransmitted 2xx still goes up.
            if let (Outcome::Success, Some(&server)) = (outcome, self.settled.get(&ctx_id)) {
                let at = ResponseAt {
                    server,
                    branch: bid,
                    outcome,
                };
                let up = upstream(cx, at, &msg);
                server::send_upstream(&node.wire, cx.txns, server, up);
            }
            return;
        };
        let server_id = ctx.server;
        let status = msg.status().unwrap_or(0);
        let at = ResponseAt {
            server: server_id,
            branch: bid,
            outcome,
        };
        match outcome {
            Outcome::Absorb => {}
            Outcome::Provisional => {
                if !ctx.final_sent {
                    let up = upstream(cx, at, &msg);
                    server::send_response(&node.wire, cx.txns, server_id, status, up, false);
                }
            }
            Outcome::Success => {
                let up = upstream(cx, at, &msg);
                if !ctx.final_sent {
                    ctx.final_sent = true;
                    ctx.held = None;
                    let waiting = std::mem::take(&mut ctx.waiting);
                    let others: Vec<_> =
                        ctx.branches.iter().copied().filter(|b| *b != bid).collect();
                    super::send_final(cx, server_id, status, up.clone(), false);
                    let f = Final {
                        status,
                        message: msg,
                        upstream: up,
                    };
                    for relay in waiting {
                        cx.events.push(Event::RelayDone {
                            relay,
                            result: f.clone(),
                        });
                    }
                    // RFC 3261 §16.7 step 10: a 2xx cancels the other branches.
                    for b in others {
                        client::cancel(&node.wire, cx.txns, b);
                    }
                } else {
                    // Another fork's 2xx, or a retransmission: every 2xx goes up.
                    server::send_upstream(&node.wire, cx.txns, server_id, up);
                }
            }
            Outcome::Failure => {
                let timed_out = cx.txns.clients.get(&bid).is_some_and(|c| c.timed_out);
                let f = if timed_out {
                    synthesize(node, cx.txns, server_id, 408)
                } else {
                    Some(Final {
                        status,
                        message: msg.clone(),
                        upstream: upstream(cx, at, &msg),
                    })
                };
                let Some(f) = f else { return };
                let ctx = self.ctxs.get_mut(&ctx_id).expect("exists");
                ctx.finals.push(f);
                if status >= 600 && !timed_out {
                    let others: Vec<_> =
                        ctx.branches.iter().copied().filter(|b| *b != bid).collect();
                    for b in others {
                        client::cancel(&node.wire, cx.txns, b);
                    }
                } else {
                    self.on_branch_failed(cx, bid, status, false);
                }
                if self.round_complete(cx.txns, ctx_id) {
                    self.complete_round(cx, ctx_id);
                }
            }
        }
    }

    /// The application's handler returned: a held final goes upstream now.
    pub fn finish(&mut self, cx: &mut Ctx<'_>, txn: TxnId) {
        let Some(ctx_id) = cx.txns.server_ctx(txn) else {
            return;
        };
        let Some(ctx) = self.ctxs.get_mut(&ctx_id) else {
            return;
        };
        ctx.handler_active = false;
        if let Some(f) = ctx.held.take() {
            if !ctx.final_sent {
                self.send_final_upstream(cx, ctx_id, *f);
            }
        }
    }

    /// The application answered `txn` itself: pending branches are cancelled.
    pub fn on_local_final(&mut self, cx: &mut Ctx<'_>, txn: TxnId) {
        let Some(ctx_id) = cx.txns.server_ctx(txn) else {
            return;
        };
        let Some(ctx) = self.ctxs.get_mut(&ctx_id) else {
            return;
        };
        ctx.final_sent = true;
        ctx.held = None;
        for &b in &ctx.branches {
            client::cancel(&cx.node.wire, cx.txns, b);
        }
    }
}

/// A response as it goes upstream: as a service writes it (topology
/// hiding), else without our Via.
fn upstream(cx: &Ctx<'_>, at: ResponseAt, msg: &Message) -> Bytes {
    let hooks = &cx.node.hooks;
    if !hooks.is_empty() {
        if let Some(bytes) = hooks.on_upstream(cx, at, msg) {
            return Bytes::from(bytes);
        }
    }
    Bytes::from(strip_top_via(msg))
}
