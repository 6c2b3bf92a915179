//! Proxy behaviour (RFC 3261 §16): stateless forwarding and response relay
//! (§16.11) here; the stateful proxy ([`Proxy`]: relay rounds in `stateful`,
//! the best response in `round` and `responses`, CANCEL, timeouts and
//! transport failures in `failures`); routing rules in `route`.
//!
//! The proxy is the first service: it uses the node and the transaction
//! layer through [`Ctx`](crate::service::Ctx) and calls the hooks of the
//! other services at its hook points (`on_relay`, `on_response`,
//! `on_final_sent` in [`send_final`]).

pub mod context;
pub mod dns_wait;
pub mod failover;
mod failures;
pub mod fallback;
mod responses;
mod round;
pub mod route;
mod settle;
pub mod stateful;

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::service::branch::Upstream;
use crate::service::{BranchPlan, Incoming, Node, Outgoing};
use crate::sip::write::{build_forward, strip_top_via, ForwardEdits, HeaderEdit};
use crate::sip::{HeaderId, Message, NameAddr, Uri};
use crate::transaction::{CtxId, IdMap};
pub use crate::transport::Hop;
use crate::transport::{Destination, Source, Transport};
use context::ProxyCtx;

/// The owner name of the proxy's client transactions and timers.
pub const SERVICE: &str = crate::service::PROXY;

/// The stateful proxy's own state: the response context of every request it
/// relays (by context id; a server transaction names its own in `ctx`).
#[derive(Default)]
pub struct Proxy {
    /// Boxed: a context is ~300 bytes and lives as long as its server
    /// transaction; inline, every spare slot of the table would cost that.
    ctxs: IdMap<CtxId, Box<ProxyCtx>>,
    /// Relays waiting for DNS answers, by resolver waiter id (`dns_wait`).
    parked: IdMap<u64, dns_wait::Parked>,
    /// Per context, the branches with destinations left to fail over to
    /// (RFC 3263 §4.3, serial targets); dropped with the context.
    plans: IdMap<CtxId, Vec<(crate::transaction::BranchId, Box<stateful::Plan>)>>,
    /// Contexts whose work is done, as their server transaction (`settle`).
    settled: IdMap<CtxId, crate::transaction::TxnId>,
}

/// Sends a response upstream through server transaction `txn`; a final one
/// is shown to the services' `on_final_sent` hooks once it is on its way.
/// Every final answer (relayed, synthesised, or the application's: `local`)
/// goes through here. False when the transaction was already final.
pub fn send_final(
    cx: &mut crate::service::Ctx<'_>,
    txn: crate::transaction::TxnId,
    status: u16,
    response: Bytes,
    local: bool,
) -> bool {
    let node = cx.node;
    let server = crate::transaction::server::send_response;
    if status < 200 {
        return server(&node.wire, cx.txns, txn, status, response, local);
    }
    let sent = if node.hooks.is_empty() {
        server(&node.wire, cx.txns, txn, status, response, local)
    } else {
        let sent = server(&node.wire, cx.txns, txn, status, response.clone(), local);
        if sent {
            node.hooks.on_final_sent(cx, txn, status, &response);
        }
        sent
    };
    if sent {
        let holdable = node.hooks.settled_may_be_held();
        crate::transaction::server::compact_request(cx.txns, txn, holdable);
    }
    sent
}

impl Proxy {
    /// Response contexts alive (for `tm.stats`).
    pub fn contexts(&self) -> usize {
        self.ctxs.len()
    }

    /// Settled contexts (`settle.rs`): a map entry each until their server
    /// transaction ends.
    pub fn settled_contexts(&self) -> usize {
        self.settled.len()
    }

    pub fn context(&self, id: CtxId) -> Option<&ProxyCtx> {
        self.ctxs.get(&id).map(|c| &**c)
    }
}

/// Why a request could not be forwarded; each maps to the answer the
/// application gets by default.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    #[error("Max-Forwards reached 0")]
    TooManyHops,
    #[error("unsupported Proxy-Require extension: {0}")]
    BadExtension(String),
    #[error("invalid target URI {0:?}")]
    BadTarget(String),
    #[error("cannot resolve {0}")]
    Unresolvable(String),
    #[error("malformed Route header")]
    BadRoute,
    #[error("no route: the Request-URI names this proxy")]
    NoRoute,
    #[error("request already answered or forwarded")]
    AlreadyHandled,
    #[error("sending to {0} was refused (on_send)")]
    Denied(std::net::SocketAddr),
}

impl ForwardError {
    /// The status the core answers with when the application lets this stand.
    pub fn status(&self) -> u16 {
        match self {
            ForwardError::TooManyHops => 483,
            ForwardError::BadExtension(_) => 420,
            ForwardError::BadTarget(_) | ForwardError::BadRoute => 400,
            ForwardError::Unresolvable(_) => 503,
            ForwardError::NoRoute => 404,
            ForwardError::AlreadyHandled => 500,
            ForwardError::Denied(_) => 403,
        }
    }
}

