//! The interface between the services (the proxy core, the registrar, and
//! the dialogs, NAT, DNS, security... modules that join them) and the rest of
//! the process. See docs/architecture.md, "How to add a service".
//!
//! - [`Node`]: what a service may use: the wire, our identity (tags,
//!   branches), the resolver, the counters and the registered hooks.
//! - [`Ctx`]: what a service gets on the loop thread while the transaction
//!   layer is locked: the node, the transaction tables and timers, and the
//!   events for the application.
//! - [`Service`]: the hook points a service implements.
//! - [`Event`]: what the services tell the application.

pub mod branch;
mod event;
mod hooks;
#[cfg(test)]
pub mod testkit;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use event::{Event, Final, Incoming};
pub use hooks::{
    BranchPlan, BranchWriter, Hooks, InDialog, Outgoing, ResponseAt, Service, Verdict, PROXY,
};

use crate::dns::Resolver;
use crate::sip::{write, Message};
use crate::stats::Stats;
use crate::transaction::Layer;
use crate::transport::{Source, Wire};

/// What a service gets on the loop thread, with the transaction layer held:
/// the node, the transactions and timers (`txns`), and the events the
/// application must see (`events`, handed to Python when the call returns).
pub struct Ctx<'a> {
    pub node: &'a Node,
    pub txns: &'a mut Layer,
    pub events: &'a mut Vec<Event>,
}

impl<'a> Ctx<'a> {
    pub fn new(node: &'a Node, txns: &'a mut Layer, events: &'a mut Vec<Event>) -> Ctx<'a> {
        Ctx { node, txns, events }
    }
}

/// This SIP node as a service sees it. Everything here is usable from any
/// thread without the transaction layer's lock.
pub struct Node {
    pub wire: Wire,
    pub stats: Arc<Stats>,
    pub resolver: Resolver,
    /// The services registered beside the proxy (`Hooks::add`).
    pub hooks: Hooks,
    /// The Server header of our own answers.
    pub server_name: String,
    tag_counter: AtomicU64,
    tag_seed: u64,
    /// Prefix of the To tags of stateless answers (`stateless_tag`).
    stateless_prefix: String,
    /// Seals the branches we mint, so stray responses can be checked
    /// (branch.rs); a per-run key unless the core is given a persisted one.
    pub branch_mac: branch::BranchKey,
}

impl Node {
    /// A node around `wire`, sharing its counters.
    pub fn new(wire: Wire, server_name: String) -> Node {
        let stats = wire.shared_stats();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()) << 32;
        Node {
            wire,
            stats,
            resolver: Resolver::default(),
            hooks: Hooks::default(),
            server_name,
            tag_counter: AtomicU64::new(1),
            tag_seed: seed,
            stateless_prefix: format!("{:x}-", mix64(seed ^ 0x5354_4154_454C_4553)),
            branch_mac: branch::BranchKey::random(),
        }
    }

    /// A fresh To tag / identifier: unique per process run, not guessable.
    pub fn new_tag(&self) -> String {
        let n = self.tag_counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "{:x}",
            mix64(self.tag_seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        )
    }

    /// The To tag of a response sent without a transaction
    /// (`reply_stateless`: overload 503, 416, 482, ...): a per-run secret
    /// prefix, so that the ACK for such a non-2xx answer, which is hop-by-hop
    /// and ours to absorb (RFC 3261 §17.2.1), is recognised without keeping
    /// any state.
    pub fn stateless_tag(&self) -> String {
        format!("{}{}", self.stateless_prefix, self.new_tag())
    }

    /// Whether `ack` acknowledges a stateless answer of ours (`stateless_tag`).
    pub fn acks_stateless_reply(&self, ack: &Message) -> bool {
        ack.to_tag()
            .is_some_and(|t| t.starts_with(self.stateless_prefix.as_str()))
    }

    /// A per-run secret mixed into stateless branches and loop hashes.
    pub fn branch_key(&self) -> u64 {
        self.tag_seed
    }

    /// Answers `req` statelessly (an error or overload reply, a CANCEL's 200).
    pub fn reply_stateless(
        &self,
        req: &Message,
        source: Source,
        status: u16,
        reason: Option<&str>,
        extra: &[(String, String)],
    ) {
        let tag = self.stateless_tag();
        let resp = write::build_response(
            req,
            Some(source.addr),
            status,
            reason,
            Some(&tag),
            extra,
            b"",
        );
        self.wire.send_response(req, source, resp.into());
    }
}

/// SplitMix64 finaliser: spreads a counter into an unpredictable-looking tag.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
