//! `sipr.Request`: a received request, read lazily from the Rust message, and
//! the actions the application takes on it.

use std::sync::Arc;

use bytes::Bytes;
use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::message::{PyAddress, PyCSeq, PySource, PyUri};
use super::TransactionError;
use crate::core::{Core, Incoming};
use crate::proxy::{forward_stateless, ForwardRequest};
use crate::sip::write::{build_response, HeaderEdit};
use crate::sip::{HeaderId, Method};

#[pyclass(module = "sipr._core", name = "Request")]
pub struct PyRequest {
    core: Arc<Core>,
    inc: Incoming,
    uri_override: Option<PyUri>,
    edits: Vec<HeaderEdit>,
    to_tag: Option<String>,
    /// A final answer was sent or the request was forwarded.
    handled: bool,
    /// The core's pending count was released for this request.
    released: bool,
}

impl PyRequest {
    pub fn new(core: Arc<Core>, inc: Incoming) -> PyRequest {
        PyRequest { core, inc, uri_override: None, edits: Vec::new(), to_tag: None, handled: false, released: false }
    }

    fn release(&mut self) {
        if !self.released {
            self.released = true;
            self.core.release();
        }
    }

    fn ensure_open(&self, action: &str) -> PyResult<()> {
        if self.handled {
            return Err(TransactionError::new_err(format!(
                "cannot {action}: request {} {} (Call-ID {}) was already answered or forwarded",
                self.inc.msg.method_str(),
                self.inc.msg.cseq(),
                self.inc.msg.call_id()
            )));
        }
        Ok(())
    }

    /// Every (name, value) the application sees: received headers minus
    /// removed ones, then added ones.
    fn header_pairs(&self) -> Vec<(String, String)> {
        let msg = &self.inc.msg;
        let mut out: Vec<(String, String)> = Vec::with_capacity(msg.headers().len());
        for h in msg.headers() {
            let name = msg.header_name(h);
            if !self.is_removed(name) {
                out.push((canonical_name(name), msg.header_value(h).to_string()));
            }
        }
        // `set`/`remove` drop earlier additions, so every remaining Add stands.
        for e in &self.edits {
            if let HeaderEdit::Add(n, v) = e {
                out.push((n.clone(), v.clone()));
            }
        }
        out
    }

    fn is_removed(&self, name: &str) -> bool {
        self.edits.iter().any(|e| matches!(e, HeaderEdit::Remove(n) if same_header(n, name)))
    }

    fn send_reply(&mut self, status: u16, reason: Option<&str>, extra: Vec<(String, String)>, body: &[u8]) {
        if self.to_tag.is_none() && status > 100 && self.inc.msg.to_tag().is_none() {
            self.to_tag = Some(self.core.new_tag());
        }
        let resp = build_response(
            &self.inc.msg,
            Some(self.inc.source.addr),
            status,
            reason,
            self.to_tag.as_deref(),
            &extra,
            body,
        );
        self.core.send_response(&self.inc.msg, self.inc.source, Bytes::from(resp));
        if status >= 200 {
            self.handled = true;
            self.release();
        }
    }
}

fn canonical_name(name: &str) -> String {
    HeaderId::from_name(name.as_bytes()).canonical().map_or_else(|| name.to_string(), str::to_string)
}

fn same_header(a: &str, b: &str) -> bool {
    let (ia, ib) = (HeaderId::from_name(a.as_bytes()), HeaderId::from_name(b.as_bytes()));
    if ia == HeaderId::Other || ib == HeaderId::Other {
        a.eq_ignore_ascii_case(b)
    } else {
        ia == ib
    }
}

/// Splits a header value into list elements when the header is a list type.
fn split_values(name: &str, value: &str) -> Vec<String> {
    if !HeaderId::from_name(name.as_bytes()).is_list() {
        return vec![value.to_string()];
    }
    match crate::sip::scan::split_commas(value.as_bytes(), 0, value.len()) {
        Some(parts) => parts.into_iter().map(|(a, b)| value[a..b].to_string()).collect(),
        None => vec![value.to_string()],
    }
}

fn extract_headers(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<(String, String)>> {
    let Some(obj) = obj else { return Ok(Vec::new()) };
    if let Ok(d) = obj.cast::<PyDict>() {
        return d.iter().map(|(k, v)| Ok((k.extract::<String>()?, v.str()?.to_string()))).collect();
    }
    if obj.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err("headers must be a dict or a sequence of (name, value) pairs, not str"));
    }
    let mut out = Vec::new();
    for item in obj.try_iter()? {
        let (k, v): (String, Bound<'_, PyAny>) = item?.extract().map_err(|_| {
            PyTypeError::new_err("headers must be a dict or a sequence of (name, value) pairs")
        })?;
        out.push((k, v.str()?.to_string()));
    }
    for (k, v) in &out {
        if k.is_empty() || !k.bytes().all(crate::sip::scan::is_token) || v.contains(['\r', '\n']) {
            return Err(PyValueError::new_err(format!("invalid header {k:?}: {v:?}")));
        }
    }
    Ok(out)
}

