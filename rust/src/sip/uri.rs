//! URIs: `sip:` / `sips:` (RFC 3261 §19.1, §25.1), `tel:` (RFC 3966) and any other
//! absolute URI, kept opaque so it passes through untouched.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv6Addr};

use super::scan::{
    byte_class, find_byte, parse_decimal, range_within, split_byte, split_once_byte,
};
use super::ParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    /// Any other scheme: the URI is kept opaque.
    Other,
}

/// A parsed URI borrowing the text it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    pub raw: &'a str,
    pub scheme: Scheme,
    pub scheme_str: &'a str,
    /// User part, still %-escaped (sip/sips); the number for tel.
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    /// Host as written; IPv6 references keep their brackets.
    pub host: &'a str,
    pub port: Option<u16>,
    /// `;name=value...` after the host, without the leading `;`, as written.
    pub params: &'a str,
    /// `?h=v&...` without the leading `?`.
    pub headers: Option<&'a str>,
    /// Everything after `scheme:` for schemes we do not interpret.
    pub opaque: &'a str,
}

impl<'a> Uri<'a> {
    pub fn parse(raw: &'a str) -> Result<Uri<'a>, ParseError> {
        let bad = |why: &'static str| ParseError::bad_uri(why);
        // Without an early exit the check compiles to vector code.
        if raw
            .bytes()
            .fold(false, |bad, b| bad | (b <= b' ') | (b >= 0x7f))
        {
            return Err(bad("URI contains white space or non-ASCII octets"));
        }
        let colon = find_byte(raw, b':').ok_or(bad("URI has no scheme"))?;
        let scheme_str = &raw[..colon];
        let sb = scheme_str.as_bytes();
        if sb.is_empty()
            || !sb[0].is_ascii_alphabetic()
            || !sb
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return Err(bad("invalid URI scheme"));
        }
        let rest = &raw[colon + 1..];
        if rest.is_empty() {
            return Err(bad("empty URI after the scheme"));
        }
        let scheme = if scheme_str.eq_ignore_ascii_case("sip") {
            Scheme::Sip
        } else if scheme_str.eq_ignore_ascii_case("sips") {
            Scheme::Sips
        } else if scheme_str.eq_ignore_ascii_case("tel") {
            Scheme::Tel
        } else {
            Scheme::Other
        };
        let mut uri = Uri {
            raw,
            scheme,
            scheme_str,
            user: None,
            password: None,
            host: "",
            port: None,
            params: "",
            headers: None,
            opaque: rest,
        };
        match scheme {
            Scheme::Sip | Scheme::Sips => parse_sip(rest, &mut uri)?,
            Scheme::Tel => {
                let (number, params) = split_once_byte(rest, b';').unwrap_or((rest, ""));
                if number.is_empty() {
                    return Err(bad("empty tel number"));
                }
                uri.user = Some(number);
                uri.params = params;
            }
            Scheme::Other => {}
        }
        Ok(uri)
    }

    pub fn is_sip(&self) -> bool {
        matches!(self.scheme, Scheme::Sip | Scheme::Sips)
    }

    /// Looks a URI parameter up by name (case-insensitive). A parameter without a
    /// value yields `Some("")`.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        find_param(self.params, name)
    }

    /// Host without IPv6 brackets, as used for socket addresses.
    pub fn host_unbracketed(&self) -> &'a str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(self.host)
    }

    /// The host as an IP address, `None` for a host name.
    pub fn ip(&self) -> Option<IpAddr> {
        host_ip(self.host)
    }
}

/// Where a parsed URI's parts are in its text, as offsets (a URI kept this way
/// is at most a line: a Request-URI). `rebuild` on the same text gives the
/// `Uri` that `parse` gave, without checking it again: a message keeps its
/// Request-URI so, for every layer that reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UriSpans {
    scheme: Scheme,
    colon: u16,
    user: Option<(u16, u16)>,
    password: Option<(u16, u16)>,
    host: (u16, u16),
    port: Option<u16>,
    params: (u16, u16),
    headers: Option<(u16, u16)>,
}

