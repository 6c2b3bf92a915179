//! Branches this instance mints carry a keyed MAC (docs/decisions/0021).
//!
//! A response that matches no client transaction (a 2xx retransmitted after
//! the transaction ended, the answer to a stateless forward) is relayed along
//! its Via path without state. Anyone can write such a response: with our
//! address in the top Via and a victim's in the second, sipr would reflect it.
//! So every branch we put in a Via ends in `.MAC`, a 64-bit SipHash-2-4
//! (a keyed PRF made for short inputs; decision 0059) over the rest of the branch and the upstream hop the response must go
//! back to (transport, IP and port, as the stamped Via of the request names
//! them). A stray response is relayed only if its branch verifies for the hop
//! its second Via names: no table, nothing to expire, and a branch copied from
//! a genuine exchange cannot send responses anywhere else. With a key that
//! outlives the process (`Config::branch_secret`), it still verifies after a
//! restart.
//!
//! Part of the node's identity (`Node::branch_mac`), like tags: every
//! service that mints a branch seals it here.

use std::net::{IpAddr, SocketAddr};

use std::hash::Hasher;

use sha2::{Digest, Sha256};
use siphasher::sip::SipHasher24;

use crate::sip::{Message, Via};
use crate::transport::{Source, Transport};

/// Hex digits of MAC at the end of a branch (64 bits).
const MAC_HEX: usize = 16;

/// Where a response is relayed: the hop before us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upstream {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl Upstream {
    /// The hop a request from `source` with top Via `via` will be answered
    /// at, once the Via is stamped as `build_forward` stamps it: `received`
    /// is the source IP; the port is the source port when `rport` is stamped
    /// (asked for, forced, or a stream), else the sent-by port.
    pub fn of_request(via: &Via<'_>, source: &Source) -> Upstream {
        let transport = Transport::parse(via.transport).unwrap_or(Transport::Udp);
        let port = if source.transport.is_stream() || via.rport().is_some() {
            source.addr.port()
        } else {
            via.port.unwrap_or(default_port(transport))
        };
        Upstream {
            transport,
            addr: SocketAddr::new(source.addr.ip(), port),
        }
    }

    /// The hop a response goes back to, from its second Via (RFC 3261
    /// §18.2.2, RFC 3581 §4): `received` or the sent-by host, which must be
    /// an IP (what we stamp always is; a name is no branch of ours and is
    /// not resolved), and `rport` or the sent-by port.
    pub fn of_response(msg: &Message) -> Option<Upstream> {
        let next = msg.second_via()?;
        let transport = Transport::parse(next.transport).unwrap_or(Transport::Udp);
        let port = match next.rport() {
            Some(Some(p)) => p,
            _ => next.port.unwrap_or(default_port(transport)),
        };
        let host = next.received().unwrap_or(next.host);
        let ip: IpAddr = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        Some(Upstream {
            transport,
            addr: SocketAddr::new(ip, port),
        })
    }
}

fn default_port(transport: Transport) -> u16 {
    if transport == Transport::Tls {
        5061
    } else {
        5060
    }
}

/// The 128-bit SipHash key, derived once from the configured secret.
#[derive(Clone)]
pub struct BranchKey {
    key: [u8; 16],
}

impl std::fmt::Debug for BranchKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BranchKey(..)")
    }
}

impl BranchKey {
    pub fn new(secret: &[u8]) -> BranchKey {
        // A secret of any length becomes the key through SHA-256 (with a
        // label, so the same secret used elsewhere yields another key).
        let mut d = Sha256::new();
        d.update(b"sipr-branch-key-1\0");
        d.update(secret);
        let mut key = [0u8; 16];
        key.copy_from_slice(&d.finalize()[..16]);
        BranchKey { key }
    }

    /// A key for this process only (branches stop verifying on restart).
    pub fn random() -> BranchKey {
        let mut secret = [0u8; 32];
        // SAFETY: getrandom writes at most `len` bytes into our buffer.
        let n = unsafe { libc::getrandom(secret.as_mut_ptr().cast(), secret.len(), 0) };
        if n != secret.len() as isize {
            // No entropy source: still unpredictable enough across runs for
            // a per-run key, never used for anything long-lived.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            secret[..16].copy_from_slice(&t.to_le_bytes());
            secret[16..20].copy_from_slice(&std::process::id().to_le_bytes());
        }
        BranchKey::new(&secret)
    }

