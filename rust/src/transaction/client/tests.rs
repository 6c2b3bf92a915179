//! RFC 3261 §17.1 client transactions with RFC 6026's Accepted state (Timer
//! M): every transition, what goes on the wire, and when each timer is set
//! for. The downstream element is a real UDP socket.

use std::time::Duration;

use super::*;
use crate::sip::write::build_response;
use crate::transaction::testkit::{assert_set_for, pop_next};
use crate::transaction::{on_timer, Expiry, Timing};
use crate::transport::testkit::{first_line, parse, udp_wire, Peer};
use crate::transport::Transport;

const OWNER: Owner = Owner {
    service: "test",
    id: 7,
};

struct Rig {
    wire: Wire,
    layer: Layer,
    peer: Peer,
    /// What each transaction sent: a final answer frees the transaction's copy.
    sent: std::collections::HashMap<BranchId, Bytes>,
}

impl Rig {
    fn new() -> Rig {
        Rig {
            wire: udp_wire(),
            layer: Layer::default(),
            peer: Peer::new(),
            sent: Default::default(),
        }
    }

    fn request(&self, method: &str, branch: &str) -> Bytes {
        Bytes::from(format!(
            "{method} sip:bob@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP {};branch={branch}\r\n\
             Route: <sip:edge.example.net;lr>\r\n\
             Max-Forwards: 69\r\n\
             From: <sip:alice@127.0.0.1>;tag=a1\r\n\
             To: <sip:bob@127.0.0.1>\r\n\
             Call-ID: {branch}@test\r\n\
             CSeq: 4 {method}\r\n\
             Content-Length: 0\r\n\r\n",
            self.wire.udp()[0].local
        ))
    }

    fn start(&mut self, method: &str, branch: &str) -> BranchId {
        self.start_to(method, branch, self.peer.destination())
    }

    fn start_to(&mut self, method: &str, branch: &str, dest: Destination) -> BranchId {
        let bytes = self.request(method, branch);
        let id = start(
            &self.wire,
            &mut self.layer,
            OWNER,
            branch.to_string(),
            method,
            bytes.clone(),
            dest,
        );
        self.sent.insert(id, bytes);
        id
    }

    /// The downstream peer answers the request it received with `status`.
    fn answer(&mut self, id: BranchId, status: u16) -> Outcome {
        let sent = match self.sent.get(&id) {
            Some(b) => b.clone(),
            None => self.layer.clients[&id].request.clone(), // one the layer started (CANCEL)
        };
        let sent = parse(std::str::from_utf8(&sent).unwrap());
        let tag = (status > 100).then_some("b2");
        let resp = parse(
            std::str::from_utf8(&build_response(&sent, None, status, None, tag, &[], b"")).unwrap(),
        );
        on_response(&self.wire, &mut self.layer, id, &resp)
    }

    fn state(&self, id: BranchId) -> ClientState {
        self.layer.clients[&id].state
    }

    fn timer(&self, id: BranchId, slot: usize) -> Option<crate::timer::TimerId> {
        self.layer.clients.get(&id).and_then(|t| t.timers[slot])
    }

    fn fire_next(&mut self) -> Vec<(TimerKey, Expiry)> {
        pop_next(&mut self.layer)
            .into_iter()
            .map(|k| (k, on_timer(&self.wire, &mut self.layer, k)))
            .collect()
    }

    fn now(&self) -> std::time::Instant {
        self.layer.timers.now()
    }
}

fn t1() -> Duration {
    Timing::default().t1
}

