//! Security at the edge (Kamailio `pike`, `htable` bans, fail2ban-style
//! authentication bans, `ratelimit`/`pipelimit`, `permissions`, `sanity`,
//! `secfilter`). See docs/security.md and decisions 0033-0034.
//!
//! [`Security`] holds the state; [`SecurityService`] joins message
//! processing through the service hooks (docs/architecture.md):
//! `on_receive` before a message is parsed (bans and flood counting: a
//! banned source costs no parse, no answer, no Python), `on_request` right
//! after a new request is parsed (blocklist, sanity checklist, per-method
//! limits), and `on_digest_attempt` / `on_digest_result` around every digest
//! check (authentication-failure bans).

pub mod acl;
pub mod auth;
pub mod bans;
pub mod buckets;
pub mod events;
pub mod flood;
pub mod net;
pub mod screen;
mod service;
mod stats;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use self::acl::AddressGroups;
use self::auth::{AuthBanConfig, AuthFailures};
use self::bans::{BanReason, BanTable};
use self::buckets::MethodLimits;
use self::events::{Event, Events};
use self::flood::{FloodConfig, FloodTable};
use self::net::{Cidr, SourceKey};
use self::screen::{Blocklist, Check};
pub use self::service::SecurityService;
pub use self::stats::SecurityStats;

/// Bans kept at most; beyond, the one closest to its end is dropped.
pub const MAX_BANS: usize = 100_000;

/// What the post-parse checks apply.
#[derive(Debug, Clone, Default)]
pub struct ScreenConfig {
    /// Empty: no sanity checks (the default; `Security(sanity=...)`).
    pub sanity: Vec<Check>,
    pub blocklist: Blocklist,
    /// How long a blocklisted source stays banned (`BlockAction::Ban`).
    pub blocklist_ban: Duration,
}

pub struct Security {
    pub bans: BanTable,
    flood: Mutex<FloodTable>,
    /// Mirrors `FloodConfig::enabled`, read per packet without the lock.
    flood_on: AtomicBool,
    /// Exempt from flood counting and from every ban (default: loopback).
    trusted: RwLock<Arc<Vec<Cidr>>>,
    auth: Mutex<AuthFailures>,
    pub acl: AddressGroups,
    pub methods: MethodLimits,
    screen: RwLock<Arc<ScreenConfig>>,
    pub events: Events,
    pub stats: SecurityStats,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            bans: BanTable::new(MAX_BANS),
            flood: Mutex::new(FloodTable::new(FloodConfig::default())),
            flood_on: AtomicBool::new(FloodConfig::default().enabled),
            trusted: RwLock::new(Arc::new(Cidr::loopback())),
            auth: Mutex::new(AuthFailures::new(AuthBanConfig::default())),
            acl: AddressGroups::default(),
            methods: MethodLimits::default(),
            screen: RwLock::new(Arc::new(ScreenConfig {
                blocklist_ban: Duration::from_secs(3600),
                ..ScreenConfig::default()
            })),
            events: Events::default(),
            stats: SecurityStats::default(),
        }
    }
}

/// A datagram or stream message that is not a response: requests, and
/// garbage, which floods are made of too. (Keep-alive CRLFs are not counted.)
fn counts_as_request(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|&c| c != b'\r' && c != b'\n')
        .unwrap_or(bytes.len());
    start < bytes.len() && !bytes[start..].starts_with(b"SIP/")
}