#[pymethods]
impl PyRequest {
    #[getter]
    fn method(&self) -> &str {
        self.inc.msg.method_str()
    }

    /// The Request-URI (assign a str or URI to change where it is relayed).
    #[getter]
    fn uri(&self) -> PyResult<PyUri> {
        if let Some(u) = &self.uri_override {
            return Ok(u.clone());
        }
        PyUri::parse_str(self.inc.msg.request_uri_str().unwrap_or_default())
    }

    #[setter]
    fn set_uri(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let uri = if let Ok(u) = value.cast::<PyUri>() { u.get().clone() } else { PyUri::parse_str(&value.extract::<String>()?)? };
        self.uri_override = Some(uri);
        Ok(())
    }

    #[getter]
    fn headers(slf: Bound<'_, Self>) -> PyHeaders {
        PyHeaders { req: slf.unbind() }
    }

    #[getter]
    fn from_(&self) -> PyAddress {
        let msg = &self.inc.msg;
        PyAddress::from_nameaddr(&msg.from(), msg.header(HeaderId::From).unwrap_or_default())
    }

    #[getter]
    fn to(&self) -> PyAddress {
        let msg = &self.inc.msg;
        PyAddress::from_nameaddr(&msg.to(), msg.header(HeaderId::To).unwrap_or_default())
    }

    #[getter]
    fn call_id(&self) -> &str {
        self.inc.msg.call_id()
    }

    #[getter]
    fn cseq(&self) -> PyCSeq {
        PyCSeq { number: self.inc.msg.cseq(), method: self.inc.msg.cseq_method().to_string() }
    }

    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
        pyo3::types::PyBytes::new(py, self.inc.msg.body())
    }

    #[getter]
    fn source(&self) -> PySource {
        PySource::from_source(&self.inc.source)
    }

    /// True for a request inside a dialog (its To carries a tag).
    #[getter]
    fn in_dialog(&self) -> bool {
        self.inc.msg.to_tag().is_some()
    }

    #[getter]
    fn max_forwards(&self) -> Option<u8> {
        self.inc.msg.max_forwards()
    }

    /// The request exactly as received.
    #[getter]
    fn raw<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
        pyo3::types::PyBytes::new(py, self.inc.msg.as_bytes())
    }

    /// Whether a final answer was sent or the request was forwarded.
    #[getter]
    fn handled(&self) -> bool {
        self.handled
    }

    /// Answers the request. A status below 200 is provisional and may be
    /// followed by another answer.
    #[pyo3(signature = (status, reason=None, *, headers=None, body=None))]
    fn reply(&mut self, status: u16, reason: Option<&str>, headers: Option<&Bound<'_, PyAny>>, body: Option<&[u8]>) -> PyResult<()> {
        if !(100..700).contains(&status) {
            return Err(PyValueError::new_err(format!("status must be 100-699, got {status}")));
        }
        if let Some(r) = reason {
            if r.contains(['\r', '\n']) {
                return Err(PyValueError::new_err("reason must be a single line"));
            }
        }
        if self.inc.msg.method() == Method::Ack {
            return Err(TransactionError::new_err("ACK cannot be answered"));
        }
        self.ensure_open("reply")?;
        let mut extra = extract_headers(headers)?;
        extra.push(("Server".to_string(), self.core.config.server_name.clone()));
        self.send_reply(status, reason, extra, body.unwrap_or_default());
        Ok(())
    }

    /// Forwards statelessly to `target` (a next-hop URI, like Kamailio's $du),
    /// else by Route, else to the Request-URI. Returns False when the core had
    /// to answer instead (e.g. 483 Too Many Hops).
    #[pyo3(signature = (target=None))]
    fn forward(&mut self, target: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        self.ensure_open("forward")?;
        let target: Option<String> = match target {
            None => None,
            Some(t) => Some(match t.cast::<PyUri>() {
                Ok(u) => u.get().as_str().to_string(),
                Err(_) => PyUri::parse_str(&t.extract::<String>()?)?.as_str().to_string(),
            }),
        };
        let ruri = self.uri_override.as_ref().map(|u| u.as_str().to_string());
        let result = forward_stateless(
            &self.core,
            &self.inc,
            &ForwardRequest { target: target.as_deref(), request_uri: ruri.as_deref(), header_edits: &self.edits },
        );
        match result {
            Ok(_) => {
                self.handled = true;
                self.release();
                Ok(true)
            }
            Err(e) => {
                tracing::info!(call_id = self.inc.msg.call_id(), error = %e, "forward refused");
                if self.inc.msg.method() != Method::Ack {
                    let mut extra = vec![("Server".to_string(), self.core.config.server_name.clone())];
                    if let crate::proxy::ForwardError::BadExtension(ext) = &e {
                        extra.push(("Unsupported".to_string(), ext.clone()));
                    }
                    self.send_reply(e.status(), None, extra, b"");
                } else {
                    self.handled = true;
                    self.release();
                }
                Ok(false)
            }
        }
    }

    /// Called by the dispatcher when the handler is done: frees the request's
    /// slot in the core's overload bound.
    fn _finish(&mut self) {
        self.release();
    }

    fn __repr__(&self) -> String {
        format!(
            "<Request {} {} Call-ID={}>",
            self.inc.msg.method_str(),
            self.inc.msg.request_uri_str().unwrap_or_default(),
            self.inc.msg.call_id()
        )
    }
}

