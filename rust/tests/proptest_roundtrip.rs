//! Property tests for the SIP parser and writers.
//!
//! * `generated_requests_round_trip`: structurally valid requests (extension
//!   methods, sip/sips/tel URIs with parameters, Via lists with IPv6 and
//!   parameters, quoted display names with escapes, compact header names,
//!   folded lines, bodies with Content-Length) parse under both framings, the
//!   accessors return what was generated, and `build_forward` / `build_response`
//!   output parses again with the same dialog identifiers, an extra Via on top
//!   and every untouched header line byte-exact.
//! * `mutated_requests_never_panic`: truncating, inserting, deleting or
//!   replacing bytes of such a request never panics the parser, the stream
//!   framer, the accessors or the writers (the same checks the fuzz targets
//!   run, shared from `rust/fuzz/fuzz_targets/common.rs`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use proptest::prelude::*;
use sipr::sip::write::{build_forward, build_response, ForwardEdits};
use sipr::sip::{frame_stream, Framing, HeaderId, Limits, Message, Scheme, StreamFrame};

#[path = "../fuzz/fuzz_targets/common.rs"]
mod common;

// ---- generated pieces: the text plus what the parser must report ----------

#[derive(Debug, Clone)]
struct GenUri {
    text: String,
    scheme: Scheme,
    user: Option<String>,
    host: String,
    port: Option<u16>,
    params: String,
}

#[derive(Debug, Clone)]
struct GenVia {
    text: String,
    transport: String,
    host: String,
    port: Option<u16>,
    branch: String,
}

#[derive(Debug, Clone)]
struct GenAddr {
    text: String,
    uri: GenUri,
    display: Option<String>,
    tag: Option<String>,
}

/// One header line: the name as written, the value as the parser must report
/// it (folds kept), and the whole line.
#[derive(Debug, Clone)]
struct Line {
    id: HeaderId,
    /// Creation order (Via lines must stay in it).
    order: usize,
    value: String,
    text: String,
}

#[derive(Debug, Clone)]
struct GenRequest {
    method: String,
    ruri: GenUri,
    vias: Vec<Vec<GenVia>>,
    from: GenAddr,
    to: GenAddr,
    call_id: String,
    cseq: u32,
    max_forwards: Option<u8>,
    lines: Vec<Line>,
    body: Vec<u8>,
    bytes: Vec<u8>,
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9.!%*_+`'~-]{1,10}"
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "INVITE",
            "ACK",
            "BYE",
            "CANCEL",
            "REGISTER",
            "OPTIONS",
            "INFO",
            "UPDATE",
            "PRACK",
            "SUBSCRIBE",
            "NOTIFY",
            "REFER",
            "MESSAGE",
            "PUBLISH",
        ])
        .prop_map(str::to_string),
        // Extension methods: any token (RFC 3261 §7.1, case-sensitive).
        "[A-Za-z][A-Za-z0-9.!%*_+`'~-]{0,11}",
    ]
}

fn hostname() -> impl Strategy<Value = String> {
    (
        prop::collection::vec("[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", 0..3),
        "[a-z]([a-z0-9-]{0,6}[a-z0-9])?",
    )
        .prop_map(|(mut labels, top)| {
            labels.push(top);
            labels.join(".")
        })
}

/// (host as written, unbracketed form for IP comparison)
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => hostname(),
        1 => any::<[u8; 4]>().prop_map(|o| Ipv4Addr::from(o).to_string()),
        2 => any::<u128>().prop_map(|v| format!("[{}]", Ipv6Addr::from(v))),
        1 => any::<[u8; 4]>().prop_map(|o| format!("[{}]", Ipv4Addr::from(o).to_ipv6_mapped())),
    ]
}

fn port() -> impl Strategy<Value = Option<u16>> {
    prop::option::of(1..=65535u16)
}

