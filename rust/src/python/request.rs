//! `sipr.Request`: a received request, read lazily from the Rust message, and
//! the actions the application takes on it.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::headers::{EditableHeaders, PyHeaders, PyResponse};
use super::message::{PyAddress, PyCSeq, PySource, PyUri};
use super::shared::Shared;
use super::targets::{relay_target, target_string};
use super::TransactionError;
use crate::core::{ActionError, Event, HeldRequest, Incoming, Relayed};
use crate::proxy::stateful::Target;
use crate::sip::edits::HeaderEdits;
use crate::sip::{HeaderId, Message};

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
    held: HeldRequest,
    /// Per-request route deadline in seconds (None: the app's default).
    deadline: Option<f64>,
}

impl PyRequest {
    pub fn new(shared: Arc<Shared>, inc: Incoming) -> PyRequest {
        PyRequest {
            shared,
            held: HeldRequest::new(inc),
            deadline: None,
        }
    }

    fn record_route_default(&self) -> bool {
        self.shared
            .record_route
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The request as received and where from (the registrar and digest
    /// rules read it directly).
    pub(crate) fn incoming(&self) -> &Incoming {
        &self.held.inc
    }

    /// The request as received (services that select on it: dispatcher).
    pub(super) fn message(&self) -> &Message {
        &self.held.inc.msg
    }
}

fn to_py(e: ActionError) -> PyErr {
    match e {
        ActionError::Closed(m) => TransactionError::new_err(m),
        ActionError::Invalid(m) => PyValueError::new_err(m),
    }
}

/// `headers=` of `reply()`: a dict or a sequence of (name, value) pairs.
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
    Ok(out)
}

#[pymethods]
impl PyRequest {
    /// The server transaction id (internal; used to cancel the handler task).
    #[getter]
    fn _txn(&self) -> Option<u64> {
        self.held.inc.txn
    }

    #[getter]
    fn method(&self) -> &str {
        self.held.inc.msg.method_str()
    }

    /// The Request-URI (assign a str or URI to change where it is relayed).
    #[getter]
    fn uri(&self) -> PyResult<PyUri> {
        let held = &self.held;
        let raw = held.request_uri.as_deref();
        PyUri::parse_str(raw.or(held.inc.msg.request_uri_str()).unwrap_or_default())
    }

    #[setter]
    fn set_uri(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let uri = if let Ok(u) = value.cast::<PyUri>() {
            u.get().clone()
        } else {
            PyUri::parse_str(&value.extract::<String>()?)?
        };
        self.held.request_uri = Some(uri.as_str().to_string());
        Ok(())
    }

    #[getter]
    fn headers(slf: Bound<'_, Self>) -> PyHeaders {
        PyHeaders::of_editable(Box::new(RequestHeaders(slf.unbind())))
    }

    #[getter]
    fn from_(&self) -> PyAddress {
        let msg = &self.held.inc.msg;
        PyAddress::from_nameaddr(&msg.from(), msg.header(HeaderId::From).unwrap_or_default())
    }

    #[getter]
    fn to(&self) -> PyAddress {
        let msg = &self.held.inc.msg;
        PyAddress::from_nameaddr(&msg.to(), msg.header(HeaderId::To).unwrap_or_default())
    }

    #[getter]
    fn call_id(&self) -> &str {
        self.held.inc.msg.call_id()
    }

    #[getter]
    fn cseq(&self) -> PyCSeq {
        PyCSeq {
            number: self.held.inc.msg.cseq(),
            method: self.held.inc.msg.cseq_method().to_string(),
        }
    }

    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
        let body = self.held.headers.body().unwrap_or(self.held.inc.msg.body());
        pyo3::types::PyBytes::new(py, body)
    }

    /// Replaces the body in what is relayed (an SDP rewritten by a media
    /// relay); Content-Length follows.
    #[setter]
    fn set_body(&mut self, body: Vec<u8>) {
        self.held.headers.set_body(body.into());
    }

    #[getter]
    fn source(&self) -> PySource {
        PySource::from_source(&self.held.inc.source)
    }

