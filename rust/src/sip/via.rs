//! The Via header (RFC 3261 §20.42, §25.1; IPv6 per RFC 5118).

use super::scan::{
    is_token, is_wsp, skip_lws, skip_quoted, skip_token, split_commas, split_once_byte, trim_end,
};
use super::uri::{host_ip, split_hostport};
use super::ParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// The whole via-parm as written.
    pub raw: &'a str,
    /// `SIP/2.0` protocol name and version.
    pub protocol: &'a str,
    /// `UDP`, `TCP`, `TLS`, `SCTP`, `WS`, `WSS` or an unknown token, as written.
    pub transport: &'a str,
    pub host: &'a str,
    pub port: Option<u16>,
    /// Raw `;param...` text without the leading `;`.
    pub params: &'a str,
}

impl<'a> Via<'a> {
    /// Parses one via-parm (a single element of a possibly comma-separated Via).
    pub fn parse(s: &'a str) -> Result<Via<'a>, ParseError> {
        let bad = || ParseError::bad("malformed Via header");
        let b = s.as_bytes();
        // sent-protocol = protocol-name SLASH protocol-version SLASH transport,
        // with LWS allowed around each slash.
        let mut i = skip_lws(b, 0);
        let name_start = i;
        i = skip_token(b, i);
        let name_end = i;
        i = expect_slash(b, i).ok_or_else(bad)?;
        let ver_start = i;
        i = skip_token(b, i);
        let ver_end = i;
        i = expect_slash(b, i).ok_or_else(bad)?;
        let tr_start = i;
        i = skip_token(b, i);
        let tr_end = i;
        if name_start == name_end || ver_start == ver_end || tr_start == tr_end {
            return Err(bad());
        }
        if !(s[name_start..name_end].eq_ignore_ascii_case("SIP") && &s[ver_start..ver_end] == "2.0")
        {
            return Err(bad());
        }
        let after_proto = i;
        i = skip_lws(b, i);
        if i == after_proto {
            return Err(bad());
        }
        // sent-by runs to the first ';' or LWS.
        let sb_start = i;
        while i < b.len() && b[i] != b';' && !is_wsp(b[i]) && b[i] != b'\r' && b[i] != b'\n' {
            i += 1;
        }
        let (host, port) = split_hostport(&s[sb_start..i]).ok_or_else(bad)?;
        i = skip_lws(b, i);
        let params_start = (i + 1).min(b.len());
        if i < b.len() {
            if b[i] != b';' {
                return Err(bad());
            }
            validate_params(b, i)?;
        }
        Ok(Via {
            raw: s,
            protocol: &s[name_start..ver_end],
            transport: &s[tr_start..tr_end],
            host,
            port,
            params: if i < b.len() { &s[params_start..] } else { "" },
        })
    }

    /// Parses every via-parm of one Via header value.
    pub fn parse_all(value: &'a str) -> Result<Vec<Via<'a>>, ParseError> {
        let parts = split_commas(value.as_bytes(), 0, value.len())
            .ok_or(ParseError::bad("malformed Via header"))?;
        parts
            .into_iter()
            .map(|(a, b)| Via::parse(&value[a..b]))
            .collect()
    }

    pub fn param(&self, name: &str) -> Option<&'a str> {
        param_lookup(self.params, name)
    }

    pub fn branch(&self) -> Option<&'a str> {
        self.param("branch")
    }
    pub fn received(&self) -> Option<&'a str> {
        self.param("received")
    }
    /// `Some(None)` for a bare `rport` (RFC 3581 request), `Some(Some(port))` once filled.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.param("rport").map(|v| v.parse().ok())
    }
    /// The host without IPv6 brackets.
    pub fn host_unbracketed(&self) -> &'a str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(self.host)
    }
    /// The sent-by host as an IP address, `None` for a host name.
    pub fn host_ip(&self) -> Option<std::net::IpAddr> {
        host_ip(self.host)
    }
}

fn expect_slash(b: &[u8], i: usize) -> Option<usize> {
    let i = skip_lws(b, i);
    (b.get(i) == Some(&b'/')).then(|| skip_lws(b, i + 1))
}

/// Checks `;name[=value]` pairs from `b[i] == b';'` to the end: every name a
/// token, every value a token, host or quoted string, nothing empty.
pub(crate) fn validate_params(b: &[u8], mut i: usize) -> Result<(), ParseError> {
    let bad = || ParseError::bad("malformed header parameter");
    while i < b.len() {
        if b[i] != b';' {
            return Err(bad());
        }
        i = skip_lws(b, i + 1);
        let n = skip_token(b, i);
        if n == i {
            return Err(bad());
        }
        i = skip_lws(b, n);
        if b.get(i) == Some(&b'=') {
            i = skip_lws(b, i + 1);
            if b.get(i) == Some(&b'"') {
                i = skip_quoted(b, i).ok_or_else(bad)?;
            } else {
                let v = i;
                while i < b.len() && (is_token(b[i]) || matches!(b[i], b':' | b'[' | b']')) {
                    i += 1;
                }
                if v == i {
                    return Err(bad());
                }
            }
            i = skip_lws(b, i);
        }
    }
    Ok(())
}