fn uri_params() -> impl Strategy<Value = String> {
    let param = prop_oneof![
        Just("lr".to_string()),
        prop::sample::select(vec!["udp", "tcp", "tls", "sctp", "ws"])
            .prop_map(|t| format!("transport={t}")),
        (
            "[a-z][a-z0-9-]{0,6}",
            prop::option::of("[A-Za-z0-9._~!*'()-]{1,8}")
        )
            .prop_map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k,
            }),
    ];
    prop::collection::vec(param, 0..4).prop_map(|ps| ps.join(";"))
}

fn sip_user() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![4 => "[A-Za-z0-9_.!~*'()&=+$,-]", 1 => "%[0-9A-F]{2}"],
        1..10,
    )
    .prop_map(|parts| parts.concat())
}

fn sip_uri() -> impl Strategy<Value = GenUri> {
    (
        any::<bool>(),
        prop::option::of(sip_user()),
        host(),
        port(),
        uri_params(),
    )
        .prop_map(|(secure, user, host, port, params)| {
            let scheme_str = if secure { "sips" } else { "sip" };
            let mut text = format!("{scheme_str}:");
            if let Some(u) = &user {
                text += &format!("{u}@");
            }
            text += &host;
            if let Some(p) = port {
                text += &format!(":{p}");
            }
            if !params.is_empty() {
                text += &format!(";{params}");
            }
            GenUri {
                text,
                scheme: if secure { Scheme::Sips } else { Scheme::Sip },
                user,
                host,
                port,
                params,
            }
        })
}

fn tel_uri() -> impl Strategy<Value = GenUri> {
    (
        "\\+[1-9][0-9]{0,2}-[0-9]{3}-[0-9]{4}",
        prop::option::of(hostname()),
    )
        .prop_map(|(number, ctx)| {
            let params = ctx
                .map(|c| format!("phone-context={c}"))
                .unwrap_or_default();
            let text = if params.is_empty() {
                format!("tel:{number}")
            } else {
                format!("tel:{number};{params}")
            };
            GenUri {
                text,
                scheme: Scheme::Tel,
                user: Some(number),
                host: String::new(),
                port: None,
                params,
            }
        })
}

fn any_uri() -> impl Strategy<Value = GenUri> {
    prop_oneof![4 => sip_uri(), 1 => tel_uri()]
}

/// A quoted display name: (raw text with quotes, unescaped content).
fn quoted_display() -> impl Strategy<Value = (String, String)> {
    let piece = prop_oneof![
        6 => "[A-Za-z0-9 !#-\\[\\]-~]".prop_map(|c| (c.clone(), c)),
        1 => "[\"\\\\a-z]".prop_map(|c| (format!("\\{c}"), c)),
        1 => Just(("é".to_string(), "é".to_string())),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|ps| {
        let raw: String = ps.iter().map(|p| p.0.as_str()).collect();
        let plain: String = ps.iter().map(|p| p.1.as_str()).collect();
        (format!("\"{raw}\""), plain)
    })
}

fn addr(with_tag: bool) -> impl Strategy<Value = GenAddr> {
    let tag = if with_tag {
        prop::option::of(token())
            .prop_map(|t| t.or(Some("t".into())))
            .boxed()
    } else {
        prop::option::of(token()).boxed()
    };
    (
        any_uri(),
        prop_oneof![
            Just(None),
            quoted_display().prop_map(Some),
            prop::collection::vec(token(), 1..3).prop_map(|w| Some((w.join(" "), w.join(" ")))),
        ],
        tag,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(uri, display, tag, addr_spec, extra_param)| {
            // addr-spec form only where it cannot change the meaning: no display
            // name and no URI parameters (they would become header parameters).
            let addr_spec = addr_spec && display.is_none() && uri.params.is_empty();
            let mut text = match (&display, addr_spec) {
                (_, true) => uri.text.clone(),
                (Some((raw, _)), false) => format!("{raw} <{}>", uri.text),
                (None, false) => format!("<{}>", uri.text),
            };
            if let Some(t) = &tag {
                text += &format!(";tag={t}");
            }
            if extra_param {
                text += " ;x-p=\"q;v\"";
            }
            GenAddr {
                text,
                uri,
                display: display.map(|d| d.1),
                tag,
            }
        })
}

