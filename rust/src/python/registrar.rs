//! The registrar's Python face: `sipr._core.Binding` (the one binding type,
//! which `sipr.store.Binding` re-exports), `sipr._core.Store` (the Rust
//! stores: `memory:`, `sqlite:///...`), `sipr._core.RegistrarRules` (RFC
//! 3261 §10.3 for `sipr.Registrar.save`) and the hook that hands a
//! registrar to the core (`Core.serve_registrar`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use super::digest::{reply_tuple, PyDigestRules, PySharedNonceCounts, ReplyTuple};
use super::request::PyRequest;
use crate::registrar::{rules, unix_now, Binding, Policy, Registrar, Store, StoreError, Users};

fn store_error(e: StoreError) -> PyErr {
    match e {
        StoreError::Url(m) => PyValueError::new_err(m),
        other => PyOSError::new_err(other.to_string()),
    }
}

#[pyclass(module = "sipr._core", name = "Binding", eq)]
#[derive(Clone, PartialEq)]
pub struct PyBinding {
    pub inner: Binding,
}

#[pymethods]
impl PyBinding {
    #[new]
    #[pyo3(signature = (contact, expires_at, q=1.0, call_id=String::new(), cseq=0, received=None, path=Vec::new(), user_agent=None, instance=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        contact: String,
        expires_at: f64,
        q: f64,
        call_id: String,
        cseq: u64,
        received: Option<String>,
        path: Vec<String>,
        user_agent: Option<String>,
        instance: Option<String>,
    ) -> PyBinding {
        PyBinding {
            inner: Binding {
                contact,
                expires_at,
                q,
                call_id,
                cseq,
                received,
                path,
                user_agent,
                instance,
            },
        }
    }

    #[getter]
    fn contact(&self) -> &str {
        &self.inner.contact
    }
    #[getter]
    fn expires_at(&self) -> f64 {
        self.inner.expires_at
    }
    #[setter]
    fn set_expires_at(&mut self, v: f64) {
        self.inner.expires_at = v;
    }
    #[getter]
    fn q(&self) -> f64 {
        self.inner.q
    }
    #[getter]
    fn call_id(&self) -> &str {
        &self.inner.call_id
    }
    #[getter]
    fn cseq(&self) -> u64 {
        self.inner.cseq
    }
    #[getter]
    fn received(&self) -> Option<&str> {
        self.inner.received.as_deref()
    }
    #[getter]
    fn path(&self) -> Vec<String> {
        self.inner.path.clone()
    }
    #[getter]
    fn user_agent(&self) -> Option<&str> {
        self.inner.user_agent.as_deref()
    }
    #[getter]
    fn instance(&self) -> Option<&str> {
        self.inner.instance.as_deref()
    }

    /// Whole seconds left at Unix time `now` (default: now), never negative.
    #[pyo3(signature = (now=None))]
    fn remaining(&self, now: Option<f64>) -> u64 {
        self.inner.remaining(now.unwrap_or_else(unix_now))
    }

    fn to_json(&self) -> String {
        self.inner.to_json()
    }

    #[staticmethod]
    fn from_json(text: &Bound<'_, PyAny>) -> PyResult<PyBinding> {
        let s = if let Ok(b) = text.cast::<PyBytes>() {
            String::from_utf8_lossy(b.as_bytes()).into_owned()
        } else if let Ok(s) = text.cast::<PyString>() {
            s.to_str()?.to_string()
        } else {
            return Err(PyTypeError::new_err("from_json takes str or bytes"));
        };
        Binding::from_json(&s)
            .map(|inner| PyBinding { inner })
            .map_err(|e| PyValueError::new_err(format!("not a binding: {e}")))
    }

    fn __repr__(&self) -> String {
        let b = &self.inner;
        format!(
            "Binding(contact={:?}, expires_at={}, q={}, call_id={:?}, cseq={}, received={:?}, path={:?}, user_agent={:?}, instance={:?})",
            b.contact, b.expires_at, b.q, b.call_id, b.cseq, b.received, b.path, b.user_agent, b.instance
        )
    }
}