/// Looks up a parameter in raw `a=1;b;c="x"` text; `Some("")` for a flag.
pub fn param_lookup<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    param_pairs(params)
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.unwrap_or(""))
}

/// Iterates over raw `a=1;b;c="x"` parameter text (without the leading `;`) as
/// `(name, value)` pairs, `None` for a flag. LWS around names, `=` and values
/// (folds included) is skipped; quoted values keep their quotes, and a `;`
/// inside quotes does not split.
pub fn param_pairs(params: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    let b = params.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            let start = skip_lws(b, i);
            // To the next ';' outside quotes, jumping between the two.
            let mut end = start;
            loop {
                match memchr::memchr2(b';', b'"', &b[end..]) {
                    Some(k) if b[end + k] == b'"' => {
                        end = skip_quoted(b, end + k).unwrap_or(b.len())
                    }
                    Some(k) => {
                        end += k;
                        break;
                    }
                    None => {
                        end = b.len();
                        break;
                    }
                }
            }
            i = end + 1;
            let p = &params[start..trim_end(b, start, end)];
            if p.is_empty() {
                continue;
            }
            return Some(match split_once_byte(p, b'=') {
                Some((k, v)) => (trim_lws(k), Some(trim_lws(v))),
                None => (p, None),
            });
        }
        None
    })
}

/// Trims SP, HT and line folds from both ends.
fn trim_lws(s: &str) -> &str {
    let lws = |c: &u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    let b = s.as_bytes();
    let start = b.iter().position(|c| !lws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !lws(c)).map_or(start, |e| e + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_params_and_lws() {
        let v = Via::parse("SIP / 2.0 / UDP first.example.com: 4000;ttl=16\r\n ;maddr=224.2.0.1 ;branch=z9hG4bKa7c6a8dlze.1");
        // LWS between host and ':' port is not allowed by sent-by; this form is
        // rejected, the RFC 4475 wsinv form below is accepted.
        assert!(v.is_err());
        let v = Via::parse("SIP  /   2.0  / UDP  192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "192.0.2.2");
        assert_eq!(v.branch(), Some("390skdjuw"));
    }

    #[test]
    fn ipv6_via_and_rport() {
        let v = Via::parse(
            "SIP/2.0/UDP [2001:db8::9:1]:5070;received=[2001:db8::9:255];rport;branch=z9hG4bKas3",
        )
        .unwrap();
        assert_eq!(v.host, "[2001:db8::9:1]");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.received(), Some("[2001:db8::9:255]"));
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.branch(), Some("z9hG4bKas3"));
    }

    #[test]
    fn param_pairs_skip_lws_and_respect_quotes() {
        // RFC 4475 §3.1.1.1's Contact parameters, folds included.
        let raw = "newparam =\r\n      newvalue ;\r\n  secondparam ; q = 0.33";
        let pairs: Vec<_> = param_pairs(raw).collect();
        assert_eq!(
            pairs,
            [
                ("newparam", Some("newvalue")),
                ("secondparam", None),
                ("q", Some("0.33"))
            ]
        );
        let pairs: Vec<_> = param_pairs("a=\"x;y\";b").collect();
        assert_eq!(pairs, [("a", Some("\"x;y\"")), ("b", None)]);
        assert_eq!(param_lookup(raw, "SECONDPARAM"), Some(""));
        assert_eq!(param_lookup(raw, "q"), Some("0.33"));
        assert_eq!(param_lookup(raw, "missing"), None);
        assert_eq!(
            param_pairs("a=\"x;y").collect::<Vec<_>>(),
            [("a", Some("\"x;y"))]
        );
        assert_eq!(param_pairs(";;a;").collect::<Vec<_>>(), [("a", None)]);
    }

    #[test]
    fn rejects_extraneous_separators() {
        assert!(Via::parse_all("SIP/2.0/UDP 192.0.2.15;;,;,,").is_err());
        assert!(Via::parse_all("SIP/2.0/UDP 192.0.2.15;branch=").is_err());
        let all = Via::parse_all("SIP/2.0/UDP a.example.com;branch=1, SIP/2.0/TCP b.example.com")
            .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].transport, "TCP");
    }
}
