//! The hook points where a service joins message processing, and the list
//! of registered services. With none registered, each hook point costs one
//! relaxed atomic load per message (`Hooks::is_empty`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;

use super::{Ctx, Node};
use crate::sip::write::HeaderEdit;
use crate::sip::Message;
use crate::transaction::client::Outcome;
use crate::transaction::{BranchId, TxnId};
use crate::transport::{Hop, Source};

/// What a hook decided about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on as if the hook were not there.
    Continue,
    /// The service took the message over (answered, dropped or held it):
    /// nothing after this hook sees it.
    Stop,
}

/// A response on a proxied branch: the server transaction it answers, the
/// branch (client transaction) it came on, and what it means there.
#[derive(Debug, Clone, Copy)]
pub struct ResponseAt {
    pub server: TxnId,
    pub branch: BranchId,
    pub outcome: Outcome,
}

/// A request about to leave on one branch (a stateful relay branch or a
/// stateless forward): the request as received, where it goes, and the
/// header edits applied on the way. A service that must write the branch's
/// bytes itself (topology hiding) sets `writer`.
pub struct BranchPlan<'a> {
    pub request: &'a Message,
    pub hop: Hop,
    pub edits: &'a mut Vec<HeaderEdit>,
    /// Forwarded without a transaction (`forward_stateless`): its
    /// responses are relayed along the Vias it carries.
    pub stateless: bool,
    pub writer: Option<Arc<dyn BranchWriter>>,
}

/// What the proxy decided for one outgoing branch, for a [`BranchWriter`].
pub struct Outgoing<'a> {
    pub hop: Hop,
    /// Our Via value (without `Via: `).
    pub via: &'a str,
    /// Leading Route values of the request that name us.
    pub pop_routes: usize,
    /// The branch's Request-URI, when not the request's own.
    pub request_uri: Option<&'a str>,
    pub edits: &'a [HeaderEdit],
}

/// Writes the bytes of a branch instead of the proxy (`BranchPlan::writer`).
pub trait BranchWriter: Send + Sync {
    fn write(&self, node: &Node, request: &Message, out: &Outgoing<'_>) -> Vec<u8>;
}

/// Where a service sends an in-dialog request it recognises
/// (`Service::route_in_dialog`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InDialog {
    /// Not the service's: routing goes on.
    Pass,
    /// Relay it (statefully; an ACK statelessly) to `hop` with this
    /// Request-URI.
    Route { hop: String, request_uri: String },
    /// Answer it with this status (an ACK is dropped).
    Answer(u16),
}

/// Why a proxied branch ended without a final answer (`on_branch_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchTimeout {
    /// No response at all in time: Timer B/F (64*T1), or the shorter
    /// failover timeout of a destination with alternatives behind it.
    NoResponse,
    /// Timer C (§16.8): a provisional, then no final answer.
    TimerC,
    /// The application's `relay(..., timeout=)` ran out.
    RelayTimeout,
}

impl BranchTimeout {
    pub fn as_str(self) -> &'static str {
        match self {
            BranchTimeout::NoResponse => "no_response",
            BranchTimeout::TimerC => "timer_c",
            BranchTimeout::RelayTimeout => "relay_timeout",
        }
    }
}

/// A service beside the proxy (dialogs, NAT, DNS failover, bans, ...). Every
/// hook has a default that does nothing, so a service implements the ones it
/// needs. Hooks run on the thread that processes the message: keep them
/// short and never block (docs/architecture.md, "Threads").
pub trait Service: Send + Sync {
    /// The owner name of this service's timers and client transactions
    /// ([`crate::transaction::Owner`]); unique among the services.
    fn name(&self) -> &'static str;

    /// Bytes just read from `source`, before they are parsed (every message:
    /// requests, responses, retransmissions, garbage). `Stop` drops them
    /// unparsed and unanswered. Runs on every reading thread (loop, stream,
    /// UDP reader): lock-free or nearly, and short.
    fn on_receive(&self, _node: &Node, _bytes: &[u8], _source: &Source) -> Verdict {
        Verdict::Continue
    }

    /// A new request (not a retransmission, not a CANCEL or ACK a
    /// transaction absorbs), before any routing: loop detection, the native
    /// registrar, in-dialog routing, Python. `Stop` drops it; answer it first
    /// with `node.reply_stateless` if it deserves an answer. Runs on the loop
    /// thread and on the UDP reader threads, so it gets no transaction layer.
    fn on_request(&self, _node: &Node, _msg: &Message, _source: &Source) -> Verdict {
        Verdict::Continue
    }

    /// An in-dialog request (To tag) after loop detection, before the
    /// proxy's own loose routing and the application: a service that keeps
    /// such dialogs (topology hiding) routes or answers it.
    fn route_in_dialog(&self, _node: &Node, _msg: &Message) -> InDialog {
        InDialog::Pass
    }

