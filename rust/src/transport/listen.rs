//! Listen URIs: `udp:127.0.0.1:5060`, `tcp:[::1]:5060`, `tls:0.0.0.0:5061`,
//! `ws:0.0.0.0:8080`, `wss:0.0.0.0:8443` (WebSocket, RFC 7118).

use std::net::{IpAddr, SocketAddr};

use super::Transport;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// A socket already bound to `addr` and handed down by the `--workers`
    /// supervisor (decision 0050): adopted instead of binding a new one.
    pub fd: Option<i32>,
}

impl ListenSpec {
    pub fn parse(s: &str) -> Result<ListenSpec, String> {
        let (proto, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("listen address {s:?} must look like udp:127.0.0.1:5060"))?;
        let transport = Transport::parse(proto).ok_or_else(|| {
            format!("unknown transport {proto:?} in {s:?} (use udp, tcp, tls, ws or wss)")
        })?;
        // WebSocket listeners default to the ports of ws:// and wss:// URLs (RFC 6455 §3).
        let default_port = match transport {
            Transport::Tls => 5061,
            Transport::Ws => 80,
            Transport::Wss => 443,
            _ => 5060,
        };
        let addr = if let Ok(a) = rest.parse::<SocketAddr>() {
            a
        } else if let Ok(ip) = rest
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            SocketAddr::new(ip, default_port)
        } else {
            return Err(format!("bad address {rest:?} in listen URI {s:?}: expected IP:PORT, e.g. 127.0.0.1:5060 or [::1]:5060"));
        };
        Ok(ListenSpec {
            transport,
            addr,
            fd: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_uris() {
        let l = ListenSpec::parse("udp:127.0.0.1:5060").unwrap();
        assert_eq!(l.transport, Transport::Udp);
        assert_eq!(l.addr.port(), 5060);
        let l = ListenSpec::parse("tcp:[::1]:5070").unwrap();
        assert!(l.addr.is_ipv6());
        assert_eq!(ListenSpec::parse("tls:0.0.0.0").unwrap().addr.port(), 5061);
        let l = ListenSpec::parse("ws:127.0.0.1:8080").unwrap();
        assert_eq!((l.transport, l.addr.port()), (Transport::Ws, 8080));
        assert_eq!(
            ListenSpec::parse("WSS:[::1]").unwrap().transport,
            Transport::Wss
        );
        assert_eq!(ListenSpec::parse("wss:[::1]").unwrap().addr.port(), 443);
        assert!(ListenSpec::parse("sctp:1.2.3.4:5").is_err());
        assert!(ListenSpec::parse("udp:example.com:5060").is_err());
        assert!(ListenSpec::parse("127.0.0.1:5060").is_err());
    }
}
