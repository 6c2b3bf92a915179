//! RFC 3261 §17.2 server transactions with RFC 6026's Accepted state: every
//! transition, what goes on the wire, and when each timer is set for.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::sip::write::build_response;
use crate::transaction::testkit::{assert_set_for, pop_next};
use crate::transaction::Timing;
use crate::transaction::{on_timer, Expiry};
use crate::transport::testkit::{first_line, udp_wire, Peer};
use crate::transport::{Transport, Wire};

struct Rig {
    wire: Wire,
    layer: Layer,
    peer: Peer,
}

impl Rig {
    fn new() -> Rig {
        Rig {
            wire: udp_wire(),
            layer: Layer::default(),
            peer: Peer::new(),
        }
    }

    fn create(&mut self, method: &str, branch: &str) -> TxnId {
        let req = self.peer.request(method, branch, "");
        let source = self.peer.source(&self.wire);
        create(&mut self.layer, req, source)
    }

    /// Answers as the core does: one To tag of ours for every response.
    fn answer(&mut self, id: TxnId, status: u16, local: bool) -> bool {
        let Some(t) = self.layer.servers.get_mut(&id) else {
            let resp = Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n");
            return send_response(&self.wire, &mut self.layer, id, status, resp, local);
        };
        if status > 100 {
            t.to_tag.get_or_insert_with(|| "t1".to_string());
        }
        let resp = build_response(
            &t.request,
            None,
            status,
            None,
            t.to_tag.as_deref(),
            &[],
            b"",
        );
        send_response(
            &self.wire,
            &mut self.layer,
            id,
            status,
            Bytes::from(resp),
            local,
        )
    }

    fn state(&self, id: TxnId) -> ServerState {
        self.layer.servers[&id].state
    }

    /// Fires the timers of the next deadline; returns what they were.
    fn fire_next(&mut self) -> Vec<(TimerKey, Expiry)> {
        pop_next(&mut self.layer)
            .into_iter()
            .map(|k| (k, on_timer(&self.wire, &mut self.layer, k)))
            .collect()
    }

    fn timer(&self, id: TxnId, slot: usize) -> Option<crate::timer::TimerId> {
        self.layer.servers.get(&id).and_then(|t| t.timers[slot])
    }
}

fn t1() -> Duration {
    Timing::default().t1
}

fn ended(fired: &[(TimerKey, Expiry)], id: TxnId) -> bool {
    fired
        .iter()
        .any(|(_, e)| matches!(e, Expiry::ServerEnded { id: ended, .. } if *ended == id))
}

#[test]
fn invite_starts_proceeding_and_sends_100_trying_after_200_ms() {
    let mut rig = Rig::new();
    let before = rig.layer.timers.now();
    let id = rig.create("INVITE", "z9hG4bKi1");
    assert_eq!(rig.state(id), ServerState::Proceeding);
    assert_set_for(
        rig.timer(id, 2).expect("100 Trying timer"),
        before,
        rig.layer.timers.now(),
        Duration::from_millis(200),
        FINE,
    );
    rig.peer.nothing();
    let fired = rig.fire_next();
    assert_eq!(fired.len(), 1);
    assert!(matches!(fired[0], (TimerKey::ServerTrying(x), Expiry::Done) if x == id));
    assert_eq!(first_line(&rig.peer.one()), "SIP/2.0 100 Trying");
    assert!(rig.layer.servers[&id].trying_sent);
    // A retransmitted INVITE gets the 100 again (rebuilt, not stored).
    on_retransmission(&rig.wire, &mut rig.layer, id);
    assert_eq!(first_line(&rig.peer.one()), "SIP/2.0 100 Trying");
    assert_eq!(rig.wire.stats().retransmissions.load(Ordering::Relaxed), 1);
}

#[test]
fn invite_answered_before_200_ms_sends_no_100() {
    let mut rig = Rig::new();
    let id = rig.create("INVITE", "z9hG4bKi2");
    assert!(rig.answer(id, 180, true));
    assert_eq!(first_line(&rig.peer.one()), "SIP/2.0 180 Ringing");
    assert!(
        rig.timer(id, 2).is_none(),
        "the 100 Trying timer is cancelled"
    );
    send_trying(&rig.wire, &mut rig.layer, id);
    rig.peer.nothing();
    assert_eq!(rig.state(id), ServerState::Proceeding);
    // Proceeding: a retransmitted INVITE gets the last provisional.
    on_retransmission(&rig.wire, &mut rig.layer, id);
    assert_eq!(first_line(&rig.peer.one()), "SIP/2.0 180 Ringing");
}

