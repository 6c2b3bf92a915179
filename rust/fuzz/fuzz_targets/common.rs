//! Shared by the fuzz targets: touch every accessor of a parsed message and
//! check that what sipr writes from it parses again.

#![allow(dead_code)]

use std::net::SocketAddr;

use bytes::Bytes;
use sipr::sip::write::{
    build_forward, build_response, error_response_raw, strip_top_via, via_received_params,
    ForwardEdits, HeaderEdit,
};
use sipr::sip::{Framing, HeaderId, Limits, Message, NameAddr, StartLine, Uri, Via};

pub const OUR_VIA: &str = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx";

pub const ALL_IDS: &[HeaderId] = &[
    HeaderId::Via,
    HeaderId::From,
    HeaderId::To,
    HeaderId::CallId,
    HeaderId::CSeq,
    HeaderId::MaxForwards,
    HeaderId::ContentLength,
    HeaderId::ContentType,
    HeaderId::Contact,
    HeaderId::Route,
    HeaderId::RecordRoute,
    HeaderId::Expires,
    HeaderId::Require,
    HeaderId::ProxyRequire,
    HeaderId::Supported,
    HeaderId::Authorization,
    HeaderId::ProxyAuthorization,
    HeaderId::WwwAuthenticate,
    HeaderId::ProxyAuthenticate,
    HeaderId::Date,
    HeaderId::Path,
    HeaderId::Event,
    HeaderId::Subject,
    HeaderId::Accept,
    HeaderId::AllowEvents,
    HeaderId::ReferTo,
    HeaderId::ContentEncoding,
    HeaderId::Other,
];

/// Limits for re-parsing what sipr wrote: writing may add a few header lines
/// and lengthen the top Via, so the original limits could refuse it legitimately.
pub fn relaxed() -> Limits {
    Limits {
        max_message_size: usize::MAX,
        max_headers: usize::MAX,
        max_line_length: usize::MAX,
    }
}

fn sources() -> [SocketAddr; 2] {
    [
        "192.0.2.1:5060".parse().unwrap(),
        "[2001:db8::1]:5070".parse().unwrap(),
    ]
}

pub fn touch_uri(u: &Uri<'_>) {
    std::hint::black_box((
        u.raw,
        u.scheme,
        u.scheme_str,
        u.user,
        u.password,
        u.host,
        u.port,
    ));
    std::hint::black_box((
        u.params,
        u.headers,
        u.opaque,
        u.is_sip(),
        u.host_unbracketed(),
    ));
    for name in ["transport", "lr", "maddr", "user", ""] {
        std::hint::black_box(u.param(name));
    }
    assert!(u.raw.starts_with(u.scheme_str));
    if u.is_sip() {
        assert!(!u.host.is_empty());
    }
}

pub fn touch_via(v: &Via<'_>) {
    std::hint::black_box((v.raw, v.protocol, v.transport, v.host, v.port, v.params));
    std::hint::black_box((v.branch(), v.received(), v.rport(), v.host_unbracketed()));
    std::hint::black_box((v.param("maddr"), v.param("ttl"), v.param("")));
    assert!(!v.host.is_empty());
    // Every part borrows from the via-parm text.
    for part in [v.protocol, v.transport, v.host] {
        assert!(v.raw.contains(part));
    }
}

pub fn touch_nameaddr(n: &NameAddr<'_>) {
    std::hint::black_box((n.display, n.angle, n.params, n.tag(), n.param("expires")));
    std::hint::black_box(n.display_unquoted());
    touch_uri(&n.uri);
}

