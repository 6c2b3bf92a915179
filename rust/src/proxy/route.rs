//! Routing decisions shared by stateless and stateful forwarding: which Route
//! values name us (loose routing, RFC 3261 §16.4), the next hop (§16.6 step
//! 7), Record-Route values (§16.6 step 4) and loop detection (§16.3 step 4).

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use super::{route_set, ForwardError, Hop};
use crate::service::Node;
use crate::sip::write::push_hostport;
use crate::sip::{HeaderId, Message, Uri};
use crate::transport::{Source, Transport};

/// Where a request goes next and which of its Route values to drop.
#[derive(Debug, Clone)]
pub struct NextHop {
    pub uri: String,
    pub pop_routes: usize,
    /// The WebSocket connection our own Route value names (`flow`): a
    /// WebSocket client cannot be reached at its Contact (RFC 7118 §5).
    pub flow: Option<Hop>,
}

/// The `flow` parameter we put in a Record-Route value facing a WebSocket
/// client: its connection's address, where in-dialog requests go.
const FLOW_PARAM: &str = "flow";

/// Chooses the next hop: the explicit `target`, else the first Route value
/// that does not name us, else the Request-URI (`ruri`).
pub fn next_hop(
    node: &Node,
    msg: &Message,
    target: Option<&str>,
    ruri: &str,
) -> Result<NextHop, ForwardError> {
    let routes = route_set(msg)?;
    let mut pop_routes = 0;
    // Our own Record-Route may have been inserted twice (transport change).
    while pop_routes < routes.len().min(2) {
        let r = &routes[pop_routes].uri;
        if !node.wire.is_local(
            r.host,
            r.port,
            r.param("transport").and_then(Transport::parse),
        ) {
            break;
        }
        pop_routes += 1;
    }
    let flow = match (target, pop_routes) {
        // Only when our Route value is the last one: else the next Route wins.
        (None, n) if n > 0 && n == routes.len() => flow_of(&routes[n - 1].uri),
        _ => None,
    };
    let uri = match (target, routes.get(pop_routes)) {
        (Some(t), _) => t.to_string(),
        (None, Some(r)) => r.uri.raw.to_string(),
        (None, None) => {
            // Most often the request's own Request-URI, read when it was parsed.
            let own = msg.request_uri().filter(|u| u.raw == ruri);
            let u = match own {
                Some(u) => u,
                None => Uri::parse(ruri).map_err(|_| ForwardError::BadTarget(ruri.to_string()))?,
            };
            if flow.is_none() && node.wire.is_local(u.host, u.port, None) {
                return Err(ForwardError::NoRoute);
            }
            ruri.to_string()
        }
    };
    Ok(NextHop {
        uri,
        pop_routes,
        flow,
    })
}

/// The connection named by the `flow` parameter of one of our Route values:
/// a WebSocket client's (our Record-Route), or a phone's TCP/TLS connection
/// named in the Path we gave its registration (`flow-transport`, decision
/// 0052: requests for it reach the worker or host holding the connection).
fn flow_of(route: &Uri<'_>) -> Option<Hop> {
    let addr = route.param(FLOW_PARAM)?.parse::<SocketAddr>().ok()?;
    if let Some(owned) = route.param(FLOW_TRANSPORT_PARAM) {
        let transport = Transport::parse(owned)?;
        return transport.is_stream().then_some(Hop { transport, addr });
    }
    let transport = route.param("transport").and_then(Transport::parse)?;
    transport.is_websocket().then_some(Hop { transport, addr })
}

/// Names the transport of a `flow` that is not the Route's own (a Path to
/// the owner of a TCP connection, reached over UDP, decision 0052).
pub const FLOW_TRANSPORT_PARAM: &str = "flow-transport";

/// Whether `route` (our own) names a phone's connection on this instance:
/// an initial request through it was decided where it was relayed from.
pub fn names_owned_flow(route: &Uri<'_>) -> bool {
    route.param(FLOW_TRANSPORT_PARAM).is_some() && flow_of(route).is_some()
}

