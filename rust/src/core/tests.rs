//! The dispatcher on real 127.0.0.1 sockets: what reaches the application,
//! what the core answers itself, and that a service's hooks, timers and
//! client transactions come back to it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::*;
use crate::service::{Service, Verdict};
use crate::transaction::client::{self, Outcome};
use crate::transaction::{BranchId, Owner, TimerKey, TxnId};
use crate::transport::testkit::{first_line, parse, Peer};
use crate::transport::Destination;

fn core_with(config: Config) -> Arc<Core> {
    Core::start(config).expect("start on 127.0.0.1")
}

fn core() -> Arc<Core> {
    core_with(Config {
        listen: vec![ListenSpec::parse("udp:127.0.0.1:0").unwrap()],
        ..Config::default()
    })
}

fn addr(core: &Core) -> SocketAddr {
    core.local_addrs()[0].1
}

/// A peer sends `text` to the core; the loop thread reads it.
fn deliver(core: &Core, peer: &Peer, text: &str) -> Vec<Event> {
    peer.send_to(text.as_bytes(), addr(core));
    let mut events = Vec::new();
    core.poll_udp(0, &mut events);
    events
}

fn request_text(peer: &Peer, method: &str, branch: &str, extra: &str) -> String {
    String::from_utf8_lossy(peer.request(method, branch, extra).as_bytes()).into_owned()
}

/// Waits (bounded) until the core's timer descriptor fires, then runs it.
fn run_timers(core: &Core) -> Vec<Event> {
    let mut fd = libc::pollfd {
        fd: core.timer_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut fd, 1, 3000) };
    assert_eq!(ready, 1, "the timer did not fire within 3 s");
    let mut events = Vec::new();
    core.on_timer(&mut events);
    events
}

fn held(events: Vec<Event>) -> HeldRequest {
    match events.into_iter().next() {
        Some(Event::Request(inc)) => HeldRequest::new(inc),
        _ => panic!("no request for the application"),
    }
}

#[test]
fn a_request_reaches_the_application_and_its_answer_goes_back() {
    let core = core();
    let peer = Peer::new();
    let events = deliver(
        &core,
        &peer,
        &request_text(&peer, "INVITE", "z9hG4bKa1", ""),
    );
    assert_eq!(core.pending(), 1);
    let mut req = held(events);
    assert!(req.inc.txn.is_some());
    // A retransmission is absorbed by the transaction.
    assert!(deliver(
        &core,
        &peer,
        &request_text(&peer, "INVITE", "z9hG4bKa1", "")
    )
    .is_empty());
    req.reply(&core, 486, None, vec![("X-Why".into(), "busy".into())], b"")
        .unwrap();
    let resp = peer.one_message();
    assert_eq!(resp.status(), Some(486));
    let tag = resp.to_tag().unwrap().to_string();
    let server = resp
        .headers_named("Server")
        .next()
        .map(|h| resp.header_value(h));
    assert_eq!(server, Some(core.config.server_name.as_str()));
    assert_eq!(
        req.reply(&core, 200, None, Vec::new(), b"").unwrap_err(),
        ActionError::Closed(
            "cannot reply: request INVITE 1 (Call-ID z9hG4bKa1@test) was already answered or forwarded"
                .into()
        )
    );
    // Its ACK (same branch) is absorbed, never handed to the application.
    let ack = request_text(&peer, "ACK", "z9hG4bKa1", "").replace(
        "To: <sip:bob@127.0.0.1>",
        &format!("To: <sip:bob@127.0.0.1>;tag={tag}"),
    );
    assert!(deliver(&core, &peer, &ack).is_empty());
    req.finish(&core);
    assert_eq!(core.pending(), 0);
    assert_eq!(core.open_transactions(), (0, 0));
    assert_eq!(
        core.table_sizes().servers,
        1,
        "absorbing retransmissions until Timer I"
    );
}

#[test]
fn the_core_answers_what_needs_no_application() {
    let core = core();
    let peer = Peer::new();
    let no_call_id =
        request_text(&peer, "INVITE", "z9hG4bKb0", "").replace("Call-ID: z9hG4bKb0@test\r\n", "");
    assert!(deliver(&core, &peer, &no_call_id).is_empty());
    assert!(first_line(&peer.one()).starts_with("SIP/2.0 400 "));
    assert_eq!(core.stats.parse_errors.load(Ordering::Relaxed), 1);
    let mailto = request_text(&peer, "OPTIONS", "z9hG4bKb1", "")
        .replace("OPTIONS sip:bob@127.0.0.1", "OPTIONS mailto:bob@127.0.0.1");
    assert!(deliver(&core, &peer, &mailto).is_empty());
    assert_eq!(
        first_line(&peer.one()),
        "SIP/2.0 416 Unsupported URI Scheme"
    );
    // A response that matches nothing of ours is dropped.
    let stray = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKzz\r\n\
                 From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\n\
                 CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    assert!(deliver(&core, &peer, stray).is_empty());
    peer.nothing();
    assert_eq!(core.stats.dropped.load(Ordering::Relaxed), 1);
}

