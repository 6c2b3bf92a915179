//! NAT keepalives (Kamailio `nathelper` natping): the core pings every
//! registered contact that sits behind NAT (a binding with `received`) so
//! that its NAT mapping stays open and calls to it keep arriving. UDP
//! bindings get an OPTIONS from our listening socket (the one the phone's
//! mapping points at) as a client transaction of this service, so the
//! transaction layer retransmits it and reports an unanswered one; stream
//! bindings get a CRLF CRLF keepalive (RFC 5626 §4.4.1) over their
//! connection. No Python runs per ping.
//!
//! Pings are spread across the interval: every `interval / SLOTS` the
//! store is walked and the bindings of that slice (a hash of the binding)
//! are pinged, so each binding is pinged once per interval. A binding whose pings went
//! unanswered `drop_after` times in a row is removed from its store (0:
//! never).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::registrar::{unix_now, Store};
use crate::service::{Ctx, Service};
use crate::sip::Message;
use crate::transaction::client::{self, Outcome};
use crate::transaction::{BranchId, Owner, TimerKey, FINE};
use crate::transport::{Destination, Transport};

/// The owner name of this service's timer and pings.
pub const SERVICE: &str = "natping";

/// Slices of one interval: the bindings of a round are pinged in this many
/// bursts, `interval / SLOTS` apart.
pub const SLOTS: usize = 10;

/// Bounds: bindings pinged per round and pings waiting for an answer.
pub const MAX_TARGETS: usize = 500_000;
pub const MAX_IN_FLIGHT: usize = 200_000;

/// The timer's owner id (pings use 1..).
const TICK: u64 = 0;

#[derive(Debug, Clone)]
pub struct KeepaliveConfig {
    pub interval: Duration,
    /// Remove a binding after this many unanswered pings in a row (0: never).
    pub drop_after: u32,
    /// The From of the OPTIONS pings.
    pub from_uri: String,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig {
            interval: Duration::from_secs(20),
            drop_after: 0,
            from_uri: "sip:keepalive@sipr.invalid".into(),
        }
    }
}

/// A binding to ping: its AoR and contact (the store's key) and where the
/// phone really is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Target {
    aor: String,
    contact: String,
    transport: Transport,
    addr: SocketAddr,
}

/// The slice of the interval a binding is pinged in: fixed per binding, so
/// each is pinged once per interval, a new one within an interval of
/// registering, and the pings of many are spread evenly.
fn slot_of(t: &Target) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.aor.hash(&mut h);
    t.contact.hash(&mut h);
    (h.finish() % SLOTS as u64) as usize
}

#[derive(Default)]
struct Round {
    slot: usize,
    /// Ping id → its binding.
    in_flight: HashMap<u64, Target>,
    /// Unanswered pings in a row, per binding (only those with one).
    misses: HashMap<(String, String), u32>,
    next_id: u64,
}

pub struct Keepalive {
    store: Arc<dyn Store>,
    config: KeepaliveConfig,
    round: Mutex<Round>,
    /// Bindings behind NAT at the last round.
    pub nated: AtomicU64,
    pub sent: AtomicU64,
    pub answered: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

impl Keepalive {
    pub fn new(store: Arc<dyn Store>, config: KeepaliveConfig) -> Keepalive {
        Keepalive {
            store,
            config,
            round: Mutex::new(Round {
                next_id: 1,
                ..Round::default()
            }),
            nated: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    fn tick(&self) -> Duration {
        (self.config.interval / SLOTS as u32).max(Duration::from_millis(10))
    }

    /// Arms the first slice (call once, after `Hooks::add`).
    pub fn arm(&self, cx: &mut Ctx<'_>) {
        self.schedule(cx);
    }

    fn schedule(&self, cx: &mut Ctx<'_>) {
        let key = TimerKey::Service(Owner {
            service: SERVICE,
            id: TICK,
        });
        cx.txns
            .timers
            .schedule(Instant::now() + self.tick(), FINE, key);
    }

    /// The bindings behind NAT now (those the registrar gave a `received`).
    fn collect(&self) -> Vec<Target> {
        let now = unix_now();
        let mut out = Vec::new();
        let aors = match self.store.aors(now) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("natping: {e}");
                return out;
            }
        };
        for aor in aors {
            let Ok(bindings) = self.store.bindings(&aor, now) else {
                continue;
            };
            for b in bindings {
                let Some((transport, addr)) = b.received.as_deref().and_then(parse_received) else {
                    continue;
                };
                if out.len() >= MAX_TARGETS {
                    return out;
                }
                out.push(Target {
                    aor: aor.clone(),
                    contact: b.contact,
                    transport,
                    addr,
                });
            }
        }
        out
    }

