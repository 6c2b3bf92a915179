//! The stateful proxy core (RFC 3261 §16): relaying a request on one or more
//! branches, and in-dialog loose routing with no application involved.
//! Responses are in `responses`, the end of a round in `round`, CANCEL
//! (§16.10), Timer C (§16.8) and transport failures in `failures`.

use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;

use super::context::ProxyCtx;
use super::fallback::congestion_controlled_hop;
use super::round::{synthesize, synthesize_with};
use super::route::{branch_for, creates_dialog, loop_hash, next_hop, record_route};
use super::{fmt_hostport, resolve, via_alias, ForwardError, Hop, Proxy, SERVICE};
use crate::service::{BranchPlan, Ctx, Event};
use crate::sip::write::{build_forward, ForwardEdits, HeaderEdit};
use crate::sip::{HeaderId, Message};
use crate::transaction::{client, server, Owner, TimerKey, TxnId, FINE};
use crate::transport::{Destination, Source};

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
}

/// The relay id of a round nobody awaits (in-core routing). The application
/// layer numbers its `relay()` calls from 1.
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
                self.ctxs.insert(id, ProxyCtx::new(id, txn, lh, true));
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
        let targets: &[Target] = if opts.targets.is_empty() {
            &default_target
        } else {
            &opts.targets
        };
        let mut started = 0;
        let mut first_error = None;
        for target in targets {
            if let Some(e) = &refusal {
                first_error.get_or_insert(e.clone());
                break;
            }
            let branch_ruri = target.request_uri.as_deref().or(opts.request_uri);
            let result = next_hop(
                node,
                &msg,
                target.hop.as_deref(),
                branch_ruri.unwrap_or(&ruri),
            )
            .and_then(|nh| {
                let hop = match nh.flow {
                    Some(flow) => flow,
                    None => {
                        let uri = crate::sip::Uri::parse(&nh.uri)
                            .map_err(|_| ForwardError::BadTarget(nh.uri.clone()))?;
                        resolve(node, &uri)?
                    }
                };
                Ok((nh, hop))
            });
            let (nh, mut hop) = match result {
                Ok(x) => x,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            let unique = cx.txns.next_id();
            let branch = branch_for(lh, unique);
            let mut edits = opts.header_edits.to_vec();
            edits.extend(
                target
                    .routes
                    .iter()
                    .map(|r| HeaderEdit::Add("Route".into(), r.clone())),
            );
            if !node.hooks.is_empty() {
                let mut plan = BranchPlan {
                    request: &msg,
                    hop,
                    edits: &mut edits,
                };
                node.hooks.on_relay(node, &mut plan);
                hop = plan.hop;
            }
            let build = |hop: &Hop| {
                let local = node.wire.advertised(hop.transport, hop.addr);
                let via = format!(
                    "SIP/2.0/{} {};branch={branch}{}",
                    hop.transport,
                    fmt_hostport(local),
                    via_alias(hop.transport)
                );
                let rr = (opts.record_route && creates_dialog(&msg)).then(|| {
                    let sips = msg
                        .request_uri()
                        .is_some_and(|u| u.scheme == crate::sip::Scheme::Sips);
                    record_route(node, &source, hop, sips)
                });
                build_forward(
                    &msg,
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
            self.ctxs
                .get_mut(&ctx_id)
                .expect("exists")
                .branches
                .push(bid);
            started += 1;
        }
        if started == 0 {
            let err = first_error.unwrap_or(ForwardError::NoRoute);
            // Nothing went out: the round ends at once with the error's answer.
            let status = err.status();
            let extra = match &err {
                ForwardError::BadExtension(ext) => vec![("Unsupported".to_string(), ext.clone())],
                _ => Vec::new(),
            };
            if let Some(f) = synthesize_with(node, cx.txns, txn, status, &extra) {
                let ctx = self.ctxs.get_mut(&ctx_id).expect("exists");
                ctx.waiting.push(relay_id);
                ctx.finals.push(f);
                self.complete_round(cx, ctx_id);
            }
            return Ok(());
        }
        let ctx = self.ctxs.get_mut(&ctx_id).expect("exists");
        ctx.waiting.push(relay_id);
        if let Some(t) = opts.timeout {
            let old = ctx.relay_timer.take();
            let key = TimerKey::Service(Owner {
                service: SERVICE,
                id: ctx_id,
            });
            let tid = cx.txns.timers.schedule(Instant::now() + t, FINE, key);
            if let Some(o) = old {
                cx.txns.timers.cancel(o);
            }
            ctx.relay_timer = Some(tid);
        }
        Ok(())
    }

    /// Routes an in-dialog request that carries our Route entirely in Rust.
    pub fn route_in_core(&mut self, cx: &mut Ctx<'_>, msg: Message, source: Source) {
        let txn = server::create(cx.txns, msg, source);
        let ctx_id = cx.txns.next_id();
        let lh = loop_hash(cx.node, &cx.txns.servers[&txn].request);
        self.ctxs
            .insert(ctx_id, ProxyCtx::new(ctx_id, txn, lh, false));
        if let Some(t) = cx.txns.servers.get_mut(&txn) {
            t.ctx = Some(ctx_id);
        }
        let opts = RelayOptions {
            targets: Vec::new(),
            request_uri: None,
            header_edits: &[],
            record_route: false,
            timeout: None,
        };
        if let Err(e) = self.relay(cx, txn, &opts, UNAWAITED) {
            if let Some(f) = synthesize(cx.node, cx.txns, txn, e.status()) {
                self.send_final_upstream(cx, ctx_id, f);
            }
        }
        cx.events
            .retain(|e| !matches!(e, Event::RelayDone { relay, .. } if *relay == UNAWAITED));
    }
}