/// RFC 5923: on a connection we open, `;alias` in our Via lets the peer send
/// its requests for our listener back over that same connection.
/// Our Via's value: `SIP/2.0/<transport> <local>;branch=<branch>[;alias]`,
/// written into one string of the right size (no formatter: once per
/// relayed request).
pub fn via_value(transport: Transport, local: SocketAddr, branch: &str) -> String {
    let mut via = String::with_capacity(48 + branch.len());
    via.push_str("SIP/2.0/");
    via.push_str(transport.as_str());
    via.push(' ');
    crate::sip::write::push_hostport(&mut via, local);
    via.push_str(";branch=");
    via.push_str(branch);
    via.push_str(via_alias(transport));
    via
}

pub fn via_alias(transport: Transport) -> &'static str {
    if transport.is_stream() {
        ";alias"
    } else {
        ""
    }
}

/// The first destination of a URI known right now (RFC 3263: an IP literal,
/// or a name in the cache). A stateless send has nobody to wait for DNS: an
/// uncached name starts its lookup and this request gets 503 (its
/// retransmission finds the answer).
pub fn resolve(node: &Node, uri: &Uri<'_>) -> Result<Hop, ForwardError> {
    if let Some(literal) = crate::dns::SipTarget::literal_of(uri) {
        return literal.map_err(|_| ForwardError::BadTarget(uri.raw.to_string()));
    }
    let target = crate::dns::SipTarget::from_uri(uri)
        .map_err(|_| ForwardError::BadTarget(uri.raw.to_string()))?;
    node.resolver
        .resolve_now(&target)
        .and_then(|h| h.first().copied())
        .ok_or(ForwardError::Unresolvable(target.host))
}

/// The destination of a next-hop URI that names an IP address (no DNS);
/// None for a name or a URI that does not parse. The last few texts
/// answered are remembered: an app sends to a few constant targets (the
/// initial requests' one, in-dialog requests' Contacts), and parsing one
/// again per request was ~1.2k instructions.
pub fn literal_hop(text: &str) -> Option<Hop> {
    const KEPT: usize = 4;
    const MAX_KEPT_LEN: usize = 256;
    struct Kept {
        entries: [Option<(String, Hop)>; KEPT],
        next: usize,
    }
    thread_local! {
        static KEPT_HOPS: std::cell::RefCell<Kept> = const {
            std::cell::RefCell::new(Kept { entries: [None, None, None, None], next: 0 })
        };
    }
    KEPT_HOPS.with(|kept| {
        let mut kept = kept.borrow_mut();
        let seen = kept.entries.iter().flatten().find(|(t, _)| t == text);
        if let Some((_, hop)) = seen {
            return Some(*hop);
        }
        let hop = Uri::parse(text)
            .ok()
            .and_then(|u| crate::dns::SipTarget::literal_of(&u))
            .and_then(Result::ok)?;
        if text.len() <= MAX_KEPT_LEN {
            let at = kept.next;
            kept.entries[at] = Some((text.to_string(), hop));
            kept.next = (at + 1) % KEPT;
        }
        Some(hop)
    })
}

/// What the application asked for when forwarding.
#[derive(Debug, Default)]
pub struct ForwardRequest<'a> {
    /// Explicit next hop (Kamailio's $du); else Route, else Request-URI.
    pub target: Option<&'a str>,
    pub request_uri: Option<&'a str>,
    pub header_edits: &'a [HeaderEdit],
}

/// Forwards `inc` statelessly. Retransmissions produce the same branch, so the
/// next hop's transaction layer sees them as retransmissions (§16.11).
pub fn forward_stateless(
    node: &Node,
    inc: &Incoming,
    fwd: &ForwardRequest<'_>,
) -> Result<Hop, ForwardError> {
    let msg = &inc.msg;
    if msg.max_forwards() == Some(0) {
        return Err(ForwardError::TooManyHops);
    }
    if let Some(pr) = msg.header(HeaderId::ProxyRequire) {
        return Err(ForwardError::BadExtension(pr.to_string()));
    }
    let ruri_text = fwd
        .request_uri
        .or(msg.request_uri_str())
        .unwrap_or_default();
    // Our Record-Route may be in the Route set twice (a transport change).
    let next = route::next_hop(node, msg, fwd.target, ruri_text)?;
    let mut hop = match next.flow {
        Some(flow) => flow,
        None => match literal_hop(&next.uri) {
            Some(hop) => hop,
            None => {
                let uri =
                    Uri::parse(&next.uri).map_err(|_| ForwardError::BadTarget(next.uri.clone()))?;
                resolve(node, &uri)?
            }
        },
    };
    let mut hooked_edits;
    let mut header_edits = fwd.header_edits;
    let mut writer = None;
    if !node.hooks.is_empty() {
        hooked_edits = fwd.header_edits.to_vec();
        let mut plan = BranchPlan {
            request: msg,
            hop,
            edits: &mut hooked_edits,
            stateless: true,
            writer: None,
        };
        node.hooks.on_relay(node, &mut plan);
        if node.hooks.on_send(node, &plan, ruri_text) == crate::service::Verdict::Stop {
            return Err(ForwardError::Denied(plan.hop.addr));
        }
        hop = plan.hop;
        writer = plan.writer;
        header_edits = &hooked_edits;
    }
    let local = node.wire.advertised(hop.transport, hop.addr);
    let mut stateless = String::with_capacity(23);
    stateless.push_str("z9hG4bK");
    crate::sip::write::push_hex16(&mut stateless, stateless_branch(node, msg, hop));
    let branch = seal_branch(node, stateless, msg, &inc.source);
    let via = via_value(hop.transport, local, &branch);
    let out = Outgoing {
        hop,
        via: &via,
        pop_routes: next.pop_routes,
        request_uri: fwd.request_uri,
        edits: header_edits,
    };
    let bytes = match &writer {
        Some(w) => w.write(node, msg, &out),
        None => build_forward(
            msg,
            &ForwardEdits {
                request_uri: fwd.request_uri,
                via: &via,
                source: Some(inc.source.addr),
                force_rport: inc.source.transport.is_stream(),
                pop_routes: next.pop_routes,
                record_route: None,
                header_edits,
            },
        ),
    };
    node.stats
        .requests_forwarded
        .fetch_add(1, Ordering::Relaxed);
    node.wire.send(
        Destination {
            transport: hop.transport,
            addr: hop.addr,
            conn: None,
        },
        Bytes::from(bytes),
    );
    Ok(hop)
}

