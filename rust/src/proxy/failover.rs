//! Failover inside one transaction (RFC 3261 §16, RFC 3263 §4.3): when a
//! destination times out, is unreachable or answers 503, the request goes to
//! the next address / SRV target of the same URI with a new branch; with
//! serial targets (`RelayOptions::serial`: dispatcher, prefix routing) it
//! moves on to the next target on the configured codes. The handler sees a
//! failure only when every choice failed.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::route::NextHop;
use super::stateful::{start_branch, RelayOptions, Target};
use super::Hop;
use crate::core::Core;
use crate::sip::write::HeaderEdit;
use crate::transaction::{Layer, TimerKey, FINE};

/// What every branch of one relay shares.
#[derive(Debug, Default)]
pub struct BranchParams {
    pub request_uri: Option<String>,
    pub header_edits: Vec<HeaderEdit>,
    pub record_route: bool,
}

/// The choices left for one branch.
pub struct Plan {
    pub params: Arc<BranchParams>,
    pub target: Target,
    pub nh: NextHop,
    /// Where the current attempt went.
    pub hop: Hop,
    /// The other destinations of the current target, in order.
    hops: VecDeque<Hop>,
    /// Serial targets not tried yet, with their destinations.
    next: VecDeque<(Target, NextHop, Vec<Hop>)>,
    codes: Option<Arc<[u16]>>,
}

impl Plan {
    /// The plan for a branch over `targets` (one, or several in series);
    /// None when none of them has a destination.
    pub fn new(targets: Vec<(Target, NextHop, Vec<Hop>)>, opts: &RelayOptions<'_>) -> Option<Plan> {
        let mut next: VecDeque<_> = targets.into();
        let (target, nh, hops) = loop {
            let (t, nh, hops) = next.pop_front()?;
            if !hops.is_empty() {
                break (t, nh, hops);
            }
        };
        let mut hops: VecDeque<Hop> = hops.into();
        let hop = hops.pop_front()?;
        Some(Plan {
            params: Arc::new(BranchParams {
                request_uri: opts.request_uri.map(str::to_string),
                header_edits: opts.header_edits.to_vec(),
                record_route: opts.record_route,
            }),
            target,
            nh,
            hop,
            hops,
            next,
            codes: opts.serial.clone(),
        })
    }

    pub fn has_alternatives(&self) -> bool {
        !self.hops.is_empty() || self.next.iter().any(|(_, _, h)| !h.is_empty())
    }

    pub fn shrink(&mut self) {
        self.hops.shrink_to_fit();
    }

    /// The next destination after a failure with `status` (`local`: a
    /// timeout 408 or an unreachable 503 made here), if any.
    fn advance(&mut self, status: u16, local: bool) -> bool {
        // RFC 3263 §4.3: the next address of the same URI on a timeout, a
        // transport failure or a 503.
        if (local || status == 503) && !self.hops.is_empty() {
            if let Some(h) = self.hops.pop_front() {
                self.hop = h;
                return true;
            }
        }
        let serial_code = self.codes.as_ref().is_some_and(|c| c.contains(&status));
        if !serial_code {
            return false;
        }
        while let Some((t, nh, hops)) = self.next.pop_front() {
            let mut hops: VecDeque<Hop> = hops.into();
            if let Some(h) = hops.pop_front() {
                self.target = t;
                self.nh = nh;
                self.hop = h;
                self.hops = hops;
                return true;
            }
        }
        false
    }
}

/// A branch failed with `status` (`local`: synthesized here for a timeout
/// or an unreachable destination): remember the destination if it did not
/// answer, and start the next choice of its plan, if it has one.
pub fn on_branch_failed(core: &Core, layer: &mut Layer, bid: u64, status: u16, local: bool) {
    let Some(c) = layer.clients.get_mut(&bid) else {
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
        core.dns.blocklist.add(failed, reason);
    }
    // The relay's own timeout (or Timer C) ended the round: no new branch.
    if c.timed_out || c.method_str() == "CANCEL" {
        return;
    }
    let ctx_id = c.ctx;
    let Some(mut plan) = c.failover.take() else {
        return;
    };
    let Some(ctx) = layer.ctxs.get(&ctx_id) else {
        return;
    };
    if ctx.cancelled || ctx.final_sent {
        return;
    }
    let (server, lh) = (ctx.server, ctx.loop_hash);
    let Some((msg, source)) = layer
        .servers
        .get(&server)
        .map(|t| (t.request.clone(), t.source))
    else {
        return;
    };
    if !plan.advance(status, local) {
        return;
    }
    core.dns.stats.failovers.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        call_id = msg.call_id(),
        from = %failed.addr,
        to = %plan.hop.addr,
        status,
        "failing over to the next destination"
    );
    let params = plan.params.clone();
    let new = start_branch(
        core,
        layer,
        ctx_id,
        &msg,
        source,
        lh,
        &plan.target,
        &plan.nh,
        plan.hop,
        &params,
    );
    if plan.has_alternatives() {
        shorten_timeout(core, layer, new);
        if let Some(c) = layer.clients.get_mut(&new) {
            c.failover = Some(plan);
        }
    }
}

/// A destination with alternatives behind it gets `failover_timeout` to
/// answer at all (instead of Timer B/F's 64*T1) before the next is tried.
pub fn shorten_timeout(core: &Core, layer: &mut Layer, bid: u64) {
    let limit = core.dns.failover_timeout();
    if limit.is_zero() || limit >= layer.timing.t1x64() {
        return;
    }
    let old = layer.clients.get_mut(&bid).and_then(|c| c.timers[1].take());
    if let Some(t) = old {
        layer.timers.cancel(t);
    }
    let id = layer
        .timers
        .schedule(Instant::now() + limit, FINE, TimerKey::ClientTimeout(bid));
    if let Some(c) = layer.clients.get_mut(&bid) {
        c.timers[1] = Some(id);
    }
}

/// Default `failover_timeout`: OpenSIPS' `fr_timeout`.
pub const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// The codes that move a serial relay to its next target by default:
/// timeouts and server errors, not a callee's own answer (486, 404, 6xx).
pub const DEFAULT_SERIAL_CODES: &[u16] = &[408, 500, 502, 503, 504];
