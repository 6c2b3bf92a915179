//! A parsed SIP message: spans into the received bytes, plus the handful of
//! fields every message needs (Call-ID, CSeq, tags, top Via) checked eagerly so
//! a message that gets past `parse` can be answered and routed.

use bytes::Bytes;

use super::header::HeaderId;
use super::method::Method;
use super::nameaddr::NameAddr;
use super::scan::{is_token, parse_decimal, skip_lws, trim_end};
use super::uri::{Scheme, Uri};
use super::via::Via;
use super::{Limits, ParseError};

/// A byte range into the message buffer. `u32` keeps headers small; message
/// size limits keep every offset well inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    fn new(start: usize, end: usize) -> Span {
        Span { start: start as u32, end: end as u32 }
    }
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderField {
    pub id: HeaderId,
    pub name: Span,
    /// The value without surrounding LWS; folds inside are kept as received.
    pub value: Span,
    /// The whole header line including its line end, for byte-exact copying.
    pub line: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, method_span: Span, uri: Span },
    Response { status: u16, reason: Span },
}

/// How the message arrived: datagrams may carry trailing octets beyond
/// Content-Length (ignored) and may omit it; streams are framed beforehand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Datagram,
    Stream,
}

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
        let (headers, headers_end, body_start) = split_headers(b, next, limits)?;
        // Header text must be UTF-8 (RFC 3261 §25.1 allows UTF8-NONASCII only),
        // which lets every accessor hand out &str without checking again.
        std::str::from_utf8(&b[..headers_end]).map_err(|_| ParseError::bad("header section is not valid UTF-8"))?;

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
        };
        msg.check_headers(framing)?;
        Ok(msg)
    }

    fn check_headers(&mut self, framing: Framing) -> Result<(), ParseError> {
        let mut seen = [0u8; HeaderId::Other as usize + 1];
        let mut content_length = None;
        let mut saw_via = false;
        let buf = self.buf.clone();
        for i in 0..self.headers.len() {
            let h = self.headers[i];
            let count = &mut seen[h.id as usize];
            *count = count.saturating_add(1);
            if h.id.is_single_valued() && *count > 1 {
                return Err(ParseError::bad(duplicate_reason(h.id)));
            }
            let value = std::str::from_utf8(&buf[h.value.range()]).unwrap_or("");
            match h.id {
                HeaderId::Via if !saw_via => {
                    saw_via = true;
                    let vias = Via::parse_all(value)?;
                    let top = vias[0];
                    let start = offset_in(value, top.raw) + h.value.start as usize;
                    self.top_via = Span::new(start, start + top.raw.len());
                    if let Some(br) = top.branch() {
                        let s = offset_in(value, br) + h.value.start as usize;
                        self.branch = Some(Span::new(s, s + br.len()));
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
                    // RFC 3261 §8.1.1.5: the number is below 2**31.
                    let n = parse_decimal(&vb[..digits], (1 << 31) - 1)
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
                HeaderId::Contact if self.is_request() => {
                    if value != "*" {
                        NameAddr::parse_list(value)
                            .map_err(|_| ParseError::bad("malformed Contact header"))?;
                    }
                }
                HeaderId::Date => {
                    // rfc1123-date always ends in GMT (RFC 3261 §20.17).
                    if !value.ends_with("GMT") {
                        return Err(ParseError::bad("malformed Date header"));
                    }
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
        if let StartLine::Request { method_span, .. } = self.start {
            if self.buf[method_span.range()] != self.buf[self.cseq_method.range()] {
                return Err(ParseError::bad("CSeq method does not match the request method"));
            }
        }
        let available = self.body.end - self.body.start;
        match (content_length, framing) {
            (Some(cl), _) if cl as u32 > available => {
                return Err(ParseError::bad("Content-Length larger than the message body"));
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
    pub fn header_name(&self, h: &HeaderField) -> &str {
        self.str_at(h.name)
    }
    pub fn header_value(&self, h: &HeaderField) -> &str {
        self.str_at(h.value)
    }
    /// The first value of a header the core knows by id.
    pub fn header(&self, id: HeaderId) -> Option<&str> {
        self.headers.iter().find(|h| h.id == id).map(|h| self.header_value(h))
    }
    /// Every header line with this name (case-insensitive, compact forms folded).
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a HeaderField> + 'a {
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
        self.header(HeaderId::From).and_then(|v| NameAddr::parse(v).ok()).expect("checked in parse")
    }
    pub fn to(&self) -> NameAddr<'_> {
        self.header(HeaderId::To).and_then(|v| NameAddr::parse(v).ok()).expect("checked in parse")
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
        Via::parse(self.str_at(self.top_via)).expect("checked in parse")
    }
    pub fn top_via_span(&self) -> Span {
        self.top_via
    }
    pub fn branch(&self) -> Option<&str> {
        self.branch.map(|s| self.str_at(s))
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
        self.request_uri().is_some_and(|u| u.scheme == Scheme::Other)
    }
}

/// Offset of `part` inside `whole`; `part` must be a subslice of it.
fn offset_in(whole: &str, part: &str) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
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

/// Finds the end of the line starting at `pos`: returns (end of content, start of next line).
fn find_line_end(b: &[u8], pos: usize) -> Option<(usize, usize)> {
    let lf = memchr::memchr(b'\n', &b[pos..])? + pos;
    let end = if lf > pos && b[lf - 1] == b'\r' { lf - 1 } else { lf };
    Some((end, lf + 1))
}

fn parse_start_line(b: &[u8], pos: usize, end: usize) -> Result<StartLine, ParseError> {
    let line = &b[pos..end];
    if line.starts_with(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let sp1 = line.iter().position(|&c| c == b' ').ok_or(ParseError::bad("malformed status line"))?;
        check_version(&line[..sp1])?;
        let rest = &line[sp1 + 1..];
        let code_len = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        if code_len != 3 || (rest.len() > 3 && rest[3] != b' ') {
            return Err(ParseError::bad("malformed status code"));
        }
        let status = parse_decimal(&rest[..3], 699).ok_or(ParseError::bad("status code out of range"))? as u16;
        if status < 100 {
            return Err(ParseError::bad("status code out of range"));
        }
        let reason_start = (pos + sp1 + 1 + 4).min(end);
        return Ok(StartLine::Response { status, reason: Span::new(reason_start, end) });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version, single spaces only.
    let mut parts = line.split(|&c| c == b' ');
    let (Some(m), Some(u), Some(v), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(ParseError::bad("malformed request line"));
    };
    if m.is_empty() || !m.iter().all(|&c| is_token(c)) {
        return Err(ParseError::bad("malformed method"));
    }
    if u.is_empty() || u.starts_with(b"<") {
        return Err(ParseError::bad("malformed Request-URI"));
    }
    check_version(v)?;
    let uri_str = std::str::from_utf8(u).map_err(|_| ParseError::bad("malformed Request-URI"))?;
    let uri = Uri::parse(uri_str).map_err(|_| ParseError::bad("malformed Request-URI"))?;
    if uri.is_sip() && uri.headers.is_some() {
        // RFC 3261 §19.1.5: headers are not allowed in a Request-URI.
        return Err(ParseError::bad("Request-URI carries URI headers"));
    }
    let m_start = pos;
    let u_start = m_start + m.len() + 1;
    Ok(StartLine::Request {
        method: crate::sip::Method::from_bytes(m),
        method_span: Span::new(m_start, m_start + m.len()),
        uri: Span::new(u_start, u_start + u.len()),
    })
}

fn check_version(v: &[u8]) -> Result<(), ParseError> {
    if v.eq_ignore_ascii_case(b"SIP/2.0") {
        return Ok(());
    }
    let Some(num) = v.get(4..).filter(|_| v[..4].eq_ignore_ascii_case(b"SIP/")) else {
        return Err(ParseError::bad("malformed SIP version"));
    };
    let ok = num.split(|&c| c == b'.').all(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
        && num.contains(&b'.');
    if ok {
        Err(ParseError::new(505, "Version Not Supported"))
    } else {
        Err(ParseError::bad("malformed SIP version"))
    }
}

/// Splits the header section into fields; returns (fields, offset of the empty
/// line, offset of the body).
fn split_headers(b: &[u8], mut pos: usize, limits: &Limits) -> Result<(Vec<HeaderField>, usize, usize), ParseError> {
    let mut headers: Vec<HeaderField> = Vec::with_capacity(16);
    loop {
        let (end, next) = find_line_end(b, pos).ok_or(ParseError::bad("header section not terminated by an empty line"))?;
        if end == pos {
            return Ok((headers, pos, next));
        }
        if end - pos > limits.max_line_length {
            return Err(ParseError::bad("header line too long"));
        }
        if matches!(b[pos], b' ' | b'\t') {
            // A fold continues the previous header's value.
            let last = headers.last_mut().ok_or(ParseError::bad("header section starts with white space"))?;
            if last.value.is_empty() {
                last.value.start = skip_lws(b, last.value.start as usize) as u32;
            }
            last.value.end = trim_end(b, last.value.start as usize, end) as u32;
            last.line.end = next as u32;
            pos = next;
            continue;
        }
        let name_end = pos + b[pos..end].iter().take_while(|&&c| is_token(c)).count();
        let colon = pos + (name_end - pos) + b[name_end..end].iter().take_while(|&&c| c == b' ' || c == b'\t').count();
        if name_end == pos || colon >= end || b[colon] != b':' {
            return Err(ParseError::bad("malformed header line"));
        }
        if headers.len() >= limits.max_headers {
            return Err(ParseError::bad("too many headers"));
        }
        let vstart = colon + 1 + b[colon + 1..end].iter().take_while(|&&c| c == b' ' || c == b'\t').count();
        headers.push(HeaderField {
            id: HeaderId::from_name(&b[pos..name_end]),
            name: Span::new(pos, name_end),
            value: Span::new(vstart, trim_end(b, vstart, end)),
            line: Span::new(pos, next),
        });
        pos = next;
    }
}