#[test]
fn invite_non_2xx_retransmits_with_timer_g_until_ack_then_timer_i() {
    let mut rig = Rig::new();
    let id = rig.create("INVITE", "z9hG4bKi3");
    let before = rig.layer.timers.now();
    assert!(rig.answer(id, 486, true));
    let after = rig.layer.timers.now();
    assert_eq!(rig.state(id), ServerState::Completed);
    assert_eq!(first_line(&rig.peer.one()), "SIP/2.0 486 Busy Here");
    // Timer G at T1, Timer H at 64*T1.
    assert_set_for(rig.timer(id, 0).unwrap(), before, after, t1(), FINE);
    assert_set_for(rig.timer(id, 1).unwrap(), before, after, t1() * 64, COARSE);
    // G doubles up to T2 (§17.2.1): 2*T1, 4*T1, T2, T2.
    for expected in [
        t1() * 2,
        t1() * 4,
        Timing::default().t2,
        Timing::default().t2,
    ] {
        let before = rig.layer.timers.now();
        let fired = rig.fire_next();
        let after = rig.layer.timers.now();
        assert!(matches!(fired[..], [(TimerKey::ServerRetransmit(x), Expiry::Done)] if x == id));
        assert_eq!(first_line(&rig.peer.one()), "SIP/2.0 486 Busy Here");
        assert_set_for(rig.timer(id, 0).unwrap(), before, after, expected, FINE);
    }
    // A retransmitted INVITE in Completed gets the final again.
    on_retransmission(&rig.wire, &mut rig.layer, id);
    assert_eq!(first_line(&rig.peer.one()), "SIP/2.0 486 Busy Here");
    // The ACK: Confirmed, G and H stop, Timer I (T4) ends it.
    let before = rig.layer.timers.now();
    on_ack(&mut rig.layer, id);
    let after = rig.layer.timers.now();
    assert_eq!(rig.state(id), ServerState::Confirmed);
    assert!(rig.timer(id, 0).is_none());
    assert_set_for(
        rig.timer(id, 1).unwrap(),
        before,
        after,
        Timing::default().t4,
        COARSE,
    );
    // Confirmed absorbs retransmitted INVITEs and ACKs.
    on_retransmission(&rig.wire, &mut rig.layer, id);
    on_ack(&mut rig.layer, id);
    rig.peer.nothing();
    let fired = rig.fire_next();
    assert!(ended(&fired, id), "Timer I ends it");
    assert!(rig.layer.servers.is_empty());
    assert!(rig.layer.timers.is_empty(), "nothing left behind");
}

#[test]
fn invite_non_2xx_without_ack_ends_at_timer_h() {
    let mut rig = Rig::new();
    let id = rig.create("INVITE", "z9hG4bKi4");
    rig.answer(id, 603, true);
    rig.peer.take();
    let mut retransmissions = 0;
    loop {
        let fired = rig.fire_next();
        assert!(!fired.is_empty(), "Timer H never fired");
        if ended(&fired, id) {
            break;
        }
        retransmissions += rig.peer.take().len();
    }
    // T1 = 0.5 s, T2 = 4 s: 0.5, 1, 2, 4, then every 4 s until 32 s.
    assert!((8..=11).contains(&retransmissions), "{retransmissions}");
    assert!(rig.layer.servers.is_empty() && rig.layer.timers.is_empty());
}

#[test]
fn invite_over_a_stream_has_no_timer_g_and_timer_i_zero() {
    let mut rig = Rig::new();
    let mut req_source = rig.peer.source(&rig.wire);
    req_source.transport = Transport::Tcp;
    let req = rig.peer.request("INVITE", "z9hG4bKi5", "");
    let id = create(&mut rig.layer, req, req_source);
    rig.answer(id, 480, true);
    assert!(
        rig.timer(id, 0).is_none(),
        "no Timer G over a reliable transport"
    );
    assert!(rig.timer(id, 1).is_some(), "Timer H still runs");
    let before = rig.layer.timers.now();
    on_ack(&mut rig.layer, id);
    assert_set_for(
        rig.timer(id, 1).unwrap(),
        before,
        rig.layer.timers.now(),
        Duration::ZERO,
        COARSE,
    );
    assert!(ended(&rig.fire_next(), id));
}

