//! Checks on a parsed request before it costs a transaction or a Python
//! call: the `sanity` checklist (Kamailio `sanity`), applied when the app
//! asks for it, and the User-Agent / From-user blocklist (Kamailio
//! `secfilter`), which the route can consult and the core can enforce.

use crate::sip::{HeaderId, Message, NameAddr, Scheme, Uri};

/// One check of the sanity list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The Request-URI is a `sip:` or `sips:` URI (416 otherwise).
    RuriScheme,
    /// CSeq: the method matches the request's and the number is below 2**31
    /// (RFC 3261 §8.1.1.5).
    Cseq,
    /// A datagram's Content-Length equals the body actually received.
    ContentLength,
    /// No Proxy-Require: this proxy supports no extension that needs it (420).
    ProxyRequire,
    /// From, To and Request-URI parse as URIs the core understands.
    Uris,
}

impl Check {
    pub const ALL: [Check; 5] = [
        Check::RuriScheme,
        Check::Cseq,
        Check::ContentLength,
        Check::ProxyRequire,
        Check::Uris,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Check::RuriScheme => "ruri_scheme",
            Check::Cseq => "cseq",
            Check::ContentLength => "content_length",
            Check::ProxyRequire => "proxy_require",
            Check::Uris => "uris",
        }
    }

    pub fn parse(name: &str) -> Result<Check, String> {
        Check::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| {
                let names: Vec<_> = Check::ALL.iter().map(|c| c.name()).collect();
                format!("unknown sanity check {name:?}: use {}", names.join(", "))
            })
    }
}

/// A request the checklist refuses: the answer the core sends (none for ACK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub check: Check,
    pub status: u16,
    pub reason: &'static str,
    pub headers: Vec<(String, String)>,
}

fn refuse(check: Check, status: u16, reason: &'static str) -> Option<Refusal> {
    Some(Refusal {
        check,
        status,
        reason,
        headers: Vec::new(),
    })
}

/// Runs `checks` on a request; the first that fails is returned.
pub fn sanity(msg: &Message, checks: &[Check], datagram: bool) -> Option<Refusal> {
    for &check in checks {
        let refusal = match check {
            Check::RuriScheme => match msg.request_uri() {
                Some(u) if matches!(u.scheme, Scheme::Sip | Scheme::Sips) => None,
                _ => refuse(check, 416, "Unsupported URI Scheme"),
            },
            Check::Cseq => {
                if msg.cseq() >= 1 << 31 || msg.cseq_method() != msg.method_str() {
                    refuse(check, 400, "Bad Request (CSeq)")
                } else {
                    None
                }
            }
            Check::ContentLength => {
                let received = msg.bytes().len() - msg.body_span().start as usize;
                let declared = msg.header(HeaderId::ContentLength);
                match declared.and_then(|v| v.trim().parse::<usize>().ok()) {
                    Some(n) if datagram && n != received => refuse(
                        check,
                        400,
                        "Bad Request (Content-Length does not match the body)",
                    ),
                    _ => None,
                }
            }
            Check::ProxyRequire => msg.header(HeaderId::ProxyRequire).map(|ext| Refusal {
                check,
                status: 420,
                reason: "Bad Extension",
                headers: vec![("Unsupported".to_string(), ext.trim().to_string())],
            }),
            Check::Uris => {
                let ruri_ok = msg.request_uri_str().is_some_and(|u| Uri::parse(u).is_ok());
                let addr_ok = |id| {
                    msg.header(id)
                        .and_then(|v| NameAddr::parse(v).ok())
                        .is_some_and(|na| na.uri.scheme != Scheme::Other)
                };
                if ruri_ok && addr_ok(HeaderId::From) && addr_ok(HeaderId::To) {
                    None
                } else {
                    refuse(check, 400, "Bad Request (malformed URI)")
                }
            }
        };
        if refusal.is_some() {
            return refusal;
        }
    }
    None
}

/// What the core does with a request the blocklist matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockAction {
    /// Nothing: only the route consults the list (`Blocklist.check`).
    RouteOnly,
    /// Dropped before Python, no answer.
    Drop,
    /// Dropped, and the source banned (every later packet dropped unparsed).
    Ban,
}