    /// The proxy is about to build and send a request on one branch: the
    /// hook may change the hop, add header edits, or write it (`writer`).
    fn on_relay(&self, _node: &Node, _plan: &mut BranchPlan<'_>) {}

    /// The last word on a request about to leave (after every `on_relay`):
    /// `plan.hop` is where it goes, `request_uri` its Request-URI there.
    /// `Stop` keeps it from being sent (Kamailio's `drop` in
    /// `onsend_route`): a stateful branch ends as if it had answered 403, a
    /// stateless forward is refused with 403.
    fn on_send(&self, _node: &Node, _plan: &BranchPlan<'_>, _request_uri: &str) -> Verdict {
        Verdict::Continue
    }

    /// Proxied branch `branch` (still in `cx.txns.clients`) is about to end
    /// for want of an answer in time.
    fn on_branch_timeout(&self, _cx: &mut Ctx<'_>, _branch: BranchId, _why: BranchTimeout) {}

    /// The bytes a response on a proxied branch goes upstream as, instead of
    /// the response without our Via (topology hiding). The first service
    /// with an answer wins.
    fn on_upstream(&self, _cx: &Ctx<'_>, _at: ResponseAt, _msg: &Message) -> Option<Vec<u8>> {
        None
    }

    /// Digest credentials of `user` (`user@realm`) from `source` are about to
    /// be checked: `Stop` refuses them unchecked (a locked user).
    fn on_digest_attempt(&self, _node: &Node, _source: &Source, _user: &str) -> Verdict {
        Verdict::Continue
    }

    /// The digest check of `user` from `source` passed or failed.
    fn on_digest_result(&self, _node: &Node, _source: &Source, _user: &str, _accepted: bool) {}

    /// A provisional or final response on a proxied branch, after its client
    /// transaction took it and before the proxy acts on it (passes it
    /// upstream, keeps it for the best-response choice). `Stop`: the service
    /// holds it and hands it back later with `Proxy::deliver_response`.
    fn on_response(&self, _cx: &mut Ctx<'_>, _at: ResponseAt, _msg: &Message) -> Verdict {
        Verdict::Continue
    }

    /// A final answer went upstream through server transaction `txn`: the
    /// best one of a relay round, a relayed 2xx, a synthesised 408/487/503 or
    /// the application's own (`local`). Called as it is sent, unlike
    /// `on_transaction_end`, which comes when the transaction leaves the
    /// tables (up to 32 s later): CDR answer and end times, accounting.
    fn on_final_sent(&self, _cx: &mut Ctx<'_>, _txn: TxnId, _status: u16, _response: &Bytes) {}

    /// Server transaction `txn` ended and left the tables (`final_status`:
    /// the final answer sent, if any).
    fn on_transaction_end(&self, _cx: &mut Ctx<'_>, _txn: TxnId, _final_status: Option<u16>) {}

    /// This service reads the request of a server transaction after its
    /// final answer (from `cx.txns.servers`, e.g. to rewrite a retransmitted
    /// 2xx): while such a service is registered, completed transactions keep
    /// their request instead of taking the held form (decision 0065).
    fn reads_completed_requests(&self) -> bool {
        false
    }

    /// A timer this service set: `TimerKey::Service(Owner { service:
    /// self.name(), id })` in `cx.txns.timers`.
    fn on_timer(&self, _cx: &mut Ctx<'_>, _id: u64) {}

    /// A response to a client transaction this service started
    /// (`client::start` with `Owner { service: self.name(), id }`).
    fn on_client_response(
        &self,
        _cx: &mut Ctx<'_>,
        _id: u64,
        _branch: BranchId,
        _outcome: Outcome,
        _msg: &Message,
    ) {
    }

    /// Such a client transaction ended without a response: `status` is 408
    /// (Timer B/F) or 503 (the transport failed).
    fn on_client_failure(&self, _cx: &mut Ctx<'_>, _id: u64, _branch: BranchId, _status: u16) {}
}

/// The registered services, in registration order.
pub struct Hooks {
    any: AtomicBool,
    /// Some service `reads_completed_requests`.
    completed_readers: AtomicBool,
    list: RwLock<Arc<[Arc<dyn Service>]>>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            any: AtomicBool::new(false),
            completed_readers: AtomicBool::new(false),
            list: RwLock::new(Arc::from(Vec::new())),
        }
    }
}

/// The owner name the proxy core uses for its own client transactions and
/// timers; no registered service may take it.
pub const PROXY: &str = "proxy";

impl Hooks {
    /// Registers a service. Refuses a second service of the same name.
    pub fn add(&self, service: Arc<dyn Service>) -> Result<(), String> {
        let mut list = self.list.write();
        let name = service.name();
        if name == PROXY || list.iter().any(|s| s.name() == name) {
            return Err(format!("a service named {name:?} is already registered"));
        }
        let mut v: Vec<Arc<dyn Service>> = list.iter().cloned().collect();
        if service.reads_completed_requests() {
            self.completed_readers.store(true, Ordering::Release);
        }
        v.push(service);
        *list = Arc::from(v);
        self.any.store(true, Ordering::Release);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    /// The registered services, or None (without taking the lock) when
    /// there are none.
    pub fn all(&self) -> Option<Arc<[Arc<dyn Service>]>> {
        if self.is_empty() {
            return None;
        }
        Some(self.list.read().clone())
    }

    pub fn named(&self, name: &str) -> Option<Arc<dyn Service>> {
        self.all()?.iter().find(|s| s.name() == name).cloned()
    }

    /// Runs `on_receive` of every service until one stops the bytes.
    pub fn on_receive(&self, node: &Node, bytes: &[u8], source: &Source) -> Verdict {
        let Some(all) = self.all() else {
            return Verdict::Continue;
        };
        for s in all.iter() {
            if s.on_receive(node, bytes, source) == Verdict::Stop {
                return Verdict::Stop;
            }
        }
        Verdict::Continue
    }

    /// The first service that routes or answers an in-dialog request.
    pub fn route_in_dialog(&self, node: &Node, msg: &Message) -> InDialog {
        if msg.to_tag().is_none() {
            return InDialog::Pass;
        }
        let Some(all) = self.all() else {
            return InDialog::Pass;
        };
        for s in all.iter() {
            let r = s.route_in_dialog(node, msg);
            if r != InDialog::Pass {
                return r;
            }
        }
        InDialog::Pass
    }

    pub fn on_upstream(&self, cx: &Ctx<'_>, at: ResponseAt, msg: &Message) -> Option<Vec<u8>> {
        self.all()?.iter().find_map(|s| s.on_upstream(cx, at, msg))
    }

    pub fn on_digest_attempt(&self, node: &Node, source: &Source, user: &str) -> Verdict {
        let Some(all) = self.all() else {
            return Verdict::Continue;
        };
        for s in all.iter() {
            if s.on_digest_attempt(node, source, user) == Verdict::Stop {
                return Verdict::Stop;
            }
        }
        Verdict::Continue
    }

    pub fn on_digest_result(&self, node: &Node, source: &Source, user: &str, accepted: bool) {
        if let Some(all) = self.all() {
            for s in all.iter() {
                s.on_digest_result(node, source, user, accepted);
            }
        }
    }

    /// Runs `on_request` of every service until one stops the request.
    pub fn on_request(&self, node: &Node, msg: &Message, source: &Source) -> Verdict {
        let Some(all) = self.all() else {
            return Verdict::Continue;
        };
        for s in all.iter() {
            if s.on_request(node, msg, source) == Verdict::Stop {
                return Verdict::Stop;
            }
        }
        Verdict::Continue
    }

    pub fn on_relay(&self, node: &Node, plan: &mut BranchPlan<'_>) {
        if let Some(all) = self.all() {
            for s in all.iter() {
                s.on_relay(node, plan);
            }
        }
    }

    /// Runs `on_send` of every service until one stops the request.
    pub fn on_send(&self, node: &Node, plan: &BranchPlan<'_>, request_uri: &str) -> Verdict {
        let Some(all) = self.all() else {
            return Verdict::Continue;
        };
        for s in all.iter() {
            if s.on_send(node, plan, request_uri) == Verdict::Stop {
                return Verdict::Stop;
            }
        }
        Verdict::Continue
    }

    pub fn on_branch_timeout(&self, cx: &mut Ctx<'_>, branch: BranchId, why: BranchTimeout) {
        if let Some(all) = self.all() {
            for s in all.iter() {
                s.on_branch_timeout(cx, branch, why);
            }
        }
    }

    pub fn on_response(&self, cx: &mut Ctx<'_>, at: ResponseAt, msg: &Message) -> Verdict {
        let Some(all) = self.all() else {
            return Verdict::Continue;
        };
        for s in all.iter() {
            if s.on_response(cx, at, msg) == Verdict::Stop {
                return Verdict::Stop;
            }
        }
        Verdict::Continue
    }

    pub fn on_final_sent(&self, cx: &mut Ctx<'_>, txn: TxnId, status: u16, response: &Bytes) {
        if let Some(all) = self.all() {
            for s in all.iter() {
                s.on_final_sent(cx, txn, status, response);
            }
        }
    }

    pub fn on_transaction_end(&self, cx: &mut Ctx<'_>, txn: TxnId, final_status: Option<u16>) {
        if let Some(all) = self.all() {
            for s in all.iter() {
                s.on_transaction_end(cx, txn, final_status);
            }
        }
    }

    /// Some registered service reads completed transactions' requests.
    pub fn reads_completed_requests(&self) -> bool {
        self.completed_readers.load(Ordering::Acquire)
    }

    /// A settled transaction may give up its request and take the held form
    /// (decision 0065): no registered service reads completed requests.
    pub fn settled_may_be_held(&self) -> bool {
        !self.reads_completed_requests()
    }
}