#[test]
fn invite_2xx_from_the_uas_core_retransmits_until_its_ack() {
    let mut rig = Rig::new();
    let id = rig.create("INVITE", "z9hG4bKi6");
    let before = rig.layer.timers.now();
    assert!(rig.answer(id, 200, true));
    let after = rig.layer.timers.now();
    assert_eq!(rig.state(id), ServerState::Accepted);
    assert_eq!(first_line(&rig.peer.one()), "SIP/2.0 200 OK");
    let txn = &rig.layer.servers[&id];
    assert!(txn.uas_2xx);
    assert_eq!(txn.final_status, Some(200));
    // Timer L (RFC 6026) and the 2xx retransmission timer (§13.3.1.4).
    assert_set_for(rig.timer(id, 1).unwrap(), before, after, t1() * 64, COARSE);
    assert_set_for(rig.timer(id, 0).unwrap(), before, after, t1(), FINE);
    // Accepted absorbs retransmitted INVITEs: the timer resends the 2xx.
    on_retransmission(&rig.wire, &mut rig.layer, id);
    rig.peer.nothing();
    let fired = rig.fire_next();
    assert!(matches!(
        fired[..],
        [(TimerKey::ServerRetransmit(_), Expiry::Done)]
    ));
    assert_eq!(first_line(&rig.peer.one()), "SIP/2.0 200 OK");
    // The ACK (To tag of our 2xx) is found by dialog key and stops it.
    let ack = crate::transport::testkit::parse(&format!(
        "ACK sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKother\r\n\
         From: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>;tag=t1\r\n\
         Call-ID: z9hG4bKi6@test\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        rig.peer.addr
    ));
    assert_eq!(rig.layer.find_ack_target(&ack), Some(id));
    on_ack(&mut rig.layer, id);
    assert!(!rig.layer.servers[&id].uas_2xx);
    assert!(rig.timer(id, 0).is_none());
    assert_eq!(rig.state(id), ServerState::Accepted);
    let fired = rig.fire_next();
    assert!(ended(&fired, id), "Timer L ends it");
    assert_eq!(
        rig.layer.find_ack_target(&ack),
        None,
        "its ACK key left with it"
    );
}

#[test]
fn invite_2xx_relayed_from_downstream_is_not_retransmitted_here() {
    let mut rig = Rig::new();
    let id = rig.create("INVITE", "z9hG4bKi7");
    assert!(rig.answer(id, 200, false));
    assert_eq!(rig.state(id), ServerState::Accepted);
    assert!(!rig.layer.servers[&id].uas_2xx);
    assert!(rig.timer(id, 0).is_none());
    assert!(rig.layer.servers[&id].ack_key.is_none());
    rig.peer.take();
    assert!(ended(&rig.fire_next(), id));
}

#[test]
fn a_final_answer_is_sent_once() {
    let mut rig = Rig::new();
    let id = rig.create("INVITE", "z9hG4bKi8");
    assert!(rig.answer(id, 404, true));
    assert!(!rig.answer(id, 500, true));
    assert!(!rig.answer(id, 180, true));
    assert_eq!(first_line(&rig.peer.one()), "SIP/2.0 404 Not Found");
    assert!(!rig.answer(999, 200, true), "unknown transaction");
}

#[test]
fn non_invite_trying_proceeding_completed_timer_j() {
    let mut rig = Rig::new();
    let id = rig.create("OPTIONS", "z9hG4bKn1");
    assert_eq!(rig.state(id), ServerState::Trying);
    assert!(rig.timer(id, 2).is_none(), "no 100 Trying for non-INVITE");
    // Trying absorbs retransmissions silently.
    on_retransmission(&rig.wire, &mut rig.layer, id);
    rig.peer.nothing();
    assert!(rig.answer(id, 183, true));
    assert_eq!(rig.state(id), ServerState::Proceeding);
    rig.peer.take();
    on_retransmission(&rig.wire, &mut rig.layer, id);
    assert_eq!(first_line(&rig.peer.one()), "SIP/2.0 183 Session Progress");
    let before = rig.layer.timers.now();
    assert!(rig.answer(id, 200, true));
    let after = rig.layer.timers.now();
    assert_eq!(rig.state(id), ServerState::Completed);
    rig.peer.take();
    assert!(
        rig.timer(id, 0).is_none(),
        "a non-INVITE final is not retransmitted"
    );
    assert_set_for(rig.timer(id, 1).unwrap(), before, after, t1() * 64, COARSE);
    on_retransmission(&rig.wire, &mut rig.layer, id);
    assert_eq!(first_line(&rig.peer.one()), "SIP/2.0 200 OK");
    assert!(ended(&rig.fire_next(), id), "Timer J ends it");
    assert_eq!(
        rig.layer
            .find_server(&rig.peer.request("OPTIONS", "z9hG4bKn1", "")),
        None
    );
}