/// Whether relaying `msg` creates a dialog we should stay in (RFC 3261 §16.6
/// step 4: INVITE, SUBSCRIBE, REFER outside a dialog).
pub fn creates_dialog(msg: &Message) -> bool {
    msg.to_tag().is_none()
        && matches!(
            msg.method_str(),
            "INVITE" | "SUBSCRIBE" | "REFER" | "NOTIFY"
        )
}

fn rr_uri(
    addr: SocketAddr,
    transport: Transport,
    double: bool,
    sips: bool,
    flow: Option<SocketAddr>,
) -> String {
    let r2 = if double { ";r2=on" } else { "" };
    let mut uri = String::with_capacity(64);
    if sips && transport == Transport::Tls {
        uri.push_str("<sips:");
        push_hostport(&mut uri, addr);
        uri.push_str(";lr");
        uri.push_str(r2);
        uri.push('>');
        return uri;
    }
    let t = match transport {
        Transport::Udp => "",
        Transport::Tcp => ";transport=tcp",
        Transport::Tls => ";transport=tls",
        Transport::Ws => ";transport=ws",
        Transport::Wss => ";transport=wss",
    };
    uri.push_str("<sip:");
    push_hostport(&mut uri, addr);
    uri.push_str(t);
    uri.push_str(";lr");
    uri.push_str(r2);
    if let Some(f) = flow {
        uri.push(';');
        uri.push_str(FLOW_PARAM);
        uri.push('=');
        push_hostport(&mut uri, f);
    }
    uri.push('>');
    uri
}

/// The Record-Route value(s) for a request arriving on `source` and leaving
/// towards `hop`: one URI, or two when the interface or transport changes
/// (the outbound one first, as the callee reads them top-down). For a `sips:`
/// request the TLS side(s) are SIPS URIs (RFC 3261 §16.6 step 4); a side on
/// another transport keeps its `sip:` URI, or it could not be routed back. A
/// side that faces a WebSocket client always gets its own value, naming the
/// client's connection (`flow`), so in-dialog requests find their way back.
pub fn record_route(node: &Node, source: &Source, hop: &Hop, sips: bool) -> String {
    let out = node.wire.advertised(hop.transport, hop.addr);
    let mut inbound = source.local;
    if inbound.ip().is_unspecified() {
        inbound = node.wire.advertised(source.transport, source.addr);
    }
    let flow_out = hop.transport.is_websocket().then_some(hop.addr);
    let flow_in = source.transport.is_websocket().then_some(source.addr);
    if out == inbound && hop.transport == source.transport && flow_out.is_none() {
        rr_uri(out, hop.transport, false, sips, None)
    } else {
        format!(
            "{}, {}",
            rr_uri(out, hop.transport, true, sips, flow_out),
            rr_uri(inbound, source.transport, true, sips, flow_in)
        )
    }
}

/// A hash of the fields that stay the same when a request loops back to us
/// unchanged but differ on a spiral (RFC 3261 §16.6 step 8).
pub fn loop_hash(node: &Node, msg: &Message) -> u64 {
    let mut h = super::request_hasher();
    node.branch_key().hash(&mut h);
    msg.request_uri_str().hash(&mut h);
    msg.from_tag().hash(&mut h);
    msg.to_tag().hash(&mut h);
    msg.call_id().hash(&mut h);
    msg.cseq().hash(&mut h);
    msg.header(HeaderId::ProxyRequire).hash(&mut h);
    h.finish()
}

pub const BRANCH_PREFIX: &str = "z9hG4bKsr";

/// Our branch for a stateful branch: the loop hash, then a unique part.
pub fn branch_for(loop_hash: u64, unique: u64) -> String {
    let mut b = String::with_capacity(BRANCH_PREFIX.len() + 34);
    b.push_str(BRANCH_PREFIX);
    crate::sip::write::push_hex16(&mut b, loop_hash);
    b.push('.');
    crate::sip::write::push_hex(&mut b, unique);
    b
}

