//! The native registrar: REGISTERs for the domains of a `Registrar` that the
//! application handed to the core (`registrar.serve(app, auth=...)`) are
//! answered here, before any Python runs, against the shared location table
//! (RFC 3261 §10.3) with optional digest authentication. Anything this path
//! cannot decide exactly as the Python registrar would goes to the
//! application unchanged. Replies are stateless (docs/decisions/0013); a
//! retransmitted REGISTER gets the same answer again from `RecentReplies`.

pub mod digest;
pub mod location;
pub mod register;
mod replies;

use std::collections::HashMap;
use std::sync::Arc;

use digest::{Algorithm, NonceCounts, NonceState, Nonces};
pub use location::{Binding, Location};
pub use register::{Outcome, Policy};
pub use replies::RecentReplies;

use crate::service::Node;
use crate::sip::{HeaderId, Message};
use crate::transport::Source;

/// Digest settings of a `sipr.DigestAuth` whose credentials are known in
/// advance (a dict): HA1 per user and algorithm.
pub struct Auth {
    pub nonces: Nonces,
    /// Offered in this order in challenges.
    pub algorithms: Vec<Algorithm>,
    pub check_identity: bool,
    pub ha1: HashMap<String, Ha1s, ahash::RandomState>,
    pub counts: Arc<NonceCounts>,
}

#[derive(Debug, Clone, Default)]
pub struct Ha1s {
    pub md5: Option<String>,
    pub sha256: Option<String>,
}

impl Ha1s {
    fn get(&self, alg: Algorithm) -> Option<&str> {
        match alg {
            Algorithm::Md5 => self.md5.as_deref(),
            Algorithm::Sha256 => self.sha256.as_deref(),
        }
    }
}

pub struct FastRegistrar {
    pub location: Arc<Location>,
    /// Lower-case domains served; None serves every domain.
    pub domains: Option<Vec<String>>,
    pub policy: Policy,
    pub auth: Option<Auth>,
}

const FORBIDDEN: &str = "Forbidden (unknown user or wrong password)";

impl FastRegistrar {
    pub fn serves(&self, host: &str) -> bool {
        self.domains
            .as_ref()
            .is_none_or(|d| d.iter().any(|x| x == host))
    }

    /// Authenticates (if configured) and applies a REGISTER; `now` is Unix
    /// time in seconds.
    pub fn decide(&self, msg: &Message, source: &Source, aor: &str, now: f64) -> Outcome {
        if let Some(auth) = &self.auth {
            match auth.check(msg, now) {
                Verdict::Pass => {}
                Verdict::Answer(o) => return o,
            }
        }
        register::save(msg, source, aor, &self.policy, &self.location, now)
    }
}

enum Verdict {
    Pass,
    Answer(Outcome),
}

fn reply(status: u16, reason: &str) -> Verdict {
    Verdict::Answer(Outcome::Reply {
        status,
        reason: Some(reason.to_string()),
        headers: Vec::new(),
    })
}

impl Auth {
    /// A 401 offering every algorithm, with a fresh nonce.
    pub fn challenge(&self, now: f64, stale: bool) -> Outcome {
        let nonce = self.nonces.issue((now * 1000.0) as u64);
        let headers = self
            .algorithms
            .iter()
            .map(|alg| {
                (
                    "WWW-Authenticate".to_string(),
                    format!(
                        "Digest realm=\"{}\", nonce=\"{nonce}\", qop=\"auth\", algorithm={}{}",
                        self.nonces.realm,
                        alg.name(),
                        if stale { ", stale=true" } else { "" }
                    ),
                )
            })
            .collect();
        Outcome::Reply {
            status: 401,
            reason: None,
            headers,
        }
    }

