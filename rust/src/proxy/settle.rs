//! Response contexts whose work is done (decision 0065): a final went
//! upstream, the handler returned, every branch is final and nothing is held
//! for the round. Until its server transaction ends (Timer L, 32 s after a
//! 2xx) such a context only passes retransmitted or late 2xx upstream, for
//! which its server transaction's id is all it needs: it is kept as that.

use super::Proxy;
use crate::service::Ctx;
use crate::transaction::{CtxId, TxnId};

impl Proxy {
    /// Replaces context `ctx_id` by its server transaction's id if its work
    /// is done (see the module's doc).
    pub fn settle(&mut self, cx: &mut Ctx<'_>, ctx_id: CtxId) {
        let Some(ctx) = self.ctxs.get(&ctx_id) else {
            return;
        };
        let done = ctx.final_sent
            && !ctx.handler_active
            && ctx.held.is_none()
            && ctx.held_replies == 0
            && ctx.waiting.is_empty()
            && ctx
                .branches
                .iter()
                .all(|b| cx.txns.clients.get(b).is_none_or(|c| c.is_final()));
        if !done {
            return;
        }
        let server = ctx.server;
        if let Some(t) = ctx.relay_timer {
            // The relay's timeout has nothing left to end.
            cx.txns.timers.cancel(t);
        }
        self.ctxs.remove(&ctx_id);
        self.plans.remove(&ctx_id);
        self.settled.insert(ctx_id, server);
    }

    /// The server transaction of context `ctx_id`, settled or not.
    pub(super) fn server_of(&self, ctx_id: CtxId) -> Option<TxnId> {
        match self.ctxs.get(&ctx_id) {
            Some(c) => Some(c.server),
            None => self.settled.get(&ctx_id).copied(),
        }
    }
}
