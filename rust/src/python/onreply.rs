//! `sipr.RelayReply`: a response on a relayed branch, held for `@app.on_reply` /
//! `relay(..., on_reply=fn)`. Its headers and body may be changed; handing
//! it back (`_deliver`, or dropping it) lets the proxy act on it.

use std::sync::Arc;

use bytes::Bytes;
use pyo3::prelude::*;

use super::headers::{EditableHeaders, PyHeaders};
use super::message::PyCSeq;
use super::request::dispatch;
use super::shared::Shared;
use crate::service::HeldReply;
use crate::sip::edits::HeaderEdits;
use crate::sip::rewrite::rewrite;
use crate::sip::{Framing, Limits, Message};

#[pyclass(module = "sipr._core", name = "RelayReply")]
pub struct PyReply {
    shared: Arc<Shared>,
    /// None once handed back.
    held: Option<HeldReply>,
    /// Cached: the message stays readable after it was handed back.
    msg: Message,
    pub(super) edits: HeaderEdits,
    body: Option<Vec<u8>>,
    source: Option<std::net::SocketAddr>,
}

impl PyReply {
    pub fn new(shared: Arc<Shared>, held: HeldReply) -> PyReply {
        PyReply {
            shared,
            source: held.source,
            msg: held.msg.clone(),
            held: Some(held),
            edits: HeaderEdits::default(),
            body: None,
        }
    }

    /// The header pairs as they will go upstream.
    pub(super) fn header_pairs(&self) -> Vec<(String, String)> {
        self.edits.pairs(&self.msg)
    }

    /// Hands the response back to the proxy, with the changes made.
    fn hand_back(&mut self) -> Option<Vec<crate::core::Event>> {
        let mut held = self.held.take()?;
        if !self.edits.as_slice().is_empty() || self.body.is_some() {
            let bytes = rewrite(&held.msg, self.edits.as_slice(), self.body.as_deref());
            let limits = Limits {
                max_message_size: usize::MAX,
                ..Limits::default()
            };
            match Message::parse(Bytes::from(bytes), Framing::Datagram, &limits) {
                Ok(m) => held.msg = m,
                Err(e) => {
                    tracing::warn!(error = %e, "on_reply: changed response does not parse; sending it unchanged");
                }
            }
        }
        Some(self.shared.core.deliver_reply(held))
    }
}

#[pymethods]
impl PyReply {
    #[getter]
    fn status(&self) -> u16 {
        self.msg.status().unwrap_or(0)
    }

    #[getter]
    fn reason(&self) -> &str {
        self.msg.reason().unwrap_or_default()
    }

    /// Changes apply to what goes upstream (`set`, `add`, `remove`).
    #[getter]
    fn headers(slf: Bound<'_, Self>) -> PyHeaders {
        PyHeaders::of_editable(Box::new(ReplyHeaders(slf.unbind())))
    }

    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
        let body = self.body.as_deref().unwrap_or(self.msg.body());
        pyo3::types::PyBytes::new(py, body)
    }

    /// Replaces the body (Content-Length follows).
    #[setter]
    fn set_body(&mut self, body: Vec<u8>) {
        self.body = Some(body);
    }

    #[getter]
    fn call_id(&self) -> &str {
        self.msg.call_id()
    }

    #[getter]
    fn cseq(&self) -> PyCSeq {
        PyCSeq {
            number: self.msg.cseq(),
            method: self.msg.cseq_method().to_string(),
        }
    }

    /// The method of the request this answers (from CSeq).
    #[getter]
    fn method(&self) -> &str {
        self.msg.cseq_method()
    }

    #[getter(from_tag)]
    fn get_from_tag(&self) -> Option<&str> {
        self.msg.from_tag()
    }

    #[getter]
    fn to_tag(&self) -> Option<&str> {
        self.msg.to_tag()
    }

    /// The response as received.
    #[getter]
    fn raw<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
        pyo3::types::PyBytes::new(py, self.msg.as_bytes())
    }

    /// `(host, port)` the response came from (where its branch was sent).
    #[getter]
    fn source(&self) -> Option<(String, u16)> {
        self.source.map(|a| (a.ip().to_string(), a.port()))
    }

    /// Whether the answering UA is behind NAT: its Contact names a
    /// private address, or another address or port than the one the
    /// response came from (Kamailio `nat_uac_test` 1|32|64 on a reply).
    #[getter]
    fn behind_nat(&self) -> bool {
        let Some(source) = self.source else {
            return false;
        };
        let probe = crate::transport::Source::udp(source, source);
        let tests = crate::nat::NatTest::ContactPrivate.bit()
            | crate::nat::NatTest::ContactAddress.bit()
            | crate::nat::NatTest::ContactPort.bit();
        crate::nat::nat_test(&self.msg, &probe, tests) != 0
    }

    /// Kamailio `fix_nated_contact()` in `onreply_route`: the Contact's
    /// host:port becomes the address the response came from, so in-dialog
    /// requests reach the callee through its NAT. False without a Contact.
    fn fix_nated_contact(&mut self) -> PyResult<bool> {
        let Some(source) = self.source else {
            return Ok(false);
        };
        let Some(fixed) = crate::nat::fix_contact(&self.msg, source) else {
            return Ok(false);
        };
        self.edits
            .set("Contact", &fixed)
            .map_err(pyo3::exceptions::PyValueError::new_err)?;
        Ok(true)
    }

    /// The server transaction it answers (internal: per-relay handlers).
    #[getter]
    fn _txn(&self) -> u64 {
        self.held.as_ref().map_or(0, |h| h.server)
    }

    /// Whether it was handed back already.
    #[getter]
    fn delivered(&self) -> bool {
        self.held.is_none()
    }

    /// Hands the response back to the proxy (the server calls this when the
    /// handler is done). A second call does nothing.
    fn _deliver(&mut self, py: Python<'_>) -> PyResult<()> {
        if let Some(events) = self.hand_back() {
            let requests = dispatch(&self.shared, py, events)?;
            debug_assert!(requests.is_empty());
        }
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!(
            "<RelayReply {} {} to {}>",
            self.status(),
            self.reason(),
            self.msg.cseq_method()
        )
    }
}

