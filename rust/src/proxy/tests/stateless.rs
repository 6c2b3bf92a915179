//! Stateless forwarding and response relay (§16.11), routing rules (loose
//! routing §16.4, loops §16.3), and in-dialog requests routed in the core.

use std::sync::atomic::Ordering;

use super::*;
use crate::proxy::fallback::{congestion_controlled_hop, UDP_REQUEST_LIMIT};
use crate::proxy::route::{is_loop, next_hop, record_route};
use crate::proxy::{forward_stateless, ForwardRequest, Hop};
use crate::service::Incoming;
use crate::sip::HeaderId;
use crate::transport::Transport;

fn incoming(rig: &Rig, msg: Message) -> Incoming {
    Incoming {
        msg,
        source: rig.upstream.source(&rig.node.wire),
        txn: None,
    }
}

#[test]
fn a_stateless_forward_keeps_its_branch_on_retransmission() {
    let rig = Rig::new();
    let a = Peer::new();
    let target = format!("sip:{}", a.addr);
    let fwd = ForwardRequest {
        target: Some(&target),
        request_uri: Some("sip:carol@example.net"),
        header_edits: &[],
    };
    let inc = incoming(&rig, rig.upstream.request("OPTIONS", "z9hG4bKl1", ""));
    let hop = forward_stateless(&rig.node, &inc, &fwd).unwrap();
    assert_eq!(
        hop,
        Hop {
            transport: Transport::Udp,
            addr: a.addr
        }
    );
    let first = a.one_message();
    forward_stateless(&rig.node, &inc, &fwd).unwrap();
    let again = a.one_message();
    assert_eq!(first.branch(), again.branch());
    assert_eq!(first.request_uri_str(), Some("sip:carol@example.net"));
    assert_eq!(first.max_forwards(), Some(69));
    assert_eq!(rig.node.stats.requests_forwarded.load(Ordering::Relaxed), 2);
    // Its response comes back to our Via: relayed to the next one.
    let resp = build_response(&first, None, 200, None, Some("x"), &[], b"");
    super::super::relay_response_stateless(&rig.node, &parse(std::str::from_utf8(&resp).unwrap()));
    let up = rig.upstream.one_message();
    assert_eq!((up.status(), up.branch()), (Some(200), Some("z9hG4bKl1")));
    // A response whose top Via is not ours, or with no Via below ours, is dropped.
    let stray = build_response(&inc.msg, None, 200, None, None, &[], b"");
    super::super::relay_response_stateless(&rig.node, &parse(std::str::from_utf8(&stray).unwrap()));
    rig.upstream.nothing();
    assert_eq!(rig.node.stats.dropped.load(Ordering::Relaxed), 1);
}

#[test]
fn a_stateless_forward_refuses_what_it_must() {
    let rig = Rig::new();
    let zero = rig.upstream.request("OPTIONS", "z9hG4bKl2", "");
    let text =
        String::from_utf8_lossy(zero.as_bytes()).replace("Max-Forwards: 70", "Max-Forwards: 0");
    let inc = incoming(&rig, parse(&text));
    let none = ForwardRequest::default();
    assert_eq!(
        forward_stateless(&rig.node, &inc, &none),
        Err(ForwardError::TooManyHops)
    );
    let inc = incoming(
        &rig,
        rig.upstream
            .request("OPTIONS", "z9hG4bKl3", "Proxy-Require: x\r\n"),
    );
    assert_eq!(
        forward_stateless(&rig.node, &inc, &none),
        Err(ForwardError::BadExtension("x".into()))
    );
    let inc = incoming(&rig, rig.upstream.request("OPTIONS", "z9hG4bKl4", ""));
    let bad = ForwardRequest {
        target: Some("sip:no.such.host.invalid"),
        ..ForwardRequest::default()
    };
    assert!(matches!(
        forward_stateless(&rig.node, &inc, &bad),
        Err(ForwardError::Unresolvable(_))
    ));
    for e in [
        ForwardError::TooManyHops,
        ForwardError::BadExtension(String::new()),
        ForwardError::BadTarget(String::new()),
        ForwardError::BadRoute,
        ForwardError::Unresolvable(String::new()),
        ForwardError::NoRoute,
        ForwardError::AlreadyHandled,
    ] {
        assert!((400..600).contains(&e.status()), "{e}");
    }
}

#[test]
fn loose_routing_pops_our_route_values_and_finds_the_next_hop() {
    let rig = Rig::new();
    let us = rig.node.wire.udp()[0].local;
    let route =
        format!("Route: <sip:{us};lr>, <sip:{us};transport=tcp;lr>, <sip:next.example.net;lr>\r\n");
    let msg = rig.upstream.request("BYE", "z9hG4bKl5", &route);
    let nh = next_hop(&rig.node, &msg, None, "sip:bob@127.0.0.1").unwrap();
    assert_eq!(
        (nh.uri.as_str(), nh.pop_routes),
        ("sip:next.example.net;lr", 2)
    );
    let nh = next_hop(&rig.node, &msg, Some("sip:forced.example.net"), "sip:x@y").unwrap();
    assert_eq!(nh.uri, "sip:forced.example.net");
    let only_us = rig
        .upstream
        .request("BYE", "z9hG4bKl6", &format!("Route: <sip:{us};lr>\r\n"));
    let nh = next_hop(&rig.node, &only_us, None, "sip:bob@127.0.0.1:7").unwrap();
    assert_eq!((nh.uri.as_str(), nh.pop_routes), ("sip:bob@127.0.0.1:7", 1));
    let bad = rig.upstream.request("BYE", "z9hG4bKl7", "Route: <<<\r\n");
    assert_eq!(
        next_hop(&rig.node, &bad, None, "sip:a@b").unwrap_err(),
        ForwardError::BadRoute
    );
}