impl BlockAction {
    pub fn parse(s: &str) -> Result<BlockAction, String> {
        match s {
            "route" | "none" => Ok(BlockAction::RouteOnly),
            "drop" => Ok(BlockAction::Drop),
            "ban" => Ok(BlockAction::Ban),
            _ => Err(format!(
                "blocklist action {s:?}: use \"ban\", \"drop\" or \"route\""
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Blocklist {
    /// Lower-case; matched as substrings of the User-Agent.
    pub user_agents: Vec<String>,
    /// Matched exactly against the From URI's user part.
    pub from_users: Vec<String>,
    pub action: BlockAction,
}

/// Scanners and toll-fraud tools that announce themselves.
pub const SCANNER_USER_AGENTS: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipsak",
    "vaxsipuseragent",
    "iwar",
    "sundayddr",
    "pplsip",
];

impl Default for Blocklist {
    fn default() -> Self {
        Blocklist {
            user_agents: SCANNER_USER_AGENTS.iter().map(|s| s.to_string()).collect(),
            from_users: Vec::new(),
            action: BlockAction::Ban,
        }
    }
}

impl Blocklist {
    /// The entry that matches (`user-agent friendly-scanner`), if any.
    pub fn check(&self, user_agent: Option<&str>, from_user: Option<&str>) -> Option<String> {
        if let Some(ua) = user_agent.filter(|_| !self.user_agents.is_empty()) {
            let ua = ua.to_ascii_lowercase();
            if let Some(hit) = self.user_agents.iter().find(|b| ua.contains(b.as_str())) {
                return Some(format!("user-agent {hit}"));
            }
        }
        let user = from_user?;
        self.from_users
            .iter()
            .find(|u| u.as_str() == user)
            .map(|u| format!("from-user {u}"))
    }

    pub fn check_message(&self, msg: &Message) -> Option<String> {
        if self.user_agents.is_empty() && self.from_users.is_empty() {
            return None;
        }
        let ua = msg.header_named("user-agent");
        let from = msg.from();
        self.check(ua, from.uri.user)
    }
}

trait HeaderNamed {
    fn header_named(&self, name: &str) -> Option<&str>;
}

impl HeaderNamed for Message {
    fn header_named(&self, name: &str) -> Option<&str> {
        self.headers()
            .iter()
            .find(|h| self.header_name(h).eq_ignore_ascii_case(name))
            .map(|h| self.header_value(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Framing, Limits};
    use bytes::Bytes;

    fn req(first: &str, extra: &str, body: &str, cl: Option<usize>) -> Message {
        let cl = cl.map_or_else(String::new, |n| format!("Content-Length: {n}\r\n"));
        let method = first.split(' ').next().unwrap();
        let raw = format!(
            "{first} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
             From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n\
             Call-ID: c1\r\nCSeq: 7 {method}\r\n{extra}{cl}\r\n{body}"
        );
        Message::parse(Bytes::from(raw), Framing::Datagram, &Limits::default()).unwrap()
    }

    #[test]
    fn each_check_refuses_what_it_names() {
        let all = Check::ALL;
        let good = req("INVITE sip:bob@example.com", "", "", Some(0));
        assert_eq!(sanity(&good, &all, true), None);
        let tel = req("INVITE tel:+15551234", "", "", Some(0));
        assert_eq!(sanity(&tel, &all, true).unwrap().status, 416);
        assert_eq!(sanity(&tel, &[Check::Cseq], true), None);
        let long = req("INVITE sip:bob@example.com", "", "v=0\r\n", Some(3));
        let r = sanity(&long, &all, true).unwrap();
        assert_eq!((r.check, r.status), (Check::ContentLength, 400));
        assert_eq!(
            sanity(&long, &all, false),
            None,
            "streams frame by Content-Length"
        );
        let pr = req(
            "INVITE sip:bob@example.com",
            "Proxy-Require: foo\r\n",
            "",
            Some(0),
        );
        let r = sanity(&pr, &all, true).unwrap();
        assert_eq!(r.status, 420);
        assert_eq!(r.headers, vec![("Unsupported".into(), "foo".into())]);
        let raw = "OPTIONS sip:x@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK2\r\n\
                   From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\n\
                   CSeq: 3000000000 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let big = Message::parse(Bytes::from(raw), Framing::Datagram, &Limits::default()).unwrap();
        assert_eq!(sanity(&big, &[Check::Cseq], true).unwrap().status, 400);
        assert_eq!(sanity(&big, &[Check::Uris], true), None);
        let odd_to = req("OPTIONS sip:x@example.com", "", "", Some(0));
        assert_eq!(sanity(&odd_to, &[Check::Uris], true), None);
        assert!(Check::parse("cseq").is_ok() && Check::parse("nope").is_err());
    }

    #[test]
    fn blocklist_matches_user_agent_substrings_and_from_users() {
        let mut b = Blocklist::default();
        b.from_users.push("1001".into());
        assert_eq!(
            b.check(Some("Friendly-Scanner 1.2"), None).as_deref(),
            Some("user-agent friendly-scanner")
        );
        assert_eq!(b.check(Some("Yealink SIP-T46S"), Some("alice")), None);
        assert_eq!(
            b.check(None, Some("1001")).as_deref(),
            Some("from-user 1001")
        );
        let m = req(
            "OPTIONS sip:x@example.com",
            "User-Agent: sipvicious\r\n",
            "",
            Some(0),
        );
        assert!(b.check_message(&m).is_some());
        assert!(BlockAction::parse("explode").is_err());
    }
}
