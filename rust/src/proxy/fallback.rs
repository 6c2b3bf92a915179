//! A relayed request too large for UDP goes over TCP (RFC 3261 §18.1.1).
//! The client transaction keeps its UDP form: if the connection fails, that
//! is sent instead (`client::retry_over_udp`, from
//! `Proxy::on_transport_error`).

use super::Hop;
use crate::service::Node;
use crate::sip::Uri;
use crate::transport::Transport;

/// RFC 3261 §18.1.1: above this size, with the path MTU unknown, a request
/// must go over a congestion-controlled transport.
pub const UDP_REQUEST_LIMIT: usize = 1300;

/// The TCP hop to use instead of `hop` for a request of `len` bytes, when it
/// is too large for UDP and the next hop URI (`hop_uri`) does not pin the
/// transport.
pub fn congestion_controlled_hop(node: &Node, hop_uri: &str, hop: Hop, len: usize) -> Option<Hop> {
    if hop.transport != Transport::Udp || len <= UDP_REQUEST_LIMIT {
        return None;
    }
    if !node
        .wire
        .local_addrs()
        .iter()
        .any(|(t, _)| *t == Transport::Tcp)
    {
        return None;
    }
    let uri = Uri::parse(hop_uri).ok()?;
    if uri.param("transport").is_some() {
        return None;
    }
    Some(Hop {
        transport: Transport::Tcp,
        addr: hop.addr,
    })
}
