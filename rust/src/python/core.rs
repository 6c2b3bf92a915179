//! `sipr._core.Core`: the running core as the Python server drives it. The
//! server registers the UDP sockets, the stream wake-up fd and the timer fd
//! with its event loop and calls `poll_udp` / `drain_streams` / `on_timer`.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

use super::request::{dispatch, PyRequest};
use super::shared::Shared;
use crate::core::{Config, Core};
use crate::tls::TlsSettings;
use crate::transport::ListenSpec;

#[pyclass(module = "sipr._core", name = "Core")]
pub struct PyCore {
    shared: Arc<Shared>,
    /// The app's `on_send` / `on_timeout` hooks, once some app had one.
    app_events: std::sync::OnceLock<Arc<super::events::AppEvents>>,
}

impl PyCore {
    /// The running core, for the services' native halves (dispatcher).
    pub fn core(&self) -> &Arc<Core> {
        &self.shared.core
    }
}

#[pymethods]
impl PyCore {
    #[new]
    #[pyo3(signature = (listen, *, max_pending=None, retry_after=None, max_message_size=None, aliases=Vec::new(), in_dialog_to_app=false, record_route=true, tls_cert=None, tls_key=None, tls_sni=Vec::new(), tls_client_ca=None, tls_verify_client=false, tls_verify_client_on=Vec::new(), tls_ca=None, connect_timeout=None, connect_backoff=None, connection_lifetime=None, max_connections=None, udp_reader="loop", resolvers=Vec::new(), branch_secret=None, listen_fds=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        listen: Vec<String>,
        max_pending: Option<usize>,
        retry_after: Option<u32>,
        max_message_size: Option<usize>,
        aliases: Vec<String>,
        in_dialog_to_app: bool,
        record_route: bool,
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        tls_sni: Vec<(String, PathBuf, PathBuf)>,
        tls_client_ca: Option<PathBuf>,
        tls_verify_client: bool,
        tls_verify_client_on: Vec<String>,
        tls_ca: Option<PathBuf>,
        connect_timeout: Option<f64>,
        connect_backoff: Option<f64>,
        connection_lifetime: Option<f64>,
        max_connections: Option<usize>,
        udp_reader: &str,
        resolvers: Vec<String>,
        branch_secret: Option<Vec<u8>>,
        listen_fds: Vec<Option<i32>>,
    ) -> PyResult<PyCore> {
        let udp_reader = udp_reader.parse().map_err(PyValueError::new_err)?;
        let mut listen: Vec<ListenSpec> = listen
            .iter()
            .map(|l| ListenSpec::parse(l))
            .collect::<Result<_, _>>()
            .map_err(PyValueError::new_err)?;
        // `--workers`: sockets the supervisor bound, by listen index.
        for (spec, fd) in listen.iter_mut().zip(listen_fds) {
            spec.fd = fd;
        }
        if listen.is_empty() {
            return Err(PyValueError::new_err(
                "at least one listen address is needed",
            ));
        }
        let verify_client_on = tls_verify_client_on
            .iter()
            .map(|a| {
                a.parse::<std::net::SocketAddr>().map_err(|_| {
                    PyValueError::new_err(format!(
                        "tls_verify_client_on: {a:?} is not an IP:PORT address"
                    ))
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let defaults = Config::default();
        let mut stream = defaults.stream.clone();
        if let Some(v) = connect_timeout {
            stream.connect_timeout = seconds(v, "connect_timeout")?;
        }
        if let Some(v) = connect_backoff {
            // Zero turns it off.
            stream.connect_backoff = std::time::Duration::try_from_secs_f64(v).map_err(|_| {
                PyValueError::new_err("connect_backoff must be 0 or a positive number of seconds")
            })?;
        }
        if let Some(v) = connection_lifetime {
            stream.idle_lifetime = seconds(v, "connection_lifetime")?;
        }
        if let Some(v) = max_connections {
            stream.max_connections = v.max(1);
        }
        let nameservers = resolvers
            .iter()
            .map(|r| super::dns::parse_resolver(r))
            .collect::<PyResult<Vec<_>>>()?;
        let config = Config {
            dns: crate::dns::DnsConfig {
                nameservers,
                ..defaults.dns.clone()
            },
            stream,
            tls: TlsSettings {
                cert: tls_cert,
                key: tls_key,
                sni: tls_sni,
                client_ca: tls_client_ca,
                verify_client: tls_verify_client,
                verify_client_on,
                ca: tls_ca,
            },
            listen,
            udp_reader,
            branch_secret,
            max_pending: max_pending.unwrap_or(defaults.max_pending).max(1),
            retry_after: retry_after.unwrap_or(defaults.retry_after),
            aliases,
            limits: crate::sip::Limits {
                max_message_size: max_message_size.unwrap_or(defaults.limits.max_message_size),
                ..defaults.limits.clone()
            },
            ..defaults
        };
        let core = Core::start(config).map_err(|e| PyOSError::new_err(e.to_string()))?;
        core.set_in_dialog_to_app(in_dialog_to_app);
        Ok(PyCore {
            shared: Arc::new(Shared::new(core, record_route)),
            app_events: std::sync::OnceLock::new(),
        })
    }

    /// The resolver cache, the destination blocklist and their settings.
    fn dns(&self) -> super::dns::PyDns {
        super::dns::PyDns {
            core: self.shared.core.clone(),
        }
    }

    fn udp_fds(&self) -> Vec<i32> {
        self.shared.core.udp_fds()
    }

    fn wake_fd(&self) -> i32 {
        self.shared.core.wake_fd()
    }

    fn timer_fd(&self) -> i32 {
        self.shared.core.timer_fd()
    }

    /// The event loop serving this core: `relay()` futures are made on it.
    fn set_loop(&self, event_loop: Py<PyAny>) {
        *self.shared.event_loop.lock() = Some(event_loop);
    }

    /// Reads UDP listener `index`; returns the requests for the application.
    fn poll_udp(&self, py: Python<'_>, index: usize) -> PyResult<Vec<Py<PyRequest>>> {
        let mut events = Vec::new();
        self.shared.core.poll_udp(index, &mut events);
        dispatch(&self.shared, py, events)
    }

    /// Processes what the stream connections read since the last call.
    fn drain_streams(&self, py: Python<'_>) -> PyResult<Vec<Py<PyRequest>>> {
        let mut events = Vec::new();
        self.shared.core.drain_streams(&mut events);
        dispatch(&self.shared, py, events)
    }

    /// Runs due transaction timers.
    fn on_timer(&self, py: Python<'_>) -> PyResult<Vec<Py<PyRequest>>> {
        let mut events = Vec::new();
        self.shared.core.on_timer(&mut events);
        dispatch(&self.shared, py, events)
    }

    /// `has_replies or has_cancelled`: the server reads this after every
    /// wake-up, so one attribute read instead of two.
    #[getter]
    fn has_python_work(&self) -> bool {
        !self.shared.replies.lock().is_empty() || !self.shared.cancelled.lock().is_empty()
    }

    /// Whether CANCELs arrived for requests the application holds.
    #[getter]
    fn has_cancelled(&self) -> bool {
        !self.shared.cancelled.lock().is_empty()
    }

    /// Responses are held for the application's `on_reply` handler(s).
    #[getter]
    fn has_replies(&self) -> bool {
        !self.shared.replies.lock().is_empty()
    }

    /// The held responses since the last call, each with its per-relay
    /// handler or None (`@app.on_reply`).
    fn take_replies(&self, py: Python<'_>) -> PyResult<Vec<super::onreply::TakenReply>> {
        super::onreply::take(&self.shared, py)
    }

    /// `@app.on_reply`: every proxied response goes to the application.
    fn set_on_reply(&self, on: bool) {
        if on || self.shared.onreply.get().is_some() {
            super::reply_watch::service(&self.shared).set_all(on);
        }
    }

    /// Transaction ids of requests cancelled since the last call.
    fn take_cancelled(&self) -> Vec<u64> {
        std::mem::take(&mut *self.shared.cancelled.lock())
    }

    /// `[(transport, host, port)]` actually bound (port 0 resolved).
    fn local_addrs(&self) -> Vec<(String, String, u16)> {
        self.shared
            .core
            .local_addrs()
            .into_iter()
            .map(|(t, a)| {
                (
                    t.as_str().to_ascii_lowercase(),
                    a.ip().to_string(),
                    a.port(),
                )
            })
            .collect()
    }

    /// Requests handed to the application and not yet finished.
    #[getter]
    fn pending(&self) -> usize {
        self.shared.core.pending()
    }

    fn stats(&self) -> Vec<(String, u64)> {
        let core = &self.shared.core;
        let mut s = core.stats.snapshot();
        s.push(("pending".into(), core.pending() as u64));
        s.push(("connections".into(), core.connection_count() as u64));
        for (transport, n) in core.connections_by_transport() {
            let key = format!("connections.{}", transport.as_str().to_ascii_lowercase());
            s.push((key, n as u64));
        }
        let (failed, held_back) = core.connect_failures();
        s.push(("connects_failed".into(), failed));
        s.push(("connects_held_back".into(), held_back));
        s.push(("ingress_queue".into(), core.ingress_depth() as u64));
        let t = core.table_sizes();
        s.push(("transactions.server".into(), t.servers as u64));
        s.push(("transactions.client".into(), t.clients as u64));
        s.push(("transactions.server_total".into(), t.servers_created));
        s.push(("transactions.client_total".into(), t.clients_created));
        s.push(("transactions.contexts".into(), t.contexts as u64));
        s.push((
            "transactions.contexts_settled".into(),
            t.contexts_settled as u64,
        ));
        s.push(("timers".into(), t.timers as u64));
        s.push((
            "relays_waiting".into(),
            self.shared.futures.lock().len() as u64,
        ));
        s.extend(super::dns::stats(core));
        s.extend(super::onreply::stats(&self.shared));
        s.extend(super::nat::stats(&self.shared));
        s.extend(self.shared.security.snapshot());
        s.extend(self.shared.topology.snapshot());
        s
    }

    /// Zeroes the counters (gauges such as open transactions stay).
    fn reset_stats(&self) {
        let core = &self.shared.core;
        core.stats.reset();
        core.reset_created();
        self.shared.security.stats.reset();
    }

    /// The resolver cache, one row per address: `[(host, port, address,
    /// seconds left)]` (`dns.view`).
    fn dns_cache(&self) -> Vec<(String, u16, String, u64)> {
        let mut rows = Vec::new();
        for (t, r, ttl) in self.shared.core.node.resolver.entries() {
            for g in &r.groups {
                for srv in &g.servers {
                    for a in &srv.addrs {
                        rows.push((t.host.clone(), srv.port, a.to_string(), ttl as u64));
                    }
                }
            }
        }
        rows
    }

    /// RFC 3261 timer values in seconds: T1, T2, T4 and Timer C.
    #[pyo3(signature = (*, t1=None, t2=None, t4=None, timer_c=None))]
    fn set_timers(
        &self,
        t1: Option<f64>,
        t2: Option<f64>,
        t4: Option<f64>,
        timer_c: Option<f64>,
    ) -> PyResult<()> {
        let mut t = self.shared.core.timing();
        let secs = seconds;
        if let Some(v) = t1 {
            t.t1 = secs(v, "t1")?;
        }
        if let Some(v) = t2 {
            t.t2 = secs(v, "t2")?;
        }
        if let Some(v) = t4 {
            t.t4 = secs(v, "t4")?;
        }
        if let Some(v) = timer_c {
            t.timer_c = secs(v, "timer_c")?;
        }
        self.shared.core.set_timing(t);
        Ok(())
    }

    /// Current RFC 3261 timer values in seconds: (T1, T2, T4, Timer C).
    fn timers(&self) -> (f64, f64, f64, f64) {
        let t = self.shared.core.timing();
        (
            t.t1.as_secs_f64(),
            t.t2.as_secs_f64(),
            t.t4.as_secs_f64(),
            t.timer_c.as_secs_f64(),
        )
    }

    /// Requests the application may hold before the core answers 503.
    #[getter]
    fn get_max_pending(&self) -> usize {
        self.shared.core.max_pending()
    }

    #[setter]
    fn set_max_pending(&self, n: usize) -> PyResult<()> {
        if n == 0 {
            return Err(PyValueError::new_err("max_pending must be at least 1"));
        }
        self.shared.core.set_max_pending(n);
        Ok(())
    }

    /// Seconds in the Retry-After of the core's 503 answers.
    #[getter]
    fn get_retry_after(&self) -> u32 {
        self.shared.core.retry_after()
    }

    #[setter]
    fn set_retry_after(&self, seconds: u32) {
        self.shared.core.set_retry_after(seconds);
    }

    /// Whether in-dialog requests go to the application (`@app.in_dialog`)
    /// or are loose-routed by the core.
    fn set_in_dialog_to_app(&self, on: bool) {
        self.shared.core.set_in_dialog_to_app(on);
    }

    /// `App(force_rport=True)`: UDP requests are answered (and relayed) as if
    /// their top Via had `rport` (RFC 3581 §4; Kamailio's force_rport()).
    fn set_force_rport(&self, on: bool) {
        self.shared.core.set_force_rport(on);
    }

    /// Refuses new transactions from now on (503 + Retry-After); in-dialog
    /// requests, CANCELs and responses still flow.
    fn start_drain(&self) {
        self.shared.core.start_drain();
    }

    #[getter]
    fn draining(&self) -> bool {
        self.shared.core.draining()
    }

    /// (server, client) transactions still waiting for a final response.
    fn open_transactions(&self) -> (usize, usize) {
        self.shared.core.open_transactions()
    }

    /// Re-reads the TLS certificate, key and CA files; open connections
    /// keep theirs. Raises ValueError (and keeps the old ones) on a bad file.
    fn reload_tls(&self) -> PyResult<()> {
        self.shared
            .core
            .reload_tls()
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// TLS listeners and loaded certificates, for `tls.list`.
    fn tls_info(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let core = &self.shared.core;
        let info = pyo3::types::PyDict::new(py);
        let listeners: Vec<(String, u16)> = core
            .local_addrs()
            .into_iter()
            .filter(|(t, _)| *t == crate::transport::Transport::Tls)
            .map(|(_, a)| (a.ip().to_string(), a.port()))
            .collect();
        info.set_item("listeners", listeners)?;
        let certs = pyo3::types::PyList::empty(py);
        for c in core.tls_info() {
            let d = pyo3::types::PyDict::new(py);
            d.set_item("domain", c.domain)?;
            d.set_item("subject", c.subject)?;
            d.set_item("issuer", c.issuer)?;
            d.set_item("names", c.names)?;
            d.set_item("not_after", c.not_after)?;
            d.set_item("path", c.path)?;
            certs.append(d)?;
        }
        info.set_item("certificates", certs)?;
        Ok(info.into_any().unbind())
    }

    fn stop(&self) {
        self.shared.core.stop();
    }

    /// NAT keepalives for the bindings of `store` with a `received`
    /// (`sipr.nat.keepalive`): OPTIONS (UDP) or CRLF (streams) every
    /// `interval` seconds; `drop_after` unanswered pings remove one (0: never).
    #[pyo3(signature = (store, interval, drop_after=0, from_uri=None))]
    fn start_natping(
        &self,
        store: PyRef<'_, super::registrar::PyStore>,
        interval: f64,
        drop_after: u32,
        from_uri: Option<String>,
    ) -> PyResult<()> {
        let mut config = crate::nat::keepalive::KeepaliveConfig {
            interval: seconds(interval, "interval")?,
            drop_after,
            ..Default::default()
        };
        if let Some(f) = from_uri {
            config.from_uri = f;
        }
        super::nat::start_keepalive(&self.shared, store.inner.clone(), config)
    }

    /// The bindings NAT keepalives ping: `[(aor, contact, transport, host,
    /// port, unanswered pings in a row)]`.
    fn natping_rows(&self) -> Vec<(String, String, String, String, u16, u32)> {
        super::nat::rows(&self.shared)
    }

    /// Installs (None: removes) the callables the core calls itself for
    /// `@app.on_send` and `@app.on_timeout` (rust/src/python/events.rs).
    #[pyo3(signature = (*, on_send=None, on_timeout=None))]
    fn set_event_hooks(
        &self,
        on_send: Option<Py<PyAny>>,
        on_timeout: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        super::events::install(&self.shared.core, &self.app_events, on_send, on_timeout)
    }

    /// Calls from the core into Python for those hooks since it started.
    fn event_hook_calls(&self) -> u64 {
        self.app_events.get().map_or(0, |e| e.calls())
    }

    /// The security services of this core (`sipr.security` drives them).
    fn security(&self) -> super::security::PySecurity {
        super::security::PySecurity::new(self.shared.clone())
    }

    /// The tracked dialogs, their profiles and accounting records.
    fn dialogs(&self) -> super::dialogs::PyDialogTable {
        super::dialogs::PyDialogTable::new(self.shared.clone())
    }

    /// Answers REGISTERs for the domains of `rules` in the core from now on,
    /// against `store`, with digest `auth` (its rules and where to find
    /// users' HA1s) when given (see `sipr.Registrar.serve`). Registrars are
    /// tried in the order added.
    #[pyo3(signature = (rules, store, auth=None))]
    fn serve_registrar(
        &self,
        rules: PyRef<'_, super::registrar::PyRegistrarRules>,
        store: PyRef<'_, super::registrar::PyStore>,
        auth: Option<(
            PyRef<'_, super::digest::PyDigestRules>,
            super::registrar::UsersSpec<'_>,
        )>,
    ) {
        let r = super::registrar::served(&rules, &store, auth);
        self.shared.core.registrars.add(Arc::new(r));
    }
}

fn seconds(v: f64, name: &str) -> PyResult<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            PyValueError::new_err(format!("{name} must be a positive number of seconds"))
        })
}

/// Validates a listen URI; returns (transport, host, port).
#[pyfunction]
pub fn parse_listen(spec: &str) -> PyResult<(String, String, u16)> {
    let l = ListenSpec::parse(spec).map_err(PyValueError::new_err)?;
    Ok((
        l.transport.as_str().to_ascii_lowercase(),
        l.addr.ip().to_string(),
        l.addr.port(),
    ))
}
