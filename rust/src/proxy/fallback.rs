//! Transport fallbacks of relayed requests: a request too large for UDP goes
//! over TCP (RFC 3261 §18.1.1), and a stream that fails under a request
//! either hands it back to UDP (when TCP was only chosen for size) or fails
//! its branch as if it had answered 503 (§16.9).

use std::collections::HashSet;
use std::net::SocketAddr;

use super::Hop;
use crate::core::{Core, Event};
use crate::sip::Uri;
use crate::transaction::client::{self, ClientState};
use crate::transaction::Layer;
use crate::transport::Transport;

/// RFC 3261 §18.1.1: above this size, with the path MTU unknown, a request
/// must go over a congestion-controlled transport.
pub const UDP_REQUEST_LIMIT: usize = 1300;

/// The TCP hop to use instead of `hop` for a request of `len` bytes, when it
/// is too large for UDP and the next hop URI (`hop_uri`) does not pin the
/// transport.
pub fn congestion_controlled_hop(core: &Core, hop_uri: &str, hop: Hop, len: usize) -> Option<Hop> {
    if hop.transport != Transport::Udp || len <= UDP_REQUEST_LIMIT || !core.has_streams() {
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

/// Sending to `peers` over a stream failed (connect, write, or a full queue).
/// Branches towards them that saw no response yet either retry over UDP or
/// end as if answered 503; those with a response keep waiting (it proves the
/// request arrived) under their own timers.
pub fn on_stream_failures(
    core: &Core,
    layer: &mut Layer,
    peers: &HashSet<SocketAddr>,
    events: &mut Vec<Event>,
) {
    let failed: Vec<(u64, bool)> = layer
        .clients
        .values()
        .filter(|c| {
            c.dest.transport.is_stream()
                && peers.contains(&c.dest.addr)
                && matches!(c.state, ClientState::Calling | ClientState::Trying)
        })
        .map(|c| (c.id, c.method_str() == "CANCEL"))
        .collect();
    for (id, is_cancel) in failed {
        if client::retry_over_udp(core, layer, id) {
            continue;
        }
        if is_cancel {
            // The INVITE branch has its own timer for the final it awaits.
            layer.remove_client(id);
            continue;
        }
        super::stateful::fail_branch(core, layer, id, 503, events);
    }
}