fn via_parm() -> impl Strategy<Value = GenVia> {
    (
        prop::sample::select(vec!["UDP", "TCP", "TLS", "SCTP", "WS", "WSS", "X-NEW"]),
        any::<bool>(),
        host(),
        port(),
        "[A-Za-z0-9.!%*_+`'~-]{1,12}",
        prop::collection::vec(
            prop_oneof![
                Just("rport".to_string()),
                (1..=65535u16).prop_map(|p| format!("rport={p}")),
                any::<[u8; 4]>().prop_map(|o| format!("received={}", Ipv4Addr::from(o))),
                any::<u128>().prop_map(|v| format!("received=[{}]", Ipv6Addr::from(v))),
                (0..=255u8).prop_map(|t| format!("ttl={t}")),
                hostname().prop_map(|h| format!("maddr={h}")),
                ("[a-z][a-z0-9-]{0,6}", prop::option::of(token())).prop_map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => k,
                }),
            ],
            0..3,
        ),
        any::<bool>(),
    )
        .prop_map(|(transport, spaced, host, port, branch, extra, fold)| {
            let branch = format!("z9hG4bK{branch}");
            let proto = if spaced {
                format!("SIP / 2.0 / {transport}")
            } else {
                format!("SIP/2.0/{transport}")
            };
            let mut text = format!("{proto} {host}");
            if let Some(p) = port {
                text += &format!(":{p}");
            }
            // Extra parameters must not repeat `branch`: lookups take the first.
            for p in extra
                .iter()
                .filter(|p| !p.eq_ignore_ascii_case("branch") && !p.starts_with("branch="))
            {
                text += &format!(";{p}");
            }
            text += if fold { "\r\n ;branch=" } else { ";branch=" };
            text += &branch;
            GenVia {
                text,
                transport: transport.to_string(),
                host,
                port,
                branch,
            }
        })
}

/// The name of a header as written: long form in some case, or compact.
fn name_for(long: &'static str, compact: Option<&'static str>) -> impl Strategy<Value = String> {
    (0..4u8).prop_map(move |k| match (k, compact) {
        (0, Some(c)) => c.to_string(),
        (1, Some(c)) => c.to_ascii_uppercase(),
        (2, _) => long.to_ascii_lowercase(),
        (3, _) => long.to_ascii_uppercase(),
        _ => long.to_string(),
    })
}

/// `name` + separator + value: `Name: v`, `Name :v`, or with the value folded
/// onto the next line.
fn line(id: HeaderId, name: String, value: String, sep: u8) -> Line {
    let sep = match sep % 4 {
        0 => ": ",
        1 => " :",
        2 => ":\t",
        _ => ":\r\n  ",
    };
    Line {
        id,
        order: 0,
        text: format!("{name}{sep}{value}\r\n"),
        value,
    }
}

/// An unknown header whose value may be folded at its spaces.
fn extension_line() -> impl Strategy<Value = Line> {
    (
        "X-[A-Za-z0-9-]{1,8}",
        prop::collection::vec("[!-~]{1,8}", 1..5),
        prop::collection::vec(any::<bool>(), 5),
        any::<u8>(),
    )
        .prop_map(|(name, words, folds, sep)| {
            let mut value = words[0].clone();
            for (w, fold) in words[1..].iter().zip(&folds) {
                value += if *fold { "\r\n " } else { " " };
                value += w;
            }
            line(HeaderId::Other, name, value, sep)
        })
}

