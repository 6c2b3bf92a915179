//! `sipr._core.Dispatcher`: the native half of `sipr.Dispatcher` (sets,
//! selection, probing) and `Selection`, what `ds.targets(...)` returns and
//! `req.relay()` turns into a serial target list for the request at hand.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::dns::PyDns;
use super::request::PyRequest;
use super::targets::{check_codes, PySelection};
use crate::dispatcher::probe::{self, ProbeConfig, Prober};
use crate::dispatcher::{parse_list, weight_of, Algo, Dispatcher, Entry, State, ALGOS};

/// A destination row: (set, uri, flags, priority, attrs).
type Row = (u32, String, u32, i32, String);

#[pyclass(module = "sipr._core", name = "Dispatcher")]
pub struct PyDispatcher {
    ds: Arc<Dispatcher>,
    prober: Mutex<Option<Prober>>,
}

fn algo(name: &str) -> PyResult<Algo> {
    Algo::parse(name)
        .ok_or_else(|| PyValueError::new_err(format!("unknown algorithm {name:?}: use {ALGOS}")))
}

#[pymethods]
impl PyDispatcher {
    #[new]
    fn new() -> PyDispatcher {
        PyDispatcher {
            ds: Arc::new(Dispatcher::default()),
            prober: Mutex::new(None),
        }
    }

    /// Replaces every set with `rows`: (set, uri, flags, priority, attrs).
    fn load(&self, rows: Vec<Row>) -> PyResult<usize> {
        let mut entries = Vec::with_capacity(rows.len());
        for (set, uri, flags, priority, attrs) in rows {
            if crate::sip::Uri::parse(&uri).map_or(true, |u| !u.is_sip()) {
                return Err(PyValueError::new_err(format!(
                    "set {set}: {uri:?} is not a sip: or sips: URI"
                )));
            }
            let weight = weight_of(&attrs)
                .map_err(|e| PyValueError::new_err(format!("set {set} {uri}: {e}")))?;
            entries.push(Entry {
                set,
                uri,
                flags,
                priority,
                weight,
                attrs,
            });
        }
        let n = entries.len();
        self.ds.load(entries);
        Ok(n)
    }

    /// Parses a Kamailio-style list file's text into rows (ValueError names
    /// the bad line).
    #[staticmethod]
    fn parse_list(text: &str) -> PyResult<Vec<Row>> {
        let entries = parse_list(text).map_err(PyValueError::new_err)?;
        Ok(entries
            .into_iter()
            .map(|e| (e.set, e.uri, e.flags, e.priority, e.attrs))
            .collect())
    }

    /// The destinations `req` would try, in order (active ones only).
    #[pyo3(signature = (req, set, algo="round-robin"))]
    fn select(&self, req: PyRef<'_, PyRequest>, set: u32, algo: &str) -> PyResult<Vec<String>> {
        let a = self::algo(algo)?;
        let order = self
            .ds
            .select(set, a, req.message())
            .map_err(PyValueError::new_err)?;
        Ok(order.iter().map(|d| d.entry.uri.clone()).collect())
    }

    /// A selection for `req.relay()`: set, algorithm, at most `limit`
    /// destinations, failing over on `codes`.
    #[pyo3(signature = (set, algo="round-robin", *, limit=None, codes=None))]
    fn targets(
        &self,
        set: u32,
        algo: &str,
        limit: Option<usize>,
        codes: Option<Vec<u16>>,
    ) -> PyResult<PySelection> {
        Ok(PySelection::new(
            self.ds.clone(),
            set,
            self::algo(algo)?,
            limit.unwrap_or(usize::MAX).max(1),
            check_codes(codes)?,
        ))
    }

    /// Every destination with its state and counters.
    fn list(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let mut out = Vec::new();
        for d in self.ds.all() {
            let row = PyDict::new(py);
            row.set_item("set", d.entry.set)?;
            row.set_item("uri", &d.entry.uri)?;
            row.set_item("state", d.state().as_str())?;
            row.set_item("flags", d.entry.flags)?;
            row.set_item("priority", d.entry.priority)?;
            row.set_item("weight", d.entry.weight)?;
            row.set_item("attrs", &d.entry.attrs)?;
            row.set_item("selected", d.selected.load(Ordering::Relaxed))?;
            row.set_item("probes", d.probes.load(Ordering::Relaxed))?;
            row.set_item("failed_probes", d.fails.load(Ordering::Relaxed))?;
            row.set_item("last_code", d.last_code.load(Ordering::Relaxed))?;
            out.push(row.into_any().unbind());
        }
        Ok(out)
    }

    /// Sets a destination's state: "active", "inactive" or "disabled".
    #[pyo3(signature = (uri, state, set=None))]
    fn set_state(&self, uri: &str, state: &str, set: Option<u32>) -> PyResult<usize> {
        let s = State::parse(state).ok_or_else(|| {
            PyValueError::new_err(format!(
                "state must be active, inactive or disabled, got {state:?}"
            ))
        })?;
        Ok(self.ds.set_state(set, uri, s))
    }

    /// Starts OPTIONS probing, finding destinations through the resolver
    /// of `dns` (`core.dns()`), replacing any running prober.
    #[pyo3(signature = (dns, *, interval, timeout, fail_threshold, ok_threshold, alive_codes, from_uri))]
    #[allow(clippy::too_many_arguments)]
    fn start_probing(
        &self,
        dns: PyRef<'_, PyDns>,
        interval: f64,
        timeout: f64,
        fail_threshold: u32,
        ok_threshold: u32,
        alive_codes: Vec<u16>,
        from_uri: String,
    ) -> PyResult<()> {
        let secs = |v: f64, name: &str| {
            Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| PyValueError::new_err(format!("{name} must be positive seconds")))
        };
        let core = dns.core.clone();
        let t1 = core.timing().t1;
        let config = ProbeConfig {
            interval: secs(interval, "probe_interval")?,
            timeout: secs(timeout, "probe_timeout")?,
            fail_threshold: fail_threshold.max(1),
            ok_threshold: ok_threshold.max(1),
            alive_codes,
            from_uri,
            t1,
        };
        let weak = Arc::downgrade(&core);
        let locate: probe::Locate = Arc::new(move |uri: &str| {
            let core = weak.upgrade()?;
            let u = crate::sip::Uri::parse(uri).ok()?;
            let t = crate::dns::SipTarget::from_uri(&u).ok()?;
            core.node.resolver.resolve_now(&t)?.first().copied()
        });
        let prober = probe::start(self.ds.clone(), config, locate)
            .map_err(|e| PyValueError::new_err(format!("cannot start probing: {e}")))?;
        *self.prober.lock() = Some(prober);
        Ok(())
    }

    fn stop_probing(&self) {
        self.prober.lock().take();
    }

    #[getter]
    fn probing(&self) -> bool {
        self.prober.lock().is_some()
    }

    /// (reloads, selections that found no active destination).
    fn counters(&self) -> (u64, u64) {
        (
            self.ds.reloads.load(Ordering::Relaxed),
            self.ds.no_destination.load(Ordering::Relaxed),
        )
    }
}
