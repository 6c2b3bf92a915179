//! What RFC 3263 resolves (a SIP URI's host, port, transport and scheme) and
//! what it yields: ordered groups of servers, each with its addresses. The
//! per-request order (SRV priority, then weight, RFC 2782) is drawn here.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::sip::{Scheme, Uri};
use crate::transport::Hop;
use crate::transport::Transport;

/// The part of a URI that decides where a request goes (RFC 3263 §4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SipTarget {
    /// Lowercase, without brackets or a trailing dot.
    pub host: String,
    pub port: Option<u16>,
    pub transport: Option<Transport>,
    /// A `sips:` URI: only TLS will do (RFC 3263 §4.1).
    pub secure: bool,
}

/// Why a URI cannot be resolved at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    NotSip,
    BadTransport,
}

impl SipTarget {
    /// The target of `uri` (its `maddr` wins over the host, RFC 3261 §19.1.1).
    pub fn from_uri(uri: &Uri<'_>) -> Result<SipTarget, TargetError> {
        if !uri.is_sip() {
            return Err(TargetError::NotSip);
        }
        let transport = match uri.param("transport") {
            Some(t) => Some(Transport::parse(t).ok_or(TargetError::BadTransport)?),
            None => None,
        };
        let host = uri.param("maddr").unwrap_or(uri.host);
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        Ok(SipTarget {
            host,
            port: uri.port,
            transport,
            secure: uri.scheme == Scheme::Sips,
        })
    }

    /// The transport when the URI alone decides it (RFC 3263 §4.1: an IP
    /// literal or an explicit port means no NAPTR).
    pub fn fixed_transport(&self) -> Transport {
        match self.transport {
            Some(Transport::Tcp) if self.secure => Transport::Tls,
            Some(t) => t,
            None if self.secure => Transport::Tls,
            None => Transport::Udp,
        }
    }

    /// The destination of a URI naming an IP address, without building a
    /// target (the common case on the relay path: no allocation).
    pub fn literal_of(uri: &Uri<'_>) -> Option<Result<Hop, TargetError>> {
        let host = uri.param("maddr").unwrap_or(uri.host);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = bare.parse().ok()?;
        if !uri.is_sip() {
            return Some(Err(TargetError::NotSip));
        }
        let transport = match uri.param("transport") {
            Some(t) => match Transport::parse(t) {
                Some(Transport::Tcp) if uri.scheme == Scheme::Sips => Transport::Tls,
                Some(t) => t,
                None => return Some(Err(TargetError::BadTransport)),
            },
            None if uri.scheme == Scheme::Sips => Transport::Tls,
            None => Transport::Udp,
        };
        Some(Ok(Hop {
            transport,
            addr: SocketAddr::new(ip, uri.port.unwrap_or(default_port(transport))),
        }))
    }

    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// An IP literal needs no DNS.
    pub fn literal_hop(&self) -> Option<Hop> {
        let ip = self.ip()?;
        let transport = self.fixed_transport();
        Some(Hop {
            transport,
            addr: SocketAddr::new(ip, self.port.unwrap_or(default_port(transport))),
        })
    }
}

pub fn default_port(t: Transport) -> u16 {
    match t {
        Transport::Tls | Transport::Wss => 5061,
        _ => 5060,
    }
}

/// One SRV target (or the host itself when there is no SRV) and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub name: String,
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub addrs: Vec<IpAddr>,
}

/// The servers of one transport (one NAPTR record, or one SRV name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub transport: Transport,
    /// The record that led here, for `dns.cache` ("NAPTR ...", "SRV ...", "A").
    pub via: String,
    pub servers: Vec<Server>,
}

/// The outcome of one RFC 3263 resolution, shared by every request for it.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub groups: Vec<Group>,
    /// The smallest TTL of the records used (or the negative TTL).
    pub expires: Instant,
    /// Why nothing was found (a negative entry when `groups` is empty).
    pub error: Option<String>,
}

impl Resolved {
    pub fn is_negative(&self) -> bool {
        self.groups
            .iter()
            .all(|g| g.servers.iter().all(|s| s.addrs.is_empty()))
    }

    /// Every destination in the order to try them: groups in order; in each,
    /// servers by priority and, within a priority, drawn by weight (RFC 2782);
    /// each server's addresses in turn. `random` yields uniform u32s.
    pub fn hops(&self, random: &mut impl FnMut() -> u32) -> Vec<Hop> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for g in &self.groups {
            for s in srv_order(&g.servers, random) {
                for ip in &s.addrs {
                    let hop = Hop {
                        transport: g.transport,
                        addr: SocketAddr::new(*ip, s.port),
                    };
                    if seen.insert(hop) {
                        out.push(hop);
                    }
                }
            }
        }
        out
    }
}