    fn ping(&self, cx: &mut Ctx<'_>, round: &mut Round, target: Target) {
        if target.transport.is_stream() {
            // Streams: a CRLF CRLF over the phone's connection; a broken one
            // is noticed by the transport (and the binding by its expiry).
            let dest = Destination {
                transport: target.transport,
                addr: target.addr,
                conn: None,
            };
            if cx
                .node
                .wire
                .send(dest, bytes::Bytes::from_static(b"\r\n\r\n"))
            {
                self.sent.fetch_add(1, Ordering::Relaxed);
            } else {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        if round.in_flight.len() >= MAX_IN_FLIGHT {
            return;
        }
        let id = round.next_id;
        round.next_id += 1;
        let branch = format!("z9hG4bKnp{}", cx.node.new_tag());
        let local = cx.node.wire.advertised(Transport::Udp, target.addr);
        let request = options(&target, &branch, local, &self.config.from_uri, id, cx);
        let dest = Destination {
            transport: Transport::Udp,
            addr: target.addr,
            conn: None,
        };
        client::start(
            &cx.node.wire,
            cx.txns,
            Owner {
                service: SERVICE,
                id,
            },
            branch,
            "OPTIONS",
            request.into(),
            dest,
        );
        self.sent.fetch_add(1, Ordering::Relaxed);
        round.in_flight.insert(id, target);
    }

    fn missed(&self, round: &mut Round, target: Target) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let key = (target.aor, target.contact);
        let misses = round.misses.entry(key.clone()).or_insert(0);
        *misses += 1;
        if self.config.drop_after > 0 && *misses >= self.config.drop_after {
            round.misses.remove(&key);
            let (aor, contact) = key;
            match self
                .store
                .update(&aor, Vec::new(), std::slice::from_ref(&contact))
            {
                Ok(()) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%aor, %contact, "natping: binding dropped (pings unanswered)");
                }
                Err(e) => tracing::warn!("natping: {e}"),
            }
        }
    }

    /// The bindings pinged now: (AoR, contact, transport, address,
    /// unanswered pings in a row), for `nat.show`.
    pub fn rows(&self) -> Vec<(String, String, Transport, SocketAddr, u32)> {
        let targets = self.collect();
        let round = self.round.lock();
        targets
            .into_iter()
            .map(|t| {
                let misses = round
                    .misses
                    .get(&(t.aor.clone(), t.contact.clone()))
                    .copied()
                    .unwrap_or(0);
                (t.aor, t.contact, t.transport, t.addr, misses)
            })
            .collect()
    }

    /// The counters' names with zeros, before the service runs.
    pub fn idle_stats() -> Vec<(String, u64)> {
        [
            "nat.bindings",
            "nat.pings_sent",
            "nat.pings_answered",
            "nat.pings_failed",
            "nat.dropped",
        ]
        .into_iter()
        .map(|n| (n.to_string(), 0))
        .collect()
    }

    /// `(name, value)` counters for `stats.get`.
    pub fn stats(&self) -> Vec<(String, u64)> {
        vec![
            ("nat.bindings".into(), self.nated.load(Ordering::Relaxed)),
            ("nat.pings_sent".into(), self.sent.load(Ordering::Relaxed)),
            (
                "nat.pings_answered".into(),
                self.answered.load(Ordering::Relaxed),
            ),
            (
                "nat.pings_failed".into(),
                self.failed.load(Ordering::Relaxed),
            ),
            ("nat.dropped".into(), self.dropped.load(Ordering::Relaxed)),
        ]
    }
}