#[test]
fn invite_calling_retransmits_with_timer_a_until_timer_b() {
    let mut rig = Rig::new();
    let before = rig.now();
    let id = rig.start("INVITE", "z9hG4bKc1");
    let after = rig.now();
    assert_eq!(rig.state(id), ClientState::Calling);
    let sent = rig.peer.one();
    assert!(sent.starts_with("INVITE sip:bob@127.0.0.1 SIP/2.0\r\n"));
    assert_set_for(rig.timer(id, 0).unwrap(), before, after, t1(), FINE);
    assert_set_for(rig.timer(id, 1).unwrap(), before, after, t1() * 64, COARSE);
    let timer_c = Timing::default().timer_c;
    assert_set_for(rig.timer(id, 2).unwrap(), before, after, timer_c, COARSE);
    // Timer A doubles without a cap: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s, and
    // Timer B ends it at 64*T1 = 32 s (§17.1.1.2: seven transmissions).
    let mut retransmissions = 0;
    let timeout = loop {
        let mut fired = rig.fire_next();
        match &fired[..] {
            [(TimerKey::ClientRetransmit(_), Expiry::Done)] => {
                assert_eq!(rig.peer.one(), sent, "a retransmission is the same bytes");
                retransmissions += 1;
            }
            [(TimerKey::ClientTimeout(_), _)] => break fired.remove(0).1,
            other => panic!(
                "unexpected {:?}",
                other.iter().map(|f| f.0).collect::<Vec<_>>()
            ),
        }
    };
    assert_eq!(retransmissions, 6);
    assert!(matches!(timeout, Expiry::ClientTimeout { id: x, owner } if x == id && owner == OWNER));
    assert_eq!(
        rig.wire
            .stats()
            .retransmissions
            .load(std::sync::atomic::Ordering::Relaxed),
        6
    );
    // The owner fails it: terminated with 408, removed at the next run.
    fail(&mut rig.layer, id, 408);
    assert_eq!(rig.state(id), ClientState::Terminated);
    assert_eq!(rig.layer.clients[&id].final_status, Some(408));
    assert!(rig.layer.clients[&id].is_final());
    let fired = rig.fire_next();
    assert!(fired.iter().any(|(k, _)| *k == TimerKey::ClientEnd(id)));
    assert!(rig.layer.clients.is_empty());
    assert!(rig.layer.timers.is_empty());
}

#[test]
fn invite_provisional_stops_a_and_b_and_restarts_timer_c() {
    let mut rig = Rig::new();
    let id = rig.start("INVITE", "z9hG4bKc2");
    rig.peer.take();
    let old_c = rig.timer(id, 2).unwrap();
    let before = rig.now();
    assert_eq!(rig.answer(id, 100), Outcome::Absorb);
    let after = rig.now();
    assert_eq!(rig.state(id), ClientState::Proceeding);
    assert!(rig.timer(id, 0).is_none() && rig.timer(id, 1).is_none());
    let new_c = rig.timer(id, 2).unwrap();
    assert_ne!(new_c, old_c);
    assert_set_for(new_c, before, after, Timing::default().timer_c, COARSE);
    assert_eq!(rig.answer(id, 180), Outcome::Provisional);
    assert_eq!(rig.answer(id, 183), Outcome::Provisional);
    assert_eq!(rig.layer.timers.len(), 1, "only Timer C is left");
    // A retransmission timer left over does nothing in Proceeding.
    on_retransmit_timer(&rig.wire, &mut rig.layer, id);
    rig.peer.nothing();
    let fired = rig.fire_next();
    assert!(
        matches!(fired[..], [(TimerKey::ClientTimerC(_), Expiry::TimerC { id: x, owner })] if x == id && owner == OWNER)
    );
}

#[test]
fn invite_2xx_is_accepted_until_timer_m() {
    let mut rig = Rig::new();
    let id = rig.start("INVITE", "z9hG4bKc3");
    rig.answer(id, 180);
    let before = rig.now();
    assert_eq!(rig.answer(id, 200), Outcome::Success);
    let after = rig.now();
    assert_eq!(rig.state(id), ClientState::Accepted);
    assert_eq!(rig.layer.clients[&id].final_status, Some(200));
    assert_set_for(rig.timer(id, 3).unwrap(), before, after, t1() * 64, COARSE);
    assert_eq!(rig.layer.timers.len(), 1, "only Timer M is left");
    // RFC 6026: later 2xx (retransmissions, other forks) still pass up;
    // anything else is absorbed. No ACK is sent for a 2xx.
    assert_eq!(rig.answer(id, 200), Outcome::Success);
    assert_eq!(rig.answer(id, 486), Outcome::Absorb);
    assert_eq!(rig.answer(id, 180), Outcome::Absorb);
    rig.peer
        .take()
        .iter()
        .for_each(|m| assert!(!m.starts_with("ACK")));
    let fired = rig.fire_next();
    assert_eq!(fired[0].0, TimerKey::ClientEnd(id));
    assert!(rig.layer.clients.is_empty());
    assert_eq!(rig.layer.find_client("z9hG4bKc3", "INVITE"), None);
}

