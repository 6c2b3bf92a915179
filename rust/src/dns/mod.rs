//! Where requests go (RFC 3263): SIP URIs become ordered destinations
//! without ever blocking the event loop's thread.
//!
//! IP literals never touch DNS. A name is looked up in the cache; on a miss
//! the lookup runs on the "sipr-dns" thread (`engine`) and the caller waits
//! as a parked relay (`proxy::dns_wait`); every request for a name already
//! being resolved joins the same lookup (the in-flight table), so a thousand
//! requests cost one query. Results are cached for their TTL, failures for
//! their negative TTL. Destinations that failed are remembered a while
//! (`blocklist`) and tried last.

pub mod blocklist;
pub mod engine;
pub mod target;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::Mutex;

pub use blocklist::Blocklist;
pub use engine::DnsConfig;
pub use target::{Resolved, SipTarget};

use crate::transport::Hop;
use engine::Engine;
use target::Draw;

/// How long a destination with alternatives may stay silent by default
/// (OpenSIPS' `fr_timeout`).
pub const DEFAULT_FAILOVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What `lookup` found right now.
pub enum Lookup {
    Ready(Arc<Resolved>),
    /// Being resolved; the waiter is told through `take_completed`.
    Pending,
    /// The in-flight table is full: answer 503 rather than queue more.
    Refused,
}

/// A finished resolution and who was waiting for it.
pub struct Completion {
    pub target: SipTarget,
    pub resolved: Arc<Resolved>,
    pub waiters: Vec<u64>,
}

#[derive(Default)]
pub struct DnsStats {
    pub lookups: AtomicU64,
    pub cache_hits: AtomicU64,
    /// Resolutions started (each may send several queries).
    pub resolutions: AtomicU64,
    /// Lookups that joined a resolution already in flight.
    pub joined: AtomicU64,
    pub negative: AtomicU64,
    pub refused: AtomicU64,
    /// Requests re-sent to the next destination (RFC 3263 §4.3).
    pub failovers: AtomicU64,
}

#[derive(Default)]
struct State {
    cache: HashMap<SipTarget, Arc<Resolved>>,
    inflight: HashMap<SipTarget, Vec<u64>>,
    waiters: usize,
}

pub struct Dns {
    config: DnsConfig,
    engine: OnceLock<Result<Engine, String>>,
    state: Arc<Mutex<State>>,
    done: Arc<Mutex<Vec<Completion>>>,
    waker: Arc<OnceLock<Box<dyn Fn() + Send + Sync>>>,
    draw: Mutex<Draw>,
    next_waiter: AtomicU64,
    failover_timeout_ms: AtomicU64,
    pub blocklist: Blocklist,
    pub stats: Arc<DnsStats>,
}

/// The resolver a node uses (`service::Node::resolver`).
pub type Resolver = Dns;

impl Default for Dns {
    fn default() -> Self {
        Dns::new(DnsConfig::default())
    }
}

