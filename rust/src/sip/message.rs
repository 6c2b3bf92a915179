//! A parsed SIP message: spans into the received bytes, plus the handful of
//! fields every message needs (Call-ID, CSeq, tags, top Via) checked eagerly so
//! a message that gets past `parse` can be answered and routed.

use bytes::Bytes;

use super::header::HeaderId;
use super::lines::{find_line_end, parse_start_line, split_headers};
use super::method::Method;
use super::nameaddr::NameAddr;
use super::scan::{is_token, parse_decimal, skip_lws};
use super::span::{Framing, HeaderField, Span, StartLine};
use super::uri::{Scheme, Uri};
use super::via::Via;
use super::{Limits, ParseError};

#[derive(Debug, Clone)]
pub struct Message {
    buf: Bytes,
    start: StartLine,
    headers: Vec<HeaderField>,
    /// Offset of the first header line (just past the start line).
    headers_start: u32,
    /// Offset of the empty line that ends the header section.
    headers_end: u32,
    body: Span,
    call_id: Span,
    cseq: u32,
    cseq_method: Span,
    from_tag: Option<Span>,
    to_tag: Option<Span>,
    max_forwards: Option<u8>,
    /// The first via-parm of the first Via header.
    top_via: Span,
    branch: Option<Span>,
    /// The via-parm after the top one (where a response goes next), kept so
    /// relaying a response does not parse every Via again.
    second_via: Option<Span>,
    /// How many via-parms the message has (saturating).
    via_count: u16,
}

impl Message {
    pub fn parse(buf: Bytes, framing: Framing, limits: &Limits) -> Result<Message, ParseError> {
        if buf.len() > limits.max_message_size {
            return Err(ParseError::new(513, "Message Too Large"));
        }
        let b: &[u8] = &buf;
        // RFC 3261 §7.5: CRLFs before the start line are ignored.
        let mut pos = 0;
        while pos < b.len() && matches!(b[pos], b'\r' | b'\n') {
            pos += 1;
        }
        let (line_end, next) =
            find_line_end(b, pos).ok_or(ParseError::bad("incomplete start line"))?;
        if line_end - pos > limits.max_line_length {
            return Err(ParseError::bad("start line too long"));
        }
        let start = parse_start_line(b, pos, line_end)?;
        let headers_start = next;
        let section = split_headers(b, next, framing, limits)?;
        let (headers, headers_end, body_start) = (section.fields, section.end, section.body_start);
        // Header text must be UTF-8 (RFC 3261 §25.1 allows UTF8-NONASCII only),
        // which lets every accessor hand out &str without checking again.
        let text = std::str::from_utf8(&b[..headers_end])
            .map_err(|_| ParseError::bad("header section is not valid UTF-8"))?;

        let mut msg = Message {
            buf: buf.clone(),
            start,
            headers,
            headers_start: headers_start as u32,
            headers_end: headers_end as u32,
            body: Span::new(body_start, b.len()),
            call_id: Span::default(),
            cseq: 0,
            cseq_method: Span::default(),
            from_tag: None,
            to_tag: None,
            max_forwards: None,
            top_via: Span::default(),
            branch: None,
            second_via: None,
            via_count: 0,
        };
        msg.check_headers(framing, text)?;
        Ok(msg)
    }