#[test]
fn invite_non_2xx_is_acked_and_timer_d_absorbs_retransmissions() {
    let mut rig = Rig::new();
    let id = rig.start("INVITE", "z9hG4bKc4");
    rig.peer.take();
    let before = rig.now();
    assert_eq!(rig.answer(id, 486), Outcome::Failure);
    let after = rig.now();
    assert_eq!(rig.state(id), ClientState::Completed);
    let ack = rig.peer.one();
    // §17.1.1.3: same Request-URI, top Via, Route, From, Call-ID and CSeq
    // number; the To of the response.
    assert_eq!(first_line(&ack), "ACK sip:bob@127.0.0.1 SIP/2.0");
    let ack = parse(&ack);
    assert_eq!(ack.branch(), Some("z9hG4bKc4"));
    assert_eq!(ack.to_tag(), Some("b2"));
    assert_eq!(ack.cseq(), 4);
    assert_eq!(ack.cseq_method(), "ACK");
    assert_eq!(ack.call_id(), "z9hG4bKc4@test");
    assert_eq!(
        ack.header(crate::sip::HeaderId::Route),
        Some("<sip:edge.example.net;lr>")
    );
    assert_eq!(ack.vias().len(), 1);
    // Timer D: 32 s over UDP.
    assert_set_for(
        rig.timer(id, 3).unwrap(),
        before,
        after,
        Duration::from_secs(32),
        COARSE,
    );
    // A retransmitted final means our ACK was lost: ACK again, absorb it.
    assert_eq!(rig.answer(id, 486), Outcome::Absorb);
    assert!(rig.peer.one().starts_with("ACK "));
    assert_eq!(rig.answer(id, 200), Outcome::Absorb);
    let fired = rig.fire_next();
    assert_eq!(fired[0].0, TimerKey::ClientEnd(id));
    assert!(rig.layer.clients.is_empty());
}

#[test]
fn invite_over_a_stream_has_no_timer_a_and_timer_d_zero() {
    let mut rig = Rig::new();
    let mut dest = rig.peer.destination();
    dest.transport = Transport::Tcp;
    let id = rig.start_to("INVITE", "z9hG4bKc5", dest);
    assert!(
        rig.timer(id, 0).is_none(),
        "no Timer A over a reliable transport"
    );
    assert!(rig.timer(id, 1).is_some(), "Timer B still runs");
    let before = rig.now();
    rig.answer(id, 404);
    assert_set_for(
        rig.timer(id, 3).unwrap(),
        before,
        rig.now(),
        Duration::ZERO,
        COARSE,
    );
}

#[test]
fn cancel_before_any_provisional_waits_for_one() {
    let mut rig = Rig::new();
    let id = rig.start("INVITE", "z9hG4bKc6");
    rig.peer.take();
    cancel(&rig.wire, &mut rig.layer, id);
    assert!(rig.layer.clients[&id].cancel_pending);
    rig.peer.nothing();
    let before = rig.now();
    assert_eq!(rig.answer(id, 180), Outcome::Provisional);
    let after = rig.now();
    let sent = rig.peer.one();
    assert_eq!(first_line(&sent), "CANCEL sip:bob@127.0.0.1 SIP/2.0");
    let c = parse(&sent);
    assert_eq!(
        c.branch(),
        Some("z9hG4bKc6"),
        "a CANCEL has the INVITE's branch"
    );
    assert_eq!(c.cseq(), 4);
    assert_eq!(c.to_tag(), None, "the To of the request");
    // The CANCEL runs as its own non-INVITE transaction...
    let cancel_id = rig
        .layer
        .find_client("z9hG4bKc6", "CANCEL")
        .expect("CANCEL transaction");
    assert_ne!(cancel_id, id);
    assert_eq!(rig.layer.clients[&cancel_id].owner, OWNER);
    assert_eq!(rig.layer.find_client("z9hG4bKc6", "INVITE"), Some(id));
    // ...and the INVITE gets 64*T1 for its 487 (§9.1).
    assert_set_for(rig.timer(id, 1).unwrap(), before, after, t1() * 64, COARSE);
    assert!(rig.layer.clients[&id].cancel_sent);
    // Asking again sends nothing more.
    cancel(&rig.wire, &mut rig.layer, id);
    rig.peer.nothing();
    assert_eq!(rig.answer(cancel_id, 200), Outcome::Success);
    assert_eq!(rig.answer(id, 487), Outcome::Failure);
    assert!(rig.peer.one().starts_with("ACK "));
}