impl Dns {
    pub fn new(config: DnsConfig) -> Dns {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |d| d.as_nanos() as u64);
        Dns {
            config,
            engine: OnceLock::new(),
            state: Arc::new(Mutex::new(State::default())),
            done: Arc::new(Mutex::new(Vec::new())),
            waker: Arc::new(OnceLock::new()),
            draw: Mutex::new(Draw::seeded(seed)),
            next_waiter: AtomicU64::new(1),
            failover_timeout_ms: AtomicU64::new(DEFAULT_FAILOVER_TIMEOUT.as_millis() as u64),
            blocklist: Blocklist::default(),
            stats: Arc::new(DnsStats::default()),
        }
    }

    pub fn config(&self) -> &DnsConfig {
        &self.config
    }

    /// Called (from the DNS thread) when completions are waiting: the core
    /// wakes its loop, which calls `take_completed`.
    pub fn set_waker(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.waker.set(f);
    }

    /// How long a destination with alternatives behind it may stay silent
    /// before the next one is tried (0: Timer B/F decide).
    pub fn failover_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.failover_timeout_ms.load(Ordering::Relaxed))
    }

    pub fn set_failover_timeout(&self, d: std::time::Duration) {
        self.failover_timeout_ms.store(
            d.as_millis().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    pub fn next_waiter_id(&self) -> u64 {
        self.next_waiter.fetch_add(1, Ordering::Relaxed)
    }

    fn engine(&self) -> Result<&Engine, String> {
        self.engine
            .get_or_init(|| Engine::start(&self.config))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The cached answer for `target`, or starts resolving it; `waiter` (if
    /// any) is reported in a `Completion` when it is done.
    pub fn lookup(&self, target: &SipTarget, waiter: Option<u64>) -> Lookup {
        self.stats.lookups.fetch_add(1, Ordering::Relaxed);
        let mut st = self.state.lock();
        if let Some(r) = st.cache.get(target) {
            if r.expires > Instant::now() {
                self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Lookup::Ready(r.clone());
            }
        }
        if waiter.is_some() && st.waiters >= self.config.max_waiters {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Lookup::Refused;
        }
        if let Some(w) = st.inflight.get_mut(target) {
            w.extend(waiter);
            st.waiters += usize::from(waiter.is_some());
            self.stats.joined.fetch_add(1, Ordering::Relaxed);
            return Lookup::Pending;
        }
        if st.inflight.len() >= self.config.max_inflight {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Lookup::Refused;
        }
        let engine = match self.engine() {
            Ok(e) => e,
            Err(reason) => {
                drop(st);
                tracing::warn!(%reason, "DNS is not available");
                return Lookup::Ready(Arc::new(Resolved {
                    groups: Vec::new(),
                    expires: Instant::now(),
                    error: Some(reason),
                }));
            }
        };
        st.inflight
            .insert(target.clone(), waiter.into_iter().collect());
        st.waiters += usize::from(waiter.is_some());
        drop(st);
        self.stats.resolutions.fetch_add(1, Ordering::Relaxed);
        let (state, done, waker, stats) = (
            self.state.clone(),
            self.done.clone(),
            self.waker.clone(),
            self.stats.clone(),
        );
        let (config, target) = (self.config.clone(), target.clone());
        engine.spawn(move |resolver| async move {
            let resolved = Arc::new(engine::resolve(&resolver, &target, &config).await);
            if resolved.is_negative() {
                stats.negative.fetch_add(1, Ordering::Relaxed);
                tracing::info!(host = %target.host, error = ?resolved.error, "name not resolved");
            }
            let waiters = {
                let mut st = state.lock();
                let waiters = st.inflight.remove(&target).unwrap_or_default();
                st.waiters -= waiters.len();
                if st.cache.len() >= config.max_entries {
                    let now = Instant::now();
                    st.cache.retain(|_, r| r.expires > now);
                    if st.cache.len() >= config.max_entries {
                        st.cache.clear();
                    }
                }
                st.cache.insert(target.clone(), resolved.clone());
                waiters
            };
            if !waiters.is_empty() {
                done.lock().push(Completion {
                    target,
                    resolved,
                    waiters,
                });
                if let Some(wake) = waker.get() {
                    wake();
                }
            }
        });
        Lookup::Pending
    }

    /// Resolutions finished since the last call (loop thread).
    pub fn take_completed(&self) -> Vec<Completion> {
        let mut done = self.done.lock();
        if done.is_empty() {
            return Vec::new();
        }
        std::mem::take(&mut *done)
    }

    /// The destinations of a resolution in the order to try them for one
    /// request (SRV weights drawn afresh), blocklisted ones last.
    pub fn order(&self, resolved: &Resolved) -> Vec<Hop> {
        let mut hops = {
            let mut d = self.draw.lock();
            resolved.hops(&mut || d.next_u32())
        };
        self.blocklist.demote(&mut hops);
        hops
    }

    /// Destinations of `target` if known now (an IP literal, or cached);
    /// else starts resolving it for the next time and returns None. For
    /// stateless sends, which have nobody to wait.
    pub fn resolve_now(&self, target: &SipTarget) -> Option<Vec<Hop>> {
        if let Some(h) = target.literal_hop() {
            return Some(vec![h]);
        }
        match self.lookup(target, None) {
            Lookup::Ready(r) => Some(self.order(&r)).filter(|h| !h.is_empty()),
            _ => None,
        }
    }

    /// Cached entries: (target, resolution, seconds left), live ones only.
    pub fn entries(&self) -> Vec<(SipTarget, Arc<Resolved>, f64)> {
        let now = Instant::now();
        let mut st = self.state.lock();
        st.cache.retain(|_, r| r.expires > now);
        st.cache
            .iter()
            .map(|(t, r)| (t.clone(), r.clone(), (r.expires - now).as_secs_f64()))
            .collect()
    }

    /// Drops cached entries (all, or those of `host`).
    pub fn flush(&self, host: Option<&str>) -> usize {
        let mut st = self.state.lock();
        let before = st.cache.len();
        match host {
            Some(h) => st.cache.retain(|t, _| !t.host.eq_ignore_ascii_case(h)),
            None => st.cache.clear(),
        }
        before - st.cache.len()
    }

    pub fn inflight(&self) -> (usize, usize) {
        let st = self.state.lock();
        (st.inflight.len(), st.waiters)
    }

    pub fn cache_len(&self) -> usize {
        self.state.lock().cache.len()
    }
}

/// The names a relay needed and what DNS said about them.
#[derive(Default)]
pub struct Answers(Vec<(SipTarget, Arc<Resolved>)>);

/// Why a URI has no destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoHop {
    /// Not a SIP URI, or an unknown transport.
    BadTarget,
    /// No address for this host.
    Unresolvable(String),
}

impl Answers {
    pub fn push(&mut self, t: SipTarget, r: Arc<Resolved>) {
        self.0.push((t, r));
    }

    /// The destinations of `uri`, in the order to try them (an IP literal
    /// directly; a name from these answers, else the cache).
    pub fn hops(&self, resolver: &Dns, uri: &crate::sip::Uri<'_>) -> Result<Vec<Hop>, NoHop> {
        if let Some(literal) = SipTarget::literal_of(uri) {
            return literal.map(|h| vec![h]).map_err(|_| NoHop::BadTarget);
        }
        let target = SipTarget::from_uri(uri).map_err(|_| NoHop::BadTarget)?;
        let hops = match self.0.iter().find(|(t, _)| *t == target) {
            Some((_, r)) => resolver.order(r),
            None => resolver.resolve_now(&target).unwrap_or_default(),
        };
        if hops.is_empty() {
            return Err(NoHop::Unresolvable(target.host));
        }
        Ok(hops)
    }
}