impl Service for Keepalive {
    fn name(&self) -> &'static str {
        SERVICE
    }

    fn on_timer(&self, cx: &mut Ctx<'_>, id: u64) {
        if id != TICK {
            return;
        }
        let all = self.collect();
        self.nated.store(all.len() as u64, Ordering::Relaxed);
        let mut round = self.round.lock();
        let slot = round.slot;
        if slot == 0 {
            // Forget misses of bindings that left.
            let live: HashSet<(&str, &str)> = all
                .iter()
                .map(|t| (t.aor.as_str(), t.contact.as_str()))
                .collect();
            round
                .misses
                .retain(|(a, c), _| live.contains(&(a.as_str(), c.as_str())));
        }
        for t in all.into_iter().filter(|t| slot_of(t) == slot) {
            self.ping(cx, &mut round, t);
        }
        round.slot = (slot + 1) % SLOTS;
        drop(round);
        self.schedule(cx);
    }

    fn on_client_response(
        &self,
        _cx: &mut Ctx<'_>,
        id: u64,
        _branch: BranchId,
        outcome: Outcome,
        _msg: &Message,
    ) {
        // Any answer (even 404 or 405) proves the path through the NAT.
        if matches!(outcome, Outcome::Absorb) {
            return;
        }
        let mut round = self.round.lock();
        if let Some(t) = round.in_flight.remove(&id) {
            self.answered.fetch_add(1, Ordering::Relaxed);
            round.misses.remove(&(t.aor, t.contact));
        }
    }

    fn on_client_failure(&self, _cx: &mut Ctx<'_>, id: u64, _branch: BranchId, _status: u16) {
        let mut round = self.round.lock();
        if let Some(t) = round.in_flight.remove(&id) {
            self.missed(&mut round, t);
        }
    }
}

fn options(
    target: &Target,
    branch: &str,
    local: SocketAddr,
    from_uri: &str,
    id: u64,
    cx: &Ctx<'_>,
) -> String {
    let via = crate::sip::write::hostport(local);
    let tag = cx.node.new_tag();
    let uri = contact_uri(&target.contact);
    format!(
        "OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: <{from_uri}>;tag={tag}\r\nTo: <{uri}>\r\nCall-ID: natping-{id:x}-{tag}\r\nCSeq: 1 OPTIONS\r\nUser-Agent: sipr natping\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The URI of a stored contact (`<sip:...>;params` or a bare URI).
fn contact_uri(contact: &str) -> &str {
    let c = contact.trim();
    match (c.find('<'), c.find('>')) {
        (Some(a), Some(b)) if a < b => &c[a + 1..b],
        _ => c.split(';').next().unwrap_or(c),
    }
}

/// `sip:HOST:PORT;transport=T` as the registrar writes `received`.
pub fn parse_received(received: &str) -> Option<(Transport, SocketAddr)> {
    let rest = received
        .strip_prefix("sip:")
        .or_else(|| received.strip_prefix("sips:"))?;
    let (hostport, params) = rest.split_once(';').unwrap_or((rest, ""));
    let transport = params
        .split(';')
        .find_map(|p| p.strip_prefix("transport="))
        .and_then(Transport::parse)
        .unwrap_or(Transport::Udp);
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, p) = v6.split_once("]:")?;
        (h, p)
    } else {
        hostport.rsplit_once(':')?
    };
    let ip: IpAddr = host.parse().ok()?;
    Some((transport, SocketAddr::new(ip, port.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_parses_as_the_registrar_writes_it() {
        assert_eq!(
            parse_received("sip:203.0.113.7:40123;transport=udp"),
            Some((Transport::Udp, "203.0.113.7:40123".parse().unwrap()))
        );
        assert_eq!(
            parse_received("sip:[2001:db8::1]:5060;transport=tcp"),
            Some((Transport::Tcp, "[2001:db8::1]:5060".parse().unwrap()))
        );
        assert_eq!(parse_received("sip:phone.example.com:5060"), None);
        assert_eq!(parse_received("garbage"), None);
    }

    #[test]
    fn contact_uri_strips_brackets_and_params() {
        assert_eq!(
            contact_uri("<sip:a@192.168.1.10:5060;ob>;expires=60"),
            "sip:a@192.168.1.10:5060;ob"
        );
        assert_eq!(contact_uri("sip:a@h:1;expires=5"), "sip:a@h:1");
    }
}
