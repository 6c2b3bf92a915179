//! `core.dns()`: the resolver cache, the destination blocklist and their
//! settings, for `sipr ctl dns.cache` / `dst.blocklist` and `/metrics`; and
//! `sipr.Serial`, targets a relay tries one after another.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::request::relay_target;
use crate::core::Core;
use crate::proxy::failover::DEFAULT_SERIAL_CODES;
use crate::proxy::stateful::Target;

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
        for (t, r, ttl) in self.core.dns.entries() {
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
        self.core.dns.flush(host)
    }

    /// Live blocklist entries: (transport, address, seconds left, reason, hits).
    fn blocklist(&self) -> Vec<(String, String, f64, String, u64)> {
        self.core
            .dns
            .blocklist
            .entries()
            .into_iter()
            .map(|(t, a, left, reason, hits)| {
                (
                    t.as_str().to_ascii_lowercase(),
                    crate::proxy::fmt_hostport(a),
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
        Ok(self.core.dns.blocklist.remove(addr))
    }

    /// Seconds a failed destination stays blocklisted (0: never).
    #[getter]
    fn get_blocklist_time(&self) -> f64 {
        self.core.dns.blocklist.lifetime().as_secs_f64()
    }

    #[setter]
    fn set_blocklist_time(&self, seconds: f64) -> PyResult<()> {
        let d = std::time::Duration::try_from_secs_f64(seconds)
            .map_err(|_| PyValueError::new_err("blocklist_time must be >= 0 seconds"))?;
        self.core.dns.blocklist.set_lifetime(d);
        Ok(())
    }

    /// Seconds a destination with alternatives may stay silent before the
    /// next is tried (0: Timer B/F, 64*T1).
    #[getter]
    fn get_failover_timeout(&self) -> f64 {
        self.core.dns.failover_timeout().as_secs_f64()
    }

    #[setter]
    fn set_failover_timeout(&self, seconds: f64) -> PyResult<()> {
        let d = std::time::Duration::try_from_secs_f64(seconds)
            .map_err(|_| PyValueError::new_err("failover_timeout must be >= 0 seconds"))?;
        self.core.dns.set_failover_timeout(d);
        Ok(())
    }

    /// Counters and gauges as (stats key, value).
    fn stats(&self) -> Vec<(String, u64)> {
        stats(&self.core)
    }

    /// Nameservers given with `--resolver` (empty: the system's).
    fn nameservers(&self) -> Vec<String> {
        self.core
            .dns
            .config()
            .nameservers
            .iter()
            .map(|a| crate::proxy::fmt_hostport(*a))
            .collect()
    }
}

/// `dns.*` statistics for `stats.get` and `/metrics`.
pub fn stats(core: &Core) -> Vec<(String, u64)> {
    let s = &core.dns.stats;
    let (inflight, waiting) = core.dns.inflight();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    vec![
        ("dns.lookups".into(), get(&s.lookups)),
        ("dns.cache_hits".into(), get(&s.cache_hits)),
        ("dns.resolutions".into(), get(&s.resolutions)),
        ("dns.joined".into(), get(&s.joined)),
        ("dns.negative".into(), get(&s.negative)),
        ("dns.refused".into(), get(&s.refused)),
        ("dns.failovers".into(), get(&s.failovers)),
        ("dns.cache_entries".into(), core.dns.cache_len() as u64),
        ("dns.inflight".into(), inflight as u64),
        ("dns.waiting".into(), waiting as u64),
        ("dns.blocklisted".into(), core.dns.blocklist.len() as u64),
        ("dns.blocklist_added".into(), get(&core.dns.blocklist.added)),
    ]
}

/// `sipr.Serial(targets, codes=...)`: a relay target list tried one after
/// another — the next when one answers one of `codes`, times out or cannot
/// be reached — instead of in parallel.
#[pyclass(module = "sipr._core", name = "Serial", frozen)]
pub struct PySerial {
    pub targets: Vec<Target>,
    pub codes: Arc<[u16]>,
    uris: Vec<String>,
}

impl PySerial {
    pub fn from_targets(targets: Vec<Target>, codes: Arc<[u16]>) -> PySerial {
        let uris = targets
            .iter()
            .map(|t| t.hop.clone().or(t.request_uri.clone()).unwrap_or_default())
            .collect();
        PySerial {
            targets,
            codes,
            uris,
        }
    }
}

pub fn check_codes(codes: Option<Vec<u16>>) -> PyResult<Arc<[u16]>> {
    let codes = codes.unwrap_or_else(|| DEFAULT_SERIAL_CODES.to_vec());
    if let Some(c) = codes.iter().find(|c| !(300..600).contains(*c)) {
        return Err(PyValueError::new_err(format!(
            "failover codes must be 300-599 (a 2xx ends the call, a 6xx is final everywhere), got {c}"
        )));
    }
    Ok(codes.into())
}

#[pymethods]
impl PySerial {
    #[new]
    #[pyo3(signature = (targets, *, codes=None))]
    fn new(targets: &Bound<'_, PyAny>, codes: Option<Vec<u16>>) -> PyResult<PySerial> {
        let mut v = Vec::new();
        for item in targets.try_iter()? {
            v.push(relay_target(&item?)?);
        }
        Ok(PySerial::from_targets(v, check_codes(codes)?))
    }

    /// The next-hop URIs, in the order they will be tried.
    #[getter]
    fn targets(&self) -> Vec<String> {
        self.uris.clone()
    }

    /// Answers that move on to the next target.
    #[getter]
    fn codes(&self) -> Vec<u16> {
        self.codes.to_vec()
    }

    fn __len__(&self) -> usize {
        self.targets.len()
    }

    fn __repr__(&self) -> String {
        format!("Serial({:?}, codes={:?})", self.uris, self.codes)
    }
}

/// Whether `t` is a serial target list (`Serial`, or a dispatcher
/// selection that becomes one against the request).
pub fn is_serial(t: &Bound<'_, PyAny>) -> bool {
    t.is_instance_of::<PySerial>() || t.is_instance_of::<super::dispatcher::PySelection>()
}

/// The targets and failover codes of a serial target list for `msg`.
pub fn serial_targets(
    t: &Bound<'_, PyAny>,
    msg: &crate::sip::Message,
) -> PyResult<(Vec<Target>, Arc<[u16]>)> {
    if let Ok(s) = t.cast::<PySerial>() {
        let s = s.get();
        return Ok((s.targets.clone(), s.codes.clone()));
    }
    let sel = t.cast::<super::dispatcher::PySelection>()?;
    sel.get().serial_for(msg)
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
