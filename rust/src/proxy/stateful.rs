//! The stateful proxy core (RFC 3261 §16): relaying a request on one or more
//! branches, and in-dialog loose routing with no application involved.
//! Responses are in `responses`, the end of a round in `round`, CANCEL
//! (§16.10), Timer C (§16.8) and transport failures in `failures`.

use std::time::Duration;

use bytes::Bytes;

use super::context::ProxyCtx;
use super::fallback::congestion_controlled_hop;
use super::round::{synthesize, synthesize_with};
use super::route::{branch_for, creates_dialog, loop_hash, next_hop, record_route, NextHop};
use super::{ForwardError, Hop, Proxy, SERVICE};
use crate::service::{BranchPlan, Ctx, Outgoing, Verdict};
use crate::sip::write::{build_forward, ForwardEdits, HeaderEdit};
use crate::sip::{HeaderId, Message};
use crate::transaction::{client, server, BranchId, CtxId, Owner, TimerKey, TxnId, FINE};
use crate::transport::{Destination, Source};
use std::collections::VecDeque;
use std::sync::Arc;

/// One branch to start: a next hop, optionally with its own Request-URI and
/// Route set (a registered contact: its URI, its NAT address, its Path).
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub hop: Option<String>,
    pub request_uri: Option<String>,
    pub routes: Vec<String>,
}

pub struct RelayOptions<'a> {
    /// Branches; empty means one branch routed by Route / Request-URI.
    pub targets: Vec<Target>,
    pub request_uri: Option<&'a str>,
    pub header_edits: &'a [HeaderEdit],
    pub record_route: bool,
    /// Overall timeout of this round (the caller's Timer C).
    pub timeout: Option<Duration>,
    /// Try the targets one after another (not in parallel), moving on when
    /// one answers one of these codes, times out or is unreachable.
    pub serial: Option<std::sync::Arc<[u16]>>,
}

/// The relay id of a round nobody awaits (in-core routing): it produces no
/// `Event::RelayDone`. The application layer numbers its `relay()` calls
/// from 1.
pub const UNAWAITED: u64 = 0;

impl Proxy {
    /// Starts a relay round (or adds branches to the running one) for server
    /// transaction `txn`. Results arrive as `Event::RelayDone { relay }`.
    pub fn relay(
        &mut self,
        cx: &mut Ctx<'_>,
        txn: TxnId,
        opts: &RelayOptions<'_>,
        relay_id: u64,
    ) -> Result<(), ForwardError> {
        self.relay_with(cx, txn, opts, relay_id, None)
    }