fn request() -> impl Strategy<Value = GenRequest> {
    (
        (
            method(),
            any_uri(),
            prop::collection::vec(prop::collection::vec(via_parm(), 1..4), 1..4),
        ),
        (
            addr(true),
            addr(false),
            "[A-Za-z0-9.!%*_+`'~()<>:\\\\\"/\\[\\]?{}-]{1,16}(@[a-z0-9.]{1,10})?",
        ),
        (
            0..(1u32 << 31),
            prop::option::of(any::<u8>()),
            prop::collection::vec(extension_line(), 0..4),
        ),
        (
            prop::collection::vec(any::<u8>(), 0..64),
            any::<bool>(),
            prop::collection::vec(any::<u8>(), 12),
        ),
        (
            name_for("Via", Some("v")),
            name_for("From", Some("f")),
            name_for("To", Some("t")),
            name_for("Call-ID", Some("i")),
            name_for("CSeq", None),
            name_for("Max-Forwards", None),
            name_for("Content-Length", Some("l")),
            name_for("Content-Type", Some("c")),
        ),
        any::<u64>(),
    )
        .prop_map(
            |(
                (method, ruri, vias),
                (from, to, call_id),
                (cseq, max_forwards, extensions),
                (body, leading_crlf, seps),
                (via_n, from_n, to_n, cid_n, cseq_n, mf_n, cl_n, ct_n),
                shuffle_seed,
            )| {
                let mut lines = Vec::new();
                for (i, group) in vias.iter().enumerate() {
                    let value = group
                        .iter()
                        .map(|v| v.text.as_str())
                        .collect::<Vec<_>>()
                        .join(" ,\r\n ");
                    lines.push(line(HeaderId::Via, via_n.clone(), value, seps[i]));
                }
                lines.push(line(HeaderId::From, from_n, from.text.clone(), seps[4]));
                lines.push(line(HeaderId::To, to_n, to.text.clone(), seps[5]));
                lines.push(line(HeaderId::CallId, cid_n, call_id.clone(), seps[6]));
                lines.push(line(
                    HeaderId::CSeq,
                    cseq_n,
                    format!("{cseq} {method}"),
                    seps[7],
                ));
                if let Some(mf) = max_forwards {
                    lines.push(line(HeaderId::MaxForwards, mf_n, mf.to_string(), seps[8]));
                }
                lines.extend(extensions);
                if !body.is_empty() {
                    lines.push(line(
                        HeaderId::ContentType,
                        ct_n,
                        "application/octet-stream".into(),
                        seps[9],
                    ));
                }
                lines.push(line(
                    HeaderId::ContentLength,
                    cl_n,
                    body.len().to_string(),
                    seps[10],
                ));
                for (i, l) in lines.iter_mut().enumerate() {
                    l.order = i;
                }
                shuffle_keeping_via_order(&mut lines, shuffle_seed);

                let mut bytes = Vec::new();
                if leading_crlf {
                    bytes.extend_from_slice(b"\r\n");
                }
                bytes.extend_from_slice(format!("{method} {} SIP/2.0\r\n", ruri.text).as_bytes());
                for l in &lines {
                    bytes.extend_from_slice(l.text.as_bytes());
                }
                bytes.extend_from_slice(b"\r\n");
                bytes.extend_from_slice(&body);
                GenRequest {
                    method,
                    ruri,
                    vias,
                    from,
                    to,
                    call_id,
                    cseq,
                    max_forwards,
                    lines,
                    body,
                    bytes,
                }
            },
        )
}

/// Shuffles the header lines, then puts the Via lines back in their order
/// (in the slots they landed in), so the first Via stays the top one.
fn shuffle_keeping_via_order(lines: &mut [Line], mut seed: u64) {
    for i in (1..lines.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lines.swap(i, (seed >> 33) as usize % (i + 1));
    }
    let slots: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].id == HeaderId::Via)
        .collect();
    let mut vias: Vec<Line> = slots.iter().map(|&i| lines[i].clone()).collect();
    vias.sort_by_key(|l| l.order);
    for (slot, l) in slots.into_iter().zip(vias) {
        lines[slot] = l;
    }
}

fn parse(bytes: &[u8], framing: Framing) -> Result<Message, sipr::sip::ParseError> {
    Message::parse(Bytes::copy_from_slice(bytes), framing, &Limits::default())
}

