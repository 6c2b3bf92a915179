//! `sipr._core.Location` (the native location table behind the `memory:`
//! store), `sipr._core.NonceCounts` (digest replay tracking shared by
//! `DigestAuth` and the native path) and the hook that hands a registrar to
//! the core (`Core.serve_registrar`).

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::registrar::digest::{Algorithm, NonceCounts, Nonces};
use crate::registrar::{Auth, Binding, FastRegistrar, Ha1s, Location, Policy};

/// `Binding` as Python sees it: (contact, expires_at, q, call_id, cseq,
/// received, path, user_agent, instance), the dataclass's field order.
pub type BindingTuple = (
    String,
    f64,
    f64,
    String,
    u64,
    Option<String>,
    Vec<String>,
    Option<String>,
    Option<String>,
);

fn to_tuple(b: Binding) -> BindingTuple {
    (
        b.contact,
        b.expires_at,
        b.q,
        b.call_id,
        b.cseq,
        b.received,
        b.path,
        b.user_agent,
        b.instance,
    )
}

fn from_tuple(t: BindingTuple) -> Binding {
    Binding {
        contact: t.0,
        expires_at: t.1,
        q: t.2,
        call_id: t.3,
        cseq: t.4,
        received: t.5,
        path: t.6,
        user_agent: t.7,
        instance: t.8,
    }
}

#[pyclass(module = "sipr._core", name = "Location", frozen)]
pub struct PyLocation {
    pub inner: Arc<Location>,
}

#[pymethods]
impl PyLocation {
    #[new]
    fn new() -> PyLocation {
        PyLocation {
            inner: Arc::new(Location::default()),
        }
    }

    /// Live bindings of `aor` at Unix time `now`, as tuples.
    fn bindings(&self, aor: &str, now: f64) -> Vec<BindingTuple> {
        self.inner
            .bindings(aor, now)
            .into_iter()
            .map(to_tuple)
            .collect()
    }

    fn update(&self, aor: &str, upsert: Vec<BindingTuple>, delete: Vec<String>) {
        self.inner
            .update(aor, upsert.into_iter().map(from_tuple).collect(), &delete);
    }

    fn remove(&self, aor: &str) -> usize {
        self.inner.remove(aor)
    }

    fn aors(&self, now: f64) -> Vec<String> {
        self.inner.aors(now)
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }
}

#[pyclass(module = "sipr._core", name = "NonceCounts", frozen)]
pub struct PyNonceCounts {
    pub inner: Arc<NonceCounts>,
}

#[pymethods]
impl PyNonceCounts {
    #[new]
    fn new(max: usize) -> PyNonceCounts {
        PyNonceCounts {
            inner: Arc::new(NonceCounts::new(max)),
        }
    }

    /// Records nonce-count `nc` for `nonce`; False when it is not higher
    /// than one already seen (a replay).
    fn fresh(&self, nonce: &str, nc: u64) -> bool {
        self.inner.fresh(nonce, nc)
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }
}

/// The digest half of `Core.serve_registrar`: realm, secret, algorithms
/// (offer order), nonce lifetime, identity check, {user: {algorithm: HA1}}.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct AuthSpec {
    realm: String,
    secret: Vec<u8>,
    algorithms: Vec<String>,
    nonce_ttl: f64,
    check_identity: bool,
    ha1: HashMap<String, HashMap<String, String>>,
}

#[allow(clippy::too_many_arguments)]
pub fn fast_registrar(
    location: &PyLocation,
    domains: Option<Vec<String>>,
    policy: Policy,
    auth: Option<AuthSpec>,
    counts: Option<&PyNonceCounts>,
) -> PyResult<FastRegistrar> {
    let auth = match auth {
        None => None,
        Some(spec) => {
            let algorithms = spec
                .algorithms
                .iter()
                .map(|a| {
                    Algorithm::parse(a)
                        .ok_or_else(|| PyValueError::new_err(format!("unknown algorithm {a}")))
                })
                .collect::<PyResult<Vec<_>>>()?;
            let counts = counts
                .ok_or_else(|| PyValueError::new_err("auth needs its NonceCounts"))?
                .inner
                .clone();
            let ha1 = spec
                .ha1
                .into_iter()
                .map(|(user, mut by_alg)| {
                    let h = Ha1s {
                        md5: by_alg.remove("MD5"),
                        sha256: by_alg.remove("SHA-256"),
                    };
                    (user, h)
                })
                .collect();
            Some(Auth {
                nonces: Nonces::new(&spec.secret, &spec.realm, spec.nonce_ttl),
                algorithms,
                check_identity: spec.check_identity,
                ha1,
                counts,
            })
        }
    };
    Ok(FastRegistrar {
        location: location.inner.clone(),
        domains: domains.map(|d| d.into_iter().map(|x| x.to_ascii_lowercase()).collect()),
        policy,
        auth,
    })
}
