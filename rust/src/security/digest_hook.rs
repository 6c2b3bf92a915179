//! Where digest authentication meets the authentication-failure bans: the
//! digest code (the native REGISTER path here, `sipr.DigestAuth` through
//! `Security.digest_failed`) asks [`locked_answer`] first and reports with
//! [`digest_outcome`] after. Kept in one place so the digest code only needs
//! these two calls.

use std::net::IpAddr;

use super::Security;
use crate::registrar::digest::parse_credentials;
use crate::sip::{HeaderId, Message};

/// The answer to an attempt for a locked user.
pub const LOCKED_REASON: &str = "Forbidden (too many failed attempts, try later)";

/// `user@realm` of the digest credentials for `realm` in `msg` (the header
/// REGISTER uses, or the proxy one), if any.
pub fn digest_user(msg: &Message, realm: &str) -> Option<String> {
    msg.headers()
        .iter()
        .filter(|h| matches!(h.id, HeaderId::Authorization | HeaderId::ProxyAuthorization))
        .filter_map(|h| parse_credentials(msg.header_value(h)))
        .find(|c| c.iter().any(|(k, v)| k == "realm" && v == realm))
        .and_then(|c| {
            c.into_iter()
                .rev()
                .find(|(k, _)| k == "username")
                .map(|(_, u)| format!("{u}@{realm}"))
        })
}

/// True when `user` may not try from `ip` now: answer 403 (`LOCKED_REASON`)
/// without checking the password.
pub fn locked_answer(security: &Security, ip: IpAddr, user: &str) -> bool {
    security.user_locked(ip, user)
}

/// The digest check answered `status` for `user` from `ip`: 403 counts as
/// a failure, 2xx as a success (the source becomes known for that user).
pub fn digest_outcome(security: &Security, ip: IpAddr, user: &str, status: u16) {
    match status {
        403 => security.digest_failed(ip, user),
        200..=299 => security.digest_succeeded(ip, user),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Framing, Limits};
    use bytes::Bytes;

    #[test]
    fn user_of_the_realm_credentials() {
        let raw = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
                   From: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n\
                   Call-ID: c\r\nCSeq: 2 REGISTER\r\n\
                   Authorization: Digest username=\"mallory\", realm=\"other\", nonce=\"n\"\r\n\
                   Authorization: Digest username=\"alice\", realm=\"example.com\", nonce=\"n\"\r\n\
                   Content-Length: 0\r\n\r\n";
        let m = Message::parse(Bytes::from(raw), Framing::Datagram, &Limits::default()).unwrap();
        assert_eq!(
            digest_user(&m, "example.com").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(digest_user(&m, "nowhere"), None);
        let s = Security::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..10 {
            digest_outcome(&s, ip, "alice@example.com", 403);
        }
        assert_eq!(s.bans.len(), 1, "ten failures ban the source by default");
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..50 {
            digest_outcome(&s, lo, "bob@example.com", 403);
        }
        assert_eq!(s.bans.len(), 1, "trusted sources are never banned");
        assert!(!locked_answer(&s, lo, "bob@example.com"));
    }
}
