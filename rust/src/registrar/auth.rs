//! The digest check (RFC 7616, RFC 8760 algorithms, qop=auth), once for
//! both entry points: the native REGISTER path and `sipr.DigestAuth.check`.
//! It runs in two steps so that the HA1 can come from wherever the
//! application keeps its users (a dict, a store, an async callable):
//! `begin` reads the credentials and answers what needs no HA1 (a
//! challenge, a stale nonce); `finish` verifies the response with the HA1.

use std::sync::Arc;

use super::digest::{parse_credentials, same_secret, Algorithm, NonceState, Nonces, ReplayGuard};
use super::rules::Reply;
use crate::sip::{HeaderId, Message, Method};

pub const FORBIDDEN: &str = "Forbidden (unknown user or wrong password)";
pub const REPLAYED: &str = "Forbidden (replayed credentials)";
pub const IDENTITY: &str = "Forbidden (identity not allowed for this user)";

/// A `sipr.DigestAuth`'s settings and state.
pub struct DigestRules {
    pub nonces: Nonces,
    /// Offered in this order in challenges.
    pub algorithms: Vec<Algorithm>,
    /// A user may register only their own AoR and send requests only as
    /// themselves (To user for REGISTER, From user otherwise).
    pub check_identity: bool,
    pub replay: Arc<dyn ReplayGuard>,
}

/// Credentials read by `begin`, waiting for their user's HA1.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub user: String,
    pub algorithm: Algorithm,
    nonce: String,
    nc_raw: String,
    /// None when above 2⁶⁴ or zero: never fresh.
    nc: Option<u64>,
    cnonce: String,
    uri: String,
    response: String,
}

pub enum Step {
    /// Answered without an HA1 (a challenge).
    Answer(Reply),
    /// Look up the HA1 of `attempt.user` for `attempt.algorithm`, then `finish`.
    Verify(Attempt),
}

impl Attempt {
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// The nonce-count; None when above 2⁶⁴ or zero (never fresh).
    pub fn nc(&self) -> Option<u64> {
        self.nc
    }
}

fn forbidden(reason: &str) -> Reply {
    Reply::new(403, Some(reason))
}

impl DigestRules {
    /// 401 with WWW-Authenticate for REGISTER, 407 with Proxy-Authenticate
    /// otherwise: one challenge per algorithm, with a fresh nonce.
    pub fn challenge(&self, method: Method, now: f64, stale: bool) -> Reply {
        let (status, name) = if method == Method::Register {
            (401, "WWW-Authenticate")
        } else {
            (407, "Proxy-Authenticate")
        };
        // One nonce for every algorithm offered: the client answers one.
        let nonce = self.nonces.issue((now * 1000.0) as u64);
        let headers = self
            .algorithms
            .iter()
            .map(|alg| {
                (
                    name.to_string(),
                    format!(
                        "Digest realm=\"{}\", nonce=\"{nonce}\", qop=\"auth\", algorithm={}{}",
                        self.nonces.realm,
                        alg.name(),
                        if stale { ", stale=true" } else { "" }
                    ),
                )
            })
            .collect();
        Reply {
            status,
            reason: None,
            headers,
        }
    }

    /// Step one: the credentials for our realm, checked as far as they can
    /// be without the user's HA1.
    pub fn begin(&self, msg: &Message, now: f64) -> Step {
        let method = msg.method();
        let id = if method == Method::Register {
            HeaderId::Authorization
        } else {
            HeaderId::ProxyAuthorization
        };
        let cred = msg
            .headers()
            .iter()
            .filter(|h| h.id == id)
            .filter_map(|h| parse_credentials(msg.header_value(h)))
            .find(|c| {
                c.iter()
                    .any(|(k, v)| k == "realm" && *v == self.nonces.realm)
            });
        let Some(cred) = cred else {
            return Step::Answer(self.challenge(method, now, false));
        };
        let get = |k: &str| {
            cred.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map_or("", |(_, v)| v.as_str())
        };
        let nonce = get("nonce");
        let alg_name = match cred.iter().rev().find(|(n, _)| n == "algorithm") {
            Some((_, v)) => v.to_uppercase().replace("SHA256", "SHA-256"),
            None => "MD5".to_string(),
        };
        let state = self.nonces.state(nonce, now);
        let alg = Algorithm::parse(&alg_name).filter(|a| self.algorithms.contains(a));
        let Some(algorithm) = alg.filter(|_| state == NonceState::Ok) else {
            return Step::Answer(self.challenge(method, now, state == NonceState::Stale));
        };
        let cnonce = get("cnonce");
        let nc_raw = get("nc");
        if get("qop") != "auth"
            || cnonce.is_empty()
            || nc_raw.is_empty()
            || !nc_raw.bytes().all(|c| c.is_ascii_hexdigit())
        {
            return Step::Answer(self.challenge(method, now, false));
        }
        Step::Verify(Attempt {
            user: get("username").to_string(),
            algorithm,
            nonce: nonce.to_string(),
            nc_raw: nc_raw.to_string(),
            nc: u64::from_str_radix(nc_raw, 16).ok().filter(|n| *n > 0),
            cnonce: cnonce.to_string(),
            uri: get("uri").to_string(),
            response: get("response").to_string(),
        })
    }

    /// Step two, with the HA1 of the attempt's user and algorithm (None:
    /// no such user, or no HA1 for that algorithm). None means authorised.
    pub fn finish(&self, msg: &Message, a: &Attempt, ha1: Option<&str>) -> Option<Reply> {
        let Some(key) = ha1 else {
            return Some(forbidden(FORBIDDEN));
        };
        let alg = a.algorithm;
        let ha2 = alg.hex(&[msg.method_str().as_bytes(), b":", a.uri.as_bytes()]);
        let expected = alg.hex(&[
            key.as_bytes(),
            b":",
            a.nonce.as_bytes(),
            b":",
            a.nc_raw.as_bytes(),
            b":",
            a.cnonce.as_bytes(),
            b":auth:",
            ha2.as_bytes(),
        ]);
        if !same_secret(expected.as_bytes(), a.response.as_bytes()) {
            return Some(forbidden(FORBIDDEN));
        }
        if !a.nc.is_some_and(|nc| self.replay.fresh(&a.nonce, nc)) {
            return Some(forbidden(REPLAYED));
        }
        if self.check_identity {
            let claimed = if msg.method() == Method::Register {
                msg.to()
            } else {
                msg.from()
            };
            if claimed.uri.user != Some(a.user.as_str()) {
                return Some(forbidden(IDENTITY));
            }
        }
        None
    }
}

/// HA1 = H(user:realm:password).
pub fn ha1(user: &str, realm: &str, password: &str, alg: Algorithm) -> String {
    alg.hex(&[
        user.as_bytes(),
        b":",
        realm.as_bytes(),
        b":",
        password.as_bytes(),
    ])
}
