//! A parsed SIP message: spans into the received bytes, plus the handful of
//! fields every message needs (Call-ID, CSeq, tags, top Via) checked eagerly so
//! a message that gets past `parse` can be answered and routed.

use bytes::Bytes;

use super::header::HeaderId;
use super::lines::{find_line_end, parse_start_line, split_headers};
use super::memo::{self, ViaFields};
use super::method::Method;
use super::nameaddr::NameAddr;
use super::scan::{is_token, parse_decimal, range_within, skip_lws};
use super::span::{Framing, HeaderField, Span, StartLine};
use super::uri::{Scheme, Uri, UriSpans};
use super::via::Via;
use super::{Limits, ParseError};

mod held;

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
    /// The top via-parm's fields, read once: every layer that answers,
    /// relays or matches the message asks for them.
    top_via_fields: ViaFields,
    /// The second via-parm's fields (a relayed response's next hop).
    second_via_fields: ViaFields,
    /// A request's Request-URI, read once when it was checked.
    ruri: Option<UriSpans>,
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
        let (start, ruri) = parse_start_line(b, pos, line_end)?;
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
            top_via_fields: ViaFields::default(),
            second_via_fields: ViaFields::default(),
            ruri,
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
                    let facts = memo::checked(h.id, value, || via_facts(value))?;
                    let base = h.value.start as usize;
                    let at = |w: memo::Within| {
                        w.map(|(a, b)| Span::new(base + usize::from(a), base + usize::from(b)))
                    };
                    for (i, parm) in [facts.first, facts.second].into_iter().enumerate() {
                        if i >= usize::from(facts.count) {
                            break;
                        }
                        match self.via_count + i as u16 {
                            0 => {
                                self.top_via = at(parm).unwrap_or_default();
                                self.branch = at(facts.param);
                                self.top_via_fields = facts.top;
                            }
                            1 => {
                                self.second_via = at(parm);
                                self.second_via_fields =
                                    if i == 0 { facts.top } else { facts.next };
                            }
                            _ => break,
                        }
                    }
                    self.via_count = self.via_count.saturating_add(facts.count);
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
                    let facts = memo::checked(h.id, value, || {
                        let na = NameAddr::parse(value).map_err(|e| {
                            ParseError::bad(if h.id == HeaderId::From {
                                from_reason(e)
                            } else {
                                to_reason(e)
                            })
                        })?;
                        Ok(memo::Facts {
                            first: na.tag().and_then(|t| range_within(value, t)),
                            ..memo::Facts::default()
                        })
                    })?;
                    let base = h.value.start as usize;
                    let tag = facts
                        .first
                        .map(|(a, b)| Span::new(base + usize::from(a), base + usize::from(b)));
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
                    memo::checked(h.id, value, || {
                        NameAddr::parse_list(value)
                            .map(|_| memo::Facts::default())
                            .map_err(|_| ParseError::bad("malformed Contact header"))
                    })?;
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
    /// The text of `span`; `""` if it is not text (outside the header
    /// section and not UTF-8, or not on character boundaries).
    pub fn str_at(&self, span: Span) -> &str {
        if span.end as usize <= self.headers_end as usize {
            return self.head().get(span.range()).unwrap_or("");
        }
        std::str::from_utf8(self.buf.get(span.range()).unwrap_or_default()).unwrap_or("")
    }
    /// The start line and header section as text.
    fn head(&self) -> &str {
        let head = &self.buf[..self.headers_end as usize];
        debug_assert!(std::str::from_utf8(head).is_ok());
        // SAFETY: `parse` refused a message whose start line and header
        // section are not UTF-8, and `buf` (immutable `Bytes`) and
        // `headers_end` do not change after it.
        unsafe { std::str::from_utf8_unchecked(head) }
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
        let raw = self.request_uri_str()?;
        match self.ruri {
            Some(spans) => Some(spans.rebuild(raw)),
            None => Uri::parse(raw).ok(),
        }
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
        self.via_at(self.top_via, &self.top_via_fields)
    }
    /// The via-parm after the top one: where a response goes next.
    pub fn second_via(&self) -> Option<Via<'_>> {
        self.second_via
            .map(|s| self.via_at(s, &self.second_via_fields))
    }
    fn via_at(&self, span: Span, f: &ViaFields) -> Via<'_> {
        let raw = self.str_at(span);
        let at = |(a, b): (u16, u16)| raw.get(usize::from(a)..usize::from(b)).unwrap_or("");
        Via {
            raw,
            protocol: at(f.protocol),
            transport: at(f.transport),
            host: at(f.host),
            port: f.port,
            params: f.params.map_or("", at),
        }
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
/// What the message keeps of one Via header value: its first two via-parms,
/// the first one's branch and how many there are; every via-parm checked.
fn via_facts(value: &str) -> Result<memo::Facts, ParseError> {
    let mut facts = memo::Facts::default();
    for (i, via) in Via::parse_all(value)?.into_iter().enumerate() {
        match i {
            0 => {
                facts.first = range_within(value, via.raw);
                facts.param = via.branch().and_then(|b| range_within(value, b));
                facts.top = ViaFields::of(&via);
            }
            1 => {
                facts.second = range_within(value, via.raw);
                facts.next = ViaFields::of(&via);
            }
            _ => {}
        }
        facts.count = facts.count.saturating_add(1);
    }
    Ok(facts)
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
