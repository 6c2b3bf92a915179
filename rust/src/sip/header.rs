//! Header names: the ones the core interprets get an id (compact forms folded in,
//! RFC 3261 §7.3.3); every other header is kept by name and passed through.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HeaderId {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    ContentLength,
    ContentType,
    Contact,
    Route,
    RecordRoute,
    Expires,
    Require,
    ProxyRequire,
    Supported,
    Authorization,
    ProxyAuthorization,
    WwwAuthenticate,
    ProxyAuthenticate,
    Date,
    Path,
    Event,
    Subject,
    Accept,
    AllowEvents,
    ReferTo,
    ContentEncoding,
    Other,
}

impl HeaderId {
    /// Maps a header name (long or compact form, any case) to its id.
    pub fn from_name(name: &[u8]) -> HeaderId {
        if name.len() == 1 {
            return match name[0].to_ascii_lowercase() {
                b'v' => HeaderId::Via,
                b'f' => HeaderId::From,
                b't' => HeaderId::To,
                b'i' => HeaderId::CallId,
                b'm' => HeaderId::Contact,
                b'l' => HeaderId::ContentLength,
                b'c' => HeaderId::ContentType,
                b'k' => HeaderId::Supported,
                b'o' => HeaderId::Event,
                b's' => HeaderId::Subject,
                b'u' => HeaderId::AllowEvents,
                b'r' => HeaderId::ReferTo,
                b'e' => HeaderId::ContentEncoding,
                _ => HeaderId::Other,
            };
        }
        const NAMES: &[(&[u8], HeaderId)] = &[
            (b"via", HeaderId::Via),
            (b"from", HeaderId::From),
            (b"to", HeaderId::To),
            (b"call-id", HeaderId::CallId),
            (b"cseq", HeaderId::CSeq),
            (b"max-forwards", HeaderId::MaxForwards),
            (b"content-length", HeaderId::ContentLength),
            (b"content-type", HeaderId::ContentType),
            (b"contact", HeaderId::Contact),
            (b"route", HeaderId::Route),
            (b"record-route", HeaderId::RecordRoute),
            (b"expires", HeaderId::Expires),
            (b"require", HeaderId::Require),
            (b"proxy-require", HeaderId::ProxyRequire),
            (b"supported", HeaderId::Supported),
            (b"authorization", HeaderId::Authorization),
            (b"proxy-authorization", HeaderId::ProxyAuthorization),
            (b"www-authenticate", HeaderId::WwwAuthenticate),
            (b"proxy-authenticate", HeaderId::ProxyAuthenticate),
            (b"date", HeaderId::Date),
            (b"path", HeaderId::Path),
            (b"event", HeaderId::Event),
            (b"subject", HeaderId::Subject),
            (b"accept", HeaderId::Accept),
            (b"allow-events", HeaderId::AllowEvents),
            (b"refer-to", HeaderId::ReferTo),
            (b"content-encoding", HeaderId::ContentEncoding),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or(HeaderId::Other, |&(_, id)| id)
    }

    /// Headers that may appear at most once (RFC 3261 §20, table 2).
    pub fn is_single_valued(self) -> bool {
        matches!(
            self,
            HeaderId::From
                | HeaderId::To
                | HeaderId::CallId
                | HeaderId::CSeq
                | HeaderId::MaxForwards
                | HeaderId::ContentLength
                | HeaderId::ContentType
                | HeaderId::Expires
                | HeaderId::Date
        )
    }

    /// The canonical long name, used when sipr writes a header itself.
    pub fn canonical(self) -> Option<&'static str> {
        Some(match self {
            HeaderId::Via => "Via",
            HeaderId::From => "From",
            HeaderId::To => "To",
            HeaderId::CallId => "Call-ID",
            HeaderId::CSeq => "CSeq",
            HeaderId::MaxForwards => "Max-Forwards",
            HeaderId::ContentLength => "Content-Length",
            HeaderId::ContentType => "Content-Type",
            HeaderId::Contact => "Contact",
            HeaderId::Route => "Route",
            HeaderId::RecordRoute => "Record-Route",
            HeaderId::Expires => "Expires",
            HeaderId::Require => "Require",
            HeaderId::ProxyRequire => "Proxy-Require",
            HeaderId::Supported => "Supported",
            HeaderId::Authorization => "Authorization",
            HeaderId::ProxyAuthorization => "Proxy-Authorization",
            HeaderId::WwwAuthenticate => "WWW-Authenticate",
            HeaderId::ProxyAuthenticate => "Proxy-Authenticate",
            HeaderId::Date => "Date",
            HeaderId::Path => "Path",
            HeaderId::Event => "Event",
            HeaderId::Subject => "Subject",
            HeaderId::Accept => "Accept",
            HeaderId::AllowEvents => "Allow-Events",
            HeaderId::ReferTo => "Refer-To",
            HeaderId::ContentEncoding => "Content-Encoding",
            HeaderId::Other => return None,
        })
    }

    /// Whether the header's value is a comma-separated list (so `getall` splits it).
    /// Authorization-style headers contain commas inside one value and are not.
    pub fn is_list(self) -> bool {
        matches!(
            self,
            HeaderId::Via
                | HeaderId::Contact
                | HeaderId::Route
                | HeaderId::RecordRoute
                | HeaderId::Require
                | HeaderId::ProxyRequire
                | HeaderId::Supported
                | HeaderId::Path
                | HeaderId::Accept
                | HeaderId::AllowEvents
                | HeaderId::ContentEncoding
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_long_forms() {
        assert_eq!(HeaderId::from_name(b"v"), HeaderId::Via);
        assert_eq!(HeaderId::from_name(b"VIA"), HeaderId::Via);
        assert_eq!(HeaderId::from_name(b"i"), HeaderId::CallId);
        assert_eq!(HeaderId::from_name(b"cSeQ"), HeaderId::CSeq);
        assert_eq!(HeaderId::from_name(b"X-Custom"), HeaderId::Other);
    }
}