fn check_accessors(g: &GenRequest, m: &Message) {
    assert!(m.is_request());
    assert_eq!(m.method_str(), g.method);
    assert_eq!(m.request_uri_str(), Some(g.ruri.text.as_str()));
    let u = m.request_uri().expect("Request-URI");
    assert_eq!(u.scheme, g.ruri.scheme);
    assert_eq!(u.user, g.ruri.user.as_deref());
    if u.is_sip() {
        assert_eq!(u.host, g.ruri.host);
        assert_eq!(u.port, g.ruri.port);
    }
    assert_eq!(u.params, g.ruri.params);

    let vias = m.vias();
    let want: Vec<&GenVia> = g.vias.iter().flatten().collect();
    assert_eq!(vias.len(), want.len());
    for (v, w) in vias.iter().zip(&want) {
        assert_eq!(v.transport, w.transport);
        assert_eq!(v.host, w.host);
        assert_eq!(v.port, w.port);
        assert_eq!(v.branch(), Some(w.branch.as_str()));
    }
    assert_eq!(m.top_via().host, want[0].host);
    assert_eq!(m.branch(), Some(want[0].branch.as_str()));

    for (na, ga) in [(m.from(), &g.from), (m.to(), &g.to)] {
        assert_eq!(na.tag(), ga.tag.as_deref());
        assert_eq!(na.display_unquoted(), ga.display);
        assert_eq!(na.uri.raw, ga.uri.text);
        assert_eq!(na.uri.user, ga.uri.user.as_deref());
    }
    assert_eq!(m.from_tag(), g.from.tag.as_deref());
    assert_eq!(m.to_tag(), g.to.tag.as_deref());
    assert_eq!(m.call_id(), g.call_id);
    assert_eq!(m.cseq(), g.cseq);
    assert_eq!(m.cseq_method(), g.method);
    assert_eq!(m.max_forwards(), g.max_forwards);
    assert_eq!(m.body(), &g.body[..]);

    // Every header line, in order, with its value as written (folds kept).
    assert_eq!(m.headers().len(), g.lines.len());
    for (h, l) in m.headers().iter().zip(&g.lines) {
        assert_eq!(h.id, l.id);
        assert_eq!(m.header_value(h), l.value);
        assert_eq!(&m.bytes()[h.line.range()], l.text.as_bytes());
    }
}

/// The header lines of `m` that `build_forward` copies untouched.
fn untouched_lines(m: &Message) -> Vec<Vec<u8>> {
    m.headers()
        .iter()
        .filter(|h| !matches!(h.id, HeaderId::MaxForwards | HeaderId::ContentLength))
        .map(|h| m.bytes()[h.line.range()].to_vec())
        .collect()
}

fn check_forward(g: &GenRequest, m: &Message) {
    let edits = ForwardEdits {
        via: common::OUR_VIA,
        ..Default::default()
    };
    let out = build_forward(m, &edits);
    let f = parse(&out, Framing::Stream).unwrap_or_else(|e| {
        panic!(
            "forwarded request does not parse ({e}):\n{}",
            String::from_utf8_lossy(&out)
        )
    });
    assert_eq!(f.method_str(), g.method);
    assert_eq!(f.request_uri_str(), m.request_uri_str());
    assert_eq!(f.call_id(), g.call_id);
    assert_eq!(f.cseq(), g.cseq);
    assert_eq!(f.cseq_method(), g.method);
    assert_eq!(f.from_tag(), g.from.tag.as_deref());
    assert_eq!(f.to_tag(), g.to.tag.as_deref());
    assert_eq!(
        f.max_forwards(),
        Some(g.max_forwards.map_or(70, |n| n.saturating_sub(1)))
    );
    assert_eq!(f.body(), &g.body[..]);
    let vias = f.vias();
    assert_eq!(vias.len(), m.vias().len() + 1);
    assert_eq!(vias[0].raw, common::OUR_VIA);
    assert_eq!(&vias[1..], &m.vias()[..]);
    // Our Via line first; then every other line byte-exact and in order.
    let mut got = untouched_lines(&f);
    assert_eq!(
        got.remove(0),
        format!("Via: {}\r\n", common::OUR_VIA).into_bytes()
    );
    assert_eq!(got, untouched_lines(m));
}

