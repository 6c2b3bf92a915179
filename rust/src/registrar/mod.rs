//! The registrar and digest authentication, once: RFC 3261 §10.3 rules
//! (`rules`), the digest check (`auth`, `digest`), one `Binding` type and
//! the stores behind a trait (`store`). Two entry points use them: the
//! native path here (`registrar.serve(app, auth=...)`: REGISTERs for the
//! served domains are answered before any Python runs) and the Python
//! facade (`sipr.Registrar.save`, `sipr.DigestAuth.check`, through
//! `rust/src/python/registrar.rs`). Native replies are stateless
//! (docs/decisions/0013); a retransmitted REGISTER gets the same answer again
//! from `RecentReplies`. docs/decisions/0028 tells why it is built so.

pub mod auth;
pub mod binding;
pub mod digest;
mod replies;
pub mod rules;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;

pub use auth::{Attempt, DigestRules, Step};
pub use binding::Binding;
pub use replies::RecentReplies;
pub use rules::{Policy, Reply};
pub use store::{Ha1Map, Store, StoreError};

use crate::service::Node;
use crate::sip::Message;
use crate::transport::Source;

/// Where the native path finds a user's HA1s.
pub enum Users {
    /// A `DigestAuth` whose credentials are a dict, read at startup: a user
    /// missing here goes on to the application, whose dict may have grown.
    Table(HashMap<String, Ha1Map, ahash::RandomState>),
    /// The users of a store (`sipr user add`), read per request.
    Store(Arc<dyn Store>),
}

/// A `sipr.Registrar` (and its `DigestAuth`) served by the core.
pub struct Registrar {
    pub store: Arc<dyn Store>,
    pub policy: Policy,
    pub auth: Option<(Arc<DigestRules>, Users)>,
}

/// What the native path does with a REGISTER.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Reply(Reply),
    /// Not decidable here (a user the credentials snapshot does not know):
    /// the request goes to the application.
    HandOn,
}

impl Registrar {
    pub fn serves(&self, host: &str) -> bool {
        self.policy.serves(host)
    }

    /// Authenticates (if configured) and applies a REGISTER; `now` is Unix
    /// time in seconds.
    pub fn decide(&self, msg: &Message, source: &Source, now: f64) -> Outcome {
        match self.try_decide(msg, source, now) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(call_id = msg.call_id(), "registrar: {e}");
                Outcome::Reply(Reply::new(500, Some("Server Internal Error (store)")))
            }
        }
    }

    fn try_decide(&self, msg: &Message, source: &Source, now: f64) -> Result<Outcome, StoreError> {
        if let Some((rules, users)) = &self.auth {
            let attempt = match rules.begin(msg, now) {
                Step::Answer(r) => return Ok(Outcome::Reply(r)),
                Step::Verify(a) => a,
            };
            let name = attempt.algorithm.name();
            let from_store;
            let key = match users {
                Users::Table(t) => match t.get(&attempt.user) {
                    Some(h) => h.get(name),
                    None => return Ok(Outcome::HandOn),
                },
                Users::Store(s) => {
                    from_store = s.user(&rules.nonces.realm, &attempt.user)?;
                    from_store.as_ref().and_then(|m| m.get(name))
                }
            };
            if let Some(refusal) = rules.finish(msg, &attempt, key.map(String::as_str)) {
                return Ok(Outcome::Reply(refusal));
            }
        }
        rules::save(msg, source, &self.policy, self.store.as_ref(), now).map(Outcome::Reply)
    }
}

/// The registrars the application handed to the core, tried in order (the
/// first whose domains include the To host answers), and their recent
/// replies.
#[derive(Default)]
pub struct Registrars {
    list: parking_lot::RwLock<Vec<Arc<Registrar>>>,
    recent: parking_lot::Mutex<Option<RecentReplies>>,
}

/// Replies kept for retransmissions: 16 s of REGISTERs at 1000/s, 1 s at
/// 16 000/s (a non-INVITE client retransmits after 0.5, 1, 2, 4, 4... s).
const RECENT_REPLIES: usize = 16_384;

impl Registrars {
    pub fn add(&self, r: Arc<Registrar>) {
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
        let Some((_, host)) = rules::aor_of(msg) else {
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
        // Authentication-failure bans (docs/security.md): a service may refuse
        // a user's attempt unchecked (a locked user), and hears each verdict.
        let user = registrar
            .auth
            .as_ref()
            .and_then(|(rules, _)| digest::digest_user(msg, &rules.nonces.realm));
        let refused = user.as_deref().is_some_and(|u| {
            node.hooks.on_digest_attempt(node, &source, u) == crate::service::Verdict::Stop
        });
        let outcome = if refused {
            Outcome::Reply(Reply::new(403, Some(digest::LOCKED_REASON)))
        } else {
            registrar.decide(msg, &source, unix_now())
        };
        let Outcome::Reply(Reply {
            status,
            reason,
            mut headers,
        }) = outcome
        else {
            return false;
        };
        if let Some(u) = user.as_deref().filter(|_| !refused) {
            if status == 403 || (200..300).contains(&status) {
                node.hooks.on_digest_result(node, &source, u, status != 403);
            }
        }
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

#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod rules_tests;