    /// `text`: the start line and headers, checked as UTF-8 once, so each
    /// value is sliced from it rather than validated again.
    fn check_headers(&mut self, framing: Framing, text: &str) -> Result<(), ParseError> {
        let mut seen = [0u8; HeaderId::Other as usize + 1];
        let mut content_length = None;
        for i in 0..self.headers.len() {
            let h = self.headers[i];
            let count = &mut seen[h.id as usize];
            *count = count.saturating_add(1);
            if h.id.is_single_valued() && *count > 1 {
                return Err(ParseError::bad(duplicate_reason(h.id)));
            }
            let value = text.get(h.value.range()).unwrap_or("");
            match h.id {
                HeaderId::Via => {
                    // Every Via is checked, not only the top one: a proxy
                    // routes the response by the next one (RFC 3261 §18.2.2),
                    // so a bad one further down must not pass unnoticed.
                    for via in Via::parse_all(value)? {
                        let start = offset_in(value, via.raw) + h.value.start as usize;
                        let span = Span::new(start, start + via.raw.len());
                        match self.via_count {
                            0 => {
                                self.top_via = span;
                                if let Some(br) = via.branch() {
                                    let s = offset_in(value, br) + h.value.start as usize;
                                    self.branch = Some(Span::new(s, s + br.len()));
                                }
                            }
                            1 => self.second_via = Some(span),
                            _ => {}
                        }
                        self.via_count = self.via_count.saturating_add(1);
                    }
                }
                HeaderId::CallId => {
                    if value.is_empty() || value.bytes().any(|c| c <= b' ') {
                        return Err(ParseError::bad("malformed Call-ID"));
                    }
                    self.call_id = h.value;
                }
                HeaderId::CSeq => {
                    let vb = value.as_bytes();
                    let digits = vb.iter().take_while(|c| c.is_ascii_digit()).count();
                    // RFC 3261 §8.1.1.5 asks senders to stay below 2**31 but
                    // the number is "expressible as a 32-bit unsigned integer";
                    // RFC 4475 §3.1.2.4 draws the line for receivers at 2**32-1.
                    let n = parse_decimal(&vb[..digits], u64::from(u32::MAX))
                        .ok_or(ParseError::bad("malformed or out-of-range CSeq number"))?;
                    let m = skip_lws(vb, digits);
                    let m_end = m + vb[m..].iter().take_while(|&&c| is_token(c)).count();
                    if m == digits || m == m_end || m_end != vb.len() {
                        return Err(ParseError::bad("malformed CSeq"));
                    }
                    self.cseq = n as u32;
                    let base = h.value.start as usize;
                    self.cseq_method = Span::new(base + m, base + m_end);
                }
                HeaderId::From | HeaderId::To => {
                    let na = NameAddr::parse(value).map_err(|e| {
                        ParseError::bad(if h.id == HeaderId::From {
                            from_reason(e)
                        } else {
                            to_reason(e)
                        })
                    })?;
                    let tag = na.tag().map(|t| {
                        let s = offset_in(value, t) + h.value.start as usize;
                        Span::new(s, s + t.len())
                    });
                    if h.id == HeaderId::From {
                        self.from_tag = tag;
                    } else {
                        self.to_tag = tag;
                    }
                }
                HeaderId::MaxForwards => {
                    let n = parse_decimal(value.as_bytes(), 255)
                        .ok_or(ParseError::bad("malformed or out-of-range Max-Forwards"))?;
                    self.max_forwards = Some(n as u8);
                }
                HeaderId::ContentLength => {
                    let n = parse_decimal(value.as_bytes(), u32::MAX as u64)
                        .ok_or(ParseError::bad("malformed Content-Length"))?;
                    content_length = Some(n as usize);
                }
                HeaderId::Contact if self.is_request() && value != "*" => {
                    NameAddr::parse_list(value)
                        .map_err(|_| ParseError::bad("malformed Contact header"))?;
                }
                // rfc1123-date always ends in GMT (RFC 3261 §20.17).
                HeaderId::Date if !value.ends_with("GMT") => {
                    return Err(ParseError::bad("malformed Date header"));
                }
                _ => {}
            }
        }
        for (id, what) in [
            (HeaderId::Via, "missing Via header"),
            (HeaderId::From, "missing From header"),
            (HeaderId::To, "missing To header"),
            (HeaderId::CallId, "missing Call-ID header"),
            (HeaderId::CSeq, "missing CSeq header"),
        ] {
            if seen[id as usize] == 0 {
                return Err(ParseError::bad(what));
            }
        }
        if let StartLine::Request {
            method,
            method_span,
            ..
        } = self.start
        {
            if self.buf[method_span.range()] != self.buf[self.cseq_method.range()] {
                // RFC 4475 §3.1.2.18: with an unknown method, 501 is preferred
                // to 400 (it stays right once the method becomes known).
                return Err(if method == Method::Other {
                    ParseError::new(
                        501,
                        "Not Implemented (CSeq method does not match the request)",
                    )
                } else {
                    ParseError::bad("CSeq method does not match the request method")
                });
            }
        }
        let available = self.body.end - self.body.start;
        match (content_length, framing) {
            (Some(cl), _) if cl as u32 > available => {
                return Err(ParseError::bad(
                    "Content-Length larger than the message body",
                ));
            }
            (Some(cl), _) => self.body.end = self.body.start + cl as u32,
            (None, Framing::Datagram) => {}
            (None, Framing::Stream) => self.body.end = self.body.start,
        }
        Ok(())
    }

