//! Addresses as the security services see them: the key a source is counted
//! and banned under (an IPv4 address, or an IPv6 /64: one host usually owns a
//! whole /64, so banning single IPv6 addresses would be useless), and CIDR
//! networks for trusted lists and address groups.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// What a source is tracked and banned by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKey {
    V4(u32),
    /// The upper 64 bits of the address.
    V6(u64),
}

impl SourceKey {
    pub fn of(ip: IpAddr) -> SourceKey {
        match canonical(ip) {
            IpAddr::V4(v4) => SourceKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => SourceKey::V6((u128::from(v6) >> 64) as u64),
        }
    }

    /// An address (`192.0.2.7`) or an IPv6 prefix (`2001:db8::/64`, or any
    /// address inside it).
    pub fn parse(text: &str) -> Result<SourceKey, String> {
        let text = text.trim();
        let addr = text.strip_suffix("/64").unwrap_or(text);
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        if text.contains('/') && addr == text {
            return Err(format!(
                "{text:?}: a source is an IPv4 address or an IPv6 address or /64 prefix"
            ));
        }
        addr.parse::<IpAddr>()
            .map(SourceKey::of)
            .map_err(|_| format!("{text:?} is not an IP address"))
    }

    /// Whether `net` contains this source (all of it, for an IPv6 /64).
    pub fn within(&self, net: &Cidr) -> bool {
        match *self {
            SourceKey::V4(a) => net.contains(IpAddr::V4(Ipv4Addr::from(a))),
            SourceKey::V6(p) => {
                net.prefix <= 64 && net.contains(IpAddr::V6(Ipv6Addr::from(u128::from(p) << 64)))
            }
        }
    }
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SourceKey::V4(a) => write!(f, "{}", Ipv4Addr::from(a)),
            SourceKey::V6(p) => write!(f, "{}/64", Ipv6Addr::from(u128::from(p) << 64)),
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, from a dual-stack socket)
/// are the IPv4 host they map.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// A network: an address and a prefix length (`10.0.0.0/8`, `2001:db8::/32`,
/// or one host without `/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub net: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => mask_eq(
                u128::from(u32::from(n)),
                u128::from(u32::from(a)),
                self.prefix,
                32,
            ),
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                mask_eq(u128::from(n), u128::from(a), self.prefix, 128)
            }
            _ => false,
        }
    }

    pub fn loopback() -> Vec<Cidr> {
        vec![
            Cidr {
                net: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
                prefix: 8,
            },
            Cidr {
                net: IpAddr::V6(Ipv6Addr::LOCALHOST),
                prefix: 128,
            },
        ]
    }
}

fn mask_eq(a: u128, b: u128, prefix: u8, bits: u8) -> bool {
    let prefix = prefix.min(bits);
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix);
    (a >> shift) == (b >> shift)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let net = canonical(
            addr.parse::<IpAddr>()
                .map_err(|_| format!("{text:?} is not an address or network (CIDR)"))?,
        );
        let bits = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0-{bits}"))?,
        };
        Ok(Cidr { net, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_sources_are_their_64() {
        assert_eq!(
            SourceKey::of(ip("2001:db8:1:2::1")),
            SourceKey::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            SourceKey::of(ip("2001:db8:1:2::1")),
            SourceKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            SourceKey::of(ip("2001:db8:1:2::1")).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            SourceKey::parse("2001:db8:1:2::/64").unwrap(),
            SourceKey::of(ip("2001:db8:1:2::7"))
        );
        assert!(SourceKey::parse("10.0.0.0/8").is_err());
        assert!(SourceKey::parse("nonsense").is_err());
        // A v4-mapped address is the IPv4 host.
        assert_eq!(
            SourceKey::of(ip("::ffff:192.0.2.1")),
            SourceKey::of(ip("192.0.2.1"))
        );
    }

    #[test]
    fn cidr_matching() {
        let n: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains(ip("10.1.200.3")));
        assert!(!n.contains(ip("10.2.0.1")));
        assert!(n.contains(ip("::ffff:10.1.0.1")));
        assert!(!n.contains(ip("2001:db8::1")));
        let host: Cidr = "192.0.2.9".parse().unwrap();
        assert_eq!(host.prefix, 32);
        assert!(host.contains(ip("192.0.2.9")) && !host.contains(ip("192.0.2.8")));
        let any: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains(ip("203.0.113.5")));
        let v6: Cidr = "[2001:db8::]/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("host.example".parse::<Cidr>().is_err());
        assert!(SourceKey::of(ip("2001:db8:1:2::1")).within(&v6));
        let narrow: Cidr = "2001:db8:1:2::1/128".parse().unwrap();
        assert!(!SourceKey::of(ip("2001:db8:1:2::1")).within(&narrow));
    }
}
