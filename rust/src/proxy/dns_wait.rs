//! Relays that wait for DNS. A relay whose next hops include a name not in
//! the cache is parked (its server transaction stays in Proceeding, the
//! handler stays suspended on its `await`) and continues when the DNS thread
//! has every answer; the loop thread never waits.

use std::sync::Arc;
use std::time::Duration;

use super::round::synthesize;
use super::route::NextHop;
use super::stateful::{RelayOptions, Target};
use super::Proxy;
use super::{ForwardError, Hop};
use crate::dns::{Answers, Lookup, Resolved, SipTarget};
use crate::service::{Ctx, Event, Node};
use crate::sip::write::HeaderEdit;
use crate::sip::Uri;
use crate::transaction::TxnId;

/// A relay's options, owned while it waits.
pub struct OwnedRelay {
    targets: Vec<Target>,
    request_uri: Option<String>,
    header_edits: Vec<HeaderEdit>,
    record_route: bool,
    timeout: Option<Duration>,
    serial: Option<Arc<[u16]>>,
}

impl OwnedRelay {
    fn new(o: &RelayOptions<'_>) -> OwnedRelay {
        OwnedRelay {
            targets: o.targets.clone(),
            request_uri: o.request_uri.map(str::to_string),
            header_edits: o.header_edits.to_vec(),
            record_route: o.record_route,
            timeout: o.timeout,
            serial: o.serial.clone(),
        }
    }

    fn options(&self) -> RelayOptions<'_> {
        RelayOptions {
            targets: self.targets.clone(),
            request_uri: self.request_uri.as_deref(),
            header_edits: &self.header_edits,
            record_route: self.record_route,
            timeout: self.timeout,
            serial: self.serial.clone(),
        }
    }
}

pub struct Parked {
    txn: TxnId,
    relay_id: u64,
    relay: OwnedRelay,
    answers: Answers,
    missing: usize,
}

impl Proxy {
    /// Looks up every name among the relay's next hops: the answers, or
    /// None when the relay was parked until the DNS thread has them all.
    pub(crate) fn prepare_dns(
        &mut self,
        node: &Node,
        next_hops: &[Result<NextHop, ForwardError>],
        literals: &[Option<Hop>],
        txn: TxnId,
        opts: &RelayOptions<'_>,
        relay_id: u64,
    ) -> Option<Answers> {
        let names = names_of(next_hops, literals);
        if names.is_empty() {
            return Some(Answers::default());
        }
        let waiter = node.resolver.next_waiter_id();
        let mut answers = Answers::default();
        let mut missing = 0;
        for t in names {
            match node.resolver.lookup(&t, Some(waiter)) {
                Lookup::Ready(r) => answers.push(t, r),
                Lookup::Pending => missing += 1,
                Lookup::Refused => answers.push(
                    t,
                    Arc::new(Resolved {
                        groups: Vec::new(),
                        expires: std::time::Instant::now(),
                        error: Some("too many names being resolved".into()),
                    }),
                ),
            }
        }
        if missing == 0 {
            return Some(answers);
        }
        self.parked.insert(
            waiter,
            Parked {
                txn,
                relay_id,
                relay: OwnedRelay::new(opts),
                answers,
                missing,
            },
        );
        None
    }

    /// Continues the relays whose names have been resolved (loop thread,
    /// woken by the DNS thread).
    pub fn resume_dns_waits(&mut self, cx: &mut Ctx<'_>) {
        let completed = cx.node.resolver.take_completed();
        if completed.is_empty() {
            return;
        }
        let mut ready = Vec::new();
        for c in completed {
            for w in c.waiters {
                let Some(p) = self.parked.get_mut(&w) else {
                    continue;
                };
                p.answers.push(c.target.clone(), c.resolved.clone());
                p.missing = p.missing.saturating_sub(1);
                if p.missing == 0 {
                    ready.extend(self.parked.remove(&w));
                }
            }
        }
        for p in ready {
            let opts = p.relay.options();
            if let Err(e) = self.relay_with(cx, p.txn, &opts, p.relay_id, Some(p.answers)) {
                // Answered or cancelled meanwhile: the waiting relay() still
                // gets an answer, so nothing stays registered for it.
                tracing::debug!(error = %e, "relay ended while its names were resolved");
                if let Some(f) = synthesize(cx.node, cx.txns, p.txn, 500) {
                    cx.events.push(Event::RelayDone {
                        relay: p.relay_id,
                        result: f,
                    });
                }
            }
        }
    }

    /// Relays waiting for DNS.
    pub fn dns_waits(&self) -> usize {
        self.parked.len()
    }
}

/// The names (not IP literals) the relay's next hops need.
/// (`literals`: the next hops already known to be IP addresses.)
fn names_of(
    next_hops: &[Result<NextHop, ForwardError>],
    literals: &[Option<Hop>],
) -> Vec<SipTarget> {
    let mut names: Vec<SipTarget> = Vec::new();
    for (nh, literal) in next_hops.iter().zip(literals) {
        let Ok(nh) = nh else { continue };
        if nh.flow.is_some() || literal.is_some() {
            continue;
        }
        let Ok(uri) = Uri::parse(&nh.uri) else {
            continue; // the relay reports it
        };
        if SipTarget::literal_of(&uri).is_some() {
            continue; // an IP address: nothing to look up
        }
        let Ok(t) = SipTarget::from_uri(&uri) else {
            continue;
        };
        if !names.contains(&t) {
            names.push(t);
        }
    }
    names
}
