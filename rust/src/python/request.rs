//! `sipr.Request`: a received request, read lazily from the Rust message, and
//! the actions the application takes on it.

use std::sync::Arc;

use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::message::{PyAddress, PyCSeq, PySource, PyUri};
use super::shared::Shared;
use super::targets::{relay_target, target_string};
use super::TransactionError;
use crate::core::{Event, Incoming, Reply};
use crate::proxy::stateful::{RelayOptions, Target};
use crate::proxy::ForwardRequest;
use crate::sip::write::HeaderEdit;
use crate::sip::{HeaderId, Message, Method};

/// Turns core events into Python: requests are returned, relay results
/// resolve their futures, cancellations are queued for the server.
pub fn dispatch(
    shared: &Arc<Shared>,
    py: Python<'_>,
    events: Vec<Event>,
) -> PyResult<Vec<Py<PyRequest>>> {
    let mut requests = Vec::with_capacity(events.len());
    for ev in events {
        match ev {
            Event::Request(inc) => requests.push(Py::new(py, PyRequest::new(shared.clone(), inc))?),
            Event::RelayDone { relay, result } => {
                let fut = shared.futures.lock().remove(&relay);
                if let Some(fut) = fut {
                    let fut = fut.bind(py);
                    if !fut.call_method0("done")?.is_truthy()? {
                        fut.call_method1("set_result", (PyResponse::new(result.message),))?;
                    }
                }
            }
            Event::Cancelled(txn) => shared.cancelled.lock().push(txn),
            Event::Reply(held) => shared.replies.lock().push(held),
            Event::ReplyWatchEnded(txn) => {
                shared.reply_handlers.lock().remove(&txn);
            }
        }
    }
    Ok(requests)
}

#[pyclass(module = "sipr._core", name = "Request")]
pub struct PyRequest {
    shared: Arc<Shared>,
    inc: Incoming,
    /// Boxed: a `PyUri` inline would add ~200 bytes to every request held.
    uri_override: Option<Box<PyUri>>,
    edits: Vec<HeaderEdit>,
    to_tag: Option<String>,
    /// A final answer was sent, or the request was forwarded or relayed.
    handled: bool,
    /// A final answer was sent (by `reply`).
    answered: bool,
    /// The core's pending count was released for this request.
    released: bool,
    /// Per-request route deadline in seconds (None: the app's default).
    deadline: Option<f64>,
}

impl PyRequest {
    pub fn new(shared: Arc<Shared>, inc: Incoming) -> PyRequest {
        PyRequest {
            shared,
            inc,
            uri_override: None,
            edits: Vec::new(),
            to_tag: None,
            handled: false,
            answered: false,
            released: false,
            deadline: None,
        }
    }

    /// The request as received and where from (the registrar and digest
    /// rules read it directly).
    pub(crate) fn incoming(&self) -> &Incoming {
        &self.inc
    }

    /// The request as received (services that select on it: dispatcher).
    pub(super) fn message(&self) -> &Message {
        &self.inc.msg
    }

    /// The handler is done with the request: free its overload slot, and let
    /// a held relay result go upstream.
    fn release(&mut self) {
        if !self.released {
            self.released = true;
            self.shared.core.finish(self.inc.txn);
        }
    }

    fn ensure_open(&self, action: &str) -> PyResult<()> {
        if self.answered || (self.handled && action == "forward") {
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
        self.edits
            .iter()
            .any(|e| matches!(e, HeaderEdit::Remove(n) if same_header(n, name)))
    }

    /// Sends an answer: through the server transaction when there is one
    /// (retransmissions, ACK matching), else statelessly.
    fn send_reply(
        &mut self,
        status: u16,
        reason: Option<&str>,
        extra: Vec<(String, String)>,
        body: &[u8],
    ) -> PyResult<()> {
        let reply = Reply {
            status,
            reason,
            headers: &extra,
            body,
        };
        let sent = self.shared.core.reply(&self.inc, &mut self.to_tag, &reply);
        if !sent {
            self.answered = true;
            self.handled = true;
            return Err(self.closed_error("reply"));
        }
        if status >= 200 {
            self.answered = true;
            self.handled = true;
        }
        Ok(())
    }

    fn closed_error(&self, action: &str) -> PyErr {
        TransactionError::new_err(format!(
            "cannot {action}: request {} {} (Call-ID {}) was already answered, cancelled or ended",
            self.inc.msg.method_str(),
            self.inc.msg.cseq(),
            self.inc.msg.call_id()
        ))
    }

    /// Drops the server transaction: the request is handled statelessly.
    fn forget_txn(&mut self) {
        if let Some(txn) = self.inc.txn.take() {
            self.shared.core.forget(txn);
        }
    }
}

pub(super) fn canonical_name(name: &str) -> String {
    HeaderId::from_name(name.as_bytes())
        .canonical()
        .map_or_else(|| name.to_string(), str::to_string)
}

fn same_header(a: &str, b: &str) -> bool {
    let (ia, ib) = (
        HeaderId::from_name(a.as_bytes()),
        HeaderId::from_name(b.as_bytes()),
    );
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
        Some(parts) => parts
            .into_iter()
            .map(|(a, b)| value[a..b].to_string())
            .collect(),
        None => vec![value.to_string()],
    }
}