#[test]
fn cancel_in_proceeding_goes_at_once_and_never_for_finals_or_non_invites() {
    let mut rig = Rig::new();
    let id = rig.start("INVITE", "z9hG4bKc7");
    rig.answer(id, 183);
    rig.peer.take();
    cancel(&rig.wire, &mut rig.layer, id);
    assert!(rig.peer.one().starts_with("CANCEL "));
    // The CANCEL is retransmitted by Timer E like any non-INVITE request.
    let cancel_id = rig.layer.find_client("z9hG4bKc7", "CANCEL").unwrap();
    assert!(rig.timer(cancel_id, 0).is_some());

    let done = rig.start("INVITE", "z9hG4bKc8");
    rig.answer(done, 486);
    rig.peer.take();
    cancel(&rig.wire, &mut rig.layer, done);
    let options = rig.start("OPTIONS", "z9hG4bKc9");
    rig.peer.take();
    cancel(&rig.wire, &mut rig.layer, options);
    cancel(&rig.wire, &mut rig.layer, 12345);
    rig.peer.nothing();
}

#[test]
fn non_invite_timer_e_backs_off_to_t2_and_timer_f_times_out() {
    let mut rig = Rig::new();
    let before = rig.now();
    let id = rig.start("OPTIONS", "z9hG4bKn1");
    let after = rig.now();
    assert_eq!(rig.state(id), ClientState::Trying);
    assert!(rig.timer(id, 2).is_none(), "no Timer C for non-INVITE");
    assert_set_for(rig.timer(id, 1).unwrap(), before, after, t1() * 64, COARSE);
    rig.peer.take();
    let t2 = Timing::default().t2;
    for expected in [t1() * 2, t1() * 4, t2, t2, t2] {
        let before = rig.now();
        let fired = rig.fire_next();
        assert!(matches!(
            fired[..],
            [(TimerKey::ClientRetransmit(_), Expiry::Done)]
        ));
        assert!(rig.peer.one().starts_with("OPTIONS "));
        assert_set_for(rig.timer(id, 0).unwrap(), before, rig.now(), expected, FINE);
    }
    // A provisional: Proceeding, retransmissions go on every T2 (§17.1.2.2).
    assert_eq!(rig.answer(id, 180), Outcome::Provisional);
    assert_eq!(rig.state(id), ClientState::Proceeding);
    let before = rig.now();
    let fired = rig.fire_next();
    assert!(matches!(
        fired[..],
        [(TimerKey::ClientRetransmit(_), Expiry::Done)]
    ));
    assert!(rig.peer.one().starts_with("OPTIONS "));
    assert_set_for(rig.timer(id, 0).unwrap(), before, rig.now(), t2, FINE);
    loop {
        let fired = rig.fire_next();
        rig.peer.take();
        if let [(TimerKey::ClientTimeout(_), e)] = &fired[..] {
            assert!(matches!(e, Expiry::ClientTimeout { id: x, .. } if *x == id));
            break;
        }
    }
}

#[test]
fn non_invite_final_completes_and_timer_k_ends_it() {
    let mut rig = Rig::new();
    let id = rig.start("BYE", "z9hG4bKn2");
    rig.answer(id, 100);
    assert_eq!(rig.state(id), ClientState::Proceeding);
    let before = rig.now();
    assert_eq!(rig.answer(id, 404), Outcome::Failure);
    let after = rig.now();
    assert_eq!(rig.state(id), ClientState::Completed);
    rig.peer
        .take()
        .iter()
        .for_each(|m| assert!(!m.starts_with("ACK"), "no ACK for non-INVITE"));
    assert_set_for(
        rig.timer(id, 3).unwrap(),
        before,
        after,
        Timing::default().t4,
        COARSE,
    );
    assert_eq!(rig.layer.timers.len(), 1, "only Timer K is left");
    assert_eq!(rig.answer(id, 404), Outcome::Absorb);
    assert_eq!(rig.fire_next()[0].0, TimerKey::ClientEnd(id));
    assert!(rig.layer.clients.is_empty());

    let ok = rig.start("MESSAGE", "z9hG4bKn3");
    assert_eq!(rig.answer(ok, 202), Outcome::Success);
    assert_eq!(rig.state(ok), ClientState::Completed);
}