#[test]
fn record_route_names_both_sides_when_the_transport_changes() {
    let rig = Rig::new();
    let source = rig.upstream.source(&rig.node.wire);
    let us = rig.node.wire.udp()[0].local;
    let same = Hop {
        transport: Transport::Udp,
        addr: rig.upstream.addr,
    };
    assert_eq!(
        record_route(&rig.node, &source, &same, false),
        format!("<sip:{us};lr>")
    );
    let tcp = Hop {
        transport: Transport::Tcp,
        addr: rig.upstream.addr,
    };
    let two = record_route(&rig.node, &source, &tcp, false);
    assert!(two.contains(";transport=tcp;lr;r2=on>, <sip:"), "{two}");
}

#[test]
fn a_request_that_comes_back_unchanged_is_a_loop() {
    let mut rig = Rig::new();
    let txn = rig.incoming("OPTIONS", "z9hG4bKl8", "");
    // Relay it to ourselves: what arrives carries our Via with its loop hash.
    let me = Peer::new();
    rig.relay_to(txn, &[&me], 1).unwrap();
    let looped = me.one_message();
    assert!(
        is_loop(&rig.node, &looped),
        "our Via with this request's loop hash"
    );
    assert!(!is_loop(
        &rig.node,
        &rig.upstream.request("OPTIONS", "z9hG4bKl8", "")
    ));
    // A spiral (the Request-URI changed on the way) is no loop.
    let text = String::from_utf8_lossy(looped.as_bytes()).into_owned();
    let spiral = parse(&text.replacen("OPTIONS sip:bob@", "OPTIONS sip:carol@", 1));
    assert!(!is_loop(&rig.node, &spiral));
}

#[test]
fn large_requests_move_to_tcp_only_when_there_is_a_tcp_listener() {
    let rig = Rig::new();
    let hop = Hop {
        transport: Transport::Udp,
        addr: rig.upstream.addr,
    };
    let uri = format!("sip:{}", rig.upstream.addr);
    // This node listens on UDP only.
    assert_eq!(
        congestion_controlled_hop(&rig.node, &uri, hop, UDP_REQUEST_LIMIT + 1),
        None
    );
    assert_eq!(congestion_controlled_hop(&rig.node, &uri, hop, 100), None);
}

#[test]
fn in_dialog_requests_with_our_route_are_routed_in_the_core() {
    let mut rig = Rig::new();
    let b = Peer::new();
    let us = rig.node.wire.udp()[0].local;
    let bye = rig
        .upstream
        .request("BYE", "z9hG4bKd1", &format!("Route: <sip:{us};lr>\r\n"));
    let text = String::from_utf8_lossy(bye.as_bytes())
        .replace(
            "BYE sip:bob@127.0.0.1 SIP/2.0",
            &format!("BYE sip:bob@{} SIP/2.0", b.addr),
        )
        .replace(
            "To: <sip:bob@127.0.0.1>",
            "To: <sip:bob@127.0.0.1>;tag=callee",
        );
    let source = rig.upstream.source(&rig.node.wire);
    rig.with(|cx, proxy| proxy.route_in_core(cx, parse(&text), source));
    let fwd = b.one_message();
    assert_eq!(
        fwd.header(HeaderId::Route),
        None,
        "our Route value is consumed"
    );
    assert!(fwd.header(HeaderId::RecordRoute).is_none());
    let sent = String::from_utf8_lossy(fwd.as_bytes()).into_owned();
    rig.answer(&sent, 200, &[]);
    assert_eq!(lines(&rig.upstream), ["SIP/2.0 200 OK"]);
    assert!(rig.events.is_empty(), "nobody awaits an in-core relay");
    // Nowhere to go (the Request-URI is us): answered by the core.
    let lost = String::from_utf8_lossy(bye.as_bytes())
        .replace(
            "BYE sip:bob@127.0.0.1 SIP/2.0",
            &format!("BYE sip:{us} SIP/2.0"),
        )
        .replace("z9hG4bKd1", "z9hG4bKd2");
    rig.with(|cx, proxy| proxy.route_in_core(cx, parse(&lost), source));
    assert_eq!(lines(&rig.upstream), ["SIP/2.0 404 Not Found"]);
    assert!(rig.events.is_empty());
}

#[test]
fn a_literal_next_hop_is_read_once_and_answered_alike_after() {
    use crate::proxy::literal_hop;
    let udp = literal_hop("sip:192.0.2.5:5070").unwrap();
    assert_eq!(
        udp,
        Hop {
            transport: Transport::Udp,
            addr: "192.0.2.5:5070".parse().unwrap()
        }
    );
    assert_eq!(literal_hop("sip:192.0.2.5:5070"), Some(udp));
    // Another text is its own; a name needs DNS; garbage is nothing.
    let tcp = literal_hop("sip:192.0.2.5:5070;transport=tcp").unwrap();
    assert_eq!(tcp.transport, Transport::Tcp);
    assert_eq!(literal_hop("sip:192.0.2.5:5070"), Some(udp));
    assert_eq!(literal_hop("sip:proxy.example.com"), None);
    assert_eq!(literal_hop("not a uri"), None);
}
