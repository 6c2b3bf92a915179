//! Parser and writer micro-benchmarks (criterion).
//!
//!     cargo bench --bench parser                 # full run (~1 min)
//!     cargo bench --bench parser -- --quick      # rough figures, a few seconds
//!
//! Throughput is reported per message (`elem/s`); the time per iteration is
//! the cost of one message. Messages: a typical INVITE with SDP (~900 bytes,
//! what a softphone sends through one proxy), the 200 OK answering it, and
//! RFC 4475 §3.1.1.1 "wsinv" (folded lines, odd whitespace, escapes).

use std::hint::black_box;
use std::net::SocketAddr;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sipr::sip::write::{build_forward, strip_top_via, ForwardEdits};
use sipr::sip::{Framing, Limits, Message};

/// A typical INVITE as a UA sends it to its outbound proxy (Route to the
/// proxy, SDP offer with three codecs). Line ends are CRLF.
const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
Route: <sip:proxy.atlanta.example.com;lr>\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@192.0.2.10:5060;transport=udp>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY\r\n\
Supported: replaces, timer, 100rel\r\n\
User-Agent: ExamplePhone/4.2.1\r\n\
Session-Expires: 1800\r\n\
Content-Type: application/sdp\r\n\
Content-Length: CLEN\r\n\
\r\n";

const SDP: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 9 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

/// The 200 OK to the INVITE, as it comes back to the proxy: two Vias (ours
/// on top), Record-Route, SDP answer.
const OK200: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK2d4790.1;received=198.51.100.1\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport=5060;received=192.0.2.10\r\n\
Record-Route: <sip:198.51.100.1;lr>\r\n\
To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:bob@192.0.2.4:5060>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n\
Content-Type: application/sdp\r\n\
Content-Length: CLEN\r\n\
\r\n";

const SDP_ANSWER: &str = "v=0\r\n\
o=bob 2808844564 2808844564 IN IP4 192.0.2.4\r\n\
s=-\r\n\
c=IN IP4 192.0.2.4\r\n\
t=0 0\r\n\
m=audio 3456 RTP/AVP 0 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n";

fn with_body(head: &str, body: &str) -> Bytes {
    let mut s = head.replace("CLEN", &body.len().to_string());
    s.push_str(body);
    Bytes::from(s)
}

fn wsinv() -> Bytes {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/rust/tests/fixtures/rfc4475/wsinv.dat"
    );
    Bytes::from(std::fs::read(path).expect("read wsinv.dat"))
}

fn parse(buf: &Bytes, limits: &Limits) -> Message {
    Message::parse(buf.clone(), Framing::Datagram, limits).expect("benchmark message parses")
}

fn bench_parse(c: &mut Criterion) {
    let limits = Limits::default();
    let msgs = [
        ("invite", with_body(INVITE, SDP)),
        ("200ok", with_body(OK200, SDP_ANSWER)),
        ("wsinv", wsinv()),
    ];
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    for (name, buf) in &msgs {
        // Sanity: the fixture parses (fail loudly, not benchmark an error path).
        let _ = parse(buf, &limits);
        g.bench_function(format!("{name}_{}B", buf.len()), |b| {
            b.iter(|| Message::parse(black_box(buf.clone()), Framing::Datagram, &limits))
        });
    }
    g.finish();
}

fn bench_write(c: &mut Criterion) {
    let limits = Limits::default();
    let invite = parse(&with_body(INVITE, SDP), &limits);
    let ok = parse(&with_body(OK200, SDP_ANSWER), &limits);
    let source: SocketAddr = "192.0.2.10:5060".parse().unwrap();
    let via = "SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK0123456789abcdef";
    let mut g = c.benchmark_group("write");
    g.throughput(Throughput::Elements(1));
    // What the stateless proxy does per forwarded request: our Via on top,
    // rport/received on the previous hop's Via, Max-Forwards decremented,
    // first Route popped (it names us).
    g.bench_function("build_forward_invite", |b| {
        b.iter(|| {
            build_forward(
                black_box(&invite),
                &ForwardEdits {
                    request_uri: None,
                    via,
                    source: Some(source),
                    force_rport: false,
                    pop_routes: 1,
                    record_route: None,
                    header_edits: &[],
                },
            )
        })
    });
    g.bench_function("build_forward_invite_rr", |b| {
        b.iter(|| {
            build_forward(
                black_box(&invite),
                &ForwardEdits {
                    request_uri: Some("sip:bob@192.0.2.4:5060"),
                    via,
                    source: Some(source),
                    force_rport: false,
                    pop_routes: 1,
                    record_route: Some("<sip:198.51.100.1;lr>"),
                    header_edits: &[],
                },
            )
        })
    });
    // What a relayed response costs: drop our Via.
    g.bench_function("strip_top_via_200ok", |b| {
        b.iter(|| strip_top_via(black_box(&ok)))
    });
    g.finish();

    // Whole relay step of a response as the core does it: parse + strip.
    let ok_bytes = with_body(OK200, SDP_ANSWER);
    let mut g = c.benchmark_group("relay");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse+strip_top_via_200ok", |b| {
        b.iter(|| {
            let m =
                Message::parse(black_box(ok_bytes.clone()), Framing::Datagram, &limits).unwrap();
            strip_top_via(&m)
        })
    });
    g.finish();
}

criterion_group!(benches, bench_parse, bench_write);
criterion_main!(benches);