fn bindings_of(list: Vec<PyRef<'_, PyBinding>>) -> Vec<Binding> {
    list.iter().map(|b| b.inner.clone()).collect()
}

fn py_bindings(list: Vec<Binding>) -> Vec<PyBinding> {
    list.into_iter().map(|inner| PyBinding { inner }).collect()
}

#[pyclass(module = "sipr._core", name = "Store", frozen)]
pub struct PyStore {
    pub inner: Arc<dyn Store>,
    url: String,
}

/// Runs a store call without the GIL (SQLite may wait for another
/// process's write lock).
fn call<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T, StoreError> + Send) -> PyResult<T> {
    py.detach(f).map_err(store_error)
}

#[pymethods]
impl PyStore {
    /// `memory:` or `sqlite:///path.db[?synchronous=normal|full|off]`.
    #[new]
    fn new(url: &str) -> PyResult<PyStore> {
        match crate::registrar::store::open(url) {
            Some(Ok(inner)) => Ok(PyStore {
                inner,
                url: url.to_string(),
            }),
            Some(Err(e)) => Err(store_error(e)),
            None => Err(PyValueError::new_err(format!(
                "{url:?} is not a native store URL (memory:, sqlite:///path.db)"
            ))),
        }
    }

    #[getter]
    fn url(&self) -> &str {
        &self.url
    }

    /// Nonce-counts every process opening this store shares (`sqlite:`),
    /// for `DigestRules(replay=...)`; None when it keeps none (`memory:`).
    fn shared_nonce_counts(&self) -> Option<PySharedNonceCounts> {
        self.inner
            .shared_nonce_counts()
            .map(|inner| PySharedNonceCounts { inner })
    }

    #[pyo3(signature = (aor, now=None))]
    fn bindings(&self, py: Python<'_>, aor: &str, now: Option<f64>) -> PyResult<Vec<PyBinding>> {
        let now = now.unwrap_or_else(unix_now);
        call(py, || self.inner.bindings(aor, now)).map(py_bindings)
    }

    fn update(
        &self,
        py: Python<'_>,
        aor: &str,
        upsert: Vec<PyRef<'_, PyBinding>>,
        delete: Vec<String>,
    ) -> PyResult<()> {
        let upsert = bindings_of(upsert);
        call(py, || self.inner.update(aor, upsert, &delete))
    }

    fn remove(&self, py: Python<'_>, aor: &str) -> PyResult<usize> {
        call(py, || self.inner.remove(aor))
    }

    #[pyo3(signature = (now=None))]
    fn aors(&self, py: Python<'_>, now: Option<f64>) -> PyResult<Vec<String>> {
        let now = now.unwrap_or_else(unix_now);
        call(py, || self.inner.aors(now))
    }

    fn get_user(
        &self,
        py: Python<'_>,
        realm: &str,
        user: &str,
    ) -> PyResult<Option<BTreeMap<String, String>>> {
        call(py, || self.inner.user(realm, user))
    }

    fn set_user(
        &self,
        py: Python<'_>,
        realm: &str,
        user: &str,
        ha1: BTreeMap<String, String>,
    ) -> PyResult<()> {
        call(py, || self.inner.set_user(realm, user, &ha1))
    }

    fn remove_user(&self, py: Python<'_>, realm: &str, user: &str) -> PyResult<bool> {
        call(py, || self.inner.remove_user(realm, user))
    }

    #[pyo3(signature = (realm=None))]
    fn users(&self, py: Python<'_>, realm: Option<&str>) -> PyResult<Vec<(String, String)>> {
        call(py, || self.inner.users(realm))
    }
}

/// A `sipr.Registrar`'s limits and the §10.3 rules it applies.
#[pyclass(module = "sipr._core", name = "RegistrarRules", frozen)]
pub struct PyRegistrarRules {
    pub policy: Policy,
}