#[test]
fn overload_and_drain_answer_503_with_retry_after() {
    let core = core_with(Config {
        listen: vec![ListenSpec::parse("udp:127.0.0.1:0").unwrap()],
        max_pending: 1,
        retry_after: 7,
        ..Config::default()
    });
    let peer = Peer::new();
    let mut first = held(deliver(
        &core,
        &peer,
        &request_text(&peer, "OPTIONS", "z9hG4bKo1", ""),
    ));
    assert!(deliver(
        &core,
        &peer,
        &request_text(&peer, "OPTIONS", "z9hG4bKo2", "")
    )
    .is_empty());
    let refused = peer.one_message();
    assert_eq!(refused.status(), Some(503));
    let retry = refused
        .headers_named("Retry-After")
        .next()
        .map(|h| refused.header_value(h));
    assert_eq!(retry, Some("7"));
    // Its ACK-less non-INVITE needs no ACK; an in-dialog request gets headroom.
    let bye = request_text(&peer, "BYE", "z9hG4bKo3", "")
        .replace("To: <sip:bob@127.0.0.1>", "To: <sip:bob@127.0.0.1>;tag=x");
    let held_bye = deliver(&core, &peer, &bye);
    assert_eq!(held_bye.len(), 1);
    // At twice the bound another in-dialog request is refused, an ACK is
    // not: losing it would make the callee retransmit its 2xx for 32 s.
    let bye2 = bye.replace("z9hG4bKo3", "z9hG4bKo5");
    assert!(deliver(&core, &peer, &bye2).is_empty());
    assert_eq!(peer.one_message().status(), Some(503));
    let ack = request_text(&peer, "ACK", "z9hG4bKo6", "")
        .replace("To: <sip:bob@127.0.0.1>", "To: <sip:bob@127.0.0.1>;tag=x");
    assert_eq!(deliver(&core, &peer, &ack).len(), 1);
    first.finish(&core);
    core.start_drain();
    assert!(core.draining());
    assert!(deliver(
        &core,
        &peer,
        &request_text(&peer, "OPTIONS", "z9hG4bKo4", "")
    )
    .is_empty());
    assert_eq!(peer.one_message().status(), Some(503));
    assert_eq!(core.stats.drain_rejects.load(Ordering::Relaxed), 1);
    core.set_max_pending(5);
    core.set_retry_after(9);
    assert_eq!((core.max_pending(), core.retry_after()), (5, 9));
}

#[test]
fn in_dialog_requests_with_our_route_never_reach_the_application() {
    let core = core();
    let (caller, callee) = (Peer::new(), Peer::new());
    let us = addr(&core);
    let bye = request_text(
        &caller,
        "BYE",
        "z9hG4bKd1",
        &format!("Route: <sip:{us};lr>\r\n"),
    )
    .replace(
        "BYE sip:bob@127.0.0.1 ",
        &format!("BYE sip:bob@{} ", callee.addr),
    )
    .replace("To: <sip:bob@127.0.0.1>", "To: <sip:bob@127.0.0.1>;tag=x");
    assert!(deliver(&core, &caller, &bye).is_empty());
    let relayed = callee.one();
    assert!(relayed.starts_with("BYE "));
    let ok = crate::sip::write::build_response(&parse(&relayed), None, 200, None, None, &[], b"");
    assert!(deliver(&core, &callee, std::str::from_utf8(&ok).unwrap()).is_empty());
    assert_eq!(first_line(&caller.one()), "SIP/2.0 200 OK");
    // With `@app.in_dialog` the application gets it instead.
    core.set_in_dialog_to_app(true);
    let again = bye.replace("z9hG4bKd1", "z9hG4bKd2");
    assert_eq!(deliver(&core, &caller, &again).len(), 1);
}

/// A service that records what the dispatcher hands it.
#[derive(Default)]
struct Probe {
    stop_requests: bool,
    seen: Mutex<Vec<String>>,
}

impl Probe {
    fn saw(&self, what: String) {
        self.seen.lock().push(what);
    }
    fn seen(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock())
    }
}