fn extract_headers(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<(String, String)>> {
    let Some(obj) = obj else {
        return Ok(Vec::new());
    };
    if let Ok(d) = obj.cast::<PyDict>() {
        return d
            .iter()
            .map(|(k, v)| Ok((k.extract::<String>()?, v.str()?.to_string())))
            .collect();
    }
    if obj.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "headers must be a dict or a sequence of (name, value) pairs, not str",
        ));
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
            return Err(PyValueError::new_err(format!(
                "invalid header {k:?}: {v:?}"
            )));
        }
    }
    Ok(out)
}

#[pymethods]
impl PyRequest {
    /// The server transaction id (internal; used to cancel the handler task).
    #[getter]
    fn _txn(&self) -> Option<u64> {
        self.inc.txn
    }

    #[getter]
    fn method(&self) -> &str {
        self.inc.msg.method_str()
    }

    /// The Request-URI (assign a str or URI to change where it is relayed).
    #[getter]
    fn uri(&self) -> PyResult<PyUri> {
        if let Some(u) = &self.uri_override {
            return Ok(u.as_ref().clone());
        }
        PyUri::parse_str(self.inc.msg.request_uri_str().unwrap_or_default())
    }

    #[setter]
    fn set_uri(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let uri = if let Ok(u) = value.cast::<PyUri>() {
            u.get().clone()
        } else {
            PyUri::parse_str(&value.extract::<String>()?)?
        };
        self.uri_override = Some(Box::new(uri));
        Ok(())
    }

    #[getter]
    fn headers(slf: Bound<'_, Self>) -> PyHeaders {
        PyHeaders {
            req: Some(slf.unbind()),
            resp: None,
            reply: None,
        }
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
        PyCSeq {
            number: self.inc.msg.cseq(),
            method: self.inc.msg.cseq_method().to_string(),
        }
    }