#[pymethods]
impl PyRegistrarRules {
    #[new]
    #[pyo3(signature = (*, domains=None, min_expires=60, max_expires=3600, default_expires=3600, max_contacts=10))]
    fn new(
        domains: Option<Vec<String>>,
        min_expires: u64,
        max_expires: u64,
        default_expires: u64,
        max_contacts: usize,
    ) -> PyRegistrarRules {
        PyRegistrarRules {
            policy: Policy {
                domains: domains.map(|d| d.into_iter().map(|x| x.to_ascii_lowercase()).collect()),
                min_expires,
                max_expires,
                default_expires,
                max_contacts,
            },
        }
    }

    /// The AoR the REGISTER is for, or the refusal (405, 404).
    fn target(&self, req: PyRef<'_, PyRequest>) -> (Option<String>, Option<ReplyTuple>) {
        match rules::target(&req.incoming().msg, &self.policy) {
            Ok(aor) => (Some(aor), None),
            Err(r) => (None, Some(reply_tuple(r))),
        }
    }

    /// The whole REGISTER against a Rust store, atomically: the answer.
    #[pyo3(signature = (req, store, now=None))]
    fn save(
        &self,
        py: Python<'_>,
        req: PyRef<'_, PyRequest>,
        store: &PyStore,
        now: Option<f64>,
    ) -> PyResult<ReplyTuple> {
        let now = now.unwrap_or_else(unix_now);
        let inc = req.incoming().clone();
        let store = store.inner.clone();
        call(py, || {
            rules::save(&inc.msg, &inc.source, &self.policy, store.as_ref(), now)
        })
        .map(reply_tuple)
    }

    /// The REGISTER against `existing` (the AoR's live bindings, loaded from
    /// a Python store): the answer, the bindings to upsert and the contacts
    /// to delete.
    #[pyo3(signature = (req, existing, now=None))]
    fn decide(
        &self,
        req: PyRef<'_, PyRequest>,
        existing: Vec<PyRef<'_, PyBinding>>,
        now: Option<f64>,
    ) -> (ReplyTuple, Vec<PyBinding>, Vec<String>) {
        let now = now.unwrap_or_else(unix_now);
        let inc = req.incoming();
        let (reply, upsert, delete) = rules::decide(
            &inc.msg,
            &inc.source,
            &self.policy,
            bindings_of(existing),
            now,
        );
        (reply_tuple(reply), py_bindings(upsert), delete)
    }

    /// Whether REGISTERs for `host` are this registrar's.
    fn serves(&self, host: &str) -> bool {
        self.policy.serves(host)
    }
}

/// `user@host` (host lower-cased): the AoR key of a URI's user and host.
#[pyfunction]
#[pyo3(signature = (user, host))]
pub fn aor_key(user: Option<&str>, host: &str) -> String {
    rules::aor_key(user, host)
}

/// Where the native path finds HA1s: {user: {algorithm: HA1}} (a
/// `DigestAuth` with a dict, read now) or a Rust store's users.
#[derive(FromPyObject)]
pub enum UsersSpec<'py> {
    Store(PyRef<'py, PyStore>),
    Table(HashMap<String, BTreeMap<String, String>>),
}

/// The registrar the core serves, from `Core.serve_registrar`'s arguments.
pub fn served(
    rules: &PyRegistrarRules,
    store: &PyStore,
    auth: Option<(PyRef<'_, PyDigestRules>, UsersSpec<'_>)>,
) -> Registrar {
    Registrar {
        store: store.inner.clone(),
        policy: rules.policy.clone(),
        auth: auth.map(|(a, users)| {
            let users = match users {
                UsersSpec::Store(s) => Users::Store(s.inner.clone()),
                UsersSpec::Table(t) => Users::Table(t.into_iter().collect()),
            };
            (a.inner.clone(), users)
        }),
    }
}