impl Service for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn on_request(&self, _: &Node, msg: &Message, _: &Source) -> Verdict {
        self.saw(format!("request {}", msg.method_str()));
        if self.stop_requests {
            Verdict::Stop
        } else {
            Verdict::Continue
        }
    }
    fn on_transaction_end(&self, _: &mut Ctx<'_>, _: TxnId, final_status: Option<u16>) {
        self.saw(format!("end {final_status:?}"));
    }
    fn on_timer(&self, _: &mut Ctx<'_>, id: u64) {
        self.saw(format!("timer {id}"));
    }
    fn on_client_response(&self, _: &mut Ctx<'_>, id: u64, _: BranchId, o: Outcome, m: &Message) {
        self.saw(format!("response {id} {o:?} {}", m.status().unwrap_or(0)));
    }
    fn on_client_failure(&self, _: &mut Ctx<'_>, id: u64, _: BranchId, status: u16) {
        self.saw(format!("failure {id} {status}"));
    }
}

#[test]
fn on_request_sees_new_requests_before_routing_and_may_stop_them() {
    let core = core();
    let peer = Peer::new();
    let probe = Arc::new(Probe {
        stop_requests: true,
        ..Probe::default()
    });
    core.node.hooks.add(probe.clone()).unwrap();
    assert!(deliver(
        &core,
        &peer,
        &request_text(&peer, "OPTIONS", "z9hG4bKh1", "")
    )
    .is_empty());
    peer.nothing();
    assert_eq!(probe.seen(), ["request OPTIONS"]);
    assert_eq!(core.pending(), 0);
}

#[test]
fn a_services_timers_and_client_transactions_come_back_to_it() {
    let core = core();
    core.set_timing(crate::transaction::Timing {
        t1: Duration::from_millis(2),
        ..core.timing()
    });
    let probe = Arc::new(Probe::default());
    core.node.hooks.add(probe.clone()).unwrap();
    let (answering, silent) = (Peer::new(), Peer::new());
    let owner = |id| Owner {
        service: "probe",
        id,
    };
    let ((), events) = core.with_services(|cx, _| {
        let now = cx.txns.timers.now();
        let key = TimerKey::Service(owner(1));
        cx.txns.timers.schedule(now, Duration::from_millis(1), key);
        for (id, peer) in [(2, &answering), (3, &silent)] {
            let request = format!(
                "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKsvc{id}\r\n\
                 From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:{}>\r\nCall-ID: svc{id}\r\n\
                 CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                peer.addr,
                addr(&core),
                peer.addr
            );
            let dest = Destination {
                transport: crate::transport::Transport::Udp,
                addr: peer.addr,
                conn: None,
            };
            client::start(
                &cx.node.wire,
                cx.txns,
                owner(id),
                format!("z9hG4bKsvc{id}"),
                "OPTIONS",
                request.into(),
                dest,
            );
        }
    });
    assert!(events.is_empty());
    let sent = answering.one();
    let ok = crate::sip::write::build_response(&parse(&sent), None, 200, None, Some("t"), &[], b"");
    assert!(deliver(&core, &answering, std::str::from_utf8(&ok).unwrap()).is_empty());
    assert_eq!(probe.seen(), ["response 2 Success 200"]);
    let mut seen = Vec::new();
    while !seen.iter().any(|s: &String| s.starts_with("failure")) {
        run_timers(&core);
        seen.extend(probe.seen());
    }
    assert!(seen.contains(&"timer 1".to_string()), "{seen:?}");
    assert!(seen.contains(&"failure 3 408".to_string()), "{seen:?}");
    assert!(silent.take().len() > 1, "retransmitted before Timer F");
}

#[test]
fn on_transaction_end_sees_the_final_answer() {
    let core = core();
    core.set_timing(crate::transaction::Timing {
        t1: Duration::from_millis(2),
        ..core.timing()
    });
    let probe = Arc::new(Probe::default());
    core.node.hooks.add(probe.clone()).unwrap();
    let peer = Peer::new();
    let mut req = held(deliver(
        &core,
        &peer,
        &request_text(&peer, "MESSAGE", "z9hG4bKe1", ""),
    ));
    req.reply(&core, 202, None, Vec::new(), b"").unwrap();
    req.finish(&core);
    assert_eq!(probe.seen(), ["request MESSAGE"]);
    while core.table_sizes().servers > 0 {
        run_timers(&core);
    }
    assert_eq!(probe.seen(), ["end Some(202)"]);
}
