//! Is the sender of a request behind NAT? Kamailio's `nat_uac_test(flags)`
//! as named tests: each compares what the UA wrote (Via, Contact, SDP) with
//! where the request came from, or looks for private addresses.

use std::net::IpAddr;

use crate::sip::{host_ip, HeaderId, Message, NameAddr};
use crate::transport::Source;

/// One test; the values are Kamailio's `nat_uac_test` flag bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum NatTest {
    /// The Contact host is a private (RFC 1918) or shared (RFC 6598) address.
    ContactPrivate = 1,
    /// The top Via's host is not the source address.
    ViaReceived = 2,
    /// The top Via's host is a private or shared address.
    ViaPrivate = 4,
    /// The SDP connection address (`c=`) is private or shared.
    SdpPrivate = 8,
    /// The top Via's port is not the source port.
    ViaPort = 16,
    /// The Contact host is not the source address.
    ContactAddress = 32,
    /// The Contact port is not the source port.
    ContactPort = 64,
}

impl NatTest {
    pub const ALL: [NatTest; 7] = [
        NatTest::ContactPrivate,
        NatTest::ViaReceived,
        NatTest::ViaPrivate,
        NatTest::SdpPrivate,
        NatTest::ViaPort,
        NatTest::ContactAddress,
        NatTest::ContactPort,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NatTest::ContactPrivate => "contact_private",
            NatTest::ViaReceived => "via_received",
            NatTest::ViaPrivate => "via_private",
            NatTest::SdpPrivate => "sdp_private",
            NatTest::ViaPort => "via_port",
            NatTest::ContactAddress => "contact_address",
            NatTest::ContactPort => "contact_port",
        }
    }

    pub fn from_name(name: &str) -> Option<NatTest> {
        NatTest::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn bit(self) -> u32 {
        self as u32
    }
}

/// `req.behind_nat`: private Contact, Via host or port not the source
/// (Kamailio's common `nat_uac_test("19")`).
pub const DEFAULT_TESTS: u32 =
    NatTest::ContactPrivate as u32 | NatTest::ViaReceived as u32 | NatTest::ViaPort as u32;

/// Private (RFC 1918), shared (RFC 6598, carrier-grade NAT) or IPv6
/// unique-local (RFC 4193) address.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 10
                || (o[0] == 172 && (16..32).contains(&o[1]))
                || (o[0] == 192 && o[1] == 168)
                || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

fn default_port(transport: &str) -> u16 {
    if transport.eq_ignore_ascii_case("TLS") || transport.eq_ignore_ascii_case("WSS") {
        5061
    } else {
        5060
    }
}

/// The bits of `tests` that fire for `msg` from `source`.
pub fn nat_test(msg: &Message, source: &Source, tests: u32) -> u32 {
    let src_ip = source.addr.ip();
    let src_port = source.addr.port();
    let mut fired = 0;
    let via = msg.top_via();
    let via_ip = via.host_ip();
    let contact = msg
        .header(HeaderId::Contact)
        .and_then(|v| NameAddr::parse_list(v).ok())
        .and_then(|l| l.into_iter().next());
    for t in NatTest::ALL {
        if tests & t.bit() == 0 {
            continue;
        }
        let hit = match t {
            NatTest::ContactPrivate => contact
                .as_ref()
                .and_then(|c| host_ip(c.uri.host))
                .is_some_and(is_private),
            NatTest::ViaReceived => via_ip != Some(src_ip),
            NatTest::ViaPrivate => via_ip.is_some_and(is_private),
            NatTest::SdpPrivate => sdp_connection(msg.body()).is_some_and(is_private),
            NatTest::ViaPort => via.port.unwrap_or(default_port(via.transport)) != src_port,
            NatTest::ContactAddress => contact
                .as_ref()
                .is_some_and(|c| host_ip(c.uri.host) != Some(src_ip)),
            NatTest::ContactPort => contact.as_ref().is_some_and(|c| {
                let transport = crate::sip::find_param(c.uri.params, "transport").unwrap_or("udp");
                c.uri.port.unwrap_or(default_port(transport)) != src_port
            }),
        };
        if hit {
            fired |= t.bit();
        }
    }
    fired
}

/// The first connection address (`c=IN IP4 x` / `c=IN IP6 x`) of an SDP body.
pub fn sdp_connection(body: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(body).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix("c=IN ")?;
        let addr = rest.get(4..)?.split('/').next()?.trim();
        addr.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Framing, Limits};
    use bytes::Bytes;

    fn req(via: &str, contact: &str, body: &str) -> Message {
        let raw = format!(
            "INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK1;rport\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: {contact}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        Message::parse(Bytes::from(raw), Framing::Datagram, &Limits::default()).unwrap()
    }

    fn from(addr: &str) -> Source {
        Source::udp(addr.parse().unwrap(), "192.0.2.1:5060".parse().unwrap())
    }

    #[test]
    fn private_and_shared_ranges() {
        for a in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.1",
            "192.168.1.1",
            "100.64.0.1",
            "fd00::1",
        ] {
            assert!(is_private(a.parse().unwrap()), "{a}");
        }
        for a in [
            "172.32.0.1",
            "8.8.8.8",
            "100.128.0.1",
            "127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_private(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn a_phone_behind_nat_fails_the_default_tests() {
        let m = req("192.168.1.20:5060", "<sip:a@192.168.1.20:5060>", "");
        let fired = nat_test(&m, &from("203.0.113.7:40123"), u32::MAX);
        let names: Vec<_> = NatTest::ALL
            .into_iter()
            .filter(|t| fired & t.bit() != 0)
            .map(NatTest::name)
            .collect();
        assert_eq!(
            names,
            [
                "contact_private",
                "via_received",
                "via_private",
                "via_port",
                "contact_address",
                "contact_port"
            ]
        );
        assert_ne!(nat_test(&m, &from("203.0.113.7:40123"), DEFAULT_TESTS), 0);
    }

    #[test]
    fn a_public_phone_passes_every_test() {
        let m = req(
            "203.0.113.7:5062",
            "<sip:a@203.0.113.7:5062>;expires=60",
            "v=0\r\nc=IN IP4 203.0.113.7\r\n",
        );
        assert_eq!(nat_test(&m, &from("203.0.113.7:5062"), u32::MAX), 0);
    }

    #[test]
    fn private_sdp_and_default_port() {
        let m = req(
            "203.0.113.7",
            "<sip:a@203.0.113.7>",
            "v=0\r\nc=IN IP4 10.0.0.5\r\n",
        );
        assert_eq!(
            nat_test(&m, &from("203.0.113.7:5060"), u32::MAX),
            NatTest::SdpPrivate.bit()
        );
        assert_eq!(
            sdp_connection(b"v=0\r\nc=IN IP6 fd00::5\r\n"),
            Some("fd00::5".parse().unwrap())
        );
        assert_eq!(sdp_connection(b"garbage"), None);
    }
}
