//! CANCEL from upstream (RFC 3261 §16.10) and the application's own answer.

use super::*;

#[test]
fn cancel_cancels_live_branches_and_their_487_goes_up() {
    let mut rig = Rig::new();
    let (a, b) = (Peer::new(), Peer::new());
    let txn = rig.incoming("INVITE", "z9hG4bKk1", "");
    rig.relay_to(txn, &[&a, &b], 1).unwrap();
    let (to_a, to_b) = (a.one(), b.one());
    rig.answer(&to_a, 180, &[]);
    rig.upstream.take();
    let cancel = rig.upstream.request("CANCEL", "z9hG4bKk1", "");
    let source = rig.upstream.source(&rig.node.wire);
    assert!(rig.with(|cx, proxy| proxy.on_cancel(cx, &cancel, source)));
    assert_eq!(
        lines(&rig.upstream),
        ["SIP/2.0 200 OK"],
        "the CANCEL's own 200"
    );
    assert!(matches!(rig.events[..], [Event::Cancelled(t)] if t == txn));
    // A is Proceeding: CANCEL now. B sent nothing yet: CANCEL on its first 1xx.
    assert_eq!(lines(&a), ["CANCEL sip:bob@127.0.0.1 SIP/2.0"]);
    b.nothing();
    rig.answer(&to_b, 100, &[]);
    assert_eq!(lines(&b), ["CANCEL sip:bob@127.0.0.1 SIP/2.0"]);
    rig.answer(&to_a, 487, &[]);
    rig.upstream.nothing();
    rig.answer(&to_b, 487, &[]);
    // The handler is out of the picture: the 487 goes up without `finish`.
    assert_eq!(lines(&rig.upstream), ["SIP/2.0 487 Request Terminated"]);
    // Relaying a cancelled request is refused.
    assert_eq!(
        rig.relay_to(txn, &[&a], 2),
        Err(ForwardError::AlreadyHandled)
    );
}

#[test]
fn cancel_of_a_request_the_application_holds_answers_487_itself() {
    let mut rig = Rig::new();
    let txn = rig.incoming("INVITE", "z9hG4bKk2", "");
    let cancel = rig.upstream.request("CANCEL", "z9hG4bKk2", "");
    let source = rig.upstream.source(&rig.node.wire);
    assert!(rig.with(|cx, proxy| proxy.on_cancel(cx, &cancel, source)));
    assert_eq!(
        lines(&rig.upstream),
        ["SIP/2.0 200 OK", "SIP/2.0 487 Request Terminated"]
    );
    assert_eq!(rig.txns.servers[&txn].final_status, Some(487));
    assert!(matches!(rig.events[..], [Event::Cancelled(t)] if t == txn));
    // Again (a retransmitted CANCEL): 200 only.
    assert!(rig.with(|cx, proxy| proxy.on_cancel(cx, &cancel, source)));
    assert_eq!(lines(&rig.upstream), ["SIP/2.0 200 OK"]);
    // A CANCEL that matches nothing is left to the caller.
    let stray = rig.upstream.request("CANCEL", "z9hG4bKnone", "");
    assert!(!rig.with(|cx, proxy| proxy.on_cancel(cx, &stray, source)));
    rig.upstream.nothing();
}

#[test]
fn cancel_of_a_relayed_request_with_no_live_branch_answers_487() {
    let mut rig = Rig::new();
    let a = Peer::new();
    let txn = rig.incoming("INVITE", "z9hG4bKk3", "");
    rig.txns.servers.get_mut(&txn).unwrap().app_holds = false;
    rig.relay_to(txn, &[&a], 1).unwrap();
    rig.answer(&a.one(), 486, &[]);
    a.take();
    rig.upstream.take();
    let cancel = rig.upstream.request("CANCEL", "z9hG4bKk3", "");
    let source = rig.upstream.source(&rig.node.wire);
    assert!(rig.with(|cx, proxy| proxy.on_cancel(cx, &cancel, source)));
    assert_eq!(
        lines(&rig.upstream),
        ["SIP/2.0 200 OK", "SIP/2.0 487 Request Terminated"],
        "the held 486 never goes up after the CANCEL"
    );
    assert!(
        !rig.events.iter().any(|e| matches!(e, Event::Cancelled(_))),
        "nobody to tell"
    );
    rig.finish(txn);
    rig.upstream.nothing();
}

#[test]
fn the_applications_own_final_cancels_the_branches() {
    let mut rig = Rig::new();
    let a = Peer::new();
    let txn = rig.incoming("INVITE", "z9hG4bKk4", "");
    rig.relay_to(txn, &[&a], 1).unwrap();
    let sent = a.one();
    rig.answer(&sent, 183, &[]);
    rig.with(|cx, proxy| {
        let t = &cx.txns.servers[&txn];
        let resp = build_response(&t.request, None, 480, None, Some("me"), &[], b"");
        assert!(server::send_response(
            &cx.node.wire,
            cx.txns,
            txn,
            480,
            Bytes::from(resp),
            true
        ));
        proxy.on_local_final(cx, txn);
    });
    assert_eq!(lines(&a), ["CANCEL sip:bob@127.0.0.1 SIP/2.0"]);
    rig.upstream.take();
    // The branch's 487 does not go up: the final was ours.
    rig.answer(&sent, 487, &[]);
    rig.finish(txn);
    rig.upstream.nothing();
}