impl UriSpans {
    /// `None` when `uri.raw` is too long for the offsets.
    pub(crate) fn of(uri: &Uri<'_>) -> Option<UriSpans> {
        let raw = uri.raw;
        let at = |part: &str| range_within::<u16>(raw, part);
        let colon = u16::try_from(uri.scheme_str.len()).ok()?;
        u16::try_from(raw.len()).ok()?;
        Some(UriSpans {
            scheme: uri.scheme,
            colon,
            user: match uri.user {
                Some(u) => Some(at(u)?),
                None => None,
            },
            password: match uri.password {
                Some(p) => Some(at(p)?),
                None => None,
            },
            host: at(uri.host)?,
            port: uri.port,
            params: at(uri.params)?,
            headers: match uri.headers {
                Some(h) => Some(at(h)?),
                None => None,
            },
        })
    }

    /// The `Uri` of `raw`, the text these spans were taken from.
    pub(crate) fn rebuild<'a>(&self, raw: &'a str) -> Uri<'a> {
        let at = |(a, b): (u16, u16)| raw.get(usize::from(a)..usize::from(b)).unwrap_or("");
        let colon = usize::from(self.colon);
        Uri {
            raw,
            scheme: self.scheme,
            scheme_str: raw.get(..colon).unwrap_or(""),
            user: self.user.map(at),
            password: self.password.map(at),
            host: at(self.host),
            port: self.port,
            params: at(self.params),
            headers: self.headers.map(at),
            opaque: raw.get(colon + 1..).unwrap_or(""),
        }
    }
}

/// Reads a host (IPv4 address or IPv6 reference) as an IP address. RFC 5118
/// §4.10: RFC 3261's ABNF admits `2001:db8:::192.0.2.1`, which RFC 4291 does
/// not; it is tolerated and read as `::`.
pub fn host_ip(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => parse_ipv6_lenient(v6).map(IpAddr::V6),
        None => host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

fn parse_ipv6_lenient(s: &str) -> Option<Ipv6Addr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    // Only the one spelling RFC 5118 describes: ":::" before an IPv4 tail.
    let (head, tail) = s.split_once(":::")?;
    if tail.contains("::") || !tail.contains('.') {
        return None;
    }
    format!("{head}::{tail}").parse().ok()
}