#[test]
fn non_invite_over_a_stream_ends_at_once() {
    let mut rig = Rig::new();
    let mut source = rig.peer.source(&rig.wire);
    source.transport = Transport::Tcp;
    let id = create(
        &mut rig.layer,
        rig.peer.request("BYE", "z9hG4bKn2", ""),
        source,
    );
    let before = rig.layer.timers.now();
    rig.answer(id, 200, true);
    assert_set_for(
        rig.timer(id, 1).unwrap(),
        before,
        rig.layer.timers.now(),
        Duration::ZERO,
        COARSE,
    );
    assert!(ended(&rig.fire_next(), id));
}

#[test]
fn matching_follows_17_2_3() {
    let mut rig = Rig::new();
    let id = rig.create("INVITE", "z9hG4bKm1");
    let again = rig.peer.request("INVITE", "z9hG4bKm1", "");
    assert_eq!(rig.layer.find_server(&again), Some(id));
    // CANCEL and ACK with the INVITE's branch find the INVITE transaction.
    let cancel = rig.peer.request("CANCEL", "z9hG4bKm1", "");
    assert_eq!(rig.layer.find_server(&cancel), None);
    assert_eq!(rig.layer.find_invite_server(&cancel), Some(id));
    let ack = rig.peer.request("ACK", "z9hG4bKm1", "");
    assert_eq!(rig.layer.find_server(&ack), Some(id));
    // Another sent-by is another transaction.
    let other = Peer::new().request("INVITE", "z9hG4bKm1", "");
    assert_eq!(rig.layer.find_server(&other), None);
    // RFC 2543 branches match on the legacy fields.
    let old = rig.peer.request("OPTIONS", "1234", "");
    let old_id = create(&mut rig.layer, old, rig.peer.source(&rig.wire));
    let old_again = rig.peer.request("OPTIONS", "1234", "");
    assert_eq!(rig.layer.find_server(&old_again), Some(old_id));
    assert_eq!(rig.layer.servers_created, 2);
    assert!(rig.layer.remove_server(old_id).is_some());
    assert_eq!(rig.layer.find_server(&old_again), None);
}

#[test]
fn timers_of_a_vanished_transaction_do_nothing() {
    let mut rig = Rig::new();
    let id = rig.create("INVITE", "z9hG4bKv1");
    let key = TimerKey::ServerTrying(id);
    rig.layer.remove_server(id);
    assert!(rig.layer.timers.is_empty(), "removing cancels its timers");
    for k in [key, TimerKey::ServerRetransmit(id), TimerKey::ServerEnd(id)] {
        assert!(matches!(
            on_timer(&rig.wire, &mut rig.layer, k),
            Expiry::Done
        ));
    }
    on_retransmission(&rig.wire, &mut rig.layer, id);
    on_ack(&mut rig.layer, id);
    rig.peer.nothing();
}

#[test]
fn a_completed_transaction_keeps_only_what_absorbing_needs() {
    // Held for 32 s after its final (issue 14: <= 1 KB each): the header
    // index and the lines nothing reads go once the services have seen the
    // final (From and To stay, their accessors cannot fail; decision 0062),
    // and a relayed 2xx is not kept (Accepted
    // answers nothing).
    let mut rig = Rig::new();
    let invite = rig.create("INVITE", "z9hG4bKm1");
    assert!(!rig.layer.servers[&invite].request.headers().is_empty());
    assert!(rig.answer(invite, 200, false));
    assert!(!rig.layer.servers[&invite].request.headers().is_empty());
    let received = rig.layer.servers[&invite].request.as_bytes().len();
    compact_request(&mut rig.layer, invite, false);
    let t = &rig.layer.servers[&invite];
    assert!(
        t.request.as_bytes().len() < received,
        "the datagram is let go"
    );
    assert_eq!(t.state, ServerState::Accepted);
    assert!(t.last_response.is_none());
    assert_eq!(t.request.headers().len(), 2);
    assert_eq!(t.request.from().uri.user, Some("alice"));
    let again = rig.peer.request("INVITE", "z9hG4bKm1", "");
    assert_eq!(rig.layer.find_server(&again), Some(invite));
    rig.peer.take();
    on_retransmission(&rig.wire, &mut rig.layer, invite);
    assert!(rig.peer.take().is_empty(), "absorbed");

    let bye = rig.create("BYE", "z9hG4bKm2");
    assert!(rig.answer(bye, 200, false));
    compact_request(&mut rig.layer, bye, false);
    let t = &rig.layer.servers[&bye];
    assert_eq!(t.request.headers().len(), 2);
    assert!(t.last_response.is_some(), "Timer J answers retransmissions");
    rig.peer.take();
    on_retransmission(&rig.wire, &mut rig.layer, bye);
    assert_eq!(first_line(&rig.peer.one()), "SIP/2.0 200 OK");
}

