//! `sipr._core.Security` (the running core's bans, flood detection,
//! authentication bans, address groups, blocklist, method limits and
//! topology hiding, driven by `sipr.security`) and `sipr._core.TokenBuckets`
//! (the memory backend of `sipr.limits`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::shared::Shared;
use crate::security::acl::{parse_rules, Rule};
use crate::security::auth::AuthBanConfig;
use crate::security::bans::BanReason;
use crate::security::buckets::{per_second, Buckets, MAX_KEY_LEN};
use crate::security::flood::FloodConfig;
use crate::security::net::{Cidr, SourceKey};
use crate::security::screen::{BlockAction, Blocklist, Check};
use crate::security::ScreenConfig;
use crate::security::Security;
use crate::topology::{TopologyConfig, TopologyService};
use crate::transport::{Source, Transport};

/// (kind, subject, reason, seconds, detail) of a security event.
type EventRow = (String, String, String, u64, String);

fn value_error(e: String) -> PyErr {
    PyValueError::new_err(e)
}

fn duration(seconds: f64, name: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            PyValueError::new_err(format!("{name} must be a positive number of seconds"))
        })
}

fn ip(host: &str) -> PyResult<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| PyValueError::new_err(format!("{host:?} is not an IP address")))
}

fn transport(name: &str) -> PyResult<Transport> {
    Transport::parse(name)
        .ok_or_else(|| PyValueError::new_err(format!("{name:?} is not udp, tcp, tls, ws or wss")))
}

/// Whether `source` matches a rule of address group `group`.
pub fn source_in(security: &Security, source: &Source, group: &str) -> bool {
    security
        .acl
        .find(
            group,
            source.addr.ip(),
            source.addr.port(),
            source.transport,
        )
        .is_some()
}

#[pyclass(module = "sipr._core", name = "Security", frozen)]
pub struct PySecurity {
    shared: Arc<Shared>,
}

impl PySecurity {
    pub fn new(shared: Arc<Shared>) -> PySecurity {
        PySecurity { shared }
    }

    fn security(&self) -> &Security {
        &self.shared.security
    }
}