impl Security {
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.read().iter().any(|n| n.contains(ip))
    }

    fn key_is_trusted(&self, key: SourceKey) -> bool {
        self.trusted.read().iter().any(|n| key.within(n))
    }

    pub fn set_trusted(&self, nets: Vec<Cidr>) {
        *self.trusted.write() = Arc::new(nets);
    }

    pub fn trusted(&self) -> Arc<Vec<Cidr>> {
        self.trusted.read().clone()
    }

    pub fn set_flood(&self, config: FloodConfig) {
        self.flood_on.store(config.enabled, Ordering::Relaxed);
        self.flood.lock().set_config(config);
    }

    pub fn flood_config(&self) -> FloodConfig {
        self.flood.lock().config.clone()
    }

    pub fn set_auth_bans(&self, config: AuthBanConfig) {
        self.auth.lock().config = config;
    }

    pub fn auth_bans_config(&self) -> AuthBanConfig {
        self.auth.lock().config.clone()
    }

    pub fn set_screen(&self, config: ScreenConfig) {
        *self.screen.write() = Arc::new(config);
    }

    pub fn screen_config(&self) -> Arc<ScreenConfig> {
        self.screen.read().clone()
    }

    /// Before parsing: false drops the message silently. Banned sources are
    /// dropped here; requests from untrusted sources are counted, and the
    /// one that takes a source over the flood threshold bans it.
    pub fn admit(&self, ip: IpAddr, bytes: &[u8]) -> bool {
        let key = SourceKey::of(ip);
        if !self.bans.is_empty() && self.bans.hit(key, Instant::now(), &self.events) {
            self.stats.banned_drops.inc();
            return false;
        }
        if !self.flood_enabled() || !counts_as_request(bytes) || self.is_trusted(ip) {
            return true;
        }
        let now = Instant::now();
        let (exceeded, ban, window) = {
            let mut flood = self.flood.lock();
            if !flood.config.enabled {
                return true;
            }
            (flood.count(key, now), flood.config.ban, flood.config.window)
        };
        let Some(over) = exceeded else {
            return true;
        };
        let detail = format!(
            "{:.0} requests in {:.1} s",
            over.requests,
            window.as_secs_f64()
        );
        if self
            .bans
            .add(key, BanReason::Flood, ban, detail, now, &self.events)
        {
            self.stats.bans_flood.inc();
        }
        self.stats.banned_drops.inc();
        false
    }

    fn flood_enabled(&self) -> bool {
        self.flood_on.load(Ordering::Relaxed)
    }

    /// Bans a source (refused for a trusted one). True if newly banned.
    pub fn ban(
        &self,
        key: SourceKey,
        reason: BanReason,
        seconds: Duration,
        detail: String,
    ) -> Result<bool, String> {
        if self.key_is_trusted(key) {
            return Err(format!("{key} is in a trusted network: not banned"));
        }
        let added = self
            .bans
            .add(key, reason, seconds, detail, Instant::now(), &self.events);
        if added {
            match reason {
                BanReason::Flood => self.stats.bans_flood.inc(),
                BanReason::Auth => self.stats.bans_auth.inc(),
                BanReason::Scanner => self.stats.bans_scanner.inc(),
                BanReason::Manual => self.stats.bans_manual.inc(),
            }
        }
        Ok(added)
    }

    /// Whether `user` (`user@realm`) is locked against this source: the
    /// digest code answers 403 without checking the password.
    pub fn user_locked(&self, ip: IpAddr, user: &str) -> bool {
        if self.is_trusted(ip) {
            return false;
        }
        let locked = self
            .auth
            .lock()
            .locked(user, SourceKey::of(ip), Instant::now());
        if locked {
            self.stats.auth_locked_refusals.inc();
        }
        locked
    }

    /// A digest check failed (wrong password, unknown user, replay): counts
    /// towards banning the source and locking the user.
    pub fn digest_failed(&self, ip: IpAddr, user: &str) {
        if self.is_trusted(ip) {
            return;
        }
        self.stats.auth_failures.inc();
        let key = SourceKey::of(ip);
        let now = Instant::now();
        let (c, config) = {
            let mut auth = self.auth.lock();
            (auth.failed(user, key, now), auth.config.clone())
        };
        if c.ban_source {
            let detail = format!("{} failed authentications", c.source_count);
            let _ = self.ban(key, BanReason::Auth, config.source_ban, detail);
        }
        if c.lock_user {
            self.stats.user_locks.inc();
            self.events.push(Event {
                kind: "locked",
                subject: user.to_string(),
                reason: "auth".into(),
                seconds: config.user_lock.as_secs(),
                detail: format!(
                    "{} failed authentications from several sources",
                    c.user_count
                ),
            });
        }
    }

    /// A digest check passed: the source stays exempt from this user's locks.
    pub fn digest_succeeded(&self, ip: IpAddr, user: &str) {
        self.auth
            .lock()
            .succeeded(user, SourceKey::of(ip), Instant::now());
    }

    pub fn unlock_user(&self, user: &str) -> bool {
        self.auth.lock().unlock(user)
    }

    pub fn user_locks(&self) -> Vec<(String, Duration)> {
        self.auth.lock().locks(Instant::now())
    }

    /// Housekeeping, about once a second: expired bans and locks are lifted
    /// (and logged), idle counters forgotten.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.bans.sweep(now, &self.events);
        self.flood.lock().sweep(now);
        for user in self.auth.lock().sweep(now) {
            self.events.push(Event {
                kind: "unlocked",
                subject: user,
                reason: "expired".into(),
                seconds: 0,
                detail: String::new(),
            });
        }
    }

    /// `stats.get` entries (`security.*`).
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let (tracked, evicted) = {
            let f = self.flood.lock();
            (f.tracked() as u64, f.evicted)
        };
        let (locked, known) = self.auth.lock().sizes();
        let mut out = self.stats.snapshot();
        out.push(("security.bans_active".into(), self.bans.len() as u64));
        out.push(("security.flood.sources".into(), tracked));
        out.push(("security.flood.evicted".into(), evicted));
        out.push(("security.auth.users_locked".into(), locked as u64));
        out.push(("security.auth.known_sources".into(), known as u64));
        out.push(("security.acl.rules".into(), self.acl.rules().len() as u64));
        out
    }
}
