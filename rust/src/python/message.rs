//! Small value types handed to Python: URI, Address (From/To), CSeq, Source.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::sip::{NameAddr, Uri};
use crate::transport::Source;

/// A SIP URI. Parsed in Rust; fields are plain attributes.
#[pyclass(module = "sipr._core", name = "URI", frozen, eq, hash)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyUri {
    raw: String,
    #[pyo3(get)]
    scheme: String,
    #[pyo3(get)]
    user: Option<String>,
    #[pyo3(get)]
    password: Option<String>,
    #[pyo3(get)]
    host: String,
    #[pyo3(get)]
    port: Option<u16>,
    params_raw: String,
    #[pyo3(get)]
    headers: Option<String>,
}

impl PyUri {
    pub fn from_uri(u: &Uri<'_>) -> PyUri {
        PyUri {
            raw: u.raw.to_string(),
            scheme: u.scheme_str.to_ascii_lowercase(),
            user: u.user.map(str::to_string),
            password: u.password.map(str::to_string),
            host: u.host.to_string(),
            port: u.port,
            params_raw: u.params.to_string(),
            headers: u.headers.map(str::to_string),
        }
    }
    pub fn parse_str(s: &str) -> PyResult<PyUri> {
        let s = s.trim();
        let s = s
            .strip_prefix('<')
            .and_then(|x| x.strip_suffix('>'))
            .unwrap_or(s);
        Uri::parse(s)
            .map(|u| PyUri::from_uri(&u))
            .map_err(|e| PyValueError::new_err(format!("invalid URI {s:?}: {}", e.reason)))
    }
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

#[pymethods]
impl PyUri {
    #[new]
    fn new(uri: &str) -> PyResult<PyUri> {
        PyUri::parse_str(uri)
    }

    /// URI parameters as a dict; a flag parameter (e.g. `lr`) maps to "".
    #[getter]
    fn params(&self) -> Vec<(String, String)> {
        if self.params_raw.is_empty() {
            return Vec::new();
        }
        self.params_raw
            .split(';')
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    fn param(&self, name: &str) -> Option<String> {
        crate::sip::find_param(&self.params_raw, name).map(str::to_string)
    }

    fn __str__(&self) -> &str {
        &self.raw
    }
    fn __repr__(&self) -> String {
        format!("URI({:?})", self.raw)
    }
}

#[pyfunction]
pub fn parse_uri(uri: &str) -> PyResult<PyUri> {
    PyUri::parse_str(uri)
}

/// From / To / Contact: a URI with an optional display name and parameters.
#[pyclass(module = "sipr._core", name = "Address", frozen)]
#[derive(Clone)]
pub struct PyAddress {
    #[pyo3(get)]
    uri: PyUri,
    #[pyo3(get)]
    display: Option<String>,
    #[pyo3(get)]
    tag: Option<String>,
    raw: String,
}

impl PyAddress {
    pub fn from_nameaddr(n: &NameAddr<'_>, raw: &str) -> PyAddress {
        PyAddress {
            uri: PyUri::from_uri(&n.uri),
            display: n.display_unquoted(),
            tag: n.tag().map(str::to_string),
            raw: raw.to_string(),
        }
    }
}

#[pymethods]
impl PyAddress {
    fn param(&self, name: &str) -> Option<String> {
        NameAddr::parse(&self.raw)
            .ok()
            .and_then(|n| n.param(name).map(str::to_string))
    }
    fn __str__(&self) -> &str {
        &self.raw
    }
    fn __repr__(&self) -> String {
        format!("Address({:?})", self.raw)
    }
}

#[pyclass(module = "sipr._core", name = "CSeq", frozen)]
#[derive(Clone)]
pub struct PyCSeq {
    #[pyo3(get)]
    pub number: u32,
    #[pyo3(get)]
    pub method: String,
}

#[pymethods]
impl PyCSeq {
    fn __str__(&self) -> String {
        format!("{} {}", self.number, self.method)
    }
    fn __repr__(&self) -> String {
        format!("CSeq({} {})", self.number, self.method)
    }
}

/// Where a request came from.
#[pyclass(module = "sipr._core", name = "Source", frozen)]
#[derive(Clone)]
pub struct PySource {
    #[pyo3(get)]
    transport: &'static str,
    #[pyo3(get)]
    host: String,
    #[pyo3(get)]
    port: u16,
}

impl PySource {
    pub fn from_source(s: &Source) -> PySource {
        PySource {
            transport: s.transport.as_str(),
            host: s.addr.ip().to_string(),
            port: s.addr.port(),
        }
    }
}

#[pymethods]
impl PySource {
    fn __repr__(&self) -> String {
        format!("Source({} {}:{})", self.transport, self.host, self.port)
    }
}
