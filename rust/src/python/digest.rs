//! `sipr._core.DigestRules`: the digest check of `sipr.DigestAuth`, the same
//! object the core uses when the registrar is served natively (one nonce
//! secret, one nonce-count replay table for both paths).

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::request::PyRequest;
use crate::registrar::auth::{self, Attempt, DigestRules, Step};
use crate::registrar::digest::{
    Algorithm, CheckedByCaller, NonceCounts, NonceState, Nonces, ReplayGuard,
};
use crate::registrar::unix_now;
use crate::registrar::Reply;
use crate::sip::Method;

/// (status, reason or None, [(name, value), ...]): what `req.reply` takes.
pub type ReplyTuple = (u16, Option<String>, Vec<(String, String)>);

pub fn reply_tuple(r: Reply) -> ReplyTuple {
    (r.status, r.reason, r.headers)
}

#[pyclass(module = "sipr._core", name = "DigestRules", frozen)]
pub struct PyDigestRules {
    pub inner: Arc<DigestRules>,
}

/// Credentials read by `DigestRules.begin`, waiting for the user's HA1.
#[pyclass(module = "sipr._core", name = "DigestAttempt", frozen)]
pub struct PyAttempt {
    inner: Attempt,
}

#[pymethods]
impl PyAttempt {
    #[getter]
    fn user(&self) -> &str {
        &self.inner.user
    }
    #[getter]
    fn algorithm(&self) -> &'static str {
        self.inner.algorithm.name()
    }
    #[getter]
    fn nonce(&self) -> &str {
        self.inner.nonce()
    }
    #[getter]
    fn nc(&self) -> Option<u64> {
        self.inner.nc()
    }
}

#[derive(IntoPyObject)]
pub enum Begun {
    Answer(ReplyTuple),
    Verify(PyAttempt),
}

/// Nonce-counts kept where several processes see them (a `sqlite:` store's
/// file, `Store.shared_nonce_counts()`), for `DigestRules(replay=...)`.
#[pyclass(module = "sipr._core", name = "SharedNonceCounts", frozen)]
pub struct PySharedNonceCounts {
    pub inner: Arc<dyn ReplayGuard>,
}

/// Where nonce-counts are kept: shared with other processes (`--workers`,
/// decision 0051), by the caller (Python, a `redis://` store), else in
/// this process.
fn replay_guard(
    shared: Option<PyRef<'_, PySharedNonceCounts>>,
    by_caller: bool,
    max_tracked: usize,
) -> Arc<dyn ReplayGuard> {
    if by_caller {
        return Arc::new(CheckedByCaller);
    }
    shared.map_or_else(
        || Arc::new(NonceCounts::new(max_tracked)) as Arc<dyn ReplayGuard>,
        |s| s.inner.clone(),
    )
}

fn algorithm(name: &str) -> PyResult<Algorithm> {
    Algorithm::parse(name)
        .ok_or_else(|| PyValueError::new_err(format!("unknown digest algorithm {name:?}")))
}

#[pymethods]
impl PyDigestRules {
    #[new]
    #[pyo3(signature = (realm, secret, algorithms, *, nonce_ttl=300.0, check_identity=true, max_tracked_nonces=100_000, replay=None, replay_checked_by_caller=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        realm: &str,
        secret: Vec<u8>,
        algorithms: Vec<String>,
        nonce_ttl: f64,
        check_identity: bool,
        max_tracked_nonces: usize,
        replay: Option<PyRef<'_, PySharedNonceCounts>>,
        replay_checked_by_caller: bool,
    ) -> PyResult<PyDigestRules> {
        let algorithms = algorithms
            .iter()
            .map(|a| algorithm(a))
            .collect::<PyResult<Vec<_>>>()?;
        if algorithms.is_empty() {
            return Err(PyValueError::new_err(
                "at least one digest algorithm is needed",
            ));
        }
        Ok(PyDigestRules {
            inner: Arc::new(DigestRules {
                nonces: Nonces::new(&secret, realm, nonce_ttl),
                algorithms,
                check_identity,
                replay: replay_guard(replay, replay_checked_by_caller, max_tracked_nonces),
            }),
        })
    }

    #[getter]
    fn realm(&self) -> &str {
        &self.inner.nonces.realm
    }

    fn new_nonce(&self) -> String {
        self.inner.nonces.issue((unix_now() * 1000.0) as u64)
    }

    /// "ok", "stale" (ours but expired) or "bad" (not ours).
    fn nonce_state(&self, nonce: &str) -> &'static str {
        match self.inner.nonces.state(nonce, unix_now()) {
            NonceState::Ok => "ok",
            NonceState::Stale => "stale",
            NonceState::Bad => "bad",
        }
    }

    /// The 401 (REGISTER) or 407 challenge for a request of `method`.
    #[pyo3(signature = (method, *, stale=false))]
    fn challenge(&self, method: &str, stale: bool) -> ReplyTuple {
        let m = if method.eq_ignore_ascii_case("REGISTER") {
            Method::Register
        } else {
            Method::Invite
        };
        reply_tuple(self.inner.challenge(m, unix_now(), stale))
    }

    /// Step one: a reply (challenge) or the attempt whose user's HA1 is needed.
    fn begin(&self, req: PyRef<'_, PyRequest>) -> Begun {
        match self.inner.begin(&req.incoming().msg, unix_now()) {
            Step::Answer(r) => Begun::Answer(reply_tuple(r)),
            Step::Verify(inner) => Begun::Verify(PyAttempt { inner }),
        }
    }

    /// Step two with the HA1 (None: unknown user): None when authorised,
    /// else the refusal (403).
    #[pyo3(signature = (req, attempt, ha1))]
    fn finish(
        &self,
        req: PyRef<'_, PyRequest>,
        attempt: &PyAttempt,
        ha1: Option<&str>,
    ) -> Option<ReplyTuple> {
        self.inner
            .finish(&req.incoming().msg, &attempt.inner, ha1)
            .map(reply_tuple)
    }
}

/// HA1 = H(user:realm:password) for `algorithm` (MD5 or SHA-256).
#[pyfunction]
#[pyo3(signature = (user, realm, password, algorithm="MD5"))]
pub fn digest_ha1(user: &str, realm: &str, password: &str, algorithm: &str) -> PyResult<String> {
    Ok(auth::ha1(
        user,
        realm,
        password,
        self::algorithm(algorithm)?,
    ))
}