#[test]
fn a_settled_transaction_takes_the_held_form_and_still_absorbs_and_answers() {
    // Decision 0065: once final, with no service reading completed requests,
    // only the key, where answers go and a non-INVITE's final stay.
    let mut rig = Rig::new();
    let invite = rig.create("INVITE", "z9hG4bKh1");
    assert!(rig.answer(invite, 200, false));
    compact_request(&mut rig.layer, invite, true);
    assert!(!rig.layer.servers.contains_key(&invite));
    let held = &rig.layer.held_servers[&invite];
    assert!(held.answer.is_none(), "Accepted answers nothing");
    assert_eq!(held.final_status, 200);
    let again = rig.peer.request("INVITE", "z9hG4bKh1", "");
    assert_eq!(rig.layer.find_server(&again), Some(invite));
    assert!(rig.layer.is_retransmission(invite, &again));
    rig.peer.take();
    on_retransmission(&rig.wire, &mut rig.layer, invite);
    assert!(rig.peer.take().is_empty(), "absorbed");
    on_ack(&mut rig.layer, invite);

    let bye = rig.create("BYE", "z9hG4bKh2");
    assert!(rig.answer(bye, 200, false));
    compact_request(&mut rig.layer, bye, true);
    assert!(!rig.layer.servers.contains_key(&bye));
    rig.peer.take();
    on_retransmission(&rig.wire, &mut rig.layer, bye);
    assert_eq!(first_line(&rig.peer.one()), "SIP/2.0 200 OK");
    // Same branch, another CSeq: a new request, not a retransmission.
    let text = rig.peer.request("BYE", "z9hG4bKh2", "").as_bytes().to_vec();
    let text = String::from_utf8(text)
        .unwrap()
        .replace("CSeq: 1 BYE", "CSeq: 2 BYE");
    let other = crate::transport::testkit::parse(&text);
    assert!(!rig.layer.is_retransmission(bye, &other));

    // Timer L and J end them; their keys leave the index.
    assert_eq!(rig.layer.server_count(), 2);
    let mut ends = 0;
    while rig.layer.server_count() > 0 {
        ends += rig
            .fire_next()
            .iter()
            .filter(|(_, e)| {
                matches!(
                    e,
                    Expiry::ServerEnded {
                        final_status: Some(200),
                        ..
                    }
                )
            })
            .count();
    }
    assert_eq!(ends, 2);
    assert_eq!(rig.layer.find_server(&again), None);
}

#[test]
fn what_still_has_work_is_not_held() {
    let mut rig = Rig::new();
    // A non-2xx final retransmits until the ACK.
    let rejected = rig.create("INVITE", "z9hG4bKn1");
    assert!(rig.answer(rejected, 486, false));
    // A 2xx of our own retransmits until the ACK too.
    let ours = rig.create("INVITE", "z9hG4bKn2");
    assert!(rig.answer(ours, 200, true));
    // The application's handler still holds this request.
    let busy = rig.create("MESSAGE", "z9hG4bKn3");
    rig.layer.servers.get_mut(&busy).unwrap().app_holds = true;
    assert!(rig.answer(busy, 202, false));
    // Not answered finally yet.
    let open = rig.create("OPTIONS", "z9hG4bKn4");
    assert!(rig.answer(open, 100, false));
    for id in [rejected, ours, busy, open] {
        compact_request(&mut rig.layer, id, true);
        assert!(rig.layer.servers.contains_key(&id), "{id} kept whole");
    }
    assert!(rig.layer.held_servers.is_empty());
    rig.layer.servers.get_mut(&busy).unwrap().app_holds = false;
    assert!(rig.layer.hold_server(busy));
}
