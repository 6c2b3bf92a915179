//! A request the application holds, and the rules for what it may still do
//! with it: answer it, forward it statelessly, relay it statefully (again,
//! for failover), or let it go. `python/request.rs` wraps one per
//! `sipr.Request` and translates `ActionError` into Python exceptions.

use std::sync::Arc;
use std::time::Duration;

use super::{Core, Event, Incoming, Reply};
use crate::proxy::stateful::{RelayOptions, Target};
use crate::proxy::{ForwardError, ForwardRequest};
use crate::sip::edits::check_answer_header;
use crate::sip::{HeaderEdits, Method};

/// Why an action was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionError {
    /// The request was already answered, forwarded, cancelled or ended.
    Closed(String),
    /// An argument the action cannot take.
    Invalid(String),
}

/// How a `relay()` went out.
pub enum Relayed {
    /// Without a transaction (an ACK): forwarded statelessly, no result.
    Stateless,
    /// A relay round started; `events` are its results if it ended at once.
    Started(Vec<Event>),
}

pub struct HeldRequest {
    pub inc: Incoming,
    /// The application's header changes, applied when relayed.
    pub headers: HeaderEdits,
    /// The Request-URI the application set (None: as received).
    pub request_uri: Option<String>,
    to_tag: Option<String>,
    /// A final answer was sent, or the request was forwarded or relayed.
    handled: bool,
    /// A final answer was sent (by `reply`).
    answered: bool,
    /// The core's pending count was released for this request.
    released: bool,
}

impl HeldRequest {
    pub fn new(inc: Incoming) -> HeldRequest {
        HeldRequest {
            inc,
            headers: HeaderEdits::default(),
            request_uri: None,
            to_tag: None,
            handled: false,
            answered: false,
            released: false,
        }
    }

    pub fn handled(&self) -> bool {
        self.handled
    }

    /// Kamailio's force_rport(): answers and relays of this UDP request go
    /// to its source address and port, as if its top Via had `rport`
    /// (RFC 3581 §4). A no-op over streams.
    pub fn force_rport(&mut self, core: &Core) {
        core.force_rport_of(&mut self.inc);
    }

    /// Answers the request; a status below 200 may be followed by another.
    pub fn reply(
        &mut self,
        core: &Core,
        status: u16,
        reason: Option<&str>,
        mut headers: Vec<(String, String)>,
        body: &[u8],
    ) -> Result<(), ActionError> {
        if !(100..700).contains(&status) {
            return Err(ActionError::Invalid(format!(
                "status must be 100-699, got {status}"
            )));
        }
        if reason.is_some_and(|r| r.contains(['\r', '\n'])) {
            return Err(ActionError::Invalid("reason must be a single line".into()));
        }
        if self.inc.msg.method() == Method::Ack {
            return Err(ActionError::Closed("ACK cannot be answered".into()));
        }
        self.ensure_open("reply")?;
        for (name, value) in &headers {
            check_answer_header(name, value).map_err(ActionError::Invalid)?;
        }
        headers.push(("Server".to_string(), core.node.server_name.clone()));
        self.send_reply(core, status, reason, &headers, body)
    }

    /// Forwards statelessly to `target` (a next hop), else by Route, else to
    /// the Request-URI. False when the core had to answer instead (483,
    /// 420, ...; nothing for an ACK).
    pub fn forward(&mut self, core: &Core, target: Option<&str>) -> Result<bool, ActionError> {
        self.ensure_open("forward")?;
        if let Some(txn) = self.inc.txn.take() {
            // Handled statelessly from now on.
            core.forget(txn);
        }
        let result = core.forward(
            &self.inc,
            &ForwardRequest {
                target,
                request_uri: self.request_uri.as_deref(),
                header_edits: self.headers.as_slice(),
            },
        );
        let refused = result.err();
        if let Some(e) = &refused {
            tracing::info!(call_id = self.inc.msg.call_id(), error = %e, "forward refused");
            if self.inc.msg.method() != Method::Ack {
                let mut extra = vec![("Server".to_string(), core.node.server_name.clone())];
                if let ForwardError::BadExtension(ext) = e {
                    extra.push(("Unsupported".to_string(), ext.clone()));
                }
                self.send_reply(core, e.status(), None, &extra, b"")?;
            }
        }
        self.handled = true;
        Ok(refused.is_none())
    }

    /// Relays statefully to `targets` (empty: by Route / Request-URI; in
    /// turn when `serial` names the codes that move on to the next); a
    /// request without a transaction (ACK) is forwarded statelessly to the
    /// first one. May be called again after a round ends (serial failover).
    #[allow(clippy::too_many_arguments)]
    pub fn relay(
        &mut self,
        core: &Core,
        targets: Vec<Target>,
        serial: Option<Arc<[u16]>>,
        timeout: Option<Duration>,
        record_route: bool,
        relay_id: u64,
    ) -> Result<Relayed, ActionError> {
        if self.answered {
            return Err(self.closed("relay"));
        }
        let Some(txn) = self.inc.txn else {
            let first = targets.first();
            let _ = core.forward(
                &self.inc,
                &ForwardRequest {
                    target: first.and_then(|t| t.hop.as_deref()),
                    request_uri: first
                        .and_then(|t| t.request_uri.as_deref())
                        .or(self.request_uri.as_deref()),
                    header_edits: self.headers.as_slice(),
                },
            );
            self.handled = true;
            return Ok(Relayed::Stateless);
        };
        let opts = RelayOptions {
            targets,
            request_uri: self.request_uri.as_deref(),
            header_edits: self.headers.as_slice(),
            record_route,
            timeout,
            serial,
        };
        let (result, events) = core.relay(txn, &opts, relay_id);
        if result.is_err() {
            return Err(self.closed("relay"));
        }
        self.handled = true;
        Ok(Relayed::Started(events))
    }

    /// The handler is done with the request: its overload slot is freed and
    /// a held relay result goes upstream. Once.
    pub fn finish(&mut self, core: &Core) {
        if !self.released {
            self.released = true;
            core.finish(self.inc.txn);
        }
    }

    fn send_reply(
        &mut self,
        core: &Core,
        status: u16,
        reason: Option<&str>,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<(), ActionError> {
        let reply = Reply {
            status,
            reason,
            headers,
            body,
        };
        let sent = core.reply(&self.inc, &mut self.to_tag, &reply);
        if !sent || status >= 200 {
            self.answered = true;
            self.handled = true;
        }
        if sent {
            Ok(())
        } else {
            Err(self.closed("reply"))
        }
    }

    fn ensure_open(&self, action: &str) -> Result<(), ActionError> {
        if self.answered || (self.handled && action == "forward") {
            return Err(ActionError::Closed(format!(
                "cannot {action}: request {} {} (Call-ID {}) was already answered or forwarded",
                self.inc.msg.method_str(),
                self.inc.msg.cseq(),
                self.inc.msg.call_id()
            )));
        }
        Ok(())
    }

    fn closed(&self, action: &str) -> ActionError {
        ActionError::Closed(format!(
            "cannot {action}: request {} {} (Call-ID {}) was already answered, cancelled or ended",
            self.inc.msg.method_str(),
            self.inc.msg.cseq(),
            self.inc.msg.call_id()
        ))
    }
}
