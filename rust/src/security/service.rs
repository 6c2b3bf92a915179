//! The security services as a `service::Service` (docs/architecture.md):
//! registered once per core, before any message is read.

use std::sync::Arc;
use std::time::Instant;

use super::bans::BanReason;
use super::net::SourceKey;
use super::screen::{self, BlockAction};
use super::Security;
use crate::service::{Node, Service, Verdict};
use crate::sip::{Message, Method};
use crate::transport::Source;

/// The owner name of the security services.
pub const NAME: &str = "security";

pub struct SecurityService(pub Arc<Security>);

impl Service for SecurityService {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Bans and flood counting, before the parser.
    fn on_receive(&self, _node: &Node, bytes: &[u8], source: &Source) -> Verdict {
        if self.0.admit(source.addr.ip(), bytes) {
            Verdict::Continue
        } else {
            Verdict::Stop
        }
    }

    /// The blocklist (drop, or drop and ban the source), the sanity
    /// checklist (answered here; ACKs dropped), then the per-method limits
    /// of requests outside dialogs (503 + Retry-After).
    fn on_request(&self, node: &Node, msg: &Message, source: &Source) -> Verdict {
        let security = &self.0;
        let config = security.screen_config();
        if config.blocklist.action != BlockAction::RouteOnly
            && !security.is_trusted(source.addr.ip())
        {
            if let Some(hit) = config.blocklist.check_message(msg) {
                security.stats.blocklist_drops.inc();
                if config.blocklist.action == BlockAction::Ban {
                    let key = SourceKey::of(source.addr.ip());
                    let _ = security.ban(key, BanReason::Scanner, config.blocklist_ban, hit);
                }
                return Verdict::Stop;
            }
        }
        if !config.sanity.is_empty() {
            let datagram = !source.transport.is_stream() || source.transport.is_websocket();
            if let Some(r) = screen::sanity(msg, &config.sanity, datagram) {
                security.stats.sanity_refused.inc();
                if msg.method() != Method::Ack {
                    node.reply_stateless(msg, *source, r.status, Some(r.reason), &r.headers);
                }
                return Verdict::Stop;
            }
        }
        if method_limited(node, security, msg, source) {
            return Verdict::Stop;
        }
        Verdict::Continue
    }

    fn on_digest_attempt(&self, _node: &Node, source: &Source, user: &str) -> Verdict {
        if self.0.user_locked(source.addr.ip(), user) {
            Verdict::Stop
        } else {
            Verdict::Continue
        }
    }

    fn on_digest_result(&self, _node: &Node, source: &Source, user: &str, accepted: bool) {
        if accepted {
            self.0.digest_succeeded(source.addr.ip(), user);
        } else {
            self.0.digest_failed(source.addr.ip(), user);
        }
    }
}

/// A request outside a dialog over its method's limit is answered 503 +
/// Retry-After here (never ACK or CANCEL: they belong to admitted requests).
fn method_limited(node: &Node, security: &Security, msg: &Message, source: &Source) -> bool {
    if msg.to_tag().is_some() || matches!(msg.method(), Method::Ack | Method::Cancel) {
        return false;
    }
    let Some(wait) = security
        .methods
        .check(msg.method(), msg.method_str(), Instant::now())
    else {
        return false;
    };
    security.stats.method_limited.inc();
    let seconds = if wait.is_finite() {
        (wait.ceil() as u64).max(1)
    } else {
        3600
    };
    let retry_after = [("Retry-After".to_string(), seconds.to_string())];
    node.reply_stateless(msg, *source, 503, None, &retry_after);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn digest_verdicts_ban_sources_and_trust_loopback() {
        let s = Arc::new(Security::default());
        let svc = SecurityService(s.clone());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..10 {
            s.digest_failed(ip, "alice@example.com");
        }
        assert_eq!(s.bans.len(), 1, "ten failures ban the source by default");
        assert!(
            !s.admit(ip, b"OPTIONS sip:x SIP/2.0\r\n"),
            "its packets are dropped"
        );
        for _ in 0..50 {
            s.digest_failed("127.0.0.1".parse().unwrap(), "bob@example.com");
        }
        assert_eq!(s.bans.len(), 1, "trusted sources are never banned");
        assert!(!s.user_locked("127.0.0.1".parse().unwrap(), "bob@example.com"));
        assert_eq!(svc.name(), NAME);
    }
}
