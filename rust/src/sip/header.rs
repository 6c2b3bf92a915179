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
        use HeaderId::*;
        if !(2..=19).contains(&name.len()) {
            return Other;
        }
        // Length and first letter leave one candidate, checked whole.
        let (known, id): (&[u8], HeaderId) = match (name.len(), name[0] | 0x20) {
            (2, b't') => (b"to", To),
            (3, b'v') => (b"via", Via),
            (4, b'f') => (b"from", From),
            (4, b'c') => (b"cseq", CSeq),
            (4, b'd') => (b"date", Date),
            (4, b'p') => (b"path", Path),
            (5, b'r') => (b"route", Route),
            (5, b'e') => (b"event", Event),
            (6, b'a') => (b"accept", Accept),
            (7, b'c') if name[1] | 0x20 == b'a' => (b"call-id", CallId),
            (7, b'c') => (b"contact", Contact),
            (7, b'e') => (b"expires", Expires),
            (7, b'r') => (b"require", Require),
            (7, b's') => (b"subject", Subject),
            (8, b'r') => (b"refer-to", ReferTo),
            (9, b's') => (b"supported", Supported),
            (12, b'm') => (b"max-forwards", MaxForwards),
            (12, b'c') => (b"content-type", ContentType),
            (12, b'r') => (b"record-route", RecordRoute),
            (12, b'a') => (b"allow-events", AllowEvents),
            (13, b'p') => (b"proxy-require", ProxyRequire),
            (13, b'a') => (b"authorization", Authorization),
            (14, b'c') => (b"content-length", ContentLength),
            (16, b'w') => (b"www-authenticate", WwwAuthenticate),
            (16, b'c') => (b"content-encoding", ContentEncoding),
            (18, b'p') => (b"proxy-authenticate", ProxyAuthenticate),
            (19, b'p') => (b"proxy-authorization", ProxyAuthorization),
            _ => return Other,
        };
        if folded_eq(name, known) {
            id
        } else {
            Other
        }
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

/// `name.eq_ignore_ascii_case(known)` for a `known` name of lowercase
/// letters and '-': a letter of `known` (bit 0x40 set) also matches with bit
/// 0x20 clear, a '-' only itself. No early exit, so it compiles branch-free.
fn folded_eq(name: &[u8], known: &[u8]) -> bool {
    name.len() == known.len()
        && name
            .iter()
            .zip(known)
            .fold(0, |diff, (&a, &k)| diff | ((a | ((k & 0x40) >> 1)) ^ k))
            == 0
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
        assert_eq!(HeaderId::from_name(b""), HeaderId::Other);
    }

    #[test]
    fn every_canonical_name_maps_back() {
        // Every id before `Other` (the enum is `repr(u8)` with implicit, contiguous
        // discriminants), so a variant added later is covered without editing this list.
        for n in 0..HeaderId::Other as u8 {
            // SAFETY: n is below `Other`, hence a discriminant of the enum.
            let id: HeaderId = unsafe { std::mem::transmute::<u8, HeaderId>(n) };
            let name = id.canonical().unwrap();
            assert_eq!(HeaderId::from_name(name.as_bytes()), id);
            assert_eq!(HeaderId::from_name(name.to_uppercase().as_bytes()), id);
            // Any other byte anywhere makes it another header.
            for i in 0..name.len() {
                for b in 0..=255u8 {
                    let mut other = name.as_bytes().to_vec();
                    other[i] = b;
                    let same = other.eq_ignore_ascii_case(name.as_bytes());
                    assert_eq!(HeaderId::from_name(&other) == id, same, "{other:?}");
                }
            }
        }
    }
}
