//! Relay rounds and the best response (RFC 3261 §16.6, §16.7).

use super::*;
use crate::sip::HeaderId;

#[test]
fn provisionals_and_the_2xx_go_upstream_at_once() {
    let mut rig = Rig::new();
    let a = Peer::new();
    let txn = rig.incoming("INVITE", "z9hG4bKr1", "");
    rig.relay_to(txn, &[&a], 1).unwrap();
    assert_eq!(lines(&rig.upstream), ["SIP/2.0 100 Trying"]);
    let sent = a.one();
    let fwd = parse(&sent);
    assert_eq!(fwd.vias().len(), 2, "our Via on top of the caller's");
    assert!(fwd
        .branch()
        .unwrap()
        .starts_with(super::super::route::BRANCH_PREFIX));
    assert_eq!(fwd.max_forwards(), Some(69));
    assert!(
        fwd.header(HeaderId::RecordRoute).is_some(),
        "an INVITE is record-routed"
    );
    rig.answer(&sent, 180, &[]);
    let up = rig.upstream.one_message();
    assert_eq!(up.status(), Some(180));
    assert_eq!(up.vias().len(), 1, "our Via is removed");
    assert_eq!(up.branch(), Some("z9hG4bKr1"));
    rig.answer(&sent, 200, &[]);
    assert_eq!(lines(&rig.upstream), ["SIP/2.0 200 OK"]);
    assert_eq!(rig.relay_results(), [(1, 200)]);
    assert_eq!(rig.txns.servers[&txn].final_status, Some(200));
    // A retransmitted 2xx passes up too (§16.7 step 5).
    rig.answer(&sent, 200, &[]);
    assert_eq!(lines(&rig.upstream), ["SIP/2.0 200 OK"]);
    assert!(rig.relay_results().is_empty());
    assert_eq!(rig.proxy.contexts(), 1);
}

/// Forks to one peer per status, they answer in order, the handler
/// returns: what the caller gets.
fn best_of(statuses: &[u16]) -> (u16, String) {
    let mut rig = Rig::new();
    let peers: Vec<Peer> = statuses.iter().map(|_| Peer::new()).collect();
    let txn = rig.incoming("INVITE", "z9hG4bKb1", "");
    rig.relay_to(txn, &peers.iter().collect::<Vec<_>>(), 1)
        .unwrap();
    rig.upstream.take();
    for (p, &status) in peers.iter().zip(statuses) {
        let sent = p.one();
        rig.answer(&sent, status, &[]);
        if status < 600 {
            p.take(); // ACK
        }
    }
    let chosen = rig.relay_results();
    assert_eq!(chosen.len(), 1);
    assert!(
        lines(&rig.upstream).is_empty(),
        "held while the handler runs"
    );
    rig.finish(txn);
    let up = rig.upstream.one();
    assert_eq!(
        parse(&up).status(),
        Some(chosen[0].1).map(|s| if s == 503 { 500 } else { s })
    );
    (chosen[0].1, first_line(&up).to_string())
}

#[test]
fn the_best_answer_follows_16_7() {
    assert_eq!(best_of(&[486, 404]).0, 486, "same class: the first");
    assert_eq!(best_of(&[503, 404, 480]).0, 404, "the lowest class");
    assert_eq!(best_of(&[302, 486]).0, 302);
    assert_eq!(
        best_of(&[404, 407, 500]).0,
        407,
        "a challenge in the class wins"
    );
    // A 503 goes upstream as 500: this proxy is not the one overloaded.
    assert_eq!(
        best_of(&[503]),
        (503, "SIP/2.0 500 Server Internal Error".into())
    );
}

#[test]
fn a_6xx_cancels_the_other_branches_and_wins() {
    let mut rig = Rig::new();
    let (a, b) = (Peer::new(), Peer::new());
    let txn = rig.incoming("INVITE", "z9hG4bKs1", "");
    rig.relay_to(txn, &[&a, &b], 1).unwrap();
    rig.finish(txn);
    let (to_a, to_b) = (a.one(), b.one());
    rig.answer(&to_b, 180, &[]);
    rig.upstream.take();
    rig.answer(&to_a, 603, &[]);
    assert_eq!(lines(&a), ["ACK sip:bob@127.0.0.1 SIP/2.0"]);
    assert_eq!(lines(&b), ["CANCEL sip:bob@127.0.0.1 SIP/2.0"]);
    rig.upstream.nothing();
    rig.answer(&to_b, 487, &[]);
    assert_eq!(lines(&rig.upstream), ["SIP/2.0 603 Decline"]);
    assert_eq!(rig.relay_results(), [(1, 603)]);
}