/// Every accessor of a parsed message.
pub fn touch_message(m: &Message) {
    let vias = m.vias();
    for v in &vias {
        touch_via(v);
    }
    assert!(!vias.is_empty(), "a parsed message has a Via");
    let top = m.top_via();
    touch_via(&top);
    assert_eq!(top, vias[0], "top_via() is the first of vias()");
    assert_eq!(m.branch(), top.branch());
    touch_nameaddr(&m.from());
    touch_nameaddr(&m.to());
    assert_eq!(m.from_tag(), m.from().tag());
    assert_eq!(m.to_tag(), m.to().tag());
    if let Some(u) = m.request_uri() {
        touch_uri(&u);
    }
    std::hint::black_box((m.request_uri_str(), m.has_unsupported_scheme()));
    match m.start_line() {
        StartLine::Request { .. } => {
            assert!(m.is_request() && m.status().is_none() && m.reason().is_none());
            assert!(
                m.request_uri().is_some(),
                "a parsed Request-URI parses again"
            );
            assert_eq!(m.method_str(), m.cseq_method());
        }
        StartLine::Response { status, .. } => {
            assert!(!m.is_request() && m.request_uri_str().is_none());
            assert_eq!(m.status(), Some(status));
            assert!((100..=699).contains(&status));
            std::hint::black_box(m.reason());
        }
    }
    std::hint::black_box((
        m.method(),
        m.method_str(),
        m.call_id(),
        m.cseq(),
        m.cseq_method(),
    ));
    std::hint::black_box((m.cseq_method_id(), m.max_forwards(), m.top_via_span()));
    assert!(!m.call_id().is_empty());
    assert!(m.cseq() < 1 << 31);
    for h in m.headers() {
        let name = m.header_name(h);
        let value = m.header_value(h);
        assert_eq!(HeaderId::from_name(name.as_bytes()), h.id);
        assert!(h.line.start <= h.name.start && h.name.end <= h.value.start);
        assert!(h.value.start <= h.value.end && h.value.end <= h.line.end);
        assert!(m.headers_named(name).any(|x| x == h));
        if h.id.is_list() {
            if let Ok(list) = NameAddr::parse_list(value) {
                list.iter().for_each(touch_nameaddr);
            }
        }
        std::hint::black_box((h.id.canonical(), value));
    }
    for &id in ALL_IDS {
        std::hint::black_box(m.header(id));
    }
    assert!(m.headers_start() <= m.headers_end());
    let body = m.body();
    let bs = m.body_span();
    assert_eq!(body.len(), bs.range().len());
    assert!(m.headers_end() <= bs.start as usize);
    assert_eq!(m.as_bytes().len(), bs.end as usize);
    assert!(m.as_bytes().len() <= m.bytes().len());
    for src in sources() {
        std::hint::black_box(via_received_params(m, src));
    }
}

fn reparse(out: Vec<u8>, what: &str) -> Message {
    let limits = relaxed();
    match Message::parse(Bytes::from(out.clone()), Framing::Stream, &limits) {
        Ok(m) => m,
        Err(e) => panic!(
            "{what} output does not parse ({e}):\n{}",
            String::from_utf8_lossy(&out)
        ),
    }
}

/// Writes responses / forwards / stripped responses from `m` and re-parses them.
pub fn check_writers(m: &Message) {
    if m.is_request() {
        check_request_writers(m);
    } else {
        check_strip_top_via(m);
    }
}

