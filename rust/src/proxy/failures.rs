//! What ends a branch or a relay without a response: CANCEL from upstream
//! (§16.10), the client transaction's timeout (Timer B/F), Timer C (§16.8),
//! the application's relay timeout, and a failed transport (§8.1.3.1: as if
//! the branch answered 503).

use super::round::synthesize;
use super::Proxy;
use crate::service::{BranchTimeout, Ctx, Event};
use crate::sip::Message;
use crate::transaction::client::{self, ClientState};
use crate::transaction::{BranchId, CtxId};
use crate::transport::Source;

impl Proxy {
    /// A CANCEL arrived (§16.10). Returns false when it matches no INVITE
    /// transaction (the caller then treats it like any request).
    pub fn on_cancel(&mut self, cx: &mut Ctx<'_>, cancel: &Message, source: Source) -> bool {
        let node = cx.node;
        let Some(txn) = cx.txns.find_invite_server(cancel) else {
            return false;
        };
        node.reply_stateless(cancel, source, 200, None, &[]);
        let Some(t) = cx.txns.servers.get(&txn) else {
            return true;
        };
        if t.is_final() {
            return true;
        }
        let app_holds = t.app_holds;
        let ctx_id = t.ctx;
        let live: Vec<_> = ctx_id
            .and_then(|c| self.ctxs.get(&c))
            .map(|c| {
                c.branches
                    .iter()
                    .copied()
                    .filter(|b| cx.txns.clients.get(b).is_some_and(|x| !x.is_final()))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(c) = ctx_id.and_then(|c| self.ctxs.get_mut(&c)) {
            c.cancelled = true;
            // Whatever the branches answer (487) goes straight upstream.
            c.handler_active = false;
        }
        if live.is_empty() {
            if let Some(f) = synthesize(node, cx.txns, txn, 487) {
                super::send_final(cx, txn, 487, f.upstream, true);
            }
            if let Some(c) = ctx_id.and_then(|c| self.ctxs.get_mut(&c)) {
                c.final_sent = true;
            }
        } else {
            for b in live {
                client::cancel(&node.wire, cx.txns, b);
            }
        }
        if app_holds {
            cx.events.push(Event::Cancelled(txn));
        }
        true
    }

    /// Timer B / F (or 64*T1 after our CANCEL): no final answer in time.
    pub fn on_client_timeout(&mut self, cx: &mut Ctx<'_>, bid: BranchId) {
        let Some(c) = cx.txns.clients.get(&bid) else {
            return;
        };
        if c.method_str() == "CANCEL" {
            // Our CANCEL went unanswered: the INVITE branch has its own timer.
            cx.txns.remove_client(bid);
            return;
        }
        let node = cx.node;
        node.hooks
            .on_branch_timeout(cx, bid, BranchTimeout::NoResponse);
        self.fail_branch(cx, bid, 408);
    }

    /// Timer C (§16.8): a branch that sent a provisional is cancelled (its
    /// final then counts as 408); one that never did fails with 408.
    pub fn on_timer_c(&mut self, cx: &mut Ctx<'_>, bid: BranchId) {
        if !cx.txns.clients.contains_key(&bid) {
            return;
        }
        let node = cx.node;
        node.hooks.on_branch_timeout(cx, bid, BranchTimeout::TimerC);
        let Some(c) = cx.txns.clients.get_mut(&bid) else {
            return;
        };
        if c.state == ClientState::Proceeding {
            c.timed_out = true;
            client::cancel(&cx.node.wire, cx.txns, bid);
        } else {
            self.fail_branch(cx, bid, 408);
        }
    }

    /// The overall timeout of a `relay()` round: every open branch ends as
    /// Timer C would end it.
    pub fn on_relay_timer(&mut self, cx: &mut Ctx<'_>, ctx_id: CtxId) {
        let Some(ctx) = self.ctxs.get_mut(&ctx_id) else {
            return;
        };
        ctx.relay_timer = None;
        let branches = ctx.branches.clone();
        for b in branches {
            let Some(c) = cx.txns.clients.get_mut(&b) else {
                continue;
            };
            if c.is_final() {
                continue;
            }
            let node = cx.node;
            node.hooks
                .on_branch_timeout(cx, b, BranchTimeout::RelayTimeout);
            let Some(c) = cx.txns.clients.get_mut(&b) else {
                continue;
            };
            c.timed_out = true;
            if c.state == ClientState::Proceeding {
                client::cancel(&cx.node.wire, cx.txns, b);
            } else {
                self.fail_branch(cx, b, 408);
            }
        }
    }

    /// The transport lost what branch `bid` sent before any response (and
    /// it had no UDP form to fall back to): the branch fails as if it had
    /// answered 503, so the round can fail over.
    pub fn on_transport_failure(&mut self, cx: &mut Ctx<'_>, bid: BranchId) {
        let Some(c) = cx.txns.clients.get(&bid) else {
            return;
        };
        if c.method_str() == "CANCEL" {
            cx.txns.remove_client(bid);
            return;
        }
        self.fail_branch(cx, bid, 503);
    }

    /// A server transaction ended: its response context goes with it.
    pub fn on_server_end(&mut self, ctx: Option<CtxId>) {
        if let Some(c) = ctx {
            self.ctxs.remove(&c);
            self.plans.remove(&c);
            self.settled.remove(&c);
        }
    }

    /// Ends a branch that got no final answer, as if it had answered `status`.
    fn fail_branch(&mut self, cx: &mut Ctx<'_>, bid: BranchId, status: u16) {
        let Some(ctx_id) = cx.txns.clients.get(&bid).map(|c| c.owner.id) else {
            return;
        };
        client::fail(cx.txns, bid, status);
        let Some(server_id) = self.ctxs.get(&ctx_id).map(|c| c.server) else {
            return;
        };
        if let Some(f) = synthesize(cx.node, cx.txns, server_id, status) {
            self.ctxs.get_mut(&ctx_id).expect("exists").finals.push(f);
        }
        self.on_branch_failed(cx, bid, status, true);
        if self.round_complete(cx.txns, ctx_id) {
            self.complete_round(cx, ctx_id);
        }
    }
}