impl Drop for PyReply {
    fn drop(&mut self) {
        // A reply the application lost is never lost for the caller.
        if self.held.is_some() {
            let shared = self.shared.clone();
            if let Some(events) = self.hand_back() {
                Python::attach(|py| {
                    let _ = dispatch(&shared, py, events);
                });
            }
        }
    }
}

/// A held reply and its per-relay handler (None: `@app.on_reply`).
pub type TakenReply = (Py<PyReply>, Option<Py<PyAny>>);

/// The held replies since the last call, each with its per-relay handler
/// (None: the application's `@app.on_reply`).
pub fn take(shared: &Arc<Shared>, py: Python<'_>) -> PyResult<Vec<TakenReply>> {
    let held = std::mem::take(&mut *shared.replies.lock());
    let mut out = Vec::with_capacity(held.len());
    for h in held {
        let handler = shared
            .reply_handlers
            .lock()
            .get(&h.server)
            .map(|f| f.clone_ref(py));
        out.push((Py::new(py, PyReply::new(shared.clone(), h))?, handler));
    }
    Ok(out)
}

/// Counters of the `onreply` service (zero until it is registered).
pub fn stats(shared: &Shared) -> Vec<(String, u64)> {
    let (handed, watched, refused) = shared.onreply.get().map_or((0, 0, 0), |s| {
        (
            s.handed.load(std::sync::atomic::Ordering::Relaxed),
            s.watched() as u64,
            s.refused.load(std::sync::atomic::Ordering::Relaxed),
        )
    });
    vec![
        ("onreply.handed".into(), handed),
        ("onreply.watched".into(), watched),
        ("onreply.refused".into(), refused),
    ]
}

/// A `Headers` view's hold on a `RelayReply`.
struct ReplyHeaders(Py<PyReply>);

struct ReplyEdits<'a>(PyRefMut<'a, PyReply>);

impl std::ops::Deref for ReplyEdits<'_> {
    type Target = HeaderEdits;
    fn deref(&self) -> &HeaderEdits {
        &self.0.edits
    }
}

impl std::ops::DerefMut for ReplyEdits<'_> {
    fn deref_mut(&mut self) -> &mut HeaderEdits {
        &mut self.0.edits
    }
}

impl EditableHeaders for ReplyHeaders {
    fn pairs(&self, py: Python<'_>) -> Vec<(String, String)> {
        self.0.borrow(py).header_pairs()
    }

    fn first(&self, py: Python<'_>, name: &str) -> Option<String> {
        let reply = self.0.borrow(py);
        reply.edits.first(&reply.msg, name)
    }

    fn edits<'a>(
        &'a self,
        py: Python<'a>,
    ) -> Box<dyn std::ops::DerefMut<Target = HeaderEdits> + 'a> {
        Box::new(ReplyEdits(self.0.borrow_mut(py)))
    }
}