    /// True for a request inside a dialog (its To carries a tag).
    #[getter]
    fn in_dialog(&self) -> bool {
        self.held.inc.msg.to_tag().is_some()
    }

    #[getter]
    fn max_forwards(&self) -> Option<u8> {
        self.held.inc.msg.max_forwards()
    }

    /// The request exactly as received.
    #[getter]
    fn raw<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
        pyo3::types::PyBytes::new(py, self.held.inc.msg.as_bytes())
    }

    /// Whether the sender looks NATed (Kamailio `nat_uac_test("19")`):
    /// private Contact, or top Via host/port not the source (docs/nat.md).
    #[getter]
    fn behind_nat(&self) -> bool {
        let inc = &self.held.inc;
        crate::nat::nat_test(&inc.msg, &inc.source, crate::nat::DEFAULT_TESTS) != 0
    }

    /// The NAT tests (`contact_private`, `via_received`, `via_private`,
    /// `sdp_private`, `via_port`, `contact_address`, `contact_port`; all
    /// when None) that fire for this request.
    #[pyo3(signature = (tests=None))]
    fn nat_test(&self, tests: Option<Vec<String>>) -> PyResult<Vec<&'static str>> {
        super::nat::run_tests(&self.held.inc.msg, &self.held.inc.source, tests)
    }

    /// Kamailio `fix_nated_contact()`: the Contact's host:port becomes the
    /// source address in what is relayed. False without a Contact.
    fn fix_nated_contact(&mut self) -> PyResult<bool> {
        let inc = &self.held.inc;
        let Some(fixed) = crate::nat::fix_contact(&inc.msg, inc.source.addr) else {
            return Ok(false);
        };
        self.held
            .headers
            .set("Contact", &fixed)
            .map_err(PyValueError::new_err)?;
        Ok(true)
    }

    /// Kamailio `fix_nated_sdp()`: the SDP's `c=` (and with `origin`, `o=`)
    /// addresses become the source address. False without such an SDP.
    #[pyo3(signature = (origin=true))]
    fn fix_nated_sdp(&mut self, origin: bool) -> bool {
        let inc = &self.held.inc;
        let body = self.held.headers.body().unwrap_or(inc.msg.body());
        let Some(fixed) = crate::nat::fix_sdp(body, inc.source.addr.ip(), origin) else {
            return false;
        };
        self.held.headers.set_body(fixed.into());
        true
    }

    /// Whether the source address, port and transport match a rule of
    /// address group `group` (Kamailio `allow_source_address`; `sipr.acl`).
    fn source_in(&self, group: &str) -> bool {
        super::security::source_in(&self.shared.security, &self.held.inc.source, group)
    }

    /// The core's security services (internal: `sipr.auth`, `sipr.security`).
    #[getter]
    fn _security(&self) -> super::security::PySecurity {
        super::security::PySecurity::new(self.shared.clone())
    }

    /// Whether a final answer was sent or the request was forwarded/relayed.
    #[getter]
    fn handled(&self) -> bool {
        self.held.handled()
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
        let headers = extract_headers(headers)?;
        let core = &self.shared.core;
        self.held
            .reply(core, status, reason, headers, body.unwrap_or_default())
            .map_err(to_py)
    }

    /// Kamailio's force_rport(): answer this UDP request at its source
    /// address and port, and relay it with `received`/`rport` stamped, as if
    /// its top Via had `rport` (RFC 3581 §4). Call it before replying or
    /// relaying; a no-op over TCP/TLS/WS (answered over the connection).
    fn force_rport(&mut self) {
        self.held.force_rport(&self.shared.core);
    }

    /// Forwards statelessly to `target` (a next-hop URI, like Kamailio's $du),
    /// else by Route, else to the Request-URI. Returns False when the core had
    /// to answer instead (e.g. 483 Too Many Hops).
    #[pyo3(signature = (target=None))]
    fn forward(&mut self, target: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        let target = target.map(target_string).transpose()?;
        let core = &self.shared.core;
        self.held.forward(core, target.as_deref()).map_err(to_py)
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
        let fut = self.shared.create_future(py)?;
        let mut serial = None;
        let targets: Vec<Target> = match target {
            None => Vec::new(),
            // Serial targets (`sipr.Serial`, a dispatcher or prefix-route
            // selection): one branch failing over from one to the next.
            Some(t) if super::targets::is_serial(t) => {
                let (targets, codes) = super::targets::serial_targets(t, &self.held.inc.msg)?;
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
        let record_route = record_route.unwrap_or(self.record_route_default());
        if let (Some(handler), Some(txn)) = (on_reply, self.held.inc.txn) {
            super::reply_watch::watch(&self.shared, py, txn, handler)?;
        }
        let relay_id = self.shared.next_relay_id();
        let core = &self.shared.core;
        match self
            .held
            .relay(core, targets, serial, timeout, record_route, relay_id)
            .map_err(to_py)?
        {
            Relayed::Stateless => {
                fut.call_method1("set_result", (py.None(),))?;
            }
            Relayed::Started(events) => {
                self.shared
                    .futures
                    .lock()
                    .insert(relay_id, fut.clone().unbind());
                let requests = dispatch(&self.shared, py, events)?;
                debug_assert!(requests.is_empty());
            }
        }
        Ok(fut.unbind())
    }

    /// Tracks the dialog this initial INVITE creates (Kamailio
    /// `dlg_manage()`): `profiles` it counts in, its lifetime once answered
    /// (`timeout`, seconds), in-dialog OPTIONS every `keepalive` seconds,
    /// custom `cdr` fields, and whether to `account` its requests. Returns
    /// the dialog id.
    #[pyo3(signature = (profiles=None, *, timeout=None, keepalive=None, cdr=None, account=false))]
    fn track_dialog(
        &self,
        profiles: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
        keepalive: Option<f64>,
        cdr: Option<&Bound<'_, PyAny>>,
        account: bool,
    ) -> PyResult<String> {
        super::dialogs::track(
            &self.shared,
            &self.held,
            profiles,
            timeout,
            keepalive,
            cdr,
            account,
        )
    }

    /// Writes an accounting record for this request when its final answer
    /// goes upstream (Kamailio `acc` flag), with `extra` fields.
    #[pyo3(signature = (extra=None))]
    fn account(&self, extra: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        super::dialogs::account(&self.shared, &self.held, extra)
    }

    /// Called by the dispatcher when the handler is done: frees the request's
    /// slot in the core's overload bound.
    fn _finish(&mut self) {
        self.held.finish(&self.shared.core);
    }

    fn __repr__(&self) -> String {
        let msg = &self.held.inc.msg;
        format!(
            "<Request {} {} Call-ID={}>",
            msg.method_str(),
            msg.request_uri_str().unwrap_or_default(),
            msg.call_id()
        )
    }
}

impl Drop for PyRequest {
    fn drop(&mut self) {
        self.held.finish(&self.shared.core);
    }
}

/// A request's headers as a `Headers` view sees them: edits apply to what
/// is relayed.
struct RequestHeaders(Py<PyRequest>);

struct RequestEdits<'a>(PyRefMut<'a, PyRequest>);

impl Deref for RequestEdits<'_> {
    type Target = HeaderEdits;
    fn deref(&self) -> &HeaderEdits {
        &self.0.held.headers
    }
}

impl DerefMut for RequestEdits<'_> {
    fn deref_mut(&mut self) -> &mut HeaderEdits {
        &mut self.0.held.headers
    }
}

impl EditableHeaders for RequestHeaders {
    fn pairs(&self, py: Python<'_>) -> Vec<(String, String)> {
        let r = self.0.borrow(py);
        r.held.headers.pairs(&r.held.inc.msg)
    }

    fn first(&self, py: Python<'_>, name: &str) -> Option<String> {
        let r = self.0.borrow(py);
        r.held.headers.first(&r.held.inc.msg, name)
    }

    fn edits<'a>(&'a self, py: Python<'a>) -> Box<dyn DerefMut<Target = HeaderEdits> + 'a> {
        Box::new(RequestEdits(self.0.borrow_mut(py)))
    }
}
