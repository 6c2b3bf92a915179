//! What ends a branch without an answer: Timer B, Timer C (§16.8), the
//! application's relay timeout, a failed transport; and the end of the
//! server transaction.

use super::*;
use crate::transport::Transport;

#[test]
fn a_silent_branch_fails_with_408_at_timer_b() {
    let mut rig = Rig::new();
    let a = Peer::new();
    let txn = rig.incoming("OPTIONS", "z9hG4bKo1", "");
    rig.relay_to(txn, &[&a], 1).unwrap();
    rig.finish(txn);
    while rig.relay_results().is_empty() {
        assert!(rig.fire_next() > 0, "Timer F never fired");
    }
    assert!(a.take().len() > 5, "retransmitted meanwhile");
    let up = rig.upstream.one_message();
    assert_eq!(up.status(), Some(408));
    assert!(up.to_tag().is_some_and(|t| !t.is_empty()), "our own To tag");
}

#[test]
fn timer_c_cancels_a_ringing_branch_and_its_487_counts_as_408() {
    let mut rig = Rig::new();
    let a = Peer::new();
    let txn = rig.incoming("INVITE", "z9hG4bKo2", "");
    rig.relay_to(txn, &[&a], 1).unwrap();
    rig.finish(txn);
    let sent = a.one();
    rig.answer(&sent, 180, &[]);
    rig.upstream.take();
    assert_eq!(rig.fire_next(), 1, "Timer C: the only timer left");
    assert_eq!(lines(&a), ["CANCEL sip:bob@127.0.0.1 SIP/2.0"]);
    rig.answer(&sent, 487, &[]);
    assert_eq!(lines(&rig.upstream), ["SIP/2.0 408 Request Timeout"]);
    assert_eq!(rig.relay_results(), [(1, 408)]);
}

#[test]
fn timer_c_before_any_provisional_fails_the_branch() {
    let mut rig = Rig::new();
    rig.txns.timing.timer_c = secs(5);
    let a = Peer::new();
    let txn = rig.incoming("INVITE", "z9hG4bKo3", "");
    rig.relay_to(txn, &[&a], 1).unwrap();
    rig.finish(txn);
    while rig.relay_results().is_empty() {
        assert!(rig.fire_next() > 0);
    }
    assert_eq!(
        lines(&rig.upstream).last().unwrap(),
        "SIP/2.0 408 Request Timeout"
    );
    assert!(
        lines(&a).iter().all(|l| l.starts_with("INVITE")),
        "no CANCEL before a 1xx"
    );
}

#[test]
fn the_relay_timeout_ends_every_open_branch() {
    let mut rig = Rig::new();
    let (a, b) = (Peer::new(), Peer::new());
    let txn = rig.incoming("INVITE", "z9hG4bKo4", "");
    let opts = RelayOptions {
        targets: [&a, &b]
            .iter()
            .map(|p| Target {
                hop: Some(format!("sip:{}", p.addr)),
                ..Target::default()
            })
            .collect(),
        request_uri: None,
        header_edits: &[],
        record_route: false,
        timeout: Some(secs(2)),
        serial: None,
    };
    rig.with(|cx, proxy| proxy.relay(cx, txn, &opts, 1))
        .unwrap();
    rig.finish(txn);
    let to_b = b.one();
    a.take();
    rig.answer(&to_b, 180, &[]);
    rig.upstream.take();
    // Timer A retransmissions to A first (0.5, 1.5 s), then the 2 s timeout:
    // B (ringing) gets a CANCEL, A (silent) fails at once as 408.
    let to_b_later = loop {
        assert!(rig.fire_next() > 0);
        let got = lines(&b);
        if !got.is_empty() {
            break got;
        }
    };
    assert_eq!(to_b_later, ["CANCEL sip:bob@127.0.0.1 SIP/2.0"]);
    assert!(rig.relay_results().is_empty(), "B has not answered yet");
    rig.answer(&to_b, 487, &[]);
    assert_eq!(rig.relay_results(), [(1, 408)]);
    assert_eq!(lines(&rig.upstream), ["SIP/2.0 408 Request Timeout"]);
}

#[test]
fn a_failed_transport_counts_as_503_and_goes_up_as_500() {
    let mut rig = Rig::new();
    let a = Peer::new();
    let txn = rig.incoming("INVITE", "z9hG4bKo5", "");
    let opts = RelayOptions {
        targets: vec![Target {
            hop: Some(format!("sip:{};transport=tcp", a.addr)),
            ..Target::default()
        }],
        request_uri: None,
        header_edits: &[],
        record_route: false,
        timeout: None,
        serial: None,
    };
    rig.with(|cx, proxy| proxy.relay(cx, txn, &opts, 1))
        .unwrap();
    rig.finish(txn);
    rig.upstream.take();
    rig.with(|cx, proxy| {
        let failed = client::on_transport_error(&cx.node.wire, cx.txns, Transport::Tcp, a.addr);
        assert_eq!(failed.len(), 1);
        for (id, owner) in failed {
            assert_eq!(owner.service, SERVICE);
            proxy.on_transport_failure(cx, id);
        }
    });
    assert_eq!(rig.relay_results(), [(1, 503)]);
    assert_eq!(lines(&rig.upstream), ["SIP/2.0 500 Server Internal Error"]);
    rig.with(|cx, proxy| proxy.on_transport_failure(cx, 4242));
}

#[test]
fn the_end_of_the_server_transaction_drops_its_context() {
    let mut rig = Rig::new();
    let a = Peer::new();
    let txn = rig.incoming("OPTIONS", "z9hG4bKo6", "");
    rig.relay_to(txn, &[&a], 1).unwrap();
    rig.finish(txn);
    rig.answer(&a.one(), 200, &[]);
    assert_eq!(rig.proxy.contexts(), 1);
    while !rig.txns.servers.is_empty() {
        assert!(rig.fire_next() > 0);
    }
    assert_eq!(rig.proxy.contexts(), 0);
    assert!(rig.txns.clients.is_empty());
    assert!(rig.txns.timers.is_empty(), "nothing left behind");
}