    // ---- accessors -------------------------------------------------------

    pub fn bytes(&self) -> &Bytes {
        &self.buf
    }
    /// The message as received, cut at the end of its body (datagram trailers dropped).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.body.end as usize]
    }
    pub fn str_at(&self, span: Span) -> &str {
        // The header section was validated as UTF-8 in `parse`.
        std::str::from_utf8(&self.buf[span.range()]).unwrap_or("")
    }
    pub fn start_line(&self) -> StartLine {
        self.start
    }
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }
    pub fn method(&self) -> Method {
        match self.start {
            StartLine::Request { method, .. } => method,
            StartLine::Response { .. } => self.cseq_method_id(),
        }
    }
    /// The request method, or for a response the method of its CSeq.
    pub fn method_str(&self) -> &str {
        match self.start {
            StartLine::Request { method_span, .. } => self.str_at(method_span),
            StartLine::Response { .. } => self.str_at(self.cseq_method),
        }
    }
    pub fn request_uri_str(&self) -> Option<&str> {
        match self.start {
            StartLine::Request { uri, .. } => Some(self.str_at(uri)),
            StartLine::Response { .. } => None,
        }
    }
    pub fn request_uri(&self) -> Option<Uri<'_>> {
        self.request_uri_str().and_then(|u| Uri::parse(u).ok())
    }
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }
    /// The reason phrase; may be any UTF-8 (RFC 4475 §3.1.1.12).
    pub fn reason(&self) -> Option<&str> {
        match self.start {
            StartLine::Response { reason, .. } => Some(self.str_at(reason)),
            StartLine::Request { .. } => None,
        }
    }
    pub fn headers(&self) -> &[HeaderField] {
        &self.headers
    }
    /// Frees the header index of a message kept only to be matched and
    /// answered by its fixed fields (a completed server transaction): the
    /// start line, Call-ID, CSeq, tags, top Via, branch, From and To stay
    /// readable, `header()` and `headers()` see no other header afterwards.
    /// ~30 bytes per header.
    pub fn drop_header_index(&mut self) {
        self.headers
            .retain(|h| matches!(h.id, HeaderId::From | HeaderId::To));
        self.headers.shrink_to_fit();
    }
    pub fn header_name(&self, h: &HeaderField) -> &str {
        self.str_at(h.name)
    }
    pub fn header_value(&self, h: &HeaderField) -> &str {
        self.str_at(h.value)
    }
    /// The first value of a header the core knows by id.
    pub fn header(&self, id: HeaderId) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.id == id)
            .map(|h| self.header_value(h))
    }
    /// Every header line with this name (case-insensitive, compact forms folded).
    pub fn headers_named<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a HeaderField> + 'a {
        let id = HeaderId::from_name(name.as_bytes());
        self.headers.iter().filter(move |h| {
            h.id == id && (id != HeaderId::Other || self.header_name(h).eq_ignore_ascii_case(name))
        })
    }
    pub fn call_id(&self) -> &str {
        self.str_at(self.call_id)
    }
    pub fn cseq(&self) -> u32 {
        self.cseq
    }
    pub fn cseq_method(&self) -> &str {
        self.str_at(self.cseq_method)
    }
    pub fn cseq_method_id(&self) -> Method {
        Method::from_bytes(&self.buf[self.cseq_method.range()])
    }
    pub fn from(&self) -> NameAddr<'_> {
        self.header(HeaderId::From)
            .and_then(|v| NameAddr::parse(v).ok())
            .expect("checked in parse")
    }
    pub fn to(&self) -> NameAddr<'_> {
        self.header(HeaderId::To)
            .and_then(|v| NameAddr::parse(v).ok())
            .expect("checked in parse")
    }
    pub fn from_tag(&self) -> Option<&str> {
        self.from_tag.map(|s| self.str_at(s))
    }
    pub fn to_tag(&self) -> Option<&str> {
        self.to_tag.map(|s| self.str_at(s))
    }
    pub fn max_forwards(&self) -> Option<u8> {
        self.max_forwards
    }
    pub fn top_via(&self) -> Via<'_> {
        Via::reread(self.str_at(self.top_via)).expect("checked in parse")
    }
    /// The via-parm after the top one: where a response goes next.
    pub fn second_via(&self) -> Option<Via<'_>> {
        self.second_via
            .map(|s| Via::reread(self.str_at(s)).expect("checked in parse"))
    }
    /// How many via-parms the message carries, across all Via lines.
    pub fn via_count(&self) -> usize {
        usize::from(self.via_count)
    }
    pub fn top_via_span(&self) -> Span {
        self.top_via
    }
    pub fn branch(&self) -> Option<&str> {
        self.branch.map(|s| self.str_at(s))
    }
    /// The top Via branch when it is an RFC 3261 transaction id (§8.1.1.7):
    /// the magic cookie and something after it. A bare `z9hG4bK` (RFC 4475
    /// §3.2.1) or a pre-3261 branch identifies no transaction, so matching
    /// must fall back to the RFC 2543 rules (§17.2.3).
    pub fn rfc3261_branch(&self) -> Option<&str> {
        self.branch()
            .filter(|b| b.len() > MAGIC_COOKIE.len() && b.starts_with(MAGIC_COOKIE))
    }
    /// Every via-parm in order, across all Via header lines.
    pub fn vias(&self) -> Vec<Via<'_>> {
        self.headers
            .iter()
            .filter(|h| h.id == HeaderId::Via)
            .filter_map(|h| Via::parse_all(self.header_value(h)).ok())
            .flatten()
            .collect()
    }
    pub fn body(&self) -> &[u8] {
        &self.buf[self.body.range()]
    }
    pub fn body_span(&self) -> Span {
        self.body
    }
    pub fn headers_start(&self) -> usize {
        self.headers_start as usize
    }
    pub fn headers_end(&self) -> usize {
        self.headers_end as usize
    }
    /// True for a request whose R-URI scheme the core cannot route (RFC 3261 §16.3 step 2: 416).
    pub fn has_unsupported_scheme(&self) -> bool {
        self.request_uri()
            .is_some_and(|u| u.scheme == Scheme::Other)
    }
}

