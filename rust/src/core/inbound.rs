//! Where each received message, fired timer and transport failure goes: the
//! transaction layer first, then the service that owns what it matched (the
//! proxy, a registered service by `Owner`), the native registrar, or the
//! application.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{Core, Event, Incoming, Stack};
use crate::proxy;
use crate::service::{Ctx, InDialog, Verdict};
use crate::sip::{write, Framing, HeaderId, Message, Method, ParseError, Scheme};
use crate::transaction::{client, on_timer, server, Expiry, TimerKey};
use crate::transport::{Destination, Source, Transport};

impl Core {
    /// Parses received bytes; malformed ones are answered (or dropped) here,
    /// and what a service's `on_receive` stops (a banned source) is dropped
    /// unparsed.
    pub fn parse_inbound(&self, bytes: Bytes, source: Source) -> Option<Message> {
        let node = &self.node;
        if node.hooks.on_receive(node, &bytes, &source) == Verdict::Stop {
            return None;
        }
        // A WebSocket message is one whole SIP message (RFC 7118 §5): no
        // Content-Length needed, as in a datagram.
        let framing = if source.transport.is_stream() && !source.transport.is_websocket() {
            Framing::Stream
        } else {
            Framing::Datagram
        };
        match Message::parse(bytes.clone(), framing, &self.config.limits) {
            Ok(m) if framing == Framing::Stream && m.header(HeaderId::ContentLength).is_none() => {
                // RFC 3261 §18.3; the stream layer closes the connection.
                if m.is_request() && m.method() != Method::Ack {
                    let e = ParseError::bad("Missing Content-Length on a stream");
                    self.reject_unparsable(&bytes, &e, source);
                } else {
                    self.stats.parse_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        peer = %source.addr,
                        start = %first_line(&bytes),
                        "dropping a message without Content-Length on a stream"
                    );
                }
                None
            }
            Ok(m) => Some(self.apply_force_rport(m, source)),
            Err(e) => {
                self.reject_unparsable(&bytes, &e, source);
                None
            }
        }
    }

    fn reject_unparsable(&self, bytes: &[u8], e: &ParseError, source: Source) {
        self.stats.parse_errors.fetch_add(1, Ordering::Relaxed);
        // An operator needs to see who sends what (the bridge rate-limits).
        tracing::warn!(
            peer = %source.addr,
            transport = source.transport.as_str(),
            error = %e,
            start = %first_line(bytes),
            "rejecting malformed message"
        );
        if let Some(resp) = write::error_response_raw(bytes, e.status, e.reason) {
            self.node.wire.send(
                Destination {
                    transport: source.transport,
                    addr: source.addr,
                    conn: source.conn,
                },
                resp.into(),
            );
        }
    }

    /// Runs a parsed message through the transaction layer and the services;
    /// requests that need policy are appended to `out`. `screened`: the
    /// services' `on_request` hooks already saw it.
    pub(super) fn process(
        &self,
        stack: &mut Stack,
        msg: Message,
        source: Source,
        screened: bool,
        out: &mut Vec<Event>,
    ) {
        let node = &self.node;
        let Stack { txns, proxy } = stack;
        let cx = &mut Ctx::new(node, txns, out);
        if !msg.is_request() {
            self.stats.count_response_in(msg.status().unwrap_or(0));
            self.on_response(cx, proxy, msg);
            return;
        }
        self.stats.count_request(msg.method());
        if let Some(conn) = source.conn {
            self.note_alias(&msg, source, conn);
        }
        let screen =
            |m: &Message| screened || node.hooks.on_request(node, m, &source) == Verdict::Continue;
        match msg.method() {
            Method::Ack => {
                if let Some(id) = cx
                    .txns
                    .find_invite_server(&msg)
                    .or_else(|| cx.txns.find_ack_target(&msg))
                {
                    server::on_ack(cx.txns, id);
                    return;
                }
                if node.acks_stateless_reply(&msg) {
                    // ACK for our stateless non-2xx (e.g. the overload 503):
                    // absorbed here, never passed to Python or relayed on.
                    return;
                }
                if !screen(&msg) {
                    return;
                }
                match node.hooks.route_in_dialog(node, &msg) {
                    InDialog::Pass => {}
                    InDialog::Answer(_) => return,
                    InDialog::Route { hop, request_uri } => {
                        let inc = Incoming {
                            msg,
                            source,
                            txn: None,
                        };
                        let fwd = proxy::ForwardRequest {
                            target: Some(&hop),
                            request_uri: Some(&request_uri),
                            header_edits: &[],
                        };
                        let _ = proxy::forward_stateless(node, &inc, &fwd);
                        return;
                    }
                }
                if self.routed_by_us(&msg) {
                    // ACK for a 2xx: no transaction, loose-routed statelessly.
                    let inc = Incoming {
                        msg,
                        source,
                        txn: None,
                    };
                    let _ = proxy::forward_stateless(node, &inc, &Default::default());
                    return;
                }
                self.to_app(msg, source, None, cx.events);
            }
            Method::Cancel if proxy.on_cancel(cx, &msg, source) => {}
            _ => {
                if let Some(id) = cx.txns.find_server(&msg) {
                    // Same branch and sent-by is a retransmission (§17.2.3) only
                    // if it is the same request: some peers reuse branches.
                    if cx.txns.is_retransmission(id, &msg) {
                        server::on_retransmission(&node.wire, cx.txns, id);
                        return;
                    }
                }
                if !screen(&msg) {
                    return;
                }
                if msg.request_uri().is_some_and(|u| u.scheme == Scheme::Other) {
                    node.reply_stateless(&msg, source, 416, None, &[]);
                    return;
                }
                if proxy::route::is_loop(node, &msg) {
                    node.reply_stateless(&msg, source, 482, None, &[]);
                    return;
                }
                match node.hooks.route_in_dialog(node, &msg) {
                    InDialog::Pass => {}
                    InDialog::Answer(status) => {
                        node.reply_stateless(&msg, source, status, None, &[]);
                        return;
                    }
                    InDialog::Route { hop, request_uri } => {
                        let target = proxy::stateful::Target {
                            hop: Some(hop),
                            request_uri: Some(request_uri),
                            routes: Vec::new(),
                        };
                        proxy.route_in_core_to(cx, msg, source, Some(target));
                        return;
                    }
                }
                if self.routed_by_us(&msg) {
                    proxy.route_in_core(cx, msg, source);
                    return;
                }
                if msg.method() == Method::Register && self.registrars.handle(node, &msg, source) {
                    return;
                }
                if self.overloaded(&msg, source) {
                    return;
                }
                let id = server::create(cx.txns, msg.clone(), source);
                if let Some(t) = cx.txns.servers.get_mut(&id) {
                    t.app_holds = true;
                }
                self.admission.hold();
                cx.events.push(Event::Request(Incoming {
                    msg,
                    source,
                    txn: Some(id),
                }));
            }
        }
    }

    /// An in-dialog request whose first Route names us, unless the
    /// application handles in-dialog requests itself: the proxy routes it.
    /// So is an initial request sent along the Path we gave a registration
    /// over a connection we hold (decision 0052): it was routed by the
    /// instance that relayed it; we only deliver it over the connection.
    fn routed_by_us(&self, m: &Message) -> bool {
        let Ok(routes) = proxy::route_set(m) else {
            return false;
        };
        let Some(first) = routes.first() else {
            return false;
        };
        if !self
            .node
            .wire
            .is_local(first.uri.host, first.uri.port, None)
        {
            return false;
        }
        if m.to_tag().is_some() {
            return !self.in_dialog_to_app.load(Ordering::Relaxed);
        }
        routes.len() == 1 && proxy::route::names_owned_flow(&first.uri)
    }

    /// A response: its client transaction takes it, then the transaction's
    /// owner. One that matches none is relayed along its Via (§16.11).
    fn on_response(&self, cx: &mut Ctx<'_>, proxy: &mut proxy::Proxy, msg: Message) {
        let node = cx.node;
        let branch = msg.branch().unwrap_or_default();
        let Some(bid) = cx.txns.find_client(branch, msg.cseq_method()) else {
            // A 2xx retransmission after the transaction ended, or a stateless
            // forward's response: relay along Via without state.
            proxy::relay_response_stateless(node, &msg);
            return;
        };
        let outcome = client::on_response(&node.wire, cx.txns, bid, &msg);
        let Some(owner) = cx.txns.client_owner(bid) else {
            return;
        };
        if owner.service == proxy::SERVICE {
            proxy.on_response(cx, bid, outcome, msg);
        } else if let Some(service) = node.hooks.named(owner.service) {
            service.on_client_response(cx, owner.id, bid, outcome, &msg);
        }
        if outcome == client::Outcome::Success && cx.txns.hold_client(bid) {
            // Delivered: what is left is absorbing (decision 0065).
            if owner.service == proxy::SERVICE {
                proxy.settle(cx, owner.id);
            }
        }
    }

    /// A due timer: the transaction layer's own work, then its owner's.
    pub(super) fn fire(&self, stack: &mut Stack, key: TimerKey, out: &mut Vec<Event>) {
        let node = &self.node;
        let Stack { txns, proxy } = stack;
        let cx = &mut Ctx::new(node, txns, out);
        match on_timer(&node.wire, cx.txns, key) {
            Expiry::Done => {}
            Expiry::ServerEnded {
                id,
                ctx,
                final_status,
            } => {
                proxy.on_server_end(ctx);
                node.hooks.on_transaction_end(cx, id, final_status);
            }
            Expiry::ClientTimeout { id, owner } if owner.service == proxy::SERVICE => {
                proxy.on_client_timeout(cx, id);
            }
            Expiry::TimerC { id, owner } if owner.service == proxy::SERVICE => {
                proxy.on_timer_c(cx, id);
            }
            Expiry::ClientTimeout { id, owner } | Expiry::TimerC { id, owner } => {
                client::fail(cx.txns, id, 408);
                if let Some(service) = node.hooks.named(owner.service) {
                    service.on_client_failure(cx, owner.id, id, 408);
                }
            }
            Expiry::Service(owner) if owner.service == proxy::SERVICE => {
                proxy.on_relay_timer(cx, owner.id);
            }
            Expiry::Service(owner) => {
                if let Some(service) = node.hooks.named(owner.service) {
                    service.on_timer(cx, owner.id);
                }
            }
        }
    }

    /// The stream thread lost what was sent to `addr` over `transport`:
    /// every client transaction still waiting on it fails (§8.1.3.1).
    pub(super) fn on_transport_error(
        &self,
        stack: &mut Stack,
        transport: Transport,
        addr: SocketAddr,
        out: &mut Vec<Event>,
    ) {
        let node = &self.node;
        let Stack { txns, proxy } = stack;
        let cx = &mut Ctx::new(node, txns, out);
        for (id, owner) in client::on_transport_error(&node.wire, cx.txns, transport, addr) {
            if owner.service == proxy::SERVICE {
                proxy.on_transport_failure(cx, id);
            } else {
                client::fail(cx.txns, id, 503);
                if let Some(service) = node.hooks.named(owner.service) {
                    service.on_client_failure(cx, owner.id, id, 503);
                }
            }
        }
    }

    /// RFC 5923: a request whose top Via carries `alias` makes its sent-by
    /// address reach back over the connection it came in on. Only IP
    /// sent-bys are taken (a name would need resolving and, over TLS,
    /// matching against the peer's certificate).
    fn note_alias(&self, msg: &Message, source: Source, conn: u64) {
        let via = msg.top_via();
        if via.param("alias").is_none() {
            return;
        }
        let Ok(ip) = via
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            return;
        };
        let default_port = if source.transport == Transport::Tls {
            5061
        } else {
            5060
        };
        let alias = SocketAddr::new(ip, via.port.unwrap_or(default_port));
        if alias != source.addr {
            self.node.wire.add_connection_alias(conn, alias);
        }
    }

    fn to_app(&self, msg: Message, source: Source, txn: Option<u64>, out: &mut Vec<Event>) {
        if self.overloaded(&msg, source) {
            return;
        }
        self.admission.hold();
        out.push(Event::Request(Incoming { msg, source, txn }));
    }
}

/// The start of a message's first line, printable, for a log line.
fn first_line(bytes: &[u8]) -> String {
    const MAX: usize = 80;
    let end = memchr::memchr2(b'\r', b'\n', bytes).unwrap_or(bytes.len());
    let line = &bytes[..end.min(MAX)];
    line.iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::first_line;

    #[test]
    fn first_line_is_short_and_printable() {
        assert_eq!(
            first_line(b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n"),
            "INVITE sip:a@b SIP/2.0"
        );
        assert_eq!(first_line(b"\x00\xffjunk"), "\\x00\\xffjunk");
        assert_eq!(first_line(&[b'a'; 200]).len(), 80);
    }
}
