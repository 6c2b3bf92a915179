//! `core.dns()`: the resolver cache, the destination blocklist and their
//! settings, for `sipr ctl dns.cache` / `dst.blocklist` and `/metrics`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::core::Core;

#[pyclass(module = "sipr._core", name = "Dns")]
pub struct PyDns {
    pub core: Arc<Core>,
}

#[pymethods]
impl PyDns {
    /// Cached resolutions: one dict per name (host, port, transport asked,
    /// seconds left, error, and the servers found in RFC 3263 order).
    fn entries(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let mut out = Vec::new();
        for (t, r, ttl) in self.core.node.resolver.entries() {
            let d = PyDict::new(py);
            d.set_item("host", &t.host)?;
            d.set_item("port", t.port)?;
            d.set_item(
                "transport",
                t.transport.map(|x| x.as_str().to_ascii_lowercase()),
            )?;
            d.set_item("secure", t.secure)?;
            d.set_item("ttl", (ttl * 10.0).round() / 10.0)?;
            d.set_item("error", r.error.clone())?;
            let mut servers = Vec::new();
            for g in &r.groups {
                for s in &g.servers {
                    let sd = PyDict::new(py);
                    sd.set_item("transport", g.transport.as_str().to_ascii_lowercase())?;
                    sd.set_item("via", &g.via)?;
                    sd.set_item("name", &s.name)?;
                    sd.set_item("priority", s.priority)?;
                    sd.set_item("weight", s.weight)?;
                    sd.set_item("port", s.port)?;
                    let addrs: Vec<String> = s.addrs.iter().map(|a| a.to_string()).collect();
                    sd.set_item("addresses", addrs)?;
                    servers.push(sd.into_any().unbind());
                }
            }
            d.set_item("servers", servers)?;
            out.push(d.into_any().unbind());
        }
        Ok(out)
    }

    /// Drops cached entries (all, or those of `host`); returns how many.
    #[pyo3(signature = (host=None))]
    fn flush(&self, host: Option<&str>) -> usize {
        self.core.node.resolver.flush(host)
    }

    /// Live blocklist entries: (transport, address, seconds left, reason, hits).
    fn blocklist(&self) -> Vec<(String, String, f64, String, u64)> {
        self.core
            .node
            .resolver
            .blocklist
            .entries()
            .into_iter()
            .map(|(t, a, left, reason, hits)| {
                (
                    t.as_str().to_ascii_lowercase(),
                    crate::sip::write::hostport(a),
                    (left * 10.0).round() / 10.0,
                    reason.to_string(),
                    hits,
                )
            })
            .collect()
    }

    /// Removes blocklist entries (all, or those of `address` IP:PORT).
    #[pyo3(signature = (address=None))]
    fn unblock(&self, address: Option<&str>) -> PyResult<usize> {
        let addr =
            match address {
                Some(a) => Some(a.parse().map_err(|_| {
                    PyValueError::new_err(format!("{a:?} is not an IP:PORT address"))
                })?),
                None => None,
            };
        Ok(self.core.node.resolver.blocklist.remove(addr))
    }

    /// Seconds a failed destination stays blocklisted (0: never).
    #[getter]
    fn get_blocklist_time(&self) -> f64 {
        self.core.node.resolver.blocklist.lifetime().as_secs_f64()
    }

    #[setter]
    fn set_blocklist_time(&self, seconds: f64) -> PyResult<()> {
        let d = std::time::Duration::try_from_secs_f64(seconds)
            .map_err(|_| PyValueError::new_err("blocklist_time must be >= 0 seconds"))?;
        self.core.node.resolver.blocklist.set_lifetime(d);
        Ok(())
    }

    /// Seconds a destination with alternatives may stay silent before the
    /// next is tried (0: Timer B/F, 64*T1).
    #[getter]
    fn get_failover_timeout(&self) -> f64 {
        self.core.node.resolver.failover_timeout().as_secs_f64()
    }

    #[setter]
    fn set_failover_timeout(&self, seconds: f64) -> PyResult<()> {
        let d = std::time::Duration::try_from_secs_f64(seconds)
            .map_err(|_| PyValueError::new_err("failover_timeout must be >= 0 seconds"))?;
        self.core.node.resolver.set_failover_timeout(d);
        Ok(())
    }

    /// Counters and gauges as (stats key, value).
    fn stats(&self) -> Vec<(String, u64)> {
        stats(&self.core)
    }

    /// Nameservers given with `--resolver` (empty: the system's).
    fn nameservers(&self) -> Vec<String> {
        self.core
            .node
            .resolver
            .config()
            .nameservers
            .iter()
            .map(|a| crate::sip::write::hostport(*a))
            .collect()
    }
}

/// `dns.*` statistics for `stats.get` and `/metrics`.
pub fn stats(core: &Core) -> Vec<(String, u64)> {
    let s = &core.node.resolver.stats;
    let (inflight, waiting) = core.node.resolver.inflight();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    vec![
        ("dns.lookups".into(), get(&s.lookups)),
        ("dns.cache_hits".into(), get(&s.cache_hits)),
        ("dns.resolutions".into(), get(&s.resolutions)),
        ("dns.joined".into(), get(&s.joined)),
        ("dns.negative".into(), get(&s.negative)),
        ("dns.refused".into(), get(&s.refused)),
        ("dns.failovers".into(), get(&s.failovers)),
        (
            "dns.cache_entries".into(),
            core.node.resolver.cache_len() as u64,
        ),
        ("dns.inflight".into(), inflight as u64),
        ("dns.waiting".into(), waiting as u64),
        (
            "dns.blocklisted".into(),
            core.node.resolver.blocklist.len() as u64,
        ),
        (
            "dns.blocklist_added".into(),
            get(&core.node.resolver.blocklist.added),
        ),
    ]
}

/// `--resolver HOST:PORT` (an IP; port 53 when left out).
pub fn parse_resolver(spec: &str) -> PyResult<std::net::SocketAddr> {
    if let Ok(a) = spec.parse::<std::net::SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = spec
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        return Ok(std::net::SocketAddr::new(ip, 53));
    }
    Err(PyValueError::new_err(format!(
        "resolver {spec:?}: expected IP:PORT of a DNS server (e.g. 127.0.0.1:53, [::1]:53)"
    )))
}
