//! The dialog state machine, profiles, the table's indexes and the records,
//! without I/O (the wire behaviour is covered by the SIPp tests).

use std::time::{Duration, Instant};

use super::records::{reason_of, Cdr, Disposition};
use super::state::{Dialog, EndReason, Leg, State, MAX_FORKS};
use super::{EventKind, Profile, Profiles, Record, Settings, Table};
use crate::transport::Transport;

fn leg(tag: &str) -> Leg {
    Leg {
        tag: tag.into(),
        header: format!("<sip:{tag}@example.com>;tag={tag}").into(),
        contact: format!("sip:{tag}@10.0.0.1").into(),
        route: Box::new([]),
        dest: None,
        cseq: 1,
        keepalive_pending: false,
    }
}

fn dialog(id: u64, call_id: &str, profiles: &[(&str, &str)]) -> Dialog {
    Dialog {
        id,
        state: State::Unconfirmed,
        call_id: call_id.into(),
        caller: leg("alice"),
        callee: None,
        forks: Vec::new(),
        invite_txn: Some(id + 1000),
        started: Instant::now(),
        answered: None,
        timeout: Duration::from_secs(60),
        keepalive: Some(Duration::from_secs(10)),
        next_keepalive: None,
        timer: None,
        profiles: profiles.iter().map(|(n, v)| Profile::new(n, v)).collect(),
        account: false,
        extra: vec![("account".into(), "acme".into())],
        caller_uri: "sip:alice@example.com".into(),
        callee_uri: "sip:bob@example.com".into(),
        source: (Transport::Udp, "127.0.0.1:5070".parse().unwrap()),
        destination: None,
        final_status: 0,
        final_reason: "".into(),
        acked_cseq: 0,
    }
}

#[test]
fn forked_early_dialogs_then_one_fork_answers() {
    let mut d = dialog(1, "c1", &[]);
    d.on_provisional("fork-a");
    d.on_provisional("fork-b");
    d.on_provisional("fork-a");
    assert_eq!(d.state, State::Early);
    assert_eq!(d.forks.len(), 2);
    assert!(d.has_callee_tag("fork-b"));
    let now = Instant::now();
    assert!(d.on_answer(leg("fork-b"), 200, "OK", now));
    assert_eq!(d.state, State::Confirmed);
    assert!(d.forks.is_empty(), "other forks' early dialogs end");
    assert!(d.has_callee_tag("fork-b") && !d.has_callee_tag("fork-a"));
    // A second 2xx (another fork) does not re-confirm.
    assert!(!d.on_answer(leg("fork-a"), 200, "OK", now));
    assert_eq!(d.callee.as_ref().unwrap().tag.as_ref(), "fork-b");
    // Keepalive is scheduled from the answer, before the lifetime ends.
    assert_eq!(
        d.next_deadline(Duration::from_secs(200)),
        Some(now + Duration::from_secs(10))
    );
}

#[test]
fn forks_are_bounded() {
    let mut d = dialog(1, "c1", &[]);
    for i in 0..100 {
        d.on_provisional(&format!("t{i}"));
    }
    assert_eq!(d.forks.len(), MAX_FORKS);
}

#[test]
fn lifetime_setup_bound_and_refresh() {
    let mut d = dialog(1, "c1", &[]);
    d.keepalive = None;
    let setup = Duration::from_secs(200);
    assert_eq!(d.next_deadline(setup), Some(d.started + setup));
    let t0 = Instant::now();
    d.on_answer(leg("b"), 200, "OK", t0);
    assert_eq!(d.next_deadline(setup), Some(t0 + Duration::from_secs(60)));
    assert!(!d.expired(t0 + Duration::from_secs(59)));
    assert!(d.expired(t0 + Duration::from_secs(60)));
    // A re-INVITE's 2xx restarts the lifetime.
    let t1 = t0 + Duration::from_secs(30);
    d.refresh(t1);
    assert!(!d.expired(t0 + Duration::from_secs(60)));
    assert!(d.expired(t1 + Duration::from_secs(60)));
}

#[test]
fn failure_terminates_early_dialogs() {
    let mut d = dialog(1, "c1", &[]);
    d.on_provisional("x");
    d.on_failure(486, "Busy Here");
    assert_eq!(d.state, State::Terminated);
    assert_eq!(d.next_deadline(Duration::from_secs(1)), None);
    let cdr = Cdr::of(&d, EndReason::Failed, Instant::now());
    assert_eq!(cdr.disposition, Disposition::Busy);
    assert!(cdr.disposition.missed());
    assert_eq!((cdr.code, cdr.reason.as_str()), (486, "Busy Here"));
    assert_eq!(cdr.duration, 0.0);
    assert!(cdr.answer.is_none());
}

