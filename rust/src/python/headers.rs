//! `sipr.Headers` (the header view of a request, a relayed response or a
//! held reply) and `sipr.Response` (what `await req.relay()` returns).

use std::ops::DerefMut;

use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::sip::edits::{message_pairs, same_header, split_values, HeaderEdits};
use crate::sip::Message;

/// `req.headers` / `resp.headers`: a case-insensitive view that understands
/// compact forms. Changes to a request's headers apply to what is relayed.
#[pyclass(module = "sipr._core", name = "Headers")]
pub struct PyHeaders {
    /// A response from downstream: read-only.
    resp: Option<Py<PyResponse>>,
    /// A request or a held response (`on_reply`): its headers may change.
    editable: Option<Box<dyn EditableHeaders>>,
}

/// A held message whose headers a `Headers` view may change: the request
/// (python/request.rs) or a `RelayReply` (python/onreply.rs); both know this
/// module, not the other way round.
pub(super) trait EditableHeaders: Send + Sync {
    /// The header pairs as they will be sent.
    fn pairs(&self, py: Python<'_>) -> Vec<(String, String)>;
    /// The first value of `name` in `pairs` (`HeaderEdits::first`).
    fn first(&self, py: Python<'_>, name: &str) -> Option<String>;
    fn edits<'a>(&'a self, py: Python<'a>) -> Box<dyn DerefMut<Target = HeaderEdits> + 'a>;
}

impl PyHeaders {
    pub(super) fn of_editable(editable: Box<dyn EditableHeaders>) -> PyHeaders {
        PyHeaders {
            resp: None,
            editable: Some(editable),
        }
    }
    fn pairs(&self, py: Python<'_>) -> Vec<(String, String)> {
        match (&self.resp, &self.editable) {
            (Some(r), _) => message_pairs(&r.borrow(py).msg),
            (None, Some(e)) => e.pairs(py),
            _ => Vec::new(),
        }
    }
    /// `pairs`' first value for `name`, without building them all.
    fn first(&self, py: Python<'_>, name: &str) -> Option<String> {
        match (&self.resp, &self.editable) {
            (Some(r), _) => HeaderEdits::default().first(&r.borrow(py).msg, name),
            (None, Some(e)) => e.first(py, name),
            _ => None,
        }
    }
    fn edits<'a>(
        &'a self,
        py: Python<'a>,
    ) -> PyResult<Box<dyn DerefMut<Target = HeaderEdits> + 'a>> {
        match &self.editable {
            Some(e) => Ok(e.edits(py)),
            None => Err(PyTypeError::new_err(
                "response headers are read-only (change them in an on_reply handler)",
            )),
        }
    }
}

#[pymethods]
impl PyHeaders {
    /// The first value of `name`, or `default`.
    #[pyo3(signature = (name, default=None))]
    fn get(&self, py: Python<'_>, name: &str, default: Option<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        Ok(match self.first(py, name) {
            Some(first) => PyString::new(py, &first).into_any().unbind(),
            None => default.unwrap_or_else(|| py.None()),
        })
    }

    /// Every value of `name`, with comma-separated lists split.
    fn getall(&self, py: Python<'_>, name: &str) -> Vec<String> {
        self.pairs(py)
            .into_iter()
            .filter(|(n, _)| same_header(n, name))
            .flat_map(|(n, v)| split_values(&n, &v))
            .collect()
    }

    fn __getitem__(&self, py: Python<'_>, name: &str) -> PyResult<String> {
        self.first(py, name)
            .ok_or_else(|| PyKeyError::new_err(name.to_string()))
    }

    fn __contains__(&self, py: Python<'_>, name: &str) -> bool {
        self.first(py, name).is_some()
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.pairs(py).len()
    }

    /// All (name, value) pairs in order.
    fn items(&self, py: Python<'_>) -> Vec<(String, String)> {
        self.pairs(py)
    }

    fn add(&self, py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = value.str()?.to_string();
        self.edits(py)?
            .add(name, &value)
            .map_err(PyValueError::new_err)
    }

    /// Replaces every `name` header with one carrying `value`.
    fn set(&self, py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = value.str()?.to_string();
        self.edits(py)?
            .set(name, &value)
            .map_err(PyValueError::new_err)
    }

    fn remove(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        self.edits(py)?.remove(name).map_err(PyValueError::new_err)
    }

    fn __delitem__(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        self.remove(py, name)
    }

    fn __setitem__(&self, py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set(py, name, value)
    }
}

/// A response from downstream (what `await req.relay()` returns).
#[pyclass(module = "sipr._core", name = "Response")]
pub struct PyResponse {
    msg: Message,
}

impl PyResponse {
    pub fn new(msg: Message) -> PyResponse {
        PyResponse { msg }
    }
}

#[pymethods]
impl PyResponse {
    #[getter]
    fn status(&self) -> u16 {
        self.msg.status().unwrap_or(0)
    }
    #[getter]
    fn reason(&self) -> &str {
        self.msg.reason().unwrap_or_default()
    }
    #[getter]
    fn headers(slf: Bound<'_, Self>) -> PyHeaders {
        PyHeaders {
            resp: Some(slf.unbind()),
            editable: None,
        }
    }
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
        pyo3::types::PyBytes::new(py, self.msg.body())
    }
    #[getter]
    fn raw<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
        pyo3::types::PyBytes::new(py, self.msg.as_bytes())
    }
    fn __repr__(&self) -> String {
        format!("<Response {} {}>", self.status(), self.reason())
    }
}