    /// The body (as it will be relayed: assigning replaces it, e.g. an SDP
    /// rewritten by a media relay; Content-Length follows).
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
        let body = crate::sip::write::body_override(&self.edits).unwrap_or(self.inc.msg.body());
        pyo3::types::PyBytes::new(py, body)
    }

    #[setter]
    fn set_body(&mut self, body: Vec<u8>) {
        self.edits.retain(|e| !matches!(e, HeaderEdit::Body(_)));
        self.edits.push(HeaderEdit::Body(body.into()));
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

    /// Whether the sender looks NATed (Kamailio `nat_uac_test("19")`):
    /// private Contact, or top Via host/port not the source (docs/nat.md).
    #[getter]
    fn behind_nat(&self) -> bool {
        crate::nat::nat_test(&self.inc.msg, &self.inc.source, crate::nat::DEFAULT_TESTS) != 0
    }

    /// The NAT tests (`contact_private`, `via_received`, `via_private`,
    /// `sdp_private`, `via_port`, `contact_address`, `contact_port`; all
    /// when None) that fire for this request.
    #[pyo3(signature = (tests=None))]
    fn nat_test(&self, tests: Option<Vec<String>>) -> PyResult<Vec<&'static str>> {
        super::nat::run_tests(&self.inc.msg, &self.inc.source, tests)
    }

    /// Kamailio `fix_nated_contact()`: the Contact's host:port becomes the
    /// source address in what is relayed. False without a Contact.
    fn fix_nated_contact(&mut self) -> bool {
        let Some(fixed) = crate::nat::fix_contact(&self.inc.msg, self.inc.source.addr) else {
            return false;
        };
        self.edits
            .retain(|e| !matches!(e, HeaderEdit::Add(n, _) if same_header(n, "Contact")));
        self.edits.push(HeaderEdit::Remove("Contact".into()));
        self.edits.push(HeaderEdit::Add("Contact".into(), fixed));
        true
    }

    /// Kamailio `fix_nated_sdp()`: the SDP's `c=` (and with `origin`, `o=`)
    /// addresses become the source address. False without such an SDP.
    #[pyo3(signature = (origin=true))]
    fn fix_nated_sdp(&mut self, origin: bool) -> bool {
        let body = crate::sip::write::body_override(&self.edits).unwrap_or(self.inc.msg.body());
        let Some(fixed) = crate::nat::fix_sdp(body, self.inc.source.addr.ip(), origin) else {
            return false;
        };
        self.set_body(fixed);
        true
    }

    /// Whether a final answer was sent or the request was forwarded/relayed.
    #[getter]
    fn handled(&self) -> bool {
        self.handled
    }

    /// This request's route deadline in seconds from its arrival, overriding
    /// `App(route_deadline=...)`. Set it before the handler's first `await`.
    #[getter]
    fn get_deadline(&self) -> Option<f64> {
        self.deadline
    }

    #[setter]
    fn set_deadline(&mut self, seconds: Option<f64>) -> PyResult<()> {
        if let Some(s) = seconds {
            if !(s.is_finite() && s > 0.0) {
                return Err(PyValueError::new_err(
                    "deadline must be a positive number of seconds",
                ));
            }
        }
        self.deadline = seconds;
        Ok(())
    }

    /// Answers the request. A status below 200 is provisional and may be
    /// followed by another answer.
    #[pyo3(signature = (status, reason=None, *, headers=None, body=None))]
    fn reply(
        &mut self,
        status: u16,
        reason: Option<&str>,
        headers: Option<&Bound<'_, PyAny>>,
        body: Option<&[u8]>,
    ) -> PyResult<()> {
        if !(100..700).contains(&status) {
            return Err(PyValueError::new_err(format!(
                "status must be 100-699, got {status}"
            )));
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
        extra.push((
            "Server".to_string(),
            self.shared.core.config.server_name.clone(),
        ));
        self.send_reply(status, reason, extra, body.unwrap_or_default())
    }

    /// Forwards statelessly to `target` (a next-hop URI, like Kamailio's $du),
    /// else by Route, else to the Request-URI. Returns False when the core had
    /// to answer instead (e.g. 483 Too Many Hops).
    #[pyo3(signature = (target=None))]
    fn forward(&mut self, target: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        self.ensure_open("forward")?;
        let target = target.map(target_string).transpose()?;
        let ruri = self.uri_override.as_ref().map(|u| u.as_str().to_string());
        self.forget_txn();
        let core = self.shared.core.clone();
        let result = core.forward(
            &self.inc,
            &ForwardRequest {
                target: target.as_deref(),
                request_uri: ruri.as_deref(),
                header_edits: &self.edits,
            },
        );
        match result {
            Ok(_) => {
                self.handled = true;
                Ok(true)
            }
            Err(e) => {
                tracing::info!(call_id = self.inc.msg.call_id(), error = %e, "forward refused");
                if self.inc.msg.method() != Method::Ack {
                    let mut extra = vec![("Server".to_string(), core.config.server_name.clone())];
                    if let crate::proxy::ForwardError::BadExtension(ext) = &e {
                        extra.push(("Unsupported".to_string(), ext.clone()));
                    }
                    self.send_reply(e.status(), None, extra, b"")?;
                }
                self.handled = true;
                Ok(false)
            }
        }
    }

    /// Relays statefully to `target` (a next-hop URI), a list of them (a
    /// parallel fork), or by Route / Request-URI. Returns an awaitable that
    /// resolves to the final `Response`. A 2xx goes upstream at once; any
    /// other final goes upstream when the handler returns without acting again.
    #[pyo3(signature = (target=None, *, timeout=None, record_route=None, on_reply=None))]
    fn relay(
        &mut self,
        py: Python<'_>,
        target: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
        record_route: Option<bool>,
        on_reply: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let asyncio = py.import("asyncio")?;
        let fut = asyncio
            .call_method0("get_running_loop")?
            .call_method0("create_future")?;
        if self.answered {
            return Err(self.closed_error("relay"));
        }
        let mut serial = None;
        let targets: Vec<Target> = match target {
            None => Vec::new(),
            // Serial targets (`sipr.Serial`, a dispatcher or prefix-route
            // selection): one branch failing over from one to the next.
            Some(t) if super::targets::is_serial(t) => {
                let (targets, codes) = super::targets::serial_targets(t, &self.inc.msg)?;
                serial = Some(codes);
                targets
            }
            Some(t)
                if t.is_instance_of::<pyo3::types::PyList>()
                    || t.is_instance_of::<pyo3::types::PyTuple>() =>
            {
                let mut v = Vec::new();
                for item in t.try_iter()? {
                    v.push(relay_target(&item?)?);
                }
                if v.is_empty() {
                    return Err(PyValueError::new_err("relay() needs at least one target"));
                }
                v
            }
            Some(t) => vec![relay_target(t)?],
        };
        let timeout = match timeout {
            Some(s) => Some(std::time::Duration::try_from_secs_f64(s).map_err(|_| {
                PyValueError::new_err("timeout must be a positive number of seconds")
            })?),
            None => None,
        };
        let Some(txn) = self.inc.txn else {
            // ACK (and anything without a transaction) is relayed statelessly.
            let ruri = self.uri_override.as_ref().map(|u| u.as_str().to_string());
            let _ = self.shared.core.forward(
                &self.inc,
                &ForwardRequest {
                    target: targets.first().and_then(|t| t.hop.as_deref()),
                    request_uri: targets
                        .first()
                        .and_then(|t| t.request_uri.as_deref())
                        .or(ruri.as_deref()),
                    header_edits: &self.edits,
                },
            );
            self.handled = true;
            fut.call_method1("set_result", (py.None(),))?;
            return Ok(fut.unbind());
        };
        if let Some(handler) = on_reply {
            super::reply_watch::watch(&self.shared, py, txn, handler)?;
        }
        let relay_id = self.shared.next_relay_id();
        self.shared
            .futures
            .lock()
            .insert(relay_id, fut.clone().unbind());
        let ruri = self.uri_override.as_ref().map(|u| u.as_str().to_string());
        let opts = RelayOptions {
            targets,
            request_uri: ruri.as_deref(),
            header_edits: &self.edits,
            record_route: record_route.unwrap_or(self.record_route_default()),
            timeout,
            serial,
        };
        let (result, events) = self.shared.core.relay(txn, &opts, relay_id);
        if result.is_err() {
            self.shared.futures.lock().remove(&relay_id);
            return Err(self.closed_error("relay"));
        }
        self.handled = true;
        let requests = dispatch(&self.shared, py, events)?;
        debug_assert!(requests.is_empty());
        Ok(fut.unbind())
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

impl PyRequest {
    fn record_route_default(&self) -> bool {
        self.shared
            .record_route
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for PyRequest {
    fn drop(&mut self) {
        self.release();
    }
}

/// `req.headers` / `resp.headers`: a case-insensitive view that understands
/// compact forms. Changes to a request's headers apply to what is relayed.
#[pyclass(module = "sipr._core", name = "Headers")]
pub struct PyHeaders {
    req: Option<Py<PyRequest>>,
    resp: Option<Py<PyResponse>>,
    /// A held response (`on_reply`): its headers may change.
    reply: Option<Box<dyn EditableHeaders>>,
}

/// A held message besides the request whose headers a `Headers` view may
/// change: `RelayReply` (python/onreply.rs, which knows this module and
/// not the other way round).
pub(super) trait EditableHeaders: Send + Sync {
    /// The header pairs as they will be sent.
    fn pairs(&self, py: Python<'_>) -> Vec<(String, String)>;
    fn edits<'a>(
        &'a self,
        py: Python<'a>,
    ) -> Box<dyn std::ops::DerefMut<Target = Vec<HeaderEdit>> + 'a>;
}

/// The header edits of whatever a `Headers` view changes.
enum EditsMut<'a> {
    Request(PyRefMut<'a, PyRequest>),
    Reply(Box<dyn std::ops::DerefMut<Target = Vec<HeaderEdit>> + 'a>),
}

impl std::ops::Deref for EditsMut<'_> {
    type Target = Vec<HeaderEdit>;
    fn deref(&self) -> &Vec<HeaderEdit> {
        match self {
            EditsMut::Request(r) => &r.edits,
            EditsMut::Reply(r) => r,
        }
    }
}

impl std::ops::DerefMut for EditsMut<'_> {
    fn deref_mut(&mut self) -> &mut Vec<HeaderEdit> {
        match self {
            EditsMut::Request(r) => &mut r.edits,
            EditsMut::Reply(r) => r,
        }
    }
}

impl PyHeaders {
    pub(super) fn of_reply(reply: Box<dyn EditableHeaders>) -> PyHeaders {
        PyHeaders {
            req: None,
            resp: None,
            reply: Some(reply),
        }
    }
    fn pairs(&self, py: Python<'_>) -> Vec<(String, String)> {
        match (&self.req, &self.resp, &self.reply) {
            (Some(r), _, _) => r.borrow(py).header_pairs(),
            (None, Some(r), _) => message_pairs(&r.borrow(py).msg),
            (None, None, Some(r)) => r.pairs(py),
            _ => Vec::new(),
        }
    }
    fn edits<'a>(&'a self, py: Python<'a>) -> PyResult<EditsMut<'a>> {
        match (&self.req, &self.reply) {
            (Some(r), _) => Ok(EditsMut::Request(r.borrow_mut(py))),
            (None, Some(r)) => Ok(EditsMut::Reply(r.edits(py))),
            _ => Err(PyTypeError::new_err(
                "response headers are read-only (change them in an on_reply handler)",
            )),
        }
    }
}

fn message_pairs(msg: &Message) -> Vec<(String, String)> {
    msg.headers()
        .iter()
        .map(|h| {
            (
                canonical_name(msg.header_name(h)),
                msg.header_value(h).to_string(),
            )
        })
        .collect()
}

#[pymethods]
impl PyHeaders {
    /// The first value of `name`, or `default`.
    #[pyo3(signature = (name, default=None))]
    fn get(&self, py: Python<'_>, name: &str, default: Option<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        for (n, v) in self.pairs(py) {
            if same_header(&n, name) {
                let first = split_values(&n, &v).into_iter().next().unwrap_or(v);
                return Ok(PyString::new(py, &first).into_any().unbind());
            }
        }
        Ok(default.unwrap_or_else(|| py.None()))
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
        self.pairs(py)
            .into_iter()
            .find(|(n, _)| same_header(n, name))
            .map(|(n, v)| split_values(&n, &v).into_iter().next().unwrap_or(v))
            .ok_or_else(|| PyKeyError::new_err(name.to_string()))
    }

    fn __contains__(&self, py: Python<'_>, name: &str) -> bool {
        self.pairs(py).iter().any(|(n, _)| same_header(n, name))
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
        check_header(name, &value)?;
        self.edits(py)?
            .push(HeaderEdit::Add(name.to_string(), value));
        Ok(())
    }

    /// Replaces every `name` header with one carrying `value`.
    fn set(&self, py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = value.str()?.to_string();
        check_header(name, &value)?;
        let mut edits = self.edits(py)?;
        edits.retain(|e| !matches!(e, HeaderEdit::Add(n, _) if same_header(n, name)));
        edits.push(HeaderEdit::Remove(name.to_string()));
        edits.push(HeaderEdit::Add(name.to_string(), value));
        Ok(())
    }

    fn remove(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let id = HeaderId::from_name(name.as_bytes());
        if matches!(
            id,
            HeaderId::Via | HeaderId::CallId | HeaderId::CSeq | HeaderId::From | HeaderId::To
        ) {
            return Err(PyValueError::new_err(format!(
                "{name} is managed by the core and cannot be removed"
            )));
        }
        let mut edits = self.edits(py)?;
        edits.retain(|e| !matches!(e, HeaderEdit::Add(n, _) if same_header(n, name)));
        edits.push(HeaderEdit::Remove(name.to_string()));
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
        return Err(PyValueError::new_err(format!(
            "invalid header name {name:?}"
        )));
    }
    if value.contains(['\r', '\n']) {
        return Err(PyValueError::new_err(format!(
            "header {name} value must be a single line"
        )));
    }
    let id = HeaderId::from_name(name.as_bytes());
    if matches!(
        id,
        HeaderId::Via
            | HeaderId::CallId
            | HeaderId::CSeq
            | HeaderId::From
            | HeaderId::To
            | HeaderId::ContentLength
    ) {
        return Err(PyValueError::new_err(format!(
            "{name} is managed by the core"
        )));
    }
    Ok(())
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
            req: None,
            resp: Some(slf.unbind()),
            reply: None,
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
