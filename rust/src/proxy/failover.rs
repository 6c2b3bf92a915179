//! Failover inside one transaction (RFC 3261 §16, RFC 3263 §4.3): when a
//! destination times out, is unreachable or answers 503, the request goes to
//! the next address / SRV target of the same URI with a new branch; with
//! serial targets (`RelayOptions::serial`: dispatcher, prefix routing) it
//! moves on to the next target on the configured codes. The handler sees a
//! failure only when every choice failed.

use std::sync::atomic::Ordering;

use super::{Hop, Proxy};
use crate::service::Ctx;
use crate::transaction::BranchId;

impl Proxy {
    /// A branch failed with `status` (`local`: synthesized here for a
    /// timeout or an unreachable destination): remember the destination if
    /// it did not answer, and start the next choice of its plan, if any.
    pub(crate) fn on_branch_failed(
        &mut self,
        cx: &mut Ctx<'_>,
        bid: BranchId,
        status: u16,
        local: bool,
    ) {
        let Some(c) = cx.txns.clients.get(&bid) else {
            return;
        };
        let failed = Hop {
            transport: c.dest.transport,
            addr: c.dest.addr,
        };
        if local && !c.timed_out {
            let reason = if status == 408 {
                "timeout"
            } else {
                "unreachable"
            };
            cx.node.resolver.blocklist.add(failed, reason);
        }
        // The relay's own timeout (or Timer C) ended the round: no new branch.
        if c.timed_out || c.method_str() == "CANCEL" {
            return;
        }
        let ctx_id = c.owner.id;
        let Some(plans) = self.plans.get_mut(&ctx_id) else {
            return;
        };
        let Some(i) = plans.iter().position(|(b, _)| *b == bid) else {
            return;
        };
        let (_, mut plan) = plans.swap_remove(i);
        let Some(ctx) = self.ctxs.get(&ctx_id) else {
            return;
        };
        if ctx.cancelled || ctx.final_sent {
            return;
        }
        let (server, lh) = (ctx.server, ctx.loop_hash);
        let Some((msg, source)) = cx
            .txns
            .servers
            .get(&server)
            .map(|t| (t.request.clone(), t.source))
        else {
            return;
        };
        if !plan.advance(status, local) {
            return;
        }
        cx.node
            .resolver
            .stats
            .failovers
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            call_id = msg.call_id(),
            from = %failed.addr,
            to = %plan.hop.addr,
            status,
            "failing over to the next destination"
        );
        self.start_planned(cx, ctx_id, &msg, source, lh, *plan);
    }
}

/// The codes that move a serial relay to its next target by default:
/// timeouts and server errors, not a callee's own answer (486, 404, 6xx).
pub const DEFAULT_SERIAL_CODES: &[u16] = &[408, 500, 502, 503, 504];
