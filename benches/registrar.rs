//! Native registrar micro-benchmarks (criterion): the Rust work per REGISTER
//! on the native path, without sockets (parse, §10.3 save against the
//! location table, the 200 written), plain and with digest (MD5 verify,
//! nonce-count, save), and a 401 challenge.
//!
//!     cargo bench --bench registrar -- --quick

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use sipr::registrar::digest::{Algorithm, NonceCounts, Nonces};
use sipr::registrar::store::memory::MemoryStore;
use sipr::registrar::{unix_now, DigestRules, Ha1Map, Outcome, Policy, Registrar, Reply, Users};
use sipr::sip::write::build_response;
use sipr::sip::{Framing, Limits, Message};
use sipr::transport::{Source, Transport};

fn register(user: &str, extra: &str) -> Message {
    let text = format!(
        "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1-0\r\n\
         From: <sip:{user}@127.0.0.1>;tag=1SIPpTag01\r\n\
         To: <sip:{user}@127.0.0.1>\r\n\
         Call-ID: 1-1@127.0.0.1\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:{user}@127.0.0.1:5070>\r\n\
         Max-Forwards: 70\r\n\
         Expires: 3600\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    );
    Message::parse(Bytes::from(text), Framing::Datagram, &Limits::default()).unwrap()
}

fn registrar(auth: bool) -> Registrar {
    let mut ha1 = HashMap::default();
    for i in 0..200_000 {
        let user = format!("user{i}");
        let md5 = Algorithm::Md5.hex(&[format!("{user}:sipr:secret").as_bytes()]);
        ha1.insert(user, Ha1Map::from([("MD5".to_string(), md5)]));
    }
    let rules = DigestRules {
        nonces: Nonces::new(b"secret", "sipr", 300.0),
        algorithms: vec![Algorithm::Md5],
        check_identity: true,
        replay: Arc::new(NonceCounts::new(100_000)),
    };
    Registrar {
        store: Arc::new(MemoryStore::default()),
        policy: Policy::default(),
        auth: auth.then(|| (Arc::new(rules), Users::Table(ha1))),
    }
}

fn source() -> Source {
    Source {
        transport: Transport::Udp,
        addr: "127.0.0.1:5070".parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
        conn: None,
    }
}

fn answer(m: &Message, o: Outcome) -> Vec<u8> {
    let Outcome::Reply(Reply {
        status,
        reason,
        headers,
    }) = o
    else {
        panic!("undecided")
    };
    build_response(
        m,
        Some(source().addr),
        status,
        reason.as_deref(),
        Some("tag"),
        &headers,
        b"",
    )
}

fn bench(c: &mut Criterion) {
    let plain = registrar(false);
    let raw = register("user1", "").bytes().clone();
    c.bench_function("register_plain_parse_save_reply", |b| {
        b.iter(|| {
            let m = Message::parse(raw.clone(), Framing::Datagram, &Limits::default()).unwrap();
            let o = plain.decide(&m, &source(), unix_now());
            black_box(answer(&m, o))
        })
    });
    let authed = registrar(true);
    c.bench_function("register_challenge_401", |b| {
        b.iter(|| {
            let m = Message::parse(raw.clone(), Framing::Datagram, &Limits::default()).unwrap();
            let o = authed.decide(&m, &source(), unix_now());
            black_box(answer(&m, o))
        })
    });
    let (a, _) = authed.auth.as_ref().unwrap();
    let nonce = a.nonces.issue((unix_now() * 1000.0) as u64);
    let ha1 = Algorithm::Md5.hex(&[b"user1:sipr:secret"]);
    let ha2 = Algorithm::Md5.hex(&[b"REGISTER:sip:127.0.0.1:5060"]);
    let mut nc = 0u64;
    let mut cseq = 1u32;
    c.bench_function("register_digest_verify_save_reply", |b| {
        b.iter(|| {
            nc += 1;
            cseq += 1;
            let ncs = format!("{nc:08x}");
            let resp = Algorithm::Md5.hex(&[format!("{ha1}:{nonce}:{ncs}:cn:auth:{ha2}").as_bytes()]);
            let hdr = format!(
                "Authorization: Digest username=\"user1\", realm=\"sipr\", nonce=\"{nonce}\", \
                 uri=\"sip:127.0.0.1:5060\", response=\"{resp}\", algorithm=MD5, qop=auth, nc={ncs}, cnonce=\"cn\"\r\n"
            );
            let text = String::from_utf8_lossy(&raw).replace("CSeq: 1 ", &format!("CSeq: {cseq} ")).replace("Content-Length", &format!("{hdr}Content-Length"));
            let m = Message::parse(Bytes::from(text), Framing::Datagram, &Limits::default()).unwrap();
            let o = authed.decide(&m, &source(), unix_now());
            black_box(answer(&m, o))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