    /// `relay` with the names of its targets already resolved (`answers`),
    /// or to be looked up (None): a relay waiting for DNS is parked and
    /// comes back here from `resume_dns_waits`.
    pub(crate) fn relay_with(
        &mut self,
        cx: &mut Ctx<'_>,
        txn: TxnId,
        opts: &RelayOptions<'_>,
        relay_id: u64,
        answers: Option<crate::dns::Answers>,
    ) -> Result<(), ForwardError> {
        let node = cx.node;
        let Some(server_txn) = cx.txns.servers.get(&txn) else {
            return Err(ForwardError::AlreadyHandled);
        };
        if server_txn.is_final() {
            return Err(ForwardError::AlreadyHandled);
        }
        let msg = server_txn.request.clone();
        let source = server_txn.source;
        let refusal = if msg.max_forwards() == Some(0) {
            Some(ForwardError::TooManyHops)
        } else {
            msg.header(HeaderId::ProxyRequire)
                .map(|pr| ForwardError::BadExtension(pr.to_string()))
        };
        let ctx_id = match server_txn.ctx {
            Some(c) => c,
            None => {
                let id = cx.txns.next_id();
                let lh = loop_hash(node, &msg);
                self.ctxs
                    .insert(id, Box::new(ProxyCtx::new(id, txn, lh, true)));
                if let Some(t) = cx.txns.servers.get_mut(&txn) {
                    t.ctx = Some(id);
                }
                id
            }
        };
        let ctx = self.ctxs.get(&ctx_id).expect("just ensured");
        if ctx.cancelled || ctx.final_sent {
            return Err(ForwardError::AlreadyHandled);
        }
        if ctx.branches.is_empty() || self.round_complete(cx.txns, ctx_id) {
            // A new round (serial failover): earlier results no longer count.
            let ctx = self.ctxs.get_mut(&ctx_id).expect("exists");
            ctx.branches.clear();
            ctx.finals.clear();
            ctx.held = None;
        }
        let lh = self.ctxs[&ctx_id].loop_hash;
        if msg.method_str() == "INVITE" {
            server::send_trying(&node.wire, cx.txns, txn);
        }
        let ruri = opts
            .request_uri
            .or(msg.request_uri_str())
            .unwrap_or_default()
            .to_string();
        let default_target = [Target::default()];
        let targets: &[Target] = if opts.targets.is_empty() && opts.serial.is_none() {
            &default_target
        } else {
            &opts.targets
        };
        // Each target's next hop, once: the DNS step and the branches read it.
        let next_hops: Vec<Result<NextHop, ForwardError>> = targets
            .iter()
            .map(|target| {
                let branch_ruri = target.request_uri.as_deref().or(opts.request_uri);
                next_hop(
                    node,
                    &msg,
                    target.hop.as_deref(),
                    branch_ruri.unwrap_or(&ruri),
                )
            })
            .collect();
        // A next hop that is an IP address needs no DNS: its destination, read
        // once here (a routed request's URI was parsed twice more before).
        let literals: Vec<Option<Hop>> = next_hops
            .iter()
            .map(|nh| match nh {
                Ok(nh) if nh.flow.is_none() => super::literal_hop(&nh.uri),
                _ => None,
            })
            .collect();
        // Names are resolved off the loop thread: without every answer at
        // hand the relay waits (parked) and continues in `resume_dns_waits`.
        let answers = match answers {
            Some(a) => a,
            None => match self.prepare_dns(node, &next_hops, &literals, txn, opts, relay_id) {
                Some(a) => a,
                None => return Ok(()),
            },
        };
        let (mut started, mut denied) = (0, 0);
        let mut first_error = None;
        // Each target's next hop and destinations (RFC 3263 order).
        let mut usable: Vec<(usize, NextHop, Vec<Hop>)> = Vec::with_capacity(targets.len());
        for (i, next) in next_hops.into_iter().enumerate() {
            if let Some(e) = &refusal {
                first_error.get_or_insert(e.clone());
                break;
            }
            let result = next.and_then(|nh| {
                let hops = match (nh.flow, literals[i]) {
                    (Some(flow), _) => vec![flow],
                    (None, Some(literal)) => vec![literal],
                    (None, None) => {
                        let bad = || ForwardError::BadTarget(nh.uri.clone());
                        let uri = crate::sip::Uri::parse(&nh.uri).map_err(|_| bad())?;
                        answers.hops(&node.resolver, &uri).map_err(|e| match e {
                            crate::dns::NoHop::BadTarget => bad(),
                            crate::dns::NoHop::Unresolvable(h) => ForwardError::Unresolvable(h),
                        })?
                    }
                };
                Ok((nh, hops))
            });
            match result {
                Ok((nh, hops)) => usable.push((i, nh, hops)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // Parallel targets are one branch each; serial ones (`opts.serial`)
        // share one branch that fails over from one to the next.
        let groups: Vec<Vec<(usize, NextHop, Vec<Hop>)>> = if opts.serial.is_some() {
            vec![usable]
        } else {
            usable.into_iter().map(|u| vec![u]).collect()
        };
        for group in groups {
            let Some(plan) = Plan::new(
                group
                    .into_iter()
                    .map(|(i, nh, hops)| (targets[i].clone(), nh, hops))
                    .collect(),
                opts,
            ) else {
                continue;
            };
            match self.start_planned(cx, ctx_id, &msg, source, lh, plan) {
                Some(_) => started += 1,
                None => denied += 1,
            }
        }
        if started == 0 && denied > 0 {
            // Every branch was refused (on_send): their 403s end the round.
            self.ctxs
                .get_mut(&ctx_id)
                .expect("exists")
                .waiting
                .push(relay_id);
            if self.round_complete(cx.txns, ctx_id) {
                self.complete_round(cx, ctx_id);
            }
            return Ok(());
        }
        if started == 0 {
            let err = first_error.unwrap_or(if opts.serial.is_some() {
                ForwardError::Unresolvable("no destination left to try".into())
            } else {
                ForwardError::NoRoute
            });
            // Nothing went out: the round ends at once with the error's answer.
            let status = err.status();
            let extra = match &err {
                ForwardError::BadExtension(ext) => vec![("Unsupported".to_string(), ext.clone())],
                _ => Vec::new(),
            };
            if let Some(f) = synthesize_with(node, cx.txns, txn, status, &extra) {
                let ctx = self.ctxs.get_mut(&ctx_id).expect("exists");
                if relay_id != UNAWAITED {
                    ctx.waiting.push(relay_id);
                }
                ctx.finals.push(f);
                self.complete_round(cx, ctx_id);
            }
            return Ok(());
        }
        let ctx = self.ctxs.get_mut(&ctx_id).expect("exists");
        if relay_id != UNAWAITED {
            ctx.waiting.push(relay_id);
        }
        if let Some(t) = opts.timeout {
            let old = ctx.relay_timer.take();
            let key = TimerKey::Service(Owner {
                service: SERVICE,
                id: ctx_id,
            });
            let at = cx.txns.timers.now() + t;
            let tid = cx.txns.timers.schedule(at, FINE, key);
            if let Some(o) = old {
                cx.txns.timers.cancel(o);
            }
            ctx.relay_timer = Some(tid);
        }
        Ok(())
    }

    /// Starts the first attempt of `plan`; keeps the plan beside its branch
    /// when there are destinations left to fail over to. None when a service
    /// refused to send it (`on_send`): the branch then counts as a 403.
    pub(crate) fn start_planned(
        &mut self,
        cx: &mut Ctx<'_>,
        ctx_id: CtxId,
        msg: &Message,
        source: Source,
        lh: u64,
        mut plan: Plan,
    ) -> Option<u64> {
        let Some(bid) = self.start_branch(cx, ctx_id, msg, source, lh, &plan) else {
            let server = self.ctxs.get(&ctx_id).map(|c| c.server);
            if let Some(f) = server.and_then(|t| synthesize(cx.node, cx.txns, t, 403)) {
                self.ctxs.get_mut(&ctx_id).expect("exists").finals.push(f);
            }
            return None;
        };
        if plan.has_alternatives() {
            shorten_timeout(cx, bid);
            plan.shrink();
            self.plans
                .entry(ctx_id)
                .or_default()
                .push((bid, Box::new(plan)));
        }
        Some(bid)
    }

    /// Sends one branch of `msg` to the plan's current destination and adds
    /// it to the context's round.
    fn start_branch(
        &mut self,
        cx: &mut Ctx<'_>,
        ctx_id: CtxId,
        msg: &Message,
        source: Source,
        lh: u64,
        plan: &Plan,
    ) -> Option<u64> {
        let node = cx.node;
        let (target, nh, params) = (&plan.target, &plan.nh, &plan.params);
        let mut hop = plan.hop;
        let branch_ruri = target
            .request_uri
            .as_deref()
            .or(params.request_uri.as_deref());
        let unique = cx.txns.next_id();
        let branch = super::seal_branch(node, branch_for(lh, unique), msg, &source);
        let mut edits = params.header_edits.clone();
        edits.extend(
            target
                .routes
                .iter()
                .map(|r| HeaderEdit::Add("Route".into(), r.clone())),
        );
        let mut writer = None;
        if !node.hooks.is_empty() {
            let mut bp = BranchPlan {
                request: msg,
                hop,
                edits: &mut edits,
                stateless: false,
                writer: None,
            };
            node.hooks.on_relay(node, &mut bp);
            let ruri = branch_ruri.or(msg.request_uri_str()).unwrap_or_default();
            if node.hooks.on_send(node, &bp, ruri) == Verdict::Stop {
                return None;
            }
            hop = bp.hop;
            writer = bp.writer;
        }
        let build = |hop: &Hop| {
            let local = node.wire.advertised(hop.transport, hop.addr);
            let via = super::via_value(hop.transport, local, &branch);
            if let Some(w) = &writer {
                let out = Outgoing {
                    hop: *hop,
                    via: &via,
                    pop_routes: nh.pop_routes,
                    request_uri: branch_ruri,
                    edits: &edits,
                };
                return w.write(node, msg, &out);
            }
            let rr = (params.record_route && creates_dialog(msg)).then(|| {
                let sips = msg
                    .request_uri()
                    .is_some_and(|u| u.scheme == crate::sip::Scheme::Sips);
                record_route(node, &source, hop, sips)
            });
            build_forward(
                msg,
                &ForwardEdits {
                    request_uri: branch_ruri,
                    via: &via,
                    source: Some(source.addr),
                    force_rport: source.transport.is_stream(),
                    pop_routes: nh.pop_routes,
                    record_route: rr.as_deref(),
                    header_edits: &edits,
                },
            )
        };
        let mut bytes = build(&hop);
        let mut udp_fallback = None;
        if let Some(tcp) = congestion_controlled_hop(node, &nh.uri, hop, bytes.len()) {
            let over_tcp = build(&tcp);
            udp_fallback = Some(Bytes::from(std::mem::replace(&mut bytes, over_tcp)));
            hop = tcp;
        }
        let dest = Destination {
            transport: hop.transport,
            addr: hop.addr,
            conn: None,
        };
        let owner = Owner {
            service: SERVICE,
            id: ctx_id,
        };
        let bid = client::start(
            &node.wire,
            cx.txns,
            owner,
            branch,
            msg.method_str(),
            Bytes::from(bytes),
            dest,
        );
        if let Some(c) = cx.txns.clients.get_mut(&bid) {
            c.udp_fallback = udp_fallback;
        }
        node.stats
            .requests_forwarded
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(ctx) = self.ctxs.get_mut(&ctx_id) {
            ctx.branches.push(bid);
        }
        Some(bid)
    }

    /// Routes an in-dialog request that carries our Route entirely in Rust.
    pub fn route_in_core(&mut self, cx: &mut Ctx<'_>, msg: Message, source: Source) {
        self.route_in_core_to(cx, msg, source, None);
    }

    /// Routes an in-dialog request in Rust, by its Route set or (a service's
    /// `route_in_dialog`) to `target`.
    pub fn route_in_core_to(
        &mut self,
        cx: &mut Ctx<'_>,
        msg: Message,
        source: Source,
        target: Option<Target>,
    ) {
        // An initial request delivered to a connection we hold (decision
        // 0052): we stay in the dialog, its in-dialog requests need us too.
        let initial = msg.to_tag().is_none();
        let txn = server::create(cx.txns, msg, source);
        let ctx_id = cx.txns.next_id();
        let lh = loop_hash(cx.node, &cx.txns.servers[&txn].request);
        self.ctxs
            .insert(ctx_id, Box::new(ProxyCtx::new(ctx_id, txn, lh, false)));
        if let Some(t) = cx.txns.servers.get_mut(&txn) {
            t.ctx = Some(ctx_id);
        }
        let opts = RelayOptions {
            targets: target.into_iter().collect(),
            request_uri: None,
            header_edits: &[],
            record_route: initial,
            timeout: None,
            serial: None,
        };
        if let Err(e) = self.relay(cx, txn, &opts, UNAWAITED) {
            if let Some(f) = synthesize(cx.node, cx.txns, txn, e.status()) {
                self.send_final_upstream(cx, ctx_id, f);
            }
        }
    }
}

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
    pub(super) fn advance(&mut self, status: u16, local: bool) -> bool {
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

/// A destination with alternatives behind it gets `failover_timeout` to
/// answer at all (instead of Timer B/F's 64*T1) before the next is tried.
pub fn shorten_timeout(cx: &mut Ctx<'_>, bid: BranchId) {
    let limit = cx.node.resolver.failover_timeout();
    if limit.is_zero() || limit >= cx.txns.timing.t1x64() {
        return;
    }
    let old = cx
        .txns
        .clients
        .get_mut(&bid)
        .and_then(|c| c.timers[1].take());
    if let Some(t) = old {
        cx.txns.timers.cancel(t);
    }
    let at = cx.txns.timers.now() + limit;
    let id = cx
        .txns
        .timers
        .schedule(at, FINE, TimerKey::ClientTimeout(bid));
    if let Some(c) = cx.txns.clients.get_mut(&bid) {
        c.timers[1] = Some(id);
    }
}