    /// `DigestAuth.check` for a REGISTER, step for step.
    fn check(&self, msg: &Message, now: f64) -> Verdict {
        let mut cred = None;
        for h in msg
            .headers()
            .iter()
            .filter(|h| h.id == HeaderId::Authorization)
        {
            let value = msg.header_value(h);
            let is_digest = value
                .trim_start()
                .get(..6)
                .is_some_and(|s| s.eq_ignore_ascii_case("digest"));
            match digest::parse_credentials(value) {
                Some(c)
                    if c.iter()
                        .any(|(k, v)| k == "realm" && *v == self.nonces.realm) =>
                {
                    cred = Some(c);
                    break;
                }
                Some(_) => {}
                None if is_digest => return Verdict::Answer(Outcome::Python),
                None => {}
            }
        }
        let Some(cred) = cred else {
            return Verdict::Answer(self.challenge(now, false));
        };
        let get = |k: &str| {
            cred.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        let nonce = get("nonce").unwrap_or("");
        let user = get("username").unwrap_or("");
        let alg_name = get("algorithm")
            .unwrap_or("MD5")
            .to_uppercase()
            .replace("SHA256", "SHA-256");
        let state = self.nonces.state(nonce, now);
        let alg = Algorithm::parse(&alg_name).filter(|a| self.algorithms.contains(a));
        let Some(alg) = alg.filter(|_| state == NonceState::Ok) else {
            return Verdict::Answer(self.challenge(now, state == NonceState::Stale));
        };
        let cnonce = get("cnonce").unwrap_or("");
        if get("qop") != Some("auth") || cnonce.is_empty() {
            return Verdict::Answer(self.challenge(now, false));
        }
        let nc_raw = get("nc").unwrap_or("");
        if nc_raw.is_empty() || !nc_raw.bytes().all(|c| c.is_ascii_hexdigit()) {
            // Python's int(x, 16) also takes "0x", "_" and spaces: let it judge.
            return Verdict::Answer(Outcome::Python);
        }
        let Ok(nc) = u64::from_str_radix(nc_raw, 16) else {
            return Verdict::Answer(Outcome::Python);
        };
        let Some(entry) = self.ha1.get(user) else {
            // Unknown here: the application's credentials may have grown.
            return Verdict::Answer(Outcome::Python);
        };
        let Some(key) = entry.get(alg) else {
            return reply(403, FORBIDDEN);
        };
        let ha2 = alg.hex(&[
            msg.method_str().as_bytes(),
            b":",
            get("uri").unwrap_or("").as_bytes(),
        ]);
        let expected = alg.hex(&[
            key.as_bytes(),
            b":",
            nonce.as_bytes(),
            b":",
            nc_raw.as_bytes(),
            b":",
            cnonce.as_bytes(),
            b":auth:",
            ha2.as_bytes(),
        ]);
        let response = get("response").unwrap_or("");
        if !digest::same_secret(expected.as_bytes(), response.as_bytes()) {
            return reply(403, FORBIDDEN);
        }
        if !self.counts.fresh(nonce, nc) {
            return reply(403, "Forbidden (replayed credentials)");
        }
        if self.check_identity && msg.to().uri.user != Some(user) {
            return reply(403, "Forbidden (identity not allowed for this user)");
        }
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests;

/// The registrars the application handed to the core, tried in order (the
/// first whose domains include the To host answers), and their recent
/// replies.
#[derive(Default)]
pub struct Registrars {
    list: parking_lot::RwLock<Vec<Arc<FastRegistrar>>>,
    recent: parking_lot::Mutex<Option<RecentReplies>>,
}

/// Replies kept for retransmissions: 16 s of REGISTERs at 1000/s, 1 s at
/// 16 000/s (a non-INVITE client retransmits after 0.5, 1, 2, 4, 4... s).
const RECENT_REPLIES: usize = 16_384;

impl Registrars {
    pub fn add(&self, r: Arc<FastRegistrar>) {
        self.list.write().push(r);
        self.recent
            .lock()
            .get_or_insert_with(|| RecentReplies::new(RECENT_REPLIES));
    }

    pub fn clear(&self) {
        self.list.write().clear();
    }

    pub fn is_empty(&self) -> bool {
        self.list.read().is_empty()
    }

    /// Answers a REGISTER natively if a registrar serves its domain and can
    /// decide it; false hands it to the application.
    pub fn handle(&self, node: &Node, msg: &Message, source: Source) -> bool {
        let list = self.list.read();
        if list.is_empty() {
            return false;
        }
        let Some((aor, host)) = register::aor_of(msg) else {
            return false;
        };
        let Some(registrar) = list.iter().find(|r| r.serves(&host)) else {
            return false;
        };
        let mut recent = self.recent.lock();
        let Some(recent) = recent.as_mut() else {
            return false;
        };
        let key = recent.key(msg, &source);
        if let Some(bytes) = recent.get(key) {
            node.stats.count_retransmission();
            node.wire.send_response(msg, source, bytes);
            return true;
        }
        let now = unix_now();
        let Outcome::Reply {
            status,
            reason,
            mut headers,
        } = registrar.decide(msg, &source, &aor, now)
        else {
            return false;
        };
        // As `req.reply()` does.
        headers.push(("Server".to_string(), node.server_name.clone()));
        let tag = node.stateless_tag();
        let bytes: bytes::Bytes = crate::sip::write::build_response(
            msg,
            Some(source.addr),
            status,
            reason.as_deref(),
            Some(&tag),
            &headers,
            b"",
        )
        .into();
        recent.insert(key, bytes.clone(), std::time::Instant::now());
        node.stats
            .native_registers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        node.wire.send_response(msg, source, bytes);
        true
    }
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