#[test]
fn a_2xx_cancels_the_other_branches_and_every_2xx_goes_up() {
    let mut rig = Rig::new();
    let (a, b) = (Peer::new(), Peer::new());
    let txn = rig.incoming("INVITE", "z9hG4bKs2", "");
    rig.relay_to(txn, &[&a, &b], 1).unwrap();
    let (to_a, to_b) = (a.one(), b.one());
    rig.answer(&to_a, 180, &[]);
    rig.answer(&to_b, 180, &[]);
    rig.upstream.take();
    rig.answer(&to_a, 200, &[]);
    assert_eq!(lines(&rig.upstream), ["SIP/2.0 200 OK"]);
    assert_eq!(lines(&b), ["CANCEL sip:bob@127.0.0.1 SIP/2.0"]);
    // B answered before its CANCEL arrived: its 2xx goes up as well.
    rig.answer(&to_b, 200, &[]);
    assert_eq!(lines(&rig.upstream), ["SIP/2.0 200 OK"]);
    assert_eq!(rig.relay_results(), [(1, 200)], "one result per round");
}

#[test]
fn challenges_of_every_branch_are_merged() {
    let mut rig = Rig::new();
    let (a, b) = (Peer::new(), Peer::new());
    let txn = rig.incoming("INVITE", "z9hG4bKc1", "");
    rig.relay_to(txn, &[&a, &b], 1).unwrap();
    rig.finish(txn);
    rig.upstream.take();
    let www = (
        "WWW-Authenticate",
        "Digest realm=\"a.example\", nonce=\"1\"",
    );
    let proxy = (
        "Proxy-Authenticate",
        "Digest realm=\"b.example\", nonce=\"2\"",
    );
    rig.answer(&a.one(), 401, &[www]);
    rig.answer(&b.one(), 407, &[proxy]);
    let up = rig.upstream.one_message();
    assert_eq!(up.status(), Some(401));
    assert_eq!(up.header(HeaderId::WwwAuthenticate), Some(www.1));
    assert_eq!(up.header(HeaderId::ProxyAuthenticate), Some(proxy.1));
}

#[test]
fn a_non_2xx_waits_for_the_handler_and_a_new_round_fails_over() {
    let mut rig = Rig::new();
    let (a, b) = (Peer::new(), Peer::new());
    let txn = rig.incoming("INVITE", "z9hG4bKf1", "");
    rig.relay_to(txn, &[&a], 1).unwrap();
    rig.upstream.take();
    rig.answer(&a.one(), 503, &[]);
    assert_eq!(rig.relay_results(), [(1, 503)]);
    rig.upstream.nothing();
    // The handler's code after `await` relays again: a new round.
    rig.relay_to(txn, &[&b], 2).unwrap();
    rig.upstream.nothing();
    let sent = b.one();
    rig.answer(&sent, 200, &[]);
    assert_eq!(lines(&rig.upstream), ["SIP/2.0 200 OK"]);
    assert_eq!(rig.relay_results(), [(2, 200)]);
    rig.finish(txn);
    rig.upstream.nothing();
}

#[test]
fn a_held_answer_goes_up_when_the_handler_returns() {
    let mut rig = Rig::new();
    let a = Peer::new();
    let txn = rig.incoming("INVITE", "z9hG4bKf2", "");
    rig.relay_to(txn, &[&a], 1).unwrap();
    rig.upstream.take();
    rig.answer(&a.one(), 486, &[]);
    rig.upstream.nothing();
    let held = rig.final_of(1).unwrap();
    assert_eq!(held.status, 486);
    assert_eq!(
        held.message.vias().len(),
        2,
        "the application sees it as received"
    );
    rig.finish(txn);
    assert_eq!(lines(&rig.upstream), ["SIP/2.0 486 Busy Here"]);
    rig.finish(txn);
    rig.upstream.nothing();
}