/// RFC 3261 §8.1.1.7: every branch id of an RFC 3261 element starts with this.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Offset of `part` inside `whole`. A `part` that is not a subslice (the
/// static `""` that param lookups return for a valueless `;tag` or `;branch`)
/// maps to the end of `whole`, i.e. an empty span there.
fn offset_in(whole: &str, part: &str) -> usize {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    if p >= w && p + part.len() <= w + whole.len() {
        p - w
    } else {
        whole.len()
    }
}

fn duplicate_reason(id: HeaderId) -> &'static str {
    match id {
        HeaderId::From => "multiple From headers",
        HeaderId::To => "multiple To headers",
        HeaderId::CallId => "multiple Call-ID headers",
        HeaderId::CSeq => "multiple CSeq headers",
        HeaderId::MaxForwards => "multiple Max-Forwards headers",
        HeaderId::ContentLength => "multiple Content-Length headers",
        HeaderId::ContentType => "multiple Content-Type headers",
        HeaderId::Expires => "multiple Expires headers",
        _ => "header repeated that may appear only once",
    }
}

fn from_reason(e: ParseError) -> &'static str {
    match e.reason {
        "unterminated quoted string" => "malformed From header: unterminated quoted string",
        _ => "malformed From header",
    }
}

fn to_reason(e: ParseError) -> &'static str {
    match e.reason {
        "unterminated quoted string" => "malformed To header: unterminated quoted string",
        _ => "malformed To header",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Message, ParseError> {
        Message::parse(
            Bytes::from(text.replace('\n', "\r\n")),
            Framing::Datagram,
            &Limits::default(),
        )
    }

    fn request(method: &str, cseq: &str, extra: &str) -> String {
        format!(
            "{method} sip:bob@example.com SIP/2.0\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\n\
             From: <sip:alice@example.com>;tag=1\nTo: <sip:bob@example.com>\nCall-ID: c1\n\
             CSeq: {cseq}\n{extra}Content-Length: 0\n\n"
        )
    }

    #[test]
    fn the_second_via_and_the_count_agree_with_every_via() {
        let one = parse(&request("INVITE", "1 INVITE", "")).unwrap();
        assert_eq!((one.via_count(), one.second_via()), (1, None));
        for extra in [
            "Via: SIP/2.0/TCP b.example.com:5070;branch=z9hG4bK2\n",
            "Via: SIP/2.0/TCP b.example.com:5070;branch=z9hG4bK2 , SIP/2.0/UDP c;rport=1\n",
            "Via: SIP/2.0/TCP b.example.com:5070;branch=z9hG4bK2\nVia: SIP/2.0/UDP c;rport=1\n",
        ] {
            let m = parse(&request("INVITE", "1 INVITE", extra)).unwrap();
            let all = m.vias();
            assert_eq!(m.via_count(), all.len(), "{extra}");
            assert_eq!(m.second_via(), Some(all[1]), "{extra}");
            assert_eq!(m.top_via(), all[0]);
            assert_eq!(m.branch(), Some("z9hG4bK1"));
        }
        // Top Via line holding two via-parms: the second is on the same line.
        let text = request("INVITE", "1 INVITE", "")
            .replace(";branch=z9hG4bK1", ";branch=z9hG4bK1, SIP/2.0/UDP d:9;branch=z9hG4bK9");
        let m = parse(&text).unwrap();
        assert_eq!(m.via_count(), 2);
        assert_eq!(m.second_via().unwrap().host, "d");
        assert_eq!(m.branch(), Some("z9hG4bK1"));
    }

    #[test]
    fn cseq_method_mismatch_status() {
        // RFC 4475 §3.1.2.17: a known method gets 400; §3.1.2.18: an unknown
        // one 501, which stays right once the method is implemented.
        assert_eq!(
            parse(&request("OPTIONS", "1 INVITE", ""))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            parse(&request("NEWMETHOD", "1 INVITE", ""))
                .unwrap_err()
                .status,
            501
        );
        assert!(parse(&request("NEWMETHOD", "1 NEWMETHOD", "")).is_ok());
    }

    #[test]
    fn cseq_numbers_up_to_32_bits() {
        // RFC 4475 §3.1.2.4: only values above 2**32-1 are invalid.
        assert_eq!(
            parse(&request("INVITE", "4294967295 INVITE", ""))
                .unwrap()
                .cseq(),
            u32::MAX
        );
        assert!(parse(&request("INVITE", "4294967296 INVITE", "")).is_err());
        assert!(parse(&request("INVITE", "36893488147419103232 INVITE", "")).is_err());
    }

    #[test]
    fn every_via_is_checked() {
        let lower = "Via: SIP/2.0/UDP b.example.com;branch=z9hG4bK2, SIP/2.0/UDP c.example.com\n";
        assert_eq!(
            parse(&request("INVITE", "1 INVITE", lower))
                .unwrap()
                .vias()
                .len(),
            3
        );
        let broken = "Via: SIP/2.0/UDP b.example.com;;,;,,\n";
        assert_eq!(
            parse(&request("INVITE", "1 INVITE", broken))
                .unwrap_err()
                .reason,
            "malformed Via header"
        );
    }

    #[test]
    fn datagram_without_the_empty_line() {
        // RFC 4475 §3.1.2.15's archive file: the datagram ends after `l: 0`.
        let text = request("OPTIONS", "1 OPTIONS", "");
        let m = parse(text.strip_suffix('\n').unwrap()).unwrap();
        assert!(m.body().is_empty());
        assert_eq!(m.call_id(), "c1");
    }

    #[test]
    fn transaction_branch_needs_more_than_the_cookie() {
        let with = |branch: &str| {
            let text = request("OPTIONS", "1 OPTIONS", "").replace("branch=z9hG4bK1", branch);
            parse(&text).unwrap().rfc3261_branch().map(str::to_string)
        };
        assert_eq!(with("branch=z9hG4bKabc").as_deref(), Some("z9hG4bKabc"));
        assert_eq!(with("branch=z9hG4bK"), None);
        assert_eq!(with("branch=390skdjuw"), None);
        assert_eq!(with("rport"), None);
    }
}

#[cfg(test)]
mod fuzz_regressions {
    use super::*;

    /// cargo-fuzz `parse_message` crash: a valueless `;tag` / `;branch` made
    /// `offset_in` subtract unrelated pointers (overflow panic in debug, an
    /// out-of-bounds span and a slice panic in `str_at` in release).
    #[test]
    fn valueless_tag_and_branch() {
        let text = "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch\r\n\
                    From: <sip:a@b>;tag\r\nTo: <sip:b@c>;tag\r\nCall-ID: x\r\n\
                    CSeq: 1 INVITE\r\n\r\n";
        let m = Message::parse(
            Bytes::from_static(text.as_bytes()),
            Framing::Datagram,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(m.from_tag(), Some(""));
        assert_eq!(m.to_tag(), Some(""));
        assert_eq!(m.branch(), Some(""));
    }
}