fn check_response(g: &GenRequest, m: &Message) {
    let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 5060);
    let out = build_response(m, Some(src), 200, None, Some("ourtag"), &[], b"");
    let r = parse(&out, Framing::Stream).unwrap_or_else(|e| {
        panic!(
            "response does not parse ({e}):\n{}",
            String::from_utf8_lossy(&out)
        )
    });
    assert_eq!(r.status(), Some(200));
    assert_eq!(r.call_id(), g.call_id);
    assert_eq!(r.cseq(), g.cseq);
    assert_eq!(r.cseq_method(), g.method);
    assert_eq!(r.from_tag(), g.from.tag.as_deref());
    assert_eq!(r.to_tag(), Some(g.to.tag.as_deref().unwrap_or("ourtag")));
    assert_eq!(r.vias().len(), m.vias().len());
    assert_eq!(r.branch(), m.branch());
}

/// On a stream the whole request is one frame (after a leading CRLF keep-alive).
fn check_stream_framing(g: &GenRequest) {
    let limits = Limits::default();
    let mut rest = &g.bytes[..];
    if let StreamFrame::KeepAlive {
        consumed,
        pong: false,
    } = frame_stream(rest, &limits)
    {
        rest = &rest[consumed..];
    }
    match frame_stream(rest, &limits) {
        StreamFrame::Message(n) => assert_eq!(n, rest.len()),
        other => panic!(
            "stream framing gave {other:?} for:\n{}",
            String::from_utf8_lossy(&g.bytes)
        ),
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Insert(usize, u8),
    Delete(usize),
    Replace(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes that matter to the grammar come up more often than chance would.
    let byte = prop_oneof![
        2 => prop::sample::select(b"\r\n \t:;,<>\"\\@=/[]%\0\x7f".to_vec()),
        1 => any::<u8>(),
    ];
    prop_oneof![
        1 => any::<usize>().prop_map(Mutation::Truncate),
        3 => (any::<usize>(), byte.clone()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => any::<usize>().prop_map(Mutation::Delete),
        3 => (any::<usize>(), byte).prop_map(|(i, b)| Mutation::Replace(i, b)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len();
    match *m {
        Mutation::Truncate(i) => bytes.truncate(i % (n + 1)),
        Mutation::Insert(i, b) => bytes.insert(i % (n + 1), b),
        Mutation::Delete(i) if n > 0 => {
            bytes.remove(i % n);
        }
        Mutation::Replace(i, b) if n > 0 => bytes[i % n] = b,
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn generated_requests_round_trip(g in request()) {
        for framing in [Framing::Datagram, Framing::Stream] {
            let m = parse(&g.bytes, framing).unwrap_or_else(|e| {
                panic!("generated request does not parse ({e}):\n{}", String::from_utf8_lossy(&g.bytes))
            });
            check_accessors(&g, &m);
            check_forward(&g, &m);
            check_response(&g, &m);
        }
        check_stream_framing(&g);
    }

    #[test]
    fn mutated_requests_never_panic(g in request(), muts in prop::collection::vec(mutation(), 1..6)) {
        let mut bytes = g.bytes.clone();
        for m in &muts {
            apply(&mut bytes, m);
        }
        let parsed = common::parse_both(&bytes);
        for m in parsed.iter().flatten() {
            common::touch_message(m);
            common::check_writers(m);
        }
        common::check_error_response(&bytes, parsed.iter().flatten().next());
        let limits = Limits::default();
        let mut rest = &bytes[..];
        while let StreamFrame::KeepAlive { consumed: n, .. } | StreamFrame::Message(n) = frame_stream(rest, &limits) {
            if let Ok(m) = Message::parse(Bytes::copy_from_slice(&rest[..n]), Framing::Stream, &limits) {
                common::touch_message(&m);
            }
            rest = &rest[n..];
        }
    }
}