#[test]
fn dispositions() {
    let d = |s| Disposition::of(s).as_str();
    assert_eq!(
        [
            d(200),
            d(486),
            d(600),
            d(487),
            d(408),
            d(480),
            d(404),
            d(503)
        ],
        [
            "answered",
            "busy",
            "busy",
            "cancelled",
            "no_answer",
            "no_answer",
            "failed",
            "failed"
        ]
    );
    assert!(!Disposition::Answered.missed() && !Disposition::Failed.missed());
}

#[test]
fn cdr_duration_is_answer_to_end() {
    let mut d = dialog(7, "c7", &[]);
    let t0 = Instant::now();
    d.on_answer(leg("b"), 200, "OK", t0);
    let cdr = Cdr::of(&d, EndReason::CallerBye, t0 + Duration::from_millis(2_000));
    assert!((cdr.duration - 2.0).abs() < 1e-6, "{}", cdr.duration);
    assert!((cdr.end - cdr.answer.unwrap() - 2.0).abs() < 1e-3);
    assert!(cdr.start <= cdr.answer.unwrap());
    assert_eq!(cdr.to_tag, "b");
    assert_eq!(cdr.end_reason.as_str(), "caller_bye");
    assert_eq!(cdr.extra, vec![("account".into(), "acme".into())]);
}

#[test]
fn profiles_count_live_by_name_and_value() {
    let mut p = Profiles::default();
    let a = Profile::parse("user:alice");
    let b = Profile::parse("user:bob");
    let gw = Profile::parse("trunk:sip:gw1.example.com");
    assert_eq!(gw.value.as_ref(), "sip:gw1.example.com");
    for x in [&a, &a, &b, &gw] {
        p.add(x);
    }
    assert_eq!(p.count("user", Some("alice")), 2);
    assert_eq!(p.count("user", None), 3);
    assert_eq!(p.count("trunk", Some("sip:gw1.example.com")), 1);
    p.remove(&a);
    p.remove(&b);
    assert_eq!(p.count("user", Some("alice")), 1);
    assert_eq!(p.count("user", Some("bob")), 0);
    p.remove(&a);
    assert_eq!(p.count("user", None), 0);
    assert_eq!(
        p.entries(),
        vec![("trunk".into(), "sip:gw1.example.com".into(), 1)]
    );
    // Removing what is not there never goes negative.
    p.remove(&a);
    assert_eq!(p.count("user", None), 0);
}

#[test]
fn table_finds_requests_from_both_sides_and_frees_profiles() {
    let mut t = Table::new(Settings::default());
    let mut d = dialog(1, "call-1", &[("user", "alice")]);
    d.on_answer(leg("bob"), 200, "OK", Instant::now());
    t.insert(d);
    t.insert(dialog(2, "call-2", &[("user", "alice")]));
    assert_eq!(t.profiles.count("user", Some("alice")), 2);
    assert_eq!(t.find("call-1", "alice", "bob"), Some((1, true)));
    assert_eq!(t.find("call-1", "bob", "alice"), Some((1, false)));
    assert_eq!(t.find("call-1", "mallory", "alice"), None);
    assert_eq!(t.find("call-9", "alice", "bob"), None);
    assert_eq!(
        t.by_invite.len(),
        1,
        "the confirmed one left the setup index"
    );
    t.remove(1);
    assert_eq!(t.find("call-1", "alice", "bob"), None);
    assert_eq!(t.profiles.count("user", Some("alice")), 1);
    t.remove(2);
    assert!(t.by_invite.is_empty() && t.by_tags.is_empty());
}

#[test]
fn records_queue_only_with_a_writer_and_within_bound() {
    let mut t = Table::new(Settings {
        max_records: 2,
        ..Settings::default()
    });
    let d = dialog(1, "c", &[]);
    let cdr = || Record::Cdr(Cdr::of(&d, EndReason::Failed, Instant::now()));
    t.emit(cdr());
    assert!(t.records.is_empty(), "no writer attached: nothing queued");
    t.settings.accounting = true;
    for _ in 0..3 {
        t.emit(cdr());
    }
    assert_eq!(t.records.len(), 2);
    assert_eq!(t.stats.records_dropped, 1);
}