#[test]
fn non_invite_over_a_stream_has_no_timer_e_and_timer_k_zero() {
    let mut rig = Rig::new();
    let mut dest = rig.peer.destination();
    dest.transport = Transport::Tls;
    let id = rig.start_to("OPTIONS", "z9hG4bKn4", dest);
    assert!(rig.timer(id, 0).is_none());
    rig.answer(id, 180);
    assert!(
        rig.timer(id, 0).is_none(),
        "a provisional starts nothing over a stream"
    );
    let before = rig.now();
    rig.answer(id, 200);
    assert_set_for(
        rig.timer(id, 3).unwrap(),
        before,
        rig.now(),
        Duration::ZERO,
        COARSE,
    );
}

#[test]
fn a_failed_stream_falls_back_to_udp_or_reports_the_owner() {
    let mut rig = Rig::new();
    let mut dest = rig.peer.destination();
    dest.transport = Transport::Tcp;
    // Sent over TCP only for its size: its UDP form is kept.
    let big = rig.start_to("INVITE", "z9hG4bKf1", dest);
    rig.layer.clients.get_mut(&big).unwrap().udp_fallback =
        Some(rig.request("INVITE", "z9hG4bKf1"));
    let plain = rig.start_to("INVITE", "z9hG4bKf2", dest);
    let answered = rig.start_to("INVITE", "z9hG4bKf3", dest);
    rig.answer(answered, 180);
    rig.peer.nothing();
    let failed = on_transport_error(&rig.wire, &mut rig.layer, Transport::Tcp, rig.peer.addr);
    assert_eq!(
        failed,
        vec![(plain, OWNER)],
        "the answered one is not waiting any more"
    );
    // The UDP form went out and is retransmitted by Timer A from now on.
    assert!(rig.peer.one().starts_with("INVITE "));
    let c = &rig.layer.clients[&big];
    assert_eq!(c.dest.transport, Transport::Udp);
    assert!(c.udp_fallback.is_none() && c.timers[0].is_some());
    assert!(!retry_over_udp(&rig.wire, &mut rig.layer, big), "only once");
    fail(&mut rig.layer, plain, 503);
    assert_eq!(rig.layer.clients[&plain].final_status, Some(503));
    fail(&mut rig.layer, 4242, 503);
}

