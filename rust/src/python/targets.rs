//! What `req.relay()` takes besides a URI: a registered contact, and serial
//! target lists — `sipr.Serial(...)`, and the dispatcher's `Selection`
//! (`ds.targets(...)`), turned into one against the request relayed.

use std::cell::RefCell;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyString;

use super::message::PyUri;
use crate::dispatcher::{Algo, Dispatcher};
use crate::proxy::failover::DEFAULT_SERIAL_CODES;
use crate::proxy::stateful::Target;
use crate::sip::Message;

/// A relay target: a URI / str (next hop), or a registered `sipr.Contact`
/// (its URI becomes the branch's Request-URI, its `next_hop` the hop, its
/// Path the branch's Route set).
pub fn relay_target(t: &Bound<'_, PyAny>) -> PyResult<Target> {
    // The common target, a str or URI, has no `next_hop`: probing it would
    // raise (and build) an AttributeError per relay.
    if t.is_instance_of::<PyString>() || t.cast::<PyUri>().is_ok() {
        return Ok(Target {
            hop: Some(target_string(t)?),
            ..Target::default()
        });
    }
    if let Ok(hop) = t.getattr("next_hop") {
        let uri: String = t.getattr("uri")?.extract()?;
        let hop: String = hop.extract()?;
        let routes: Vec<String> = t
            .getattr("path")
            .and_then(|p| p.extract())
            .unwrap_or_default();
        return Ok(Target {
            hop: Some(PyUri::parse_str(&hop)?.as_str().to_string()),
            request_uri: Some(PyUri::parse_str(&uri)?.as_str().to_string()),
            routes,
        });
    }
    Ok(Target {
        hop: Some(target_string(t)?),
        ..Target::default()
    })
}

pub fn target_string(t: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(u) = t.cast::<PyUri>() {
        return Ok(u.get().as_str().to_string());
    }
    let Ok(s) = t.cast::<PyString>() else {
        return Ok(PyUri::parse_str(&t.extract::<String>()?)?
            .as_str()
            .to_string());
    };
    let text = s.to_str()?;
    // An app relays to the same few targets, most often one constant: the
    // last str seen is kept with its checked form, so it is not parsed again
    // per request.
    LAST_TARGET.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((seen, checked)) = last.as_ref() {
            if seen == text {
                return Ok(checked.clone());
            }
        }
        let checked = PyUri::parse_str(text)?.as_str().to_string();
        if text.len() <= MAX_KEPT_TARGET {
            *last = Some((text.to_string(), checked.clone()));
        }
        Ok(checked)
    })
}

/// Longer target strings are parsed each time (a URI with many parameters).
const MAX_KEPT_TARGET: usize = 256;

thread_local! {
    /// The last relay target given as a str, and its checked form.
    static LAST_TARGET: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
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
    t.is_instance_of::<PySerial>() || t.is_instance_of::<PySelection>()
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
    let sel = t.cast::<PySelection>()?;
    sel.get().serial_for(msg)
}

/// `ds.targets(...)`: evaluated by `req.relay()` against its request.
#[pyclass(module = "sipr._core", name = "Selection", frozen)]
pub struct PySelection {
    ds: Arc<Dispatcher>,
    set: u32,
    algo: Algo,
    limit: usize,
    codes: Arc<[u16]>,
}

impl PySelection {
    pub fn new(
        ds: Arc<Dispatcher>,
        set: u32,
        algo: Algo,
        limit: usize,
        codes: Arc<[u16]>,
    ) -> PySelection {
        PySelection {
            ds,
            set,
            algo,
            limit,
            codes,
        }
    }

    pub fn serial_for(&self, msg: &Message) -> PyResult<(Vec<Target>, Arc<[u16]>)> {
        let order = self
            .ds
            .select(self.set, self.algo, msg)
            .map_err(PyValueError::new_err)?;
        let targets = order
            .iter()
            .take(self.limit)
            .map(|d| Target {
                hop: Some(d.entry.uri.clone()),
                ..Target::default()
            })
            .collect();
        Ok((targets, self.codes.clone()))
    }
}

#[pymethods]
impl PySelection {
    #[getter]
    fn set(&self) -> u32 {
        self.set
    }

    fn __repr__(&self) -> String {
        format!("Selection(set={}, algo={:?})", self.set, self.algo)
    }
}