#[test]
fn refusals_answer_at_once() {
    let mut rig = Rig::new();
    let a = Peer::new();
    let zero = rig.upstream.request("OPTIONS", "z9hG4bKx2", "");
    let zero = crate::transport::testkit::parse(
        &String::from_utf8_lossy(zero.as_bytes()).replace("Max-Forwards: 70", "Max-Forwards: 0"),
    );
    let source = rig.upstream.source(&rig.node.wire);
    let txn = server::create(&mut rig.txns, zero, source);
    rig.relay_to(txn, &[&a], 1).unwrap();
    assert_eq!(rig.relay_results(), [(1, 483)]);
    a.nothing();
    rig.finish(txn);
    assert_eq!(lines(&rig.upstream), ["SIP/2.0 483 Too Many Hops"]);
    // A final transaction cannot be relayed again.
    assert_eq!(
        rig.relay_to(txn, &[&a], 2),
        Err(ForwardError::AlreadyHandled)
    );
    assert_eq!(
        rig.relay_to(4242, &[&a], 3),
        Err(ForwardError::AlreadyHandled)
    );

    let ext = rig.incoming("OPTIONS", "z9hG4bKx3", "Proxy-Require: foo\r\n");
    rig.relay_to(ext, &[&a], 4).unwrap();
    rig.finish(ext);
    let up = rig.upstream.one_message();
    assert_eq!(up.status(), Some(420));
    let unsupported = up
        .headers_named("Unsupported")
        .next()
        .map(|h| up.header_value(h));
    assert_eq!(unsupported, Some("foo"));
    assert_eq!(rig.relay_results(), [(4, 420)]);

    let bad = rig.incoming("OPTIONS", "z9hG4bKx4", "");
    let opts = RelayOptions {
        targets: vec![Target {
            hop: Some("mailto:nobody".into()),
            ..Target::default()
        }],
        request_uri: None,
        header_edits: &[],
        record_route: false,
        timeout: None,
        serial: None,
    };
    rig.with(|cx, proxy| proxy.relay(cx, bad, &opts, 5))
        .unwrap();
    assert_eq!(rig.relay_results(), [(5, 400)]);
    // Our own address as Request-URI with no Route: nowhere to go.
    let own = format!("sip:{}", rig.node.wire.udp()[0].local);
    let mine = rig.incoming("OPTIONS", "z9hG4bKx5", "");
    let opts = RelayOptions {
        targets: Vec::new(),
        request_uri: Some(&own),
        header_edits: &[],
        record_route: false,
        timeout: None,
        serial: None,
    };
    rig.with(|cx, proxy| proxy.relay(cx, mine, &opts, 6))
        .unwrap();
    assert_eq!(rig.relay_results(), [(6, 404)]);
}

#[test]
fn branches_carry_their_own_request_uri_routes_and_edits() {
    let mut rig = Rig::new();
    let a = Peer::new();
    let txn = rig.incoming("MESSAGE", "z9hG4bKt1", "");
    let edits = [crate::sip::write::HeaderEdit::Add(
        "X-Edit".into(),
        "1".into(),
    )];
    let opts = RelayOptions {
        targets: vec![Target {
            hop: Some(format!("sip:{}", a.addr)),
            request_uri: Some("sip:carol@example.net".into()),
            routes: vec!["<sip:path.example.net;lr>".into()],
        }],
        request_uri: None,
        header_edits: &edits,
        record_route: true,
        timeout: None,
        serial: None,
    };
    rig.with(|cx, proxy| proxy.relay(cx, txn, &opts, 1))
        .unwrap();
    let fwd = a.one_message();
    assert_eq!(fwd.request_uri_str(), Some("sip:carol@example.net"));
    assert_eq!(
        fwd.header(HeaderId::Route),
        Some("<sip:path.example.net;lr>")
    );
    let edit = fwd
        .headers_named("X-Edit")
        .next()
        .map(|h| fwd.header_value(h));
    assert_eq!(edit, Some("1"));
    assert!(
        fwd.header(HeaderId::RecordRoute).is_none(),
        "MESSAGE creates no dialog"
    );
    rig.upstream.nothing();
}
