//! Rewriting what a NATed UA wrote about itself to where it really is:
//! Kamailio's `fix_nated_contact()` and `fix_nated_sdp()`.

use std::net::{IpAddr, SocketAddr};

use crate::sip::{HeaderId, Message, NameAddr};

fn host_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The Contact header value with its first URI's host:port replaced by
/// `source` (user, URI and header parameters kept); None without a usable
/// Contact (absent, `*`, unparsable).
pub fn fix_contact(msg: &Message, source: SocketAddr) -> Option<String> {
    let value = msg.header(HeaderId::Contact)?;
    if value.trim() == "*" {
        return None;
    }
    let list = NameAddr::parse_list(value).ok()?;
    let mut out = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        if i > 0 {
            out.push(write_nameaddr(c, None));
        } else {
            out.push(write_nameaddr(c, Some(source)));
        }
    }
    Some(out.join(", "))
}

fn write_nameaddr(c: &NameAddr<'_>, at: Option<SocketAddr>) -> String {
    let u = &c.uri;
    let mut uri = format!("{}:", u.scheme_str);
    if let Some(user) = u.user {
        uri.push_str(user);
        if let Some(pw) = u.password {
            uri.push(':');
            uri.push_str(pw);
        }
        uri.push('@');
    }
    match at {
        Some(a) => {
            uri.push_str(&host_text(a.ip()));
            uri.push_str(&format!(":{}", a.port()));
        }
        None => {
            uri.push_str(u.host);
            if let Some(p) = u.port {
                uri.push_str(&format!(":{p}"));
            }
        }
    }
    if !u.params.is_empty() {
        uri.push(';');
        uri.push_str(u.params);
    }
    if let Some(h) = u.headers {
        uri.push('?');
        uri.push_str(h);
    }
    let mut s = String::new();
    if let Some(d) = c.display {
        s.push_str(d);
        s.push(' ');
    }
    s.push('<');
    s.push_str(&uri);
    s.push('>');
    if !c.params.is_empty() {
        s.push(';');
        s.push_str(c.params);
    }
    s
}

/// The SDP `body` with every connection address (`c=`) and, with
/// `origin`, the origin address (`o=`) set to `ip`; None when the body is
/// not text or names no address.
pub fn fix_sdp(body: &[u8], ip: IpAddr, origin: bool) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut out = String::with_capacity(text.len() + 16);
    let mut changed = false;
    for line in text.split_inclusive('\n') {
        let (content, eol) = match line.strip_suffix("\r\n") {
            Some(c) => (c, "\r\n"),
            None => match line.strip_suffix('\n') {
                Some(c) => (c, "\n"),
                None => (line, ""),
            },
        };
        if let Some(rest) = content.strip_prefix("c=IN ") {
            // `c=IN IP4 addr[/ttl]`: a multicast TTL is kept.
            let ttl = rest.get(4..).and_then(|a| a.find('/').map(|i| &a[i..]));
            out.push_str(&format!("c=IN {family} {ip}{}{eol}", ttl.unwrap_or("")));
            changed = true;
            continue;
        }
        if origin {
            if let Some(rest) = content.strip_prefix("o=") {
                let fields: Vec<&str> = rest.split(' ').collect();
                if fields.len() == 6 {
                    let f = &fields;
                    out.push_str(&format!(
                        "o={} {} {} {} {family} {ip}{eol}",
                        f[0], f[1], f[2], f[3]
                    ));
                    changed = true;
                    continue;
                }
            }
        }
        out.push_str(line);
    }
    changed.then(|| out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Framing, Limits};
    use bytes::Bytes;

    fn with_contact(contact: &str) -> Message {
        let raw = format!(
            "REGISTER sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:a@h>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContact: {contact}\r\nContent-Length: 0\r\n\r\n"
        );
        Message::parse(Bytes::from(raw), Framing::Datagram, &Limits::default()).unwrap()
    }

    #[test]
    fn contact_gets_the_source_and_keeps_its_parameters() {
        let m = with_contact("\"Al\" <sip:alice@10.0.0.2:5062;transport=udp;ob>;expires=60;+sip.instance=\"<urn:x>\"");
        let fixed = fix_contact(&m, "203.0.113.9:40001".parse().unwrap()).unwrap();
        assert_eq!(
            fixed,
            "\"Al\" <sip:alice@203.0.113.9:40001;transport=udp;ob>;expires=60;+sip.instance=\"<urn:x>\""
        );
        let m = with_contact("sip:bob@10.0.0.3");
        assert_eq!(
            fix_contact(&m, "[2001:db8::1]:5070".parse().unwrap()).unwrap(),
            "<sip:bob@[2001:db8::1]:5070>"
        );
        assert_eq!(
            fix_contact(&with_contact("*"), "1.2.3.4:5".parse().unwrap()),
            None
        );
    }

    #[test]
    fn sdp_connection_and_origin() {
        let sdp = b"v=0\r\no=- 1 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 10.0.0.2\r\n";
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let fixed = String::from_utf8(fix_sdp(sdp, ip, true).unwrap()).unwrap();
        assert_eq!(
            fixed,
            "v=0\r\no=- 1 2 IN IP4 203.0.113.9\r\ns=-\r\nc=IN IP4 203.0.113.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 203.0.113.9\r\n"
        );
        let only_c = String::from_utf8(fix_sdp(sdp, ip, false).unwrap()).unwrap();
        assert!(only_c.contains("o=- 1 2 IN IP4 10.0.0.2\r\n"));
        assert_eq!(fix_sdp(b"v=0\r\n", ip, true), None);
    }
}