impl Drop for PyRequest {
    fn drop(&mut self) {
        self.release();
    }
}

/// `req.headers`: a case-insensitive view that understands compact forms.
/// Changes apply to what is forwarded.
#[pyclass(module = "sipr._core", name = "Headers")]
pub struct PyHeaders {
    req: Py<PyRequest>,
}

#[pymethods]
impl PyHeaders {
    /// The first value of `name`, or `default`.
    #[pyo3(signature = (name, default=None))]
    fn get(&self, py: Python<'_>, name: &str, default: Option<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        let req = self.req.borrow(py);
        for (n, v) in req.header_pairs() {
            if same_header(&n, name) {
                let first = split_values(&n, &v).into_iter().next().unwrap_or(v);
                return Ok(PyString::new(py, &first).into_any().unbind());
            }
        }
        Ok(default.unwrap_or_else(|| py.None()))
    }

    /// Every value of `name`, with comma-separated lists split.
    fn getall(&self, py: Python<'_>, name: &str) -> Vec<String> {
        let req = self.req.borrow(py);
        req.header_pairs()
            .into_iter()
            .filter(|(n, _)| same_header(n, name))
            .flat_map(|(n, v)| split_values(&n, &v))
            .collect()
    }

    fn __getitem__(&self, py: Python<'_>, name: &str) -> PyResult<String> {
        let req = self.req.borrow(py);
        req.header_pairs()
            .into_iter()
            .find(|(n, _)| same_header(n, name))
            .map(|(n, v)| split_values(&n, &v).into_iter().next().unwrap_or(v))
            .ok_or_else(|| PyKeyError::new_err(name.to_string()))
    }

    fn __contains__(&self, py: Python<'_>, name: &str) -> bool {
        self.req.borrow(py).header_pairs().iter().any(|(n, _)| same_header(n, name))
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.req.borrow(py).header_pairs().len()
    }

    /// All (name, value) pairs in order.
    fn items(&self, py: Python<'_>) -> Vec<(String, String)> {
        self.req.borrow(py).header_pairs()
    }

    fn add(&self, py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = value.str()?.to_string();
        check_header(name, &value)?;
        self.req.borrow_mut(py).edits.push(HeaderEdit::Add(name.to_string(), value));
        Ok(())
    }

    /// Replaces every `name` header with one carrying `value`.
    fn set(&self, py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = value.str()?.to_string();
        check_header(name, &value)?;
        let mut req = self.req.borrow_mut(py);
        req.edits.retain(|e| !matches!(e, HeaderEdit::Add(n, _) if same_header(n, name)));
        req.edits.push(HeaderEdit::Remove(name.to_string()));
        req.edits.push(HeaderEdit::Add(name.to_string(), value));
        Ok(())
    }

    fn remove(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let id = HeaderId::from_name(name.as_bytes());
        if matches!(id, HeaderId::Via | HeaderId::CallId | HeaderId::CSeq | HeaderId::From | HeaderId::To) {
            return Err(PyValueError::new_err(format!("{name} is managed by the core and cannot be removed")));
        }
        let mut req = self.req.borrow_mut(py);
        req.edits.retain(|e| !matches!(e, HeaderEdit::Add(n, _) if same_header(n, name)));
        req.edits.push(HeaderEdit::Remove(name.to_string()));
        Ok(())
    }

    fn __delitem__(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        self.remove(py, name)
    }

    fn __setitem__(&self, py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set(py, name, value)
    }
}

fn check_header(name: &str, value: &str) -> PyResult<()> {
    if name.is_empty() || !name.bytes().all(crate::sip::scan::is_token) {
        return Err(PyValueError::new_err(format!("invalid header name {name:?}")));
    }
    if value.contains(['\r', '\n']) {
        return Err(PyValueError::new_err(format!("header {name} value must be a single line")));
    }
    let id = HeaderId::from_name(name.as_bytes());
    if matches!(id, HeaderId::Via | HeaderId::CallId | HeaderId::CSeq | HeaderId::From | HeaderId::To | HeaderId::ContentLength) {
        return Err(PyValueError::new_err(format!("{name} is managed by the core")));
    }
    Ok(())
}