#[pymethods]
impl PySecurity {
    #[pyo3(signature = (*, enabled, limit, window, ban, max_sources, trusted))]
    fn configure_flood(
        &self,
        enabled: bool,
        limit: u32,
        window: f64,
        ban: f64,
        max_sources: usize,
        trusted: Vec<String>,
    ) -> PyResult<()> {
        let trusted = trusted
            .iter()
            .map(|t| t.parse::<Cidr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(value_error)?;
        if limit == 0 {
            return Err(PyValueError::new_err("the flood limit must be at least 1"));
        }
        let config = FloodConfig {
            enabled,
            limit,
            window: duration(window, "window")?,
            ban: duration(ban, "ban")?,
            max_sources: max_sources.max(1),
        };
        let security = self.security();
        security.set_trusted(trusted);
        security.set_flood(config);
        Ok(())
    }

    #[pyo3(signature = (*, enabled, source_failures, window, source_ban, user_failures, user_lock, known_for))]
    #[allow(clippy::too_many_arguments)]
    fn configure_auth_bans(
        &self,
        enabled: bool,
        source_failures: u32,
        window: f64,
        source_ban: f64,
        user_failures: u32,
        user_lock: f64,
        known_for: f64,
    ) -> PyResult<()> {
        if source_failures == 0 || user_failures == 0 {
            return Err(PyValueError::new_err(
                "failure thresholds must be at least 1",
            ));
        }
        self.security().set_auth_bans(AuthBanConfig {
            enabled,
            source_failures,
            window: duration(window, "window")?,
            source_ban: duration(source_ban, "source_ban")?,
            user_failures,
            user_lock: duration(user_lock, "user_lock")?,
            known_for: duration(known_for, "known_for")?,
            ..AuthBanConfig::default()
        });
        Ok(())
    }

    #[pyo3(signature = (*, sanity, user_agents, from_users, action, ban))]
    fn configure_screen(
        &self,
        sanity: Vec<String>,
        user_agents: Vec<String>,
        from_users: Vec<String>,
        action: &str,
        ban: f64,
    ) -> PyResult<()> {
        let sanity = sanity
            .iter()
            .map(|c| Check::parse(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(value_error)?;
        self.security().set_screen(ScreenConfig {
            sanity,
            blocklist: Blocklist {
                user_agents: user_agents.iter().map(|u| u.to_ascii_lowercase()).collect(),
                from_users,
                action: BlockAction::parse(action).map_err(value_error)?,
            },
            blocklist_ban: duration(ban, "ban")?,
        });
        Ok(())
    }

    /// The blocklist entry matching this User-Agent / From user, if any.
    #[pyo3(signature = (user_agent, from_user))]
    fn blocklist_check(&self, user_agent: Option<&str>, from_user: Option<&str>) -> Option<String> {
        let screen = self.security().screen_config();
        screen.blocklist.check(user_agent, from_user)
    }

    /// Limits `method` to `rate` per `per` seconds (None: no limit).
    #[pyo3(signature = (method, rate=None, per=1.0, burst=None))]
    fn set_method_limit(
        &self,
        method: &str,
        rate: Option<f64>,
        per: f64,
        burst: Option<f64>,
    ) -> PyResult<()> {
        if method.is_empty() || !method.bytes().all(crate::sip::scan::is_token) {
            return Err(PyValueError::new_err(format!(
                "{method:?} is not a method name"
            )));
        }
        let limit = rate
            .map(|r| per_second(r, per, burst))
            .transpose()
            .map_err(value_error)?;
        self.security().methods.set(method, limit);
        Ok(())
    }

    fn clear_method_limits(&self) {
        self.security().methods.clear();
    }

    /// [(method, rate per second, burst, tokens now)].
    fn method_limits(&self) -> Vec<(String, f64, f64, f64)> {
        self.security().methods.list(Instant::now())
    }

    /// The live bans, soonest to end first.
    fn ban_list(&self, py: Python<'_>) -> PyResult<Vec<Py<PyDict>>> {
        let rows = self.security().bans.list(Instant::now());
        rows.into_iter()
            .map(|r| {
                let d = PyDict::new(py);
                d.set_item("source", r.source.to_string())?;
                d.set_item("reason", r.reason.as_str())?;
                let since = r
                    .since
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                d.set_item("since", since)?;
                d.set_item("expires_in", r.remaining.as_secs_f64())?;
                d.set_item("dropped", r.dropped)?;
                d.set_item("detail", r.detail)?;
                Ok(d.unbind())
            })
            .collect()
    }

    /// Bans `source` (an address, or an IPv6 /64) for `seconds`. False when
    /// it was banned already (the ban is extended). ValueError for a trusted
    /// source or a bad address.
    #[pyo3(signature = (source, seconds, detail=String::new()))]
    fn ban_add(&self, source: &str, seconds: f64, detail: String) -> PyResult<bool> {
        let key = SourceKey::parse(source).map_err(value_error)?;
        let secs = duration(seconds, "seconds")?;
        self.security()
            .ban(key, BanReason::Manual, secs, detail)
            .map_err(value_error)
    }

    /// Lifts the ban of `source`; False when it was not banned.
    fn ban_remove(&self, source: &str) -> PyResult<bool> {
        let key = SourceKey::parse(source).map_err(value_error)?;
        let removed = self.security().bans.remove(key).is_some();
        if removed {
            self.security().events.push(crate::security::events::Event {
                kind: "unbanned",
                subject: key.to_string(),
                reason: "manual".into(),
                seconds: 0,
                detail: String::new(),
            });
        }
        Ok(removed)
    }

    /// [(user, seconds left)] of locked users.
    fn user_locks(&self) -> Vec<(String, f64)> {
        self.security()
            .user_locks()
            .into_iter()
            .map(|(u, d)| (u, d.as_secs_f64()))
            .collect()
    }

    fn unlock_user(&self, user: &str) -> bool {
        self.security().unlock_user(user)
    }

    /// Whether `user` (`user@realm`) is locked against `host`.
    fn user_locked(&self, host: &str, user: &str) -> PyResult<bool> {
        Ok(self.security().user_locked(ip(host)?, user))
    }

    fn digest_failed(&self, host: &str, user: &str) -> PyResult<()> {
        self.security().digest_failed(ip(host)?, user);
        Ok(())
    }

    fn digest_succeeded(&self, host: &str, user: &str) -> PyResult<()> {
        self.security().digest_succeeded(ip(host)?, user);
        Ok(())
    }

    /// Replaces the address rules with those of `text` (the rules file
    /// format) and `rows` of (group, network, port, transport, tag). All or
    /// nothing: an error leaves the running rules in place.
    #[pyo3(signature = (text="", rows=Vec::new()))]
    fn acl_load(
        &self,
        text: &str,
        rows: Vec<(String, String, String, String, String)>,
    ) -> PyResult<usize> {
        let mut rules = parse_rules(text).map_err(value_error)?;
        for (i, (g, n, p, t, tag)) in rows.iter().enumerate() {
            rules.push(
                Rule::new(g, n, p, t, tag)
                    .map_err(|e| value_error(format!("row {}: {e}", i + 1)))?,
            );
        }
        let count = rules.len();
        self.security().acl.replace(rules);
        Ok(count)
    }

    /// [(group, network, port or "*", transport or "*", tag)].
    fn acl_rules(&self) -> Vec<(String, String, String, String, String)> {
        self.security()
            .acl
            .rules()
            .iter()
            .map(|r| {
                (
                    r.group.clone(),
                    r.net.to_string(),
                    r.port.map_or_else(|| "*".to_string(), |p| p.to_string()),
                    r.transport
                        .map_or_else(|| "*".to_string(), |t| t.as_str().to_ascii_lowercase()),
                    r.tag.clone(),
                )
            })
            .collect()
    }

    /// The tag of the first rule of `group` matching the address, or None
    /// (Kamailio `allow_address`). The tag may be "".
    #[pyo3(signature = (group, host, port=5060, transport="udp"))]
    fn allow_address(
        &self,
        group: &str,
        host: &str,
        port: u16,
        transport: &str,
    ) -> PyResult<Option<String>> {
        let t = self::transport(transport)?;
        Ok(self
            .security()
            .acl
            .find(group, ip(host)?, port, t)
            .map(|r| r.tag))
    }

    /// The groups whose rules match the address.
    #[pyo3(signature = (host, port=5060, transport="udp"))]
    fn groups_of(&self, host: &str, port: u16, transport: &str) -> PyResult<Vec<String>> {
        let t = self::transport(transport)?;
        Ok(self.security().acl.groups_of(ip(host)?, port, t))
    }

    /// Security events since the last call, for the log: ([(kind, subject,
    /// reason, seconds, detail)], events lost to the bound).
    fn take_events(&self) -> (Vec<EventRow>, u64) {
        let (events, lost) = self.security().events.take();
        (
            events
                .into_iter()
                .map(|e| (e.kind.to_string(), e.subject, e.reason, e.seconds, e.detail))
                .collect(),
            lost,
        )
    }

    /// Lifts expired bans and locks, forgets idle counters.
    fn sweep(&self) {
        self.security().sweep();
    }

    fn trusted(&self) -> Vec<String> {
        self.security()
            .trusted()
            .iter()
            .map(|c| c.to_string())
            .collect()
    }

    /// Turns topology hiding on for relays from now on.
    #[pyo3(signature = (*, max_dialogs, dialog_ttl, early_ttl, linger))]
    fn topology_enable(
        &self,
        max_dialogs: usize,
        dialog_ttl: f64,
        early_ttl: f64,
        linger: f64,
    ) -> PyResult<()> {
        for (name, v) in [
            ("dialog_ttl", dialog_ttl),
            ("early_ttl", early_ttl),
            ("linger", linger),
        ] {
            duration(v, name)?;
        }
        self.shared.topology.enable(TopologyConfig {
            max_dialogs: max_dialogs.max(1),
            dialog_ttl,
            early_ttl,
            linger,
        });
        // Joins the proxy's hook points once (a second call finds it there).
        let service = TopologyService(self.shared.topology.clone());
        let _ = self.shared.core.node.hooks.add(Arc::new(service));
        Ok(())
    }

    /// Hidden-dialog records changed since the last call, oldest first:
    /// [("upsert", record) | ("delete", {"id": ID})].
    fn topology_changes<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Vec<(&'static str, Bound<'py, PyDict>)>> {
        self.shared
            .topology
            .take_changes()
            .iter()
            .map(|c| super::topology::change(py, c))
            .collect()
    }

    /// Records read back from the store; returns how many were live.
    fn topology_load(&self, records: Vec<Bound<'_, PyDict>>) -> PyResult<usize> {
        let dialogs = records
            .iter()
            .map(super::topology::from_dict)
            .collect::<PyResult<Vec<_>>>()?;
        Ok(self.shared.topology.load(dialogs))
    }

    /// Up to `limit` hidden-dialog records, newest first.
    #[pyo3(signature = (limit=100))]
    fn topology_list<'py>(
        &self,
        py: Python<'py>,
        limit: usize,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.shared
            .topology
            .list(limit)
            .iter()
            .map(|h| super::topology::to_dict(py, h))
            .collect()
    }

    /// The flood settings in force: (enabled, limit, window s, ban s).
    fn flood_settings(&self) -> (bool, u32, f64, f64) {
        let f = self.security().flood_config();
        (
            f.enabled,
            f.limit,
            f.window.as_secs_f64(),
            f.ban.as_secs_f64(),
        )
    }
}

/// Token buckets keyed by strings (`sipr.limits`, memory backend).
#[pyclass(module = "sipr._core", name = "TokenBuckets", frozen)]
pub struct PyTokenBuckets {
    inner: Buckets,
}

#[pymethods]
impl PyTokenBuckets {
    #[new]
    #[pyo3(signature = (capacity=100_000))]
    fn new(capacity: usize) -> PyTokenBuckets {
        PyTokenBuckets {
            inner: Buckets::new(capacity),
        }
    }

    /// Takes `cost` tokens from bucket `key` (`rate` per `per` seconds, at
    /// most `burst`, default `rate`): (taken, tokens left, seconds until
    /// `cost` tokens are there).
    #[pyo3(signature = (key, rate, per=1.0, burst=None, cost=1.0))]
    fn take(
        &self,
        key: &str,
        rate: f64,
        per: f64,
        burst: Option<f64>,
        cost: f64,
    ) -> PyResult<(bool, f64, f64)> {
        if key.len() > MAX_KEY_LEN {
            return Err(PyValueError::new_err(format!(
                "limit keys are at most {MAX_KEY_LEN} bytes"
            )));
        }
        if !(cost.is_finite() && cost > 0.0) {
            return Err(PyValueError::new_err("cost must be a positive number"));
        }
        let (rate, burst) = per_second(rate, per, burst).map_err(value_error)?;
        let t = self.inner.take(key, rate, burst, cost, Instant::now());
        Ok((t.ok, t.remaining, t.retry_after))
    }

    /// [(key, tokens now, rate per second, burst)] of the buckets in use.
    fn snapshot(&self) -> Vec<(String, f64, f64, f64)> {
        self.inner.snapshot(Instant::now())
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }
}