#[test]
fn memory_per_dialog_is_bounded() {
    let mut d = dialog(
        1,
        "a84b4c76e66710@pc33.atlanta.example.com",
        &[("user", "alice")],
    );
    d.on_answer(leg("bob"), 200, "OK", Instant::now());
    let bytes = d.heap_bytes();
    // A typical call: well under 2 KB (Kamailio's dlg_cell with its legs is
    // of the same order).
    assert!(bytes < 2048, "{bytes}");
    assert!(
        std::mem::size_of::<Dialog>() <= 512,
        "{}",
        std::mem::size_of::<Dialog>()
    );
}

#[test]
fn reason_phrase_of_a_serialized_response() {
    assert_eq!(
        reason_of(b"SIP/2.0 486 Busy Here\r\nVia: x\r\n"),
        "Busy Here"
    );
    assert_eq!(reason_of(b"SIP/2.0 200 OK\r\n"), "OK");
    assert_eq!(reason_of(b"SIP/2.0 200"), "");
}

#[test]
fn ids_round_trip_and_are_never_json_numbers() {
    for id in [0u64, 1, 0x1234_e567_8901_2345, u64::MAX] {
        let text = super::format_id(id);
        assert_eq!(text.len(), 19);
        assert!(
            serde_json::from_str::<serde_json::Value>(&text).is_err(),
            "{text}"
        );
        assert_eq!(super::parse_id(&text), Some(id));
        assert_eq!(super::parse_id(&text.replace('-', "")), Some(id));
    }
    assert_eq!(super::parse_id("xyz"), None);
}

/// True when `fd` is readable now.
fn readable(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

#[test]
fn dialog_events_are_queued_only_when_wanted_and_bounded() {
    let dialogs = super::Dialogs::default();
    let fd = dialogs.events_fd().expect("an eventfd");
    let now = Instant::now();
    let mut d = dialog(7, "c7", &[("user", "alice"), ("calls", "")]);
    d.on_answer(leg("bob"), 200, "OK", now);
    // Off by default: nothing built, queued, counted or signalled.
    {
        let mut t = dialogs.lock();
        assert!(!t.dialog_event(&d, EventKind::Start, None, now));
        assert!(!t.dialog_event(&d, EventKind::End, Some(EndReason::CallerBye), now));
        assert_eq!((t.stats.events_queued, t.stats.events_dropped), (0, 0));
    }
    assert_eq!(dialogs.queued_events(), 0);
    assert!(!readable(fd));

    // Only end events wanted: a start is not queued.
    dialogs.want_events(false, true);
    let later = now + Duration::from_secs(2);
    {
        let mut t = dialogs.lock();
        assert!(!t.dialog_event(&d, EventKind::Start, None, now));
        assert!(t.dialog_event(&d, EventKind::End, Some(EndReason::CalleeBye), later));
    }
    assert!(readable(fd), "the first event signals");
    let events = dialogs.take_events(10);
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.kind, EventKind::End);
    assert_eq!(e.id, super::format_id(7));
    assert_eq!(e.reason, Some(EndReason::CalleeBye));
    assert_eq!((e.code, e.to_tag.as_str()), (200, "bob"));
    assert!((e.duration - 2.0).abs() < 1e-6, "{}", e.duration);
    assert_eq!(e.profiles, ["user:alice", "calls"]);
    assert_eq!(e.extra[0].1.as_ref(), "acme");
    assert_eq!(e.source, "udp:127.0.0.1:5070");
    dialogs.clear_events_signal();
    assert!(!readable(fd));

    // Bounded: beyond the bound, events are dropped and counted.
    dialogs.want_events(true, true);
    dialogs.lock().events.max = 3;
    let queued: Vec<bool> = (0..5)
        .map(|_| dialogs.lock().dialog_event(&d, EventKind::Start, None, now))
        .collect();
    assert_eq!(queued, [true, true, true, false, false]);
    let stats = dialogs.stats();
    assert_eq!((stats.events_queued, stats.events_dropped), (4, 2));
    assert_eq!(dialogs.queued_events(), 3);
    assert_eq!(
        dialogs.take_events(2).len(),
        2,
        "taken oldest first, up to max"
    );

    // Nobody listens any more: what waits is dropped with the wish.
    dialogs.want_events(false, false);
    assert_eq!(dialogs.queued_events(), 0);
}
