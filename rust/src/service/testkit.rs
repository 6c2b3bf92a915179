//! For the services' unit tests: a `Node` on a real 127.0.0.1 UDP socket.

use super::Node;
use crate::transport::testkit::udp_wire;

pub fn node() -> Node {
    Node::new(udp_wire(), "sipr-test".to_string())
}
