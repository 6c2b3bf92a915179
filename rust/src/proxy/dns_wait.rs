//! Relays that wait for DNS. A relay whose next hops include a name not in
//! the cache is parked (its server transaction stays in Proceeding, the
//! handler stays suspended on its `await`) and continues when the DNS thread
//! has every answer; the loop thread never waits.

use std::sync::Arc;
use std::time::Duration;

use super::route::{next_hop, NextHop};
use super::stateful::{self, RelayOptions, Target};
use super::{ForwardError, Hop};
use crate::core::{Core, Event};
use crate::dns::{Lookup, Resolved, SipTarget};
use crate::sip::write::HeaderEdit;
use crate::sip::{Message, Uri};
use crate::transaction::{Layer, TxnId};

/// The names a relay needed and what DNS said about them.
#[derive(Default)]
pub struct Answers(Vec<(SipTarget, Arc<Resolved>)>);

impl Answers {
    fn push(&mut self, t: SipTarget, r: Arc<Resolved>) {
        self.0.push((t, r));
    }

    /// The destinations of a next hop, in the order to try them.
    pub fn hops(&self, core: &Core, nh: &NextHop) -> Result<Vec<Hop>, ForwardError> {
        if let Some(flow) = nh.flow {
            return Ok(vec![flow]);
        }
        let uri = Uri::parse(&nh.uri).map_err(|_| ForwardError::BadTarget(nh.uri.clone()))?;
        if let Some(literal) = SipTarget::literal_of(&uri) {
            return literal
                .map(|hop| vec![hop])
                .map_err(|_| ForwardError::BadTarget(nh.uri.clone()));
        }
        let target =
            SipTarget::from_uri(&uri).map_err(|_| ForwardError::BadTarget(nh.uri.clone()))?;
        if let Some(hop) = target.literal_hop() {
            return Ok(vec![hop]);
        }
        let hops = match self.0.iter().find(|(t, _)| *t == target) {
            Some((_, r)) => core.dns.order(r),
            None => core.dns.resolve_now(&target).unwrap_or_default(),
        };
        if hops.is_empty() {
            return Err(ForwardError::Unresolvable(target.host));
        }
        Ok(hops)
    }
}

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

pub enum Prepared {
    Ready(Answers),
    Parked,
}

/// Looks up every name among the relay's next hops; parks the relay when an
/// answer is not cached yet.
pub fn prepare(
    core: &Core,
    msg: &Message,
    txn: TxnId,
    opts: &RelayOptions<'_>,
    relay_id: u64,
) -> Prepared {
    let names = names_of(core, msg, opts);
    if names.is_empty() {
        return Prepared::Ready(Answers::default());
    }
    let waiter = core.dns.next_waiter_id();
    let mut answers = Answers::default();
    let mut missing = 0;
    for t in names {
        match core.dns.lookup(&t, Some(waiter)) {
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
        return Prepared::Ready(answers);
    }
    core.dns.parked.lock().insert(
        waiter,
        Parked {
            txn,
            relay_id,
            relay: OwnedRelay::new(opts),
            answers,
            missing,
        },
    );
    Prepared::Parked
}

/// The names (not IP literals) the relay's next hops need.
fn names_of(core: &Core, msg: &Message, opts: &RelayOptions<'_>) -> Vec<SipTarget> {
    let ruri = opts
        .request_uri
        .or(msg.request_uri_str())
        .unwrap_or_default();
    let default_target = [Target::default()];
    let targets: &[Target] = if opts.targets.is_empty() {
        &default_target
    } else {
        &opts.targets
    };
    let mut names: Vec<SipTarget> = Vec::new();
    for target in targets {
        let branch_ruri = target.request_uri.as_deref().unwrap_or(ruri);
        let Ok(nh) = next_hop(core, msg, target.hop.as_deref(), branch_ruri) else {
            continue; // the relay reports it
        };
        if nh.flow.is_some() {
            continue;
        }
        let Ok(uri) = Uri::parse(&nh.uri) else {
            continue;
        };
        if SipTarget::literal_of(&uri).is_some() {
            continue; // an IP address: nothing to look up
        }
        let Ok(t) = SipTarget::from_uri(&uri) else {
            continue;
        };
        if t.ip().is_none() && !names.contains(&t) {
            names.push(t);
        }
    }
    names
}

/// Continues the relays whose names have been resolved (loop thread).
pub fn resume(core: &Core, layer: &mut Layer, events: &mut Vec<Event>) {
    let completed = core.dns.take_completed();
    if completed.is_empty() {
        return;
    }
    let mut ready = Vec::new();
    {
        let mut parked = core.dns.parked.lock();
        for c in completed {
            for w in c.waiters {
                let Some(p) = parked.get_mut(&w) else {
                    continue;
                };
                p.answers.push(c.target.clone(), c.resolved.clone());
                p.missing = p.missing.saturating_sub(1);
                if p.missing == 0 {
                    ready.extend(parked.remove(&w));
                }
            }
        }
    }
    for p in ready {
        let opts = p.relay.options();
        let result = stateful::relay_with(
            core,
            layer,
            p.txn,
            &opts,
            p.relay_id,
            events,
            Some(p.answers),
        );
        if let Err(e) = result {
            // Answered or cancelled meanwhile: the waiting relay() still
            // gets an answer, so nothing stays registered for it.
            tracing::debug!(error = %e, "relay ended while its names were resolved");
            if let Some(f) = stateful::synthesize(core, layer, p.txn, 500) {
                events.push(Event::RelayDone {
                    relay: p.relay_id,
                    result: f,
                });
            }
        }
    }
}