/// True when one of the request's Vias is ours with this request's loop hash:
/// it came back unchanged (a loop, 482), not a spiral.
pub fn is_loop(node: &Node, msg: &Message) -> bool {
    // One Via is the sender's own: nothing of ours to come back.
    if msg.via_count() < 2 {
        return false;
    }
    let vias = msg.vias();
    let mut hash = None;
    vias.iter().any(|v| {
        let Some(rest) = v.branch().and_then(|b| b.strip_prefix(BRANCH_PREFIX)) else {
            return false;
        };
        if !node
            .wire
            .is_local(v.host, v.port, Transport::parse(v.transport))
        {
            return false;
        }
        let h = hash.get_or_insert_with(|| format!("{:016x}", loop_hash(node, msg)));
        rest.starts_with(h.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_route_uris_name_their_transport() {
        let a: SocketAddr = "127.0.0.1:5061".parse().unwrap();
        assert_eq!(
            rr_uri(a, Transport::Udp, false, false, None),
            "<sip:127.0.0.1:5061;lr>"
        );
        assert_eq!(
            rr_uri(a, Transport::Tls, true, false, None),
            "<sip:127.0.0.1:5061;transport=tls;lr;r2=on>"
        );
        assert_eq!(
            rr_uri(a, Transport::Tls, true, true, None),
            "<sips:127.0.0.1:5061;lr;r2=on>"
        );
        // Only the TLS side of a sips request becomes a SIPS URI.
        assert_eq!(
            rr_uri(a, Transport::Tcp, false, true, None),
            "<sip:127.0.0.1:5061;transport=tcp;lr>"
        );
    }

    #[test]
    fn flow_parameter_round_trips_for_websocket_only() {
        let client: SocketAddr = "127.0.0.1:54321".parse().unwrap();
        let us: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let rr = rr_uri(us, Transport::Ws, true, false, Some(client));
        assert_eq!(
            rr,
            "<sip:127.0.0.1:8080;transport=ws;lr;r2=on;flow=127.0.0.1:54321>"
        );
        let uri = Uri::parse(rr.trim_matches(['<', '>'])).unwrap();
        assert_eq!(
            flow_of(&uri),
            Some(Hop {
                transport: Transport::Ws,
                addr: client
            })
        );
        let v6: SocketAddr = "[::1]:4000".parse().unwrap();
        let rr = rr_uri(us, Transport::Wss, true, false, Some(v6));
        let uri = Uri::parse(rr.trim_matches(['<', '>'])).unwrap();
        assert_eq!(flow_of(&uri).map(|h| h.addr), Some(v6));
        // A flow on a non-WebSocket value, or a malformed one, names nothing.
        for raw in [
            "sip:127.0.0.1:5060;transport=tcp;lr;flow=127.0.0.1:1",
            "sip:127.0.0.1:5060;lr;flow=127.0.0.1:1",
            "sip:127.0.0.1:8080;transport=ws;lr;flow=nonsense",
            "sip:127.0.0.1:8080;transport=ws;lr",
        ] {
            assert_eq!(flow_of(&Uri::parse(raw).unwrap()), None, "{raw}");
        }
    }

    #[test]
    fn owner_path_names_a_stream_connection_reached_over_udp() {
        // The Path hop a registrar gives a phone registered over TCP (decision 0052).
        let raw = "sip:127.0.0.1:40211;lr;flow=127.0.0.1:53000;flow-transport=tcp";
        let uri = Uri::parse(raw).unwrap();
        let phone: SocketAddr = "127.0.0.1:53000".parse().unwrap();
        assert_eq!(
            flow_of(&uri),
            Some(Hop {
                transport: Transport::Tcp,
                addr: phone
            })
        );
        assert!(names_owned_flow(&uri));
        // Not a stream transport, or no flow: nothing to deliver over.
        for raw in [
            "sip:127.0.0.1:40211;lr;flow=127.0.0.1:53000;flow-transport=udp",
            "sip:127.0.0.1:40211;lr;flow-transport=tcp",
            "sip:127.0.0.1:40211;lr;flow=127.0.0.1:1",
        ] {
            assert!(!names_owned_flow(&Uri::parse(raw).unwrap()), "{raw}");
        }
    }
}