#[test]
fn derived_requests_follow_9_1_and_17_1_1_3() {
    let rig = Rig::new();
    let sent = rig.request("INVITE", "z9hG4bKd1");
    let cancel = String::from_utf8(derived_request(&sent, "CANCEL", None).unwrap()).unwrap();
    let via = format!(
        "Via: SIP/2.0/UDP {};branch=z9hG4bKd1",
        rig.wire.udp()[0].local
    );
    assert_eq!(
        cancel,
        format!(
            "CANCEL sip:bob@127.0.0.1 SIP/2.0\r\n{via}\r\n\
             Route: <sip:edge.example.net;lr>\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\n\
             To: <sip:bob@127.0.0.1>\r\nCall-ID: z9hG4bKd1@test\r\n\
             CSeq: 4 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    );
    let ack = String::from_utf8(
        derived_request(&sent, "ACK", Some("<sip:bob@127.0.0.1>;tag=x")).unwrap(),
    )
    .unwrap();
    assert!(ack.contains("\r\nTo: <sip:bob@127.0.0.1>;tag=x\r\n"));
    assert!(ack.contains("\r\nCSeq: 4 ACK\r\n"));
    assert!(derived_request(&Bytes::from_static(b"garbage"), "ACK", None).is_none());
}

#[test]
fn timers_of_a_vanished_transaction_do_nothing() {
    let mut rig = Rig::new();
    let id = rig.start("INVITE", "z9hG4bKv1");
    rig.peer.take();
    assert!(rig.layer.remove_client(id).is_some());
    assert!(rig.layer.timers.is_empty(), "removing cancels its timers");
    for k in [
        TimerKey::ClientRetransmit(id),
        TimerKey::ClientTimeout(id),
        TimerKey::ClientTimerC(id),
        TimerKey::ClientEnd(id),
    ] {
        assert!(matches!(
            on_timer(&rig.wire, &mut rig.layer, k),
            Expiry::Done
        ));
    }
    assert_eq!(
        on_response(
            &rig.wire,
            &mut rig.layer,
            id,
            &Peer::new().request("OPTIONS", "z9hG4bKx", "")
        ),
        Outcome::Absorb
    );
    rig.peer.nothing();
    let key = TimerKey::Service(OWNER);
    assert!(matches!(on_timer(&rig.wire, &mut rig.layer, key), Expiry::Service(o) if o == OWNER));
}

#[test]
fn a_final_answer_frees_the_request_copy_unless_a_non_2xx_ack_needs_it() {
    let mut rig = Rig::new();
    let invite = rig.start("INVITE", "z9hG4bKm3");
    assert!(!rig.layer.clients[&invite].request.is_empty());
    assert_eq!(rig.answer(invite, 200), Outcome::Success);
    assert!(
        rig.layer.clients[&invite].request.is_empty(),
        "Timer M needs the keys only"
    );
    let bye = rig.start("BYE", "z9hG4bKm4");
    assert_eq!(rig.answer(bye, 200), Outcome::Success);
    assert!(
        rig.layer.clients[&bye].request.is_empty(),
        "Timer K needs the keys only"
    );
    let refused = rig.start("INVITE", "z9hG4bKm5");
    assert_eq!(rig.answer(refused, 486), Outcome::Failure);
    assert!(
        !rig.layer.clients[&refused].request.is_empty(),
        "a retransmitted 486 is ACKed again"
    );
}

#[test]
fn a_client_settled_by_a_2xx_is_held_small_and_still_matches() {
    // Decision 0065: once its 2xx was delivered, an INVITE's client
    // transaction keeps its key, owner and destination for Timer M; later
    // 2xx still reach the owner, anything else is absorbed.
    let mut rig = Rig::new();
    let invite = rig.start("INVITE", "z9hG4bKhc1");
    assert_eq!(rig.answer(invite, 200), Outcome::Success);
    assert!(rig.layer.hold_client(invite));
    assert!(!rig.layer.clients.contains_key(&invite));
    assert_eq!(rig.layer.find_client("z9hG4bKhc1", "INVITE"), Some(invite));
    assert_eq!(rig.layer.find_client("z9hG4bKhc2", "INVITE"), None);
    assert_eq!(rig.layer.client_owner(invite), Some(OWNER));
    assert_eq!(rig.layer.client_dest(invite), Some(rig.peer.destination()));
    assert_eq!(
        rig.answer(invite, 200),
        Outcome::Success,
        "a retransmitted 2xx"
    );
    assert_eq!(rig.answer(invite, 180), Outcome::Absorb);

    // A non-2xx final keeps the whole transaction: its ACK, its failover.
    let rejected = rig.start("INVITE", "z9hG4bKhc3");
    assert_eq!(rig.answer(rejected, 486), Outcome::Failure);
    assert!(!rig.layer.hold_client(rejected));
    let bye = rig.start("BYE", "z9hG4bKhc4");
    assert_eq!(rig.answer(bye, 200), Outcome::Success);
    assert!(rig.layer.hold_client(bye));
    assert_eq!(rig.answer(bye, 200), Outcome::Absorb);

    // Timers M and K end them and their keys leave the index.
    assert_eq!(rig.layer.client_count(), 3);
    while !rig.layer.held_clients.is_empty() {
        rig.fire_next();
    }
    assert_eq!(rig.layer.find_client("z9hG4bKhc1", "INVITE"), None);
    assert_eq!(rig.layer.find_client("z9hG4bKhc4", "BYE"), None);
}