    fn mac(&self, body: &str, up: &Upstream) -> String {
        let mut h = SipHasher24::new_with_key(&self.key);
        // A branch holds no NUL, so the 0 ends it unambiguously. The rest
        // goes in as one write: each write of SipHash costs its own setup.
        h.write(body.as_bytes());
        let mut rest = [0u8; 2 + 16 + 2];
        rest[1] = up.transport as u8;
        let ip_len = match up.addr.ip() {
            IpAddr::V4(ip) => {
                rest[2..6].copy_from_slice(&ip.octets());
                4
            }
            IpAddr::V6(ip) => {
                rest[2..18].copy_from_slice(&ip.octets());
                16
            }
        };
        rest[2 + ip_len..4 + ip_len].copy_from_slice(&up.addr.port().to_be_bytes());
        h.write(&rest[..4 + ip_len]);
        let tag = h.finish().to_be_bytes();
        let mut out = String::with_capacity(MAC_HEX);
        for b in &tag[..MAC_HEX / 2] {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
        out
    }

    /// `body` (a branch with its magic cookie) with `.MAC` appended.
    pub fn seal(&self, mut body: String, up: &Upstream) -> String {
        let mac = self.mac(&body, up);
        body.push('.');
        body.push_str(&mac);
        body
    }

    /// Whether `branch` was sealed by this key for a response going to `up`.
    pub fn verify(&self, branch: &str, up: &Upstream) -> bool {
        let Some((body, mac)) = branch.rsplit_once('.') else {
            return false;
        };
        if mac.len() != MAC_HEX {
            return false;
        }
        // Constant time: the answer must not leak how many digits matched.
        let expected = self.mac(body, up);
        expected
            .bytes()
            .zip(mac.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b.to_ascii_lowercase()))
            == 0
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn up(addr: &str) -> Upstream {
        Upstream {
            transport: Transport::Udp,
            addr: addr.parse().unwrap(),
        }
    }

    #[test]
    fn sealed_branches_verify_only_for_their_key_and_upstream() {
        let k = BranchKey::new(b"k");
        let a = up("192.0.2.1:5060");
        let b = k.seal("z9hG4bKsr0123.7".to_string(), &a);
        assert!(b.starts_with("z9hG4bKsr0123.7."));
        assert!(k.verify(&b, &a));
        assert!(k.verify(
            &b.to_ascii_uppercase().replace("Z9HG4BKSR", "z9hG4bKsr"),
            &a
        ));
        assert!(!k.verify(&b, &up("192.0.2.1:5061")));
        assert!(!k.verify(&b, &up("192.0.2.2:5060")));
        let tcp = Upstream {
            transport: Transport::Tcp,
            ..a
        };
        assert!(!k.verify(&b, &tcp));
        assert!(!BranchKey::new(b"other").verify(&b, &a));
        assert!(BranchKey::new(b"k").verify(&b, &a)); // same secret, e.g. after a restart
        for forged in [
            "z9hG4bKsr0123.7",
            "z9hG4bK1",
            "",
            ".",
            "z9hG4bK.0000000000000000",
        ] {
            assert!(!k.verify(forged, &a), "{forged}");
        }
        let random = BranchKey::random();
        assert!(!random.verify(&b, &a));
        assert!(random.verify(&random.seal("z9hG4bKx".into(), &a), &a));
    }

    fn parse(text: &str) -> Message {
        Message::parse(
            Bytes::from(text.replace('\n', "\r\n")),
            crate::sip::Framing::Datagram,
            &crate::sip::Limits::default(),
        )
        .unwrap()
    }

    #[test]
    fn upstream_of_a_request_matches_the_response_to_its_stamped_via() {
        let src = Source::udp(
            "203.0.113.9:40000".parse().unwrap(),
            "192.0.2.1:5060".parse().unwrap(),
        );
        let req = |via: &str| {
            parse(&format!(
                "OPTIONS sip:b@x SIP/2.0\nVia: {via}\nFrom: <sip:a@x>;tag=1\nTo: <sip:b@x>\n\
                 Call-ID: c\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n"
            ))
        };
        let resp = |second: &str| {
            parse(&format!(
                "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKus.1\nVia: {second}\n\
                 From: <sip:a@x>;tag=1\nTo: <sip:b@x>;tag=2\nCall-ID: c\nCSeq: 1 OPTIONS\n\
                 Content-Length: 0\n\n"
            ))
        };
        // rport asked: answered at the source port.
        let r = req("SIP/2.0/UDP 10.0.0.7:5070;rport;branch=z9hG4bK1");
        let u = Upstream::of_request(&r.top_via(), &src);
        assert_eq!(u, up("203.0.113.9:40000"));
        let back =
            resp("SIP/2.0/UDP 10.0.0.7:5070;rport=40000;branch=z9hG4bK1;received=203.0.113.9");
        assert_eq!(Upstream::of_response(&back), Some(u));
        // No rport: the sent-by port, at the received IP.
        let r = req("SIP/2.0/UDP 10.0.0.7:5070;branch=z9hG4bK1");
        let u = Upstream::of_request(&r.top_via(), &src);
        assert_eq!(u, up("203.0.113.9:5070"));
        let back = resp("SIP/2.0/UDP 10.0.0.7:5070;branch=z9hG4bK1;received=203.0.113.9");
        assert_eq!(Upstream::of_response(&back), Some(u));
        // A name without received is never ours: not resolved.
        assert_eq!(
            Upstream::of_response(&resp("SIP/2.0/UDP victim.example;branch=z9hG4bK1")),
            None
        );
        assert_eq!(Upstream::of_response(&parse(
            "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa\nFrom: <sip:a@x>;tag=1\n\
             To: <sip:b@x>;tag=2\nCall-ID: c\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n")), None);
    }
}
