//! The stateful proxy core (RFC 3261 §16): relaying a request on one or more
//! branches, choosing and sending the best response upstream, CANCEL
//! propagation (§16.10), Timer C (§16.8), and in-dialog loose routing with no
//! application involved.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::context::{best_index, Final, ProxyCtx};
use super::fallback::congestion_controlled_hop;
use super::route::{branch_for, creates_dialog, loop_hash, next_hop, record_route};
use super::{fmt_hostport, resolve, via_alias, ForwardError};
use crate::core::{Core, Event};
use crate::sip::write::{build_forward, build_response, strip_top_via, ForwardEdits, HeaderEdit};
use crate::sip::{Framing, HeaderId, Limits, Message};
use crate::transaction::client::{self, Outcome};
use crate::transaction::{server, CtxId, Layer, TimerKey, TxnId, COARSE};
use crate::transport::{Destination, Source, Transport};

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

fn parse_own(bytes: Bytes) -> Option<Message> {
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
fn synthesize(core: &Core, layer: &mut Layer, txn: TxnId, status: u16) -> Option<Final> {
    synthesize_with(core, layer, txn, status, &[])
}

fn synthesize_with(
    core: &Core,
    layer: &mut Layer,
    txn: TxnId,
    status: u16,
    extra: &[(String, String)],
) -> Option<Final> {
    let tag = core.new_tag();
    let t = layer.servers.get_mut(&txn)?;
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

/// Starts a relay round (or adds branches to the running one) for server
/// transaction `txn`. Results arrive as `Event::RelayDone { relay }`.
pub fn relay(
    core: &Core,
    layer: &mut Layer,
    txn: TxnId,
    opts: &RelayOptions<'_>,
    relay_id: u64,
    events: &mut Vec<Event>,
) -> Result<(), ForwardError> {
    let Some(server_txn) = layer.servers.get(&txn) else {
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
            let id = layer.next_id();
            let lh = loop_hash(core, &msg);
            layer.ctxs.insert(id, ProxyCtx::new(id, txn, lh, true));
            if let Some(t) = layer.servers.get_mut(&txn) {
                t.ctx = Some(id);
            }
            id
        }
    };
    let ctx = layer.ctxs.get_mut(&ctx_id).expect("just ensured");
    if ctx.cancelled || ctx.final_sent {
        return Err(ForwardError::AlreadyHandled);
    }
    if ctx.branches.is_empty() || round_complete(layer, ctx_id) {
        // A new round (serial failover): earlier results no longer count.
        let ctx = layer.ctxs.get_mut(&ctx_id).expect("exists");
        ctx.branches.clear();
        ctx.finals.clear();
        ctx.held = None;
    }
    let lh = layer.ctxs[&ctx_id].loop_hash;
    if msg.method_str() == "INVITE" {
        server::send_trying(core, layer, txn);
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
            core,
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
                    resolve(core, &uri)?
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
        let unique = layer.next_id();
        let branch = branch_for(lh, unique);
        let mut edits = opts.header_edits.to_vec();
        edits.extend(
            target
                .routes
                .iter()
                .map(|r| HeaderEdit::Add("Route".into(), r.clone())),
        );
        let build = |hop: &super::Hop| {
            let local = core.advertised(hop.transport, hop.addr);
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
                record_route(core, &source, hop, sips)
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
        if let Some(tcp) = congestion_controlled_hop(core, &nh.uri, hop, bytes.len()) {
            let over_tcp = build(&tcp);
            udp_fallback = Some(Bytes::from(std::mem::replace(&mut bytes, over_tcp)));
            hop = tcp;
        }
        let dest = Destination {
            transport: hop.transport,
            addr: hop.addr,
            conn: None,
        };
        let bid = client::start(
            core,
            layer,
            ctx_id,
            branch,
            msg.method_str(),
            Bytes::from(bytes),
            dest,
        );
        if let Some(c) = layer.clients.get_mut(&bid) {
            c.udp_fallback = udp_fallback;
        }
        core.stats
            .requests_forwarded
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        layer
            .ctxs
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
        if let Some(f) = synthesize_with(core, layer, txn, status, &extra) {
            let ctx = layer.ctxs.get_mut(&ctx_id).expect("exists");
            ctx.waiting.push(relay_id);
            ctx.finals.push(f);
            complete_round(core, layer, ctx_id, events);
        }
        return Ok(());
    }
    let ctx = layer.ctxs.get_mut(&ctx_id).expect("exists");
    ctx.waiting.push(relay_id);
    if let Some(t) = opts.timeout {
        let old = ctx.relay_timer.take();
        let tid = layer.timers.schedule(
            Instant::now() + t,
            crate::transaction::FINE,
            TimerKey::Relay(ctx_id),
        );
        if let Some(o) = old {
            layer.timers.cancel(o);
        }
        layer.ctxs.get_mut(&ctx_id).expect("exists").relay_timer = Some(tid);
    }
    Ok(())
}

fn round_complete(layer: &Layer, ctx_id: CtxId) -> bool {
    let Some(ctx) = layer.ctxs.get(&ctx_id) else {
        return true;
    };
    ctx.branches
        .iter()
        .all(|b| layer.clients.get(b).is_none_or(|c| c.is_final()))
}

/// A response arrived: feed it to its client transaction and the context.
pub fn on_response(core: &Core, layer: &mut Layer, msg: Message, events: &mut Vec<Event>) {
    let branch = msg.branch().unwrap_or_default().to_string();
    let Some(bid) = layer.find_client(&branch, msg.cseq_method()) else {
        // A 2xx retransmission after the transaction ended, or a stateless
        // forward's response: relay along Via without state.
        super::relay_response_stateless(core, &msg);
        return;
    };
    let outcome = client::on_response(core, layer, bid, &msg);
    let Some(ctx_id) = layer.clients.get(&bid).map(|c| c.ctx) else {
        return;
    };
    if layer
        .clients
        .get(&bid)
        .is_some_and(|c| c.method_str() == "CANCEL")
    {
        return;
    }
    let Some(ctx) = layer.ctxs.get(&ctx_id) else {
        // A request the dialog module sent itself (BYE, keepalive OPTIONS).
        if matches!(outcome, Outcome::Success | Outcome::Failure) {
            crate::dialog::on_local_response(core, layer, ctx_id, msg.status().unwrap_or(0));
        }
        return;
    };
    let server_id = ctx.server;
    let status = msg.status().unwrap_or(0);
    match outcome {
        Outcome::Absorb => {}
        Outcome::Provisional => {
            if !ctx.final_sent {
                let up = Bytes::from(strip_top_via(&msg));
                server::send_response(core, layer, server_id, status, up, false);
            }
        }
        Outcome::Success => {
            let up = Bytes::from(strip_top_via(&msg));
            let first = !ctx.final_sent;
            if first {
                server::send_response(core, layer, server_id, status, up.clone(), false);
                let ctx = layer.ctxs.get_mut(&ctx_id).expect("exists");
                ctx.final_sent = true;
                ctx.held = None;
                let waiting = std::mem::take(&mut ctx.waiting);
                let others: Vec<_> = ctx.branches.iter().copied().filter(|b| *b != bid).collect();
                let f = Final {
                    status,
                    message: msg,
                    upstream: up,
                };
                for relay in waiting {
                    events.push(Event::RelayDone {
                        relay,
                        result: f.clone(),
                    });
                }
                // RFC 3261 §16.7 step 10: a 2xx cancels the other branches.
                for b in others {
                    client::cancel(core, layer, b);
                }
            } else if let Some(t) = layer.servers.get(&server_id) {
                // Another fork's 2xx, or a retransmission: every 2xx goes up.
                core.send_response(&t.request, t.source, up);
            }
        }
        Outcome::Failure => {
            let timed_out = layer.clients.get(&bid).is_some_and(|c| c.timed_out);
            let f = if timed_out {
                synthesize(core, layer, server_id, 408)
            } else {
                Some(Final {
                    status,
                    message: msg.clone(),
                    upstream: Bytes::from(strip_top_via(&msg)),
                })
            };
            let Some(f) = f else { return };
            let ctx = layer.ctxs.get_mut(&ctx_id).expect("exists");
            ctx.finals.push(f);
            if status >= 600 && !timed_out {
                let others: Vec<_> = ctx.branches.iter().copied().filter(|b| *b != bid).collect();
                for b in others {
                    client::cancel(core, layer, b);
                }
            }
            if round_complete(layer, ctx_id) {
                complete_round(core, layer, ctx_id, events);
            }
        }
    }
}

/// Every branch of the round is final: pick the best answer (§16.7), hand it
/// to the waiting `relay()` calls, and send it upstream unless the handler
/// may still act on it.
fn complete_round(core: &Core, layer: &mut Layer, ctx_id: CtxId, events: &mut Vec<Event>) {
    let Some(ctx) = layer.ctxs.get_mut(&ctx_id) else {
        return;
    };
    if ctx.final_sent {
        return;
    }
    if let Some(t) = ctx.relay_timer.take() {
        layer.timers.cancel(t);
    }
    let ctx = layer.ctxs.get_mut(&ctx_id).expect("exists");
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
        events.push(Event::RelayDone {
            relay,
            result: best.clone(),
        });
    }
    if ctx.handler_active {
        ctx.held = Some(best);
    } else {
        send_final_upstream(core, layer, ctx_id, best);
    }
}

fn send_final_upstream(core: &Core, layer: &mut Layer, ctx_id: CtxId, f: Final) {
    let Some(ctx) = layer.ctxs.get_mut(&ctx_id) else {
        return;
    };
    ctx.final_sent = true;
    ctx.held = None;
    let server_id = ctx.server;
    server::send_response(core, layer, server_id, f.status, f.upstream, false);
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

/// The application's handler returned: a held final goes upstream now.
pub fn finish(core: &Core, layer: &mut Layer, txn: TxnId) {
    let Some(ctx_id) = layer.servers.get(&txn).and_then(|t| t.ctx) else {
        return;
    };
    let Some(ctx) = layer.ctxs.get_mut(&ctx_id) else {
        return;
    };
    ctx.handler_active = false;
    if let Some(f) = ctx.held.take() {
        if !ctx.final_sent {
            send_final_upstream(core, layer, ctx_id, f);
        }
    }
}

/// The application answered `txn` itself: pending branches are cancelled.
pub fn on_local_final(core: &Core, layer: &mut Layer, txn: TxnId) {
    let Some(ctx_id) = layer.servers.get(&txn).and_then(|t| t.ctx) else {
        return;
    };
    let Some(ctx) = layer.ctxs.get_mut(&ctx_id) else {
        return;
    };
    ctx.final_sent = true;
    ctx.held = None;
    let branches = ctx.branches.clone();
    for b in branches {
        client::cancel(core, layer, b);
    }
}

/// A CANCEL arrived (§16.10). Returns false when it matches no INVITE
/// transaction (the caller then treats it like any request).
pub fn on_cancel(
    core: &Core,
    layer: &mut Layer,
    cancel: &Message,
    source: Source,
    events: &mut Vec<Event>,
) -> bool {
    let Some(txn) = layer.find_invite_server(cancel) else {
        return false;
    };
    core.reply_to(cancel, source, 200, None, &[]);
    let Some(t) = layer.servers.get(&txn) else {
        return true;
    };
    if t.is_final() {
        return true;
    }
    let app_holds = t.app_holds;
    let ctx_id = t.ctx;
    let live: Vec<_> = ctx_id
        .and_then(|c| layer.ctxs.get(&c))
        .map(|c| {
            c.branches
                .iter()
                .copied()
                .filter(|b| layer.clients.get(b).is_some_and(|x| !x.is_final()))
                .collect()
        })
        .unwrap_or_default();
    if let Some(c) = ctx_id.and_then(|c| layer.ctxs.get_mut(&c)) {
        c.cancelled = true;
        // Whatever the branches answer (487) goes straight upstream.
        c.handler_active = false;
    }
    if live.is_empty() {
        if let Some(f) = synthesize(core, layer, txn, 487) {
            server::send_response(core, layer, txn, 487, f.upstream, true);
        }
        if let Some(c) = ctx_id.and_then(|c| layer.ctxs.get_mut(&c)) {
            c.final_sent = true;
        }
    } else {
        for b in live {
            client::cancel(core, layer, b);
        }
    }
    if app_holds {
        events.push(Event::Cancelled(txn));
    }
    true
}

/// Routes an in-dialog request that carries our Route entirely in Rust.
pub fn route_in_core(
    core: &Core,
    layer: &mut Layer,
    msg: Message,
    source: Source,
    events: &mut Vec<Event>,
) {
    let txn = server::create(layer, msg, source);
    let ctx_id = layer.next_id();
    let lh = loop_hash(core, &layer.servers[&txn].request);
    layer
        .ctxs
        .insert(ctx_id, ProxyCtx::new(ctx_id, txn, lh, false));
    if let Some(t) = layer.servers.get_mut(&txn) {
        t.ctx = Some(ctx_id);
    }
    let opts = RelayOptions {
        targets: Vec::new(),
        request_uri: None,
        header_edits: &[],
        record_route: false,
        timeout: None,
    };
    let relay_id = layer.next_id();
    if let Err(e) = relay(core, layer, txn, &opts, relay_id, events) {
        if let Some(f) = synthesize(core, layer, txn, e.status()) {
            send_final_upstream(core, layer, ctx_id, f);
        }
    }
    // Nobody awaits this relay.
    events.retain(|e| !matches!(e, Event::RelayDone { relay, .. } if *relay == relay_id));
}

/// A transaction-layer timer fired.
pub fn on_timer(core: &Core, layer: &mut Layer, key: TimerKey, events: &mut Vec<Event>) {
    match key {
        TimerKey::ServerRetransmit(id) => server::on_retransmit_timer(core, layer, id),
        TimerKey::ServerTrying(id) => {
            if let Some(t) = layer.servers.get_mut(&id) {
                t.timers[2] = None;
            }
            server::send_trying(core, layer, id);
        }
        TimerKey::ServerEnd(id) => {
            if let Some(t) = layer.remove_server(id) {
                if let Some(c) = t.ctx {
                    layer.ctxs.remove(&c);
                }
            }
        }
        TimerKey::ClientRetransmit(id) => client::on_retransmit_timer(core, layer, id),
        TimerKey::ClientTimeout(id) => {
            // Timer B / F (or 64*T1 after a CANCEL): no final answer in time.
            let Some(c) = layer.clients.get(&id) else {
                return;
            };
            if c.is_final() {
                return;
            }
            if c.method_str() == "CANCEL" {
                // Our CANCEL went unanswered: the INVITE branch has its own timer.
                layer.remove_client(id);
                return;
            }
            fail_branch_408(core, layer, id, events);
        }
        TimerKey::ClientTimerC(id) => {
            let Some(c) = layer.clients.get_mut(&id) else {
                return;
            };
            c.timers[2] = None;
            if c.is_final() {
                return;
            }
            if c.state == client::ClientState::Proceeding {
                c.timed_out = true;
                client::cancel(core, layer, id);
            } else {
                fail_branch_408(core, layer, id, events);
            }
        }
        TimerKey::ClientEnd(id) => {
            layer.remove_client(id);
        }
        TimerKey::Dialog(id) => crate::dialog::on_timer(core, layer, id),
        TimerKey::Relay(ctx_id) => {
            let Some(ctx) = layer.ctxs.get_mut(&ctx_id) else {
                return;
            };
            ctx.relay_timer = None;
            let branches = ctx.branches.clone();
            for b in branches {
                let Some(c) = layer.clients.get_mut(&b) else {
                    continue;
                };
                if c.is_final() {
                    continue;
                }
                c.timed_out = true;
                if c.state == client::ClientState::Proceeding {
                    client::cancel(core, layer, b);
                } else {
                    fail_branch_408(core, layer, b, events);
                }
            }
        }
    }
}

/// Ends a branch that got no final answer, as if it had answered 408.
fn fail_branch_408(core: &Core, layer: &mut Layer, bid: u64, events: &mut Vec<Event>) {
    fail_branch(core, layer, bid, 408, events);
}

/// The stream transport lost what was sent to `addr` over `transport` (the
/// connect failed or timed out, the peer stopped reading): every branch
/// still waiting on it fails at once as if it had answered 503 (RFC 3261
/// §8.1.3.1, §16.7 step 6), so the round can fail over.
pub fn on_transport_error(
    core: &Core,
    layer: &mut Layer,
    transport: Transport,
    addr: SocketAddr,
    events: &mut Vec<Event>,
) {
    let failed: Vec<u64> = layer
        .clients
        .values()
        .filter(|c| {
            c.dest.transport == transport
                && c.dest.addr == addr
                && matches!(
                    c.state,
                    client::ClientState::Calling | client::ClientState::Trying
                )
        })
        .map(|c| c.id)
        .collect();
    for bid in failed {
        // Sent over TCP only for its size: UDP gets it instead (§18.1.1).
        if client::retry_over_udp(core, layer, bid) {
            continue;
        }
        let Some(c) = layer.clients.get(&bid) else {
            continue;
        };
        if c.method_str() == "CANCEL" {
            layer.remove_client(bid);
            continue;
        }
        fail_branch(core, layer, bid, 503, events);
    }
}

fn fail_branch(core: &Core, layer: &mut Layer, bid: u64, status: u16, events: &mut Vec<Event>) {
    client::terminate(layer, bid);
    if let Some(c) = layer.clients.get_mut(&bid) {
        c.final_status = Some(status);
    }
    let end = layer
        .timers
        .schedule(Instant::now(), COARSE, TimerKey::ClientEnd(bid));
    let Some(c) = layer.clients.get_mut(&bid) else {
        return;
    };
    c.timers[3] = Some(end);
    let ctx_id = c.ctx;
    let Some(server_id) = layer.ctxs.get(&ctx_id).map(|c| c.server) else {
        crate::dialog::on_local_response(core, layer, ctx_id, status);
        return;
    };
    if let Some(f) = synthesize(core, layer, server_id, status) {
        layer.ctxs.get_mut(&ctx_id).expect("exists").finals.push(f);
    }
    if round_complete(layer, ctx_id) {
        complete_round(core, layer, ctx_id, events);
    }
}