/// Decodes `%HH` escapes once (RFC 3261 §19.1.4: `%41` and `A` are equal, and
/// `%2541` decodes to `%41`, not `A`). The result may hold any octet,
/// including NUL (RFC 4475 §3.1.1.4), so it is bytes; malformed escapes are
/// kept as written.
pub fn unescape(s: &str) -> Cow<'_, [u8]> {
    let b = s.as_bytes();
    if !b.contains(&b'%') {
        return Cow::Borrowed(b);
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| b.get(j).and_then(|&c| (c as char).to_digit(16));
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// Finds `name` in a `;`-separated parameter list (without the leading `;`).
pub fn find_param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    split_byte(params, b';').find_map(|p| {
        let (k, v) = split_once_byte(p, b'=').unwrap_or((p, ""));
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

// RFC 3261 §25.1 classes: `unreserved` (alphanum and "-_.!~*'()") plus each
// one's own marks, as tables (they run on every byte of every URI).
static USER: [bool; 256] = byte_class(b"-_.!~*'()%&=+$,;?/");
static PASSWORD: [bool; 256] = byte_class(b"-_.!~*'()%&=+$,");
static PARAM: [bool; 256] = byte_class(b"-_.!~*'()%[]/:&+$");
static HEADER: [bool; 256] = byte_class(b"-_.!~*'()%[]/?:+$");
static HOSTNAME: [bool; 256] = byte_class(b"-.");

fn is_user_char(b: u8) -> bool {
    USER[b as usize]
}

fn is_password_char(b: u8) -> bool {
    PASSWORD[b as usize]
}

fn is_param_char(b: u8) -> bool {
    PARAM[b as usize]
}

fn is_header_char(b: u8) -> bool {
    HEADER[b as usize]
}

fn valid_escapes(s: &str) -> bool {
    let b = s.as_bytes();
    // Most URIs have no escape at all.
    let Some(mut i) = memchr::memchr(b'%', b) else {
        return true;
    };
    while i < b.len() {
        if b[i] == b'%' {
            if !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

fn parse_sip<'a>(rest: &'a str, uri: &mut Uri<'a>) -> Result<(), ParseError> {
    let bad = ParseError::bad_uri;
    // The userinfo cannot contain a raw '@', nor can params or headers: the
    // first '@' ends it.
    let hostpart = match find_byte(rest, b'@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let (user, password) = match find_byte(userinfo, b':') {
                Some(c) => (&userinfo[..c], Some(&userinfo[c + 1..])),
                None => (userinfo, None),
            };
            if user.is_empty() || !user.bytes().all(is_user_char) || !valid_escapes(user) {
                return Err(bad("invalid user part in SIP URI"));
            }
            if let Some(pw) = password {
                if !pw.bytes().all(is_password_char) || !valid_escapes(pw) {
                    return Err(bad("invalid password in SIP URI"));
                }
            }
            uri.user = Some(user);
            uri.password = password;
            &rest[at + 1..]
        }
        None => rest,
    };
    let (hostport_params, headers) = match find_byte(hostpart, b'?') {
        Some(q) => (&hostpart[..q], Some(&hostpart[q + 1..])),
        None => (hostpart, None),
    };
    let (hostport, params) = match find_byte(hostport_params, b';') {
        Some(s) => (&hostport_params[..s], &hostport_params[s + 1..]),
        None => (hostport_params, ""),
    };
    let (host, port) = split_hostport(hostport).ok_or(bad("invalid host or port in SIP URI"))?;
    uri.host = host;
    uri.port = port;
    if !params.is_empty() {
        for p in split_byte(params, b';') {
            let (k, v) = split_once_byte(p, b'=').unwrap_or((p, ""));
            if k.is_empty()
                || !k.bytes().all(is_param_char)
                || !v.bytes().all(is_param_char)
                || !valid_escapes(p)
            {
                return Err(bad("invalid URI parameter"));
            }
        }
    }
    uri.params = params;
    if let Some(h) = headers {
        if h.is_empty()
            || !split_byte(h, b'&').all(|hv| {
                let (k, v) = split_once_byte(hv, b'=').unwrap_or((hv, ""));
                !k.is_empty()
                    && k.bytes().all(is_header_char)
                    && v.bytes().all(is_header_char)
                    && valid_escapes(hv)
            })
        {
            return Err(bad("invalid URI headers"));
        }
    }
    uri.headers = headers;
    Ok(())
}

/// Splits `host[:port]`, validating the host as a hostname, IPv4 address or
/// bracketed IPv6 reference (RFC 5118).
pub fn split_hostport(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if s.starts_with('[') {
        let close = find_byte(s, b']')?;
        let host = &s[..=close];
        let after = &s[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return None,
        };
        parse_ipv6_lenient(&host[1..close])?;
        (host, port)
    } else {
        match split_once_byte(s, b':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => Some(u16::try_from(parse_decimal(p.as_bytes(), 65535)?).ok()?),
        None => None,
    };
    if !host.starts_with('[') && !valid_hostname(host) {
        return None;
    }
    Some((host, port))
}

fn valid_hostname(h: &str) -> bool {
    let b = h.as_bytes();
    !b.is_empty() && b.iter().all(|&c| HOSTNAME[c as usize]) && b[0] != b'.' && b[0] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_class_tables_match_the_grammar() {
        use crate::sip::scan::is_unreserved;
        for b in 0..=255u8 {
            let u = is_unreserved(b);
            let user = u || b"%&=+$,;?/".contains(&b);
            let password = u || b"%&=+$,".contains(&b);
            let param = u || b"%[]/:&+$".contains(&b);
            let header = u || b"%[]/?:+$".contains(&b);
            let host = b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
            assert_eq!(is_user_char(b), user, "{b}");
            assert_eq!(is_password_char(b), password, "{b}");
            assert_eq!(is_param_char(b), param, "{b}");
            assert_eq!(is_header_char(b), header, "{b}");
            assert_eq!(HOSTNAME[b as usize], host, "{b}");
        }
        assert!(
            valid_escapes("a%41b")
                && valid_escapes("ab")
                && !valid_escapes("a%4")
                && !valid_escapes("%zz")
        );
    }

    #[test]
    fn spans_rebuild_the_parsed_uri() {
        for raw in [
            "sip:alice:pw@[2001:db8::1]:5070;transport=tcp;lr?Subject=x",
            "sip:bob@example.com",
            "sips:example.com:5061",
            "sip:127.0.0.1;lr",
            "tel:+1-201-555-0123;phone-context=example.com",
            "urn:service:sos",
        ] {
            let u = Uri::parse(raw).unwrap();
            assert_eq!(UriSpans::of(&u).unwrap().rebuild(raw), u, "{raw}");
        }
    }

    #[test]
    fn sip_uri_parts() {
        let u = Uri::parse("sip:alice:pw@[2001:db8::1]:5070;transport=tcp;lr?Subject=x").unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user, Some("alice"));
        assert_eq!(u.password, Some("pw"));
        assert_eq!(u.host, "[2001:db8::1]");
        assert_eq!(u.host_unbracketed(), "2001:db8::1");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.param("transport"), Some("tcp"));
        assert_eq!(u.param("lr"), Some(""));
        assert_eq!(u.headers, Some("Subject=x"));
    }

    #[test]
    fn odd_but_valid_user_parts() {
        let u = Uri::parse("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user, Some("user;par=u%40example.net"));
        assert_eq!(u.host, "example.com");
        let odd = "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com";
        let u = Uri::parse(odd).unwrap();
        assert_eq!(u.host, "example.com");
        assert_eq!(
            u.password,
            Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "sip:",
            "sip:user@",
            "sip:2001:db8::10",
            "sip:[2001:db8::10",
            "sip:host:99999",
            "sip:us er@host",
            "sip:host;=x",
            "nocolon",
            "sip:a%zzb@host",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn unescape_decodes_once() {
        // RFC 4475 §3.1.1.3: `v%61lue%25%34%31` is "value%41", not "valueA".
        assert_eq!(&*unescape("v%61lue%25%34%31"), b"value%41");
        // §3.1.1.4: an escaped NUL is an ordinary octet.
        assert_eq!(&*unescape("null-%00-null"), b"null-\0-null");
        assert_eq!(&*unescape("%C3%A9t%c3%a9"), "été".as_bytes());
        // Not escapes: kept as written (RFC 4475 §3.1.1.5 has such text in
        // places where no unescaping applies).
        assert_eq!(&*unescape("%Z%45%4"), b"%ZE%4");
        assert!(matches!(unescape("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn ipv6_references() {
        // RFC 5118 §4.3: the port is outside the brackets or there is none.
        let u = Uri::parse("sip:[2001:db8::10:5070]").unwrap();
        assert_eq!((u.host, u.port), ("[2001:db8::10:5070]", None));
        // §4.10: RFC 3261's ABNF admits three colons; tolerated as "::".
        let u = Uri::parse("sip:user@[2001:db8:::192.0.2.1]").unwrap();
        assert_eq!(u.ip(), "2001:db8::192.0.2.1".parse().ok());
        assert!(Uri::parse("sip:[2001:db8:::1]").is_err());
        assert!(Uri::parse("sip:[2001:db8::1:::1.2.3.4]").is_err());
        assert_eq!(host_ip("192.0.2.1"), "192.0.2.1".parse().ok());
        assert_eq!(host_ip("example.com"), None);
        assert_eq!(
            host_ip("[::ffff:192.0.2.10]"),
            "::ffff:192.0.2.10".parse().ok()
        );
    }

    #[test]
    fn tel_and_unknown_schemes() {
        let t = Uri::parse("tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!(t.scheme, Scheme::Tel);
        assert_eq!(t.user, Some("+1-201-555-0123"));
        let o = Uri::parse("nobodyKnowsThisScheme:totallyopaquecontent").unwrap();
        assert_eq!(o.scheme, Scheme::Other);
        assert_eq!(o.opaque, "totallyopaquecontent");
    }
}
