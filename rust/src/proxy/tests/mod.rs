//! The proxy core with no Python and no dispatcher: a real node on
//! 127.0.0.1, an upstream caller and downstream peers as UDP sockets, and
//! the transaction layer's timers fired one deadline at a time.

mod cancel;
mod hooks;
mod relay;
mod stateless;
mod timeouts;

use std::time::Duration;

use bytes::Bytes;

use super::stateful::{RelayOptions, Target};
use super::{ForwardError, Proxy, SERVICE};
use crate::service::testkit::node;
use crate::service::{Ctx, Event, Final, Node};
use crate::sip::write::build_response;
use crate::sip::Message;
use crate::transaction::client;
use crate::transaction::testkit::pop_next;
use crate::transaction::{on_timer, server, Expiry, Layer, TxnId};
use crate::transport::testkit::{first_line, parse, Peer};

struct Rig {
    node: Node,
    txns: Layer,
    proxy: Proxy,
    events: Vec<Event>,
    upstream: Peer,
}

impl Rig {
    fn new() -> Rig {
        Rig {
            node: node(),
            txns: Layer::default(),
            proxy: Proxy::default(),
            events: Vec::new(),
            upstream: Peer::new(),
        }
    }

    /// Runs `f` as the dispatcher would, with a context and the proxy.
    fn with<R>(&mut self, f: impl FnOnce(&mut Ctx<'_>, &mut Proxy) -> R) -> R {
        let mut cx = Ctx::new(&self.node, &mut self.txns, &mut self.events);
        f(&mut cx, &mut self.proxy)
    }

    /// A request from upstream, held by the application.
    fn incoming(&mut self, method: &str, branch: &str, extra: &str) -> TxnId {
        let req = self.upstream.request(method, branch, extra);
        let source = self.upstream.source(&self.node.wire);
        let id = server::create(&mut self.txns, req, source);
        self.txns.servers.get_mut(&id).unwrap().app_holds = true;
        id
    }

    fn relay_to(&mut self, txn: TxnId, peers: &[&Peer], relay_id: u64) -> Result<(), ForwardError> {
        let targets = peers
            .iter()
            .map(|p| Target {
                hop: Some(format!("sip:{}", p.addr)),
                ..Target::default()
            })
            .collect();
        let opts = RelayOptions {
            targets,
            request_uri: None,
            header_edits: &[],
            record_route: true,
            timeout: None,
            serial: None,
        };
        self.with(|cx, proxy| proxy.relay(cx, txn, &opts, relay_id))
    }

    /// A downstream peer answers `request` (as it received it).
    fn answer(&mut self, request: &str, status: u16, extra: &[(&str, &str)]) {
        let req = parse(request);
        let extra: Vec<(String, String)> = extra
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let tag = (status > 100).then_some("down");
        let resp = build_response(&req, None, status, None, tag, &extra, b"");
        self.response(parse(std::str::from_utf8(&resp).unwrap()));
    }

    /// A response arrives from downstream: as `core/inbound.rs` routes it.
    fn response(&mut self, msg: Message) {
        self.with(|cx, proxy| {
            let branch = msg.branch().unwrap_or_default().to_string();
            let Some(bid) = cx.txns.find_client(&branch, msg.cseq_method()) else {
                super::relay_response_stateless(cx.node, &msg);
                return;
            };
            let outcome = client::on_response(&cx.node.wire, cx.txns, bid, &msg);
            assert_eq!(cx.txns.clients[&bid].owner.service, SERVICE);
            proxy.on_response(cx, bid, outcome, msg);
        });
    }

    /// Fires the timers of the next deadline as `core/inbound.rs` does.
    fn fire_next(&mut self) -> usize {
        let keys = pop_next(&mut self.txns);
        for key in &keys {
            self.with(|cx, proxy| match on_timer(&cx.node.wire, cx.txns, *key) {
                Expiry::Done => {}
                Expiry::ServerEnded { ctx, .. } => proxy.on_server_end(ctx),
                Expiry::ClientTimeout { id, .. } => proxy.on_client_timeout(cx, id),
                Expiry::TimerC { id, .. } => proxy.on_timer_c(cx, id),
                Expiry::Service(owner) => proxy.on_relay_timer(cx, owner.id),
            });
        }
        keys.len()
    }

    fn finish(&mut self, txn: TxnId) {
        self.with(|cx, proxy| proxy.finish(cx, txn));
    }

    /// The results of `relay()` rounds so far, as (relay id, status).
    fn relay_results(&mut self) -> Vec<(u64, u16)> {
        let mut out = Vec::new();
        self.events.retain(|e| match e {
            Event::RelayDone { relay, result } => {
                out.push((*relay, result.status));
                false
            }
            _ => true,
        });
        out
    }

    fn final_of(&mut self, relay_id: u64) -> Option<Final> {
        self.events.iter().find_map(|e| match e {
            Event::RelayDone { relay, result } if *relay == relay_id => Some(result.clone()),
            _ => None,
        })
    }
}

/// First lines of what a peer received.
fn lines(peer: &Peer) -> Vec<String> {
    peer.take()
        .iter()
        .map(|m| first_line(m).to_string())
        .collect()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
