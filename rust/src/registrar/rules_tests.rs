//! The §10.3 rules, with no sockets and no Python: each case runs against
//! the memory store through `save` and against a copy of the bindings
//! through `decide` (the Python-store entry), which must agree.

use bytes::Bytes;

use super::rules::*;
use super::store::memory::MemoryStore;
use super::store::Store;
use super::Binding;
use crate::sip::{Framing, Limits, Message};
use crate::transport::{Source, Transport};

pub fn register(cseq: u32, call_id: &str, extra: &[&str]) -> Message {
    register_as("REGISTER", "alice@Example.COM", cseq, call_id, extra)
}

pub fn register_as(method: &str, to: &str, cseq: u32, call_id: &str, extra: &[&str]) -> Message {
    let mut text = format!(
        "{method} sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK{cseq}{call_id}\r\n\
         From: <sip:alice@example.com>;tag=1\r\n\
         To: <sip:{to}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n"
    );
    for h in extra {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    Message::parse(Bytes::from(text), Framing::Datagram, &Limits::default()).unwrap()
}

pub fn source() -> Source {
    Source {
        transport: Transport::Udp,
        addr: "192.0.2.9:5060".parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
        conn: None,
    }
}

fn policy() -> Policy {
    Policy {
        domains: Some(vec!["example.com".into()]),
        min_expires: 30,
        max_expires: 3600,
        default_expires: 600,
        max_contacts: 3,
    }
}

const NOW: f64 = 1_000_000.0;

/// `save` against `loc`, checked against `decide` on the bindings it had.
fn save_msg(loc: &MemoryStore, m: &Message, src: &Source) -> Reply {
    let before = loc.bindings("alice@example.com", NOW).unwrap();
    let (expected, upsert, delete) = decide(m, src, &policy(), before.clone(), NOW);
    let got = save(m, src, &policy(), loc, NOW).unwrap();
    if target(m, &policy()).is_ok() {
        assert_eq!(got, expected, "decide and save disagree");
        let mirror = MemoryStore::default();
        mirror.update("alice@example.com", before, &[]).unwrap();
        mirror.update("alice@example.com", upsert, &delete).unwrap();
        assert_eq!(
            mirror.bindings("alice@example.com", NOW).unwrap(),
            loc.bindings("alice@example.com", NOW).unwrap(),
            "decide's changes and save's result differ"
        );
    }
    got
}

fn run(loc: &MemoryStore, cseq: u32, call_id: &str, extra: &[&str]) -> Reply {
    let m = register(cseq, call_id, extra);
    let (aor, _) = aor_of(&m).unwrap();
    assert_eq!(aor, "alice@example.com");
    save_msg(loc, &m, &source())
}

fn status(o: &Reply) -> u16 {
    o.status
}

fn contacts(o: &Reply) -> Vec<String> {
    o.headers
        .iter()
        .filter(|(n, _)| n == "Contact")
        .map(|(_, v)| v.clone())
        .collect()
}

fn stored(loc: &MemoryStore) -> Vec<Binding> {
    loc.bindings("alice@example.com", NOW).unwrap()
}

#[test]
fn several_contacts_expires_and_q() {
    let loc = MemoryStore::default();
    let o = run(
        &loc,
        1,
        "c1",
        &[
            "Contact: <sip:a@192.0.2.1>, <sip:b@192.0.2.2>;expires=300",
            "m: <sip:c@192.0.2.3>;q=0.5",
            "Expires: 100000",
        ],
    );
    assert_eq!(status(&o), 200);
    assert_eq!(
        contacts(&o),
        vec![
            "<sip:a@192.0.2.1>;expires=3600;q=1",
            "<sip:b@192.0.2.2>;expires=300;q=1",
            "<sip:c@192.0.2.3>;expires=3600;q=0.5",
        ]
    );
    let saved = stored(&loc);
    assert_eq!(saved.len(), 3);
    assert_eq!(saved[2].q, 0.5);
    assert_eq!(saved[0].received, None, "Via matches the source: no NAT");
    // A query (no Contact) lists the same, nothing changes.
    assert_eq!(contacts(&run(&loc, 2, "c1", &[])).len(), 3);
    // More than max_contacts: 403, nothing stored.
    let o = run(&loc, 3, "c1", &["Contact: <sip:d@192.0.2.4>"]);
    assert_eq!(status(&o), 403);
    assert_eq!(stored(&loc).len(), 3);
}

#[test]
fn interval_too_brief_and_malformed_values() {
    let loc = MemoryStore::default();
    let o = run(&loc, 1, "c", &["Contact: <sip:a@h>", "Expires: 10"]);
    assert_eq!(o.status, 423);
    assert_eq!(o.headers, vec![("Min-Expires".into(), "30".into())]);
    for bad in ["soon", "-1", "1.5"] {
        let h = format!("Expires: {bad}");
        assert_eq!(status(&run(&loc, 2, "c", &["Contact: <sip:a@h>", &h])), 400);
        let c = format!("Contact: <sip:a@h>;expires={bad}");
        assert_eq!(status(&run(&loc, 2, "c", &[&c])), 400);
    }
    for bad in ["2", "-0.1", "x", "nan"] {
        let c = format!("Contact: <sip:a@h>;q={bad}");
        assert_eq!(status(&run(&loc, 2, "c", &[&c])), 400, "{bad}");
    }
    assert!(loc.is_empty());
}

#[test]
fn star_and_ordering() {
    let loc = MemoryStore::default();
    run(&loc, 5, "c", &["Contact: <sip:a@h>, <sip:b@h>"]);
    for (extra, expected) in [
        (vec!["Contact: *"], 400),
        (vec!["Contact: *", "Expires: 5"], 400),
        (vec!["Contact: *", "Contact: <sip:c@h>", "Expires: 0"], 400),
        (vec!["Contact: *", "Expires: 0"], 500), // CSeq 5 is not above 5
    ] {
        assert_eq!(status(&run(&loc, 5, "c", &extra)), expected, "{extra:?}");
    }
    assert_eq!(status(&run(&loc, 4, "c", &["Contact: <sip:a@h>"])), 500);
    assert_eq!(stored(&loc).len(), 2);
    // Another Call-ID may update with any CSeq; expires=0 removes one.
    let o = run(&loc, 1, "other", &["Contact: <sip:a@h>;expires=0"]);
    assert_eq!(contacts(&o), vec!["<sip:b@h>;expires=600;q=1"]);
    let o = run(&loc, 6, "c", &["Contact: *", "Expires: 0"]);
    assert_eq!((status(&o), contacts(&o).len()), (200, 0));
    assert!(loc.is_empty());
}

#[test]
fn nat_path_and_instance() {
    let loc = MemoryStore::default();
    let text = "REGISTER sip:example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bKn\r\n\
        From: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n\
        Call-ID: n\r\nCSeq: 1 REGISTER\r\n\
        Contact: <sip:a@10.0.0.7>;+sip.instance=\"<urn:x>\"\r\n\
        Path: <sip:e1;lr>, <sip:e2;lr>\r\nSupported: timer, path\r\nUser-Agent: UA/1\r\n\
        Content-Length: 0\r\n\r\n";
    let m = Message::parse(Bytes::from(text), Framing::Datagram, &Limits::default()).unwrap();
    let o = save_msg(&loc, &m, &source());
    let paths: Vec<&str> = o
        .headers
        .iter()
        .filter(|(n, _)| n == "Path")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(paths, ["<sip:e1;lr>", "<sip:e2;lr>"]);
    let b = &stored(&loc)[0];
    assert_eq!(
        b.received.as_deref(),
        Some("sip:192.0.2.9:5060;transport=udp")
    );
    assert_eq!(b.path, ["<sip:e1;lr>", "<sip:e2;lr>"]);
    assert_eq!(b.instance.as_deref(), Some("<urn:x>"));
    assert_eq!(b.user_agent.as_deref(), Some("UA/1"));
}

#[test]
fn dates_and_q_format() {
    assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(http_date(1_795_794_885), "Fri, 27 Nov 2026 15:54:45 GMT");
    assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    assert_eq!(format_q(1.0), "1");
    assert_eq!(format_q(0.5), "0.5");
    assert_eq!(format_q(0.0), "0");
    assert_eq!(format_q(0.123), "0.123");
}

#[test]
fn stream_registration_keeps_its_connection_as_received() {
    // Via matches the source, so over UDP this is not NAT; over a connection
    // the UA is reached through that connection all the same (its flow).
    for (transport, want) in [
        (Transport::Udp, None),
        (Transport::Tcp, Some("sip:192.0.2.9:5060;transport=tcp")),
        (Transport::Tls, Some("sip:192.0.2.9:5060;transport=tls")),
        (Transport::Ws, Some("sip:192.0.2.9:5060;transport=ws")),
    ] {
        let loc = MemoryStore::default();
        let m = register(1, "flow", &["Contact: <sip:alice@192.0.2.9:5060>"]);
        let src = Source {
            transport,
            ..source()
        };
        let o = save_msg(&loc, &m, &src);
        assert_eq!(status(&o), 200, "{transport:?}: {o:?}");
        let b = &stored(&loc)[0];
        assert_eq!(b.received.as_deref(), want, "{transport:?}");
    }
}

#[test]
fn not_a_register_not_sip_or_not_our_domain() {
    let loc = MemoryStore::default();
    let m = register_as("OPTIONS", "alice@example.com", 1, "t", &[]);
    let r = save_msg(&loc, &m, &source());
    assert_eq!(r.status, 405);
    assert_eq!(r.headers, vec![("Allow".into(), "REGISTER".into())]);
    let m = register_as(
        "REGISTER",
        "alice@other.net",
        1,
        "t",
        &["Contact: <sip:a@h>"],
    );
    assert_eq!(save_msg(&loc, &m, &source()).status, 404);
    let text = String::from_utf8_lossy(register(1, "t", &[]).as_bytes())
        .replace("To: <sip:alice@Example.COM>", "To: <tel:+15551234>");
    let m = Message::parse(Bytes::from(text), Framing::Datagram, &Limits::default()).unwrap();
    let r = save_msg(&loc, &m, &source());
    assert_eq!(
        (r.status, r.reason.as_deref()),
        (404, Some("Not Found (AoR must be a SIP URI)"))
    );
    assert!(loc.is_empty());
    assert_eq!(aor_key(None, "EXAMPLE.com"), "example.com");
    assert!(Policy::default().serves("anything"));
}

#[test]
fn display_names_and_bare_uris_are_read() {
    let loc = MemoryStore::default();
    let r = run(
        &loc,
        2,
        "c",
        &["Contact: \"A, B\" <sip:a@h;transport=tcp>;expires=60;q=0.7"],
    );
    assert_eq!(
        contacts(&r),
        vec!["<sip:a@h;transport=tcp>;expires=60;q=0.7"]
    );
    let r = run(&loc, 3, "c", &["Contact: sip:b@h;expires=90"]);
    assert_eq!(contacts(&r)[0], "<sip:b@h>;expires=90;q=1", "best q first");
}

#[test]
fn a_refresh_rewrites_and_a_query_writes_nothing() {
    let loc = MemoryStore::default();
    run(
        &loc,
        1,
        "c",
        &["Contact: <sip:a@h>;expires=60", "Contact: <sip:b@h>"],
    );
    let m = register(2, "c", &[]);
    let (r, upsert, delete) = decide(&m, &source(), &policy(), stored(&loc), NOW);
    assert_eq!((r.status, upsert.len(), delete.len()), (200, 0, 0));
    let m = register(
        3,
        "c",
        &[
            "Contact: <sip:a@h>;expires=0",
            "Contact: <sip:b@h>;expires=100",
        ],
    );
    let (_, upsert, delete) = decide(&m, &source(), &policy(), stored(&loc), NOW);
    assert_eq!(delete, vec!["sip:a@h".to_string()]);
    assert_eq!((upsert.len(), upsert[0].remaining(NOW)), (1, 100));
    // A refused request changes nothing.
    let m = register(3, "c", &["Expires: x"]);
    let (r, upsert, delete) = decide(&m, &source(), &policy(), stored(&loc), NOW);
    assert_eq!((r.status, upsert.len(), delete.len()), (400, 0, 0));
}
