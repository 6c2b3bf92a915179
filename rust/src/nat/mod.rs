//! NAT traversal (Kamailio `nathelper`): detecting a UA behind NAT
//! (`detect`), rewriting what it wrote about itself to where it really is
//! (`fixup`: Contact, SDP), and keeping its NAT binding open (`keepalive`).
//! Operator page: docs/nat.md.

pub mod detect;
pub mod fixup;
pub mod keepalive;

pub use detect::{is_private, nat_test, NatTest, DEFAULT_TESTS};
pub use fixup::{fix_contact, fix_sdp};