/// The Route set of a request, in order across all Route header lines.
pub fn route_set(msg: &Message) -> Result<Vec<NameAddr<'_>>, ForwardError> {
    let mut out = Vec::new();
    for h in msg.headers().iter().filter(|h| h.id == HeaderId::Route) {
        let value = msg.header_value(h);
        out.extend(NameAddr::parse_list_remembered(value).map_err(|_| ForwardError::BadRoute)?);
    }
    Ok(out)
}

/// `branch` with the MAC that lets a response to `msg` (received from
/// `source`) be relayed back without state (service/branch.rs).
pub fn seal_branch(node: &Node, branch: String, msg: &Message, source: &Source) -> String {
    let up = Upstream::of_request(&msg.top_via(), source);
    node.branch_mac.seal(branch, &up)
}

/// The hasher of the proxy's per-request hashes (loop detection, stateless
/// branches): keyed by the node's branch key, which each hash takes in
/// first, so fixed seeds here; ahash, not SipHash: twice per relayed
/// request, and SipHash was ~2 k instructions of each call.
pub fn request_hasher() -> ahash::AHasher {
    use std::hash::BuildHasher;
    static SEEDS: ahash::RandomState = ahash::RandomState::with_seeds(
        0x243f_6a88_85a3_08d3,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
        0x082e_fa98_ec4e_6c89,
    );
    SEEDS.build_hasher()
}

fn stateless_branch(node: &Node, msg: &Message, hop: Hop) -> u64 {
    let mut h = request_hasher();
    node.branch_key().hash(&mut h);
    match msg.rfc3261_branch() {
        // CANCEL and non-2xx ACK share the INVITE's branch, so they hash alike.
        Some(b) => b.hash(&mut h),
        None => {
            // RFC 2543 peers: derive from the fields that identify the transaction.
            msg.call_id().hash(&mut h);
            msg.cseq().hash(&mut h);
            msg.from_tag().hash(&mut h);
            msg.request_uri_str().hash(&mut h);
            msg.top_via().raw.hash(&mut h);
        }
    }
    hop.addr.hash(&mut h);
    h.finish()
}

fn is_unicast(a: &SocketAddr) -> bool {
    match a.ip() {
        std::net::IpAddr::V4(ip) => {
            !(ip.is_broadcast() || ip.is_multicast() || ip.is_unspecified())
        }
        std::net::IpAddr::V6(ip) => !(ip.is_multicast() || ip.is_unspecified()),
    }
}

/// Relays a response that matches no client transaction to the next Via
/// (RFC 3261 §16.7 step 9, §18.2.2), if its top Via is ours and carries a
/// branch we minted for exactly that next hop (service/branch.rs). Anything
/// else is dropped silently and counted: it answers nothing we sent, and
/// relaying it would let anyone bounce responses off us.
pub fn relay_response_stateless(node: &Node, msg: &Message) {
    let top = msg.top_via();
    let ours = node
        .wire
        .is_local(top.host, top.port, Transport::parse(top.transport));
    let up = Upstream::of_response(msg)
        .filter(|up| ours && node.branch_mac.verify(top.branch().unwrap_or_default(), up));
    let Some(up) = up else {
        node.stats.stray_responses.fetch_add(1, Ordering::Relaxed);
        node.stats.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if !is_unicast(&up.addr) {
        // RFC 4475 bcast: never relay towards broadcast, multicast
        // or unspecified addresses, whatever a Via claims.
        node.stats.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    node.stats.responses_relayed.fetch_add(1, Ordering::Relaxed);
    node.wire.send(
        Destination {
            transport: up.transport,
            addr: up.addr,
            conn: None,
        },
        Bytes::from(strip_top_via(msg)),
    );
}

#[cfg(test)]
mod tests;