/// RFC 2782 ordering: ascending priority; within a priority, repeatedly pick
/// one at random with probability proportional to its weight (weight-0
/// entries placed first so they get a small chance, as the RFC says).
pub fn srv_order<'a>(servers: &'a [Server], random: &mut impl FnMut() -> u32) -> Vec<&'a Server> {
    let mut sorted: Vec<&Server> = servers.iter().collect();
    sorted.sort_by_key(|s| s.priority);
    let mut out = Vec::with_capacity(sorted.len());
    let mut i = 0;
    while i < sorted.len() {
        let p = sorted[i].priority;
        let mut j = i;
        while j < sorted.len() && sorted[j].priority == p {
            j += 1;
        }
        let mut same: Vec<&Server> = sorted[i..j].to_vec();
        same.sort_by_key(|s| s.weight != 0);
        while !same.is_empty() {
            let total: u64 = same.iter().map(|s| u64::from(s.weight)).sum();
            let pick = if total == 0 {
                (random() as usize) % same.len()
            } else {
                // Running sums against a draw in [1, total]: exactly
                // proportional to the weights; a draw of 0 (possible only
                // when a weight-0 entry is left) gives that entry its small
                // chance (RFC 2782).
                let has_zero = same.iter().any(|s| s.weight == 0);
                let r = if has_zero {
                    u64::from(random()) % (total + 1)
                } else {
                    u64::from(random()) % total + 1
                };
                let mut running = 0;
                same.iter()
                    .position(|s| {
                        running += u64::from(s.weight);
                        running >= r
                    })
                    .unwrap_or(0)
            };
            out.push(same.remove(pick));
        }
        i = j;
    }
    out
}

/// A small fast generator for the weighted draws (xorshift; not for secrets).
pub struct Draw(u64);

impl Draw {
    pub fn seeded(seed: u64) -> Draw {
        Draw(seed | 1)
    }
    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, priority: u16, weight: u16) -> Server {
        Server {
            name: name.into(),
            priority,
            weight,
            port: 5060,
            addrs: vec![],
        }
    }

    #[test]
    fn targets_from_uris() {
        let t = |s: &str| SipTarget::from_uri(&Uri::parse(s).unwrap());
        let a = t("sip:bob@Svc.Test.").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.transport, a.secure),
            ("svc.test", None, None, false)
        );
        let b = t("sips:bob@svc.test:5071;transport=tcp").unwrap();
        assert_eq!(b.fixed_transport(), Transport::Tls);
        assert_eq!(b.port, Some(5071));
        let c = t("sip:bob@host;maddr=[::1];transport=udp").unwrap();
        assert_eq!(c.literal_hop().unwrap().addr, "[::1]:5060".parse().unwrap());
        assert_eq!(
            t("sip:x@h;transport=carrier-pigeon"),
            Err(TargetError::BadTransport)
        );
        assert_eq!(t("tel:+123"), Err(TargetError::NotSip));
        let s = t("sips:10.0.0.1").unwrap();
        assert_eq!(s.literal_hop().unwrap().addr.port(), 5061);
        // The allocation-free path agrees with the full one.
        for raw in [
            "sip:10.0.0.1",
            "sips:10.0.0.1;transport=tcp",
            "sip:a@[::1]:5070;transport=tcp",
            "sip:b@host;maddr=127.0.0.1",
        ] {
            let u = Uri::parse(raw).unwrap();
            let full = SipTarget::from_uri(&u).unwrap().literal_hop();
            assert_eq!(SipTarget::literal_of(&u).map(Result::unwrap), full, "{raw}");
        }
        assert!(SipTarget::literal_of(&Uri::parse("sip:a@svc.test").unwrap()).is_none());
    }

    #[test]
    fn priority_first_then_weight() {
        let servers = vec![server("b", 20, 0), server("a", 10, 5), server("c", 10, 5)];
        let mut d = Draw::seeded(7);
        for _ in 0..50 {
            let order: Vec<&str> = srv_order(&servers, &mut || d.next_u32())
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            assert_eq!(order.len(), 3);
            assert_eq!(order[2], "b");
        }
    }

    #[test]
    fn weights_share_the_first_place() {
        let servers = vec![server("light", 10, 1), server("heavy", 10, 3)];
        let mut d = Draw::seeded(42);
        let n = 40_000;
        let heavy = (0..n)
            .filter(|_| srv_order(&servers, &mut || d.next_u32())[0].name == "heavy")
            .count();
        let share = heavy as f64 / f64::from(n);
        assert!((share - 0.75).abs() < 0.02, "heavy first in {share}");
    }

    #[test]
    fn zero_weights_still_all_listed() {
        let servers = vec![server("a", 1, 0), server("b", 1, 0), server("c", 1, 10)];
        let mut d = Draw::seeded(3);
        let mut first_a = 0;
        for _ in 0..3000 {
            let order = srv_order(&servers, &mut || d.next_u32());
            assert_eq!(order.len(), 3);
            first_a += usize::from(order[0].name == "a");
        }
        // Weight 0 keeps a small chance (RFC 2782), far below the weighted one.
        assert!(first_a > 0 && first_a < 600, "{first_a}");
    }

    #[test]
    fn hops_are_unique_and_ordered_by_group() {
        let mut s1 = server("a", 10, 0);
        s1.addrs = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        let r = Resolved {
            groups: vec![
                Group {
                    transport: Transport::Tcp,
                    via: "x".into(),
                    servers: vec![s1.clone()],
                },
                Group {
                    transport: Transport::Udp,
                    via: "y".into(),
                    servers: vec![s1.clone(), s1],
                },
            ],
            expires: Instant::now(),
            error: None,
        };
        let mut d = Draw::seeded(1);
        let hops = r.hops(&mut || d.next_u32());
        assert_eq!(hops.len(), 4);
        assert_eq!(hops[0].transport, Transport::Tcp);
        assert_eq!(hops[3].transport, Transport::Udp);
        assert!(!r.is_negative());
    }
}