fn check_request_writers(m: &Message) {
    let [v4, v6] = sources();
    for (source, status, to_tag) in [
        (None, 100, None),
        (Some(v4), 180, Some("t1")),
        (Some(v6), 486, Some("t2")),
        (None, 200, None),
    ] {
        let extra = [("Contact".to_string(), "<sip:p@192.0.2.9>".to_string())];
        let out = build_response(m, source, status, None, to_tag, &extra, b"hi");
        let r = reparse(out, "build_response");
        assert_eq!(r.status(), Some(status));
        assert_eq!(r.call_id(), m.call_id());
        assert_eq!(r.cseq(), m.cseq());
        assert_eq!(r.cseq_method(), m.cseq_method());
        assert_eq!(r.from_tag(), m.from_tag());
        assert_eq!(r.body(), b"hi");
        match (m.to_tag(), to_tag) {
            (Some(t), _) => assert_eq!(r.to_tag(), Some(t)),
            (None, Some(t)) if status > 100 => assert_eq!(r.to_tag(), Some(t)),
            (None, _) => assert_eq!(r.to_tag(), None),
        }
        assert_eq!(r.vias().len(), m.vias().len());
        assert_eq!(r.branch(), m.branch());
        if let Some(src) = source {
            let top = r.top_via();
            assert!(
                top.received().is_some() || m.top_via().received().is_some() || {
                    top.host_unbracketed().parse::<std::net::IpAddr>().ok() == Some(src.ip())
                }
            );
        }
    }

    let plain = ForwardEdits {
        via: OUR_VIA,
        ..Default::default()
    };
    let edits = [
        HeaderEdit::Remove("Subject".into()),
        HeaderEdit::Add("X-Fuzz".into(), "1".into()),
    ];
    let full = ForwardEdits {
        request_uri: Some("sip:next@192.0.2.7:5080;transport=udp"),
        via: OUR_VIA,
        source: Some(v6),
        force_rport: true,
        pop_routes: 1,
        record_route: Some("<sip:proxy.example.com;lr>"),
        header_edits: &edits,
    };
    for (i, e) in [plain, full].iter().enumerate() {
        let out = build_forward(m, e);
        let f = reparse(out, "build_forward");
        assert!(f.is_request());
        assert_eq!(f.method_str(), m.method_str());
        assert_eq!(f.call_id(), m.call_id());
        assert_eq!(f.cseq(), m.cseq());
        assert_eq!(f.from_tag(), m.from_tag());
        assert_eq!(f.to_tag(), m.to_tag());
        assert_eq!(f.body(), m.body());
        assert_eq!(f.branch(), Some("z9hG4bKx"));
        assert_eq!(f.top_via().raw, OUR_VIA);
        assert_eq!(f.vias().len(), m.vias().len() + 1);
        assert_eq!(f.vias()[1].branch(), m.branch());
        assert_eq!(
            f.max_forwards(),
            Some(m.max_forwards().map_or(70, |n| n.saturating_sub(1)))
        );
        if i == 0 {
            assert_eq!(f.request_uri_str(), m.request_uri_str());
        }
    }
}

fn check_strip_top_via(m: &Message) {
    let out = strip_top_via(m);
    let vias: Vec<_> = m
        .headers()
        .iter()
        .filter(|h| h.id == HeaderId::Via)
        .collect();
    let first = Via::parse_all(m.header_value(vias[0]))
        .expect("checked in parse")
        .len();
    // The result keeps a Via only if the top header line had more than one
    // via-parm or a later Via line exists; it is well-formed if that Via is.
    let next_ok = if first > 1 {
        true
    } else {
        vias.get(1)
            .is_some_and(|h| Via::parse_all(m.header_value(h)).is_ok())
    };
    let limits = relaxed();
    // Datagram framing: strip_top_via keeps the headers as they were, so a
    // UDP response without Content-Length stays without one.
    match Message::parse(Bytes::from(out.clone()), Framing::Datagram, &limits) {
        Ok(r) => {
            assert_eq!(r.status(), m.status());
            assert_eq!(r.call_id(), m.call_id());
            assert_eq!(r.body(), m.body());
            assert_eq!(r.vias().len() + 1, m.vias().len());
        }
        Err(e) => assert!(
            !next_ok,
            "strip_top_via output does not parse ({e}):\n{}",
            String::from_utf8_lossy(&out)
        ),
    }
}

/// The error-response path the core takes for bytes that failed to parse, and
/// for valid requests the check that the response it builds parses.
pub fn check_error_response(data: &[u8], parsed: Option<&Message>) {
    let Some(out) = error_response_raw(data, 400, "Bad Request") else {
        return;
    };
    assert!(out.starts_with(b"SIP/2.0 400 Bad Request\r\n"));
    assert!(out.ends_with(b"Content-Length: 0\r\n\r\n"));
    if let Some(m) = parsed.filter(|m| m.is_request()) {
        // Every line copied from a valid request was valid, so the response is.
        let r = reparse(out, "error_response_raw");
        assert_eq!(r.status(), Some(400));
        assert_eq!(r.call_id(), m.call_id());
        assert_eq!(r.cseq(), m.cseq());
        assert_eq!(r.branch(), m.branch());
        assert_eq!(r.from_tag(), m.from_tag());
    }
}

pub fn parse_both(data: &[u8]) -> [Option<Message>; 2] {
    let limits = Limits::default();
    let buf = Bytes::copy_from_slice(data);
    [Framing::Datagram, Framing::Stream].map(|f| Message::parse(buf.clone(), f, &limits).ok())
}
