//! The `on_send` and `on_branch_timeout` hook points end to end, with no
//! Python: a core on a UDP socket of 127.0.0.1, a service that refuses one
//! destination and records timeouts, INVITEs from a real socket relayed to
//! real sockets.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sipr::core::{Config, Core, Event, Incoming};
use sipr::proxy::stateful::{RelayOptions, Target};
use sipr::service::{BranchPlan, BranchTimeout, Ctx, Node, Service, Verdict};
use sipr::transaction::BranchId;
use sipr::transport::ListenSpec;

#[derive(Default)]
struct Guard {
    refused: Mutex<Option<SocketAddr>>,
    sends: Mutex<Vec<(String, String, SocketAddr)>>,
    timeouts: Mutex<Vec<BranchTimeout>>,
}

impl Service for Guard {
    fn name(&self) -> &'static str {
        "guard"
    }

    fn on_send(&self, _node: &Node, plan: &BranchPlan<'_>, request_uri: &str) -> Verdict {
        let method = plan.request.method_str().to_string();
        self.sends
            .lock()
            .push((method, request_uri.to_string(), plan.hop.addr));
        if *self.refused.lock() == Some(plan.hop.addr) {
            Verdict::Stop
        } else {
            Verdict::Continue
        }
    }

    fn on_branch_timeout(&self, _cx: &mut Ctx<'_>, _branch: BranchId, why: BranchTimeout) {
        self.timeouts.lock().push(why);
    }
}

fn start() -> (Arc<Core>, Arc<Guard>) {
    let config = Config {
        listen: vec![ListenSpec::parse("udp:127.0.0.1:0").unwrap()],
        ..Config::default()
    };
    let core = Core::start(config).unwrap();
    let guard = Arc::new(Guard::default());
    core.node.hooks.add(guard.clone()).unwrap();
    (core, guard)
}

fn poll(fd: i32, ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, ms) == 1 }
}

fn socket() -> UdpSocket {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock
}

/// Sends an INVITE from `caller` and returns the request the core hands up.
fn invite(core: &Core, caller: &UdpSocket) -> Incoming {
    let port = caller.local_addr().unwrap().port();
    let text = format!(
        "INVITE sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKguard{port}\r\n\
         From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n\
         Call-ID: guard-{port}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n\
         Contact: <sip:alice@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n"
    );
    caller
        .send_to(text.as_bytes(), core.local_addrs()[0].1)
        .unwrap();
    assert!(
        poll(core.udp_fds()[0], 5000),
        "no datagram reached the core"
    );
    let mut out = Vec::new();
    core.poll_udp(0, &mut out);
    match out.pop() {
        Some(Event::Request(inc)) => inc,
        _ => panic!("the INVITE did not reach the application"),
    }
}

fn relay(core: &Core, inc: &Incoming, hops: &[SocketAddr]) -> Vec<Event> {
    let targets = hops
        .iter()
        .map(|a| Target {
            hop: Some(format!("sip:{a}")),
            ..Target::default()
        })
        .collect();
    let opts = RelayOptions {
        targets,
        request_uri: None,
        header_edits: &[],
        record_route: true,
        timeout: None,
        serial: None,
    };
    let (result, events) = core.relay(inc.txn.expect("a transaction"), &opts, 1);
    result.unwrap();
    events
}

fn relay_done_status(events: &[Event]) -> Option<u16> {
    events.iter().find_map(|e| match e {
        Event::RelayDone { result, .. } => Some(result.status),
        _ => None,
    })
}

#[test]
fn a_refused_branch_is_not_sent_and_the_fork_goes_on() {
    let (core, guard) = start();
    let (caller, refused, callee) = (socket(), socket(), socket());
    let (refused_addr, callee_addr) = (refused.local_addr().unwrap(), callee.local_addr().unwrap());
    *guard.refused.lock() = Some(refused_addr);
    let inc = invite(&core, &caller);
    let events = relay(&core, &inc, &[refused_addr, callee_addr]);
    assert_eq!(relay_done_status(&events), None, "the other branch is live");
    let mut buf = [0u8; 4096];
    let n = callee
        .recv(&mut buf)
        .expect("the INVITE on the allowed branch");
    assert!(buf[..n].starts_with(b"INVITE sip:bob@example.com SIP/2.0\r\n"));
    // Both branches were built in the same call: a refused one sent would
    // be queued by now.
    refused.set_nonblocking(true).unwrap();
    assert!(
        refused.recv(&mut buf).is_err(),
        "the refused branch was sent"
    );
    let sends = guard.sends.lock().clone();
    assert_eq!(
        sends,
        vec![
            ("INVITE".into(), "sip:bob@example.com".into(), refused_addr),
            ("INVITE".into(), "sip:bob@example.com".into(), callee_addr),
        ]
    );
    core.stop();
}

#[test]
fn a_relay_whose_only_branch_is_refused_ends_at_once_with_403() {
    let (core, guard) = start();
    let (caller, refused) = (socket(), socket());
    let refused_addr = refused.local_addr().unwrap();
    *guard.refused.lock() = Some(refused_addr);
    let inc = invite(&core, &caller);
    let events = relay(&core, &inc, &[refused_addr]);
    assert_eq!(relay_done_status(&events), Some(403));
    core.stop();
}

#[test]
fn a_silent_branch_reports_its_timeout_before_it_fails_with_408() {
    let (core, guard) = start();
    let mut timing = core.timing();
    timing.t1 = Duration::from_millis(5); // Timer B: 64*T1 = 320 ms
    core.set_timing(timing);
    let (caller, silent) = (socket(), socket());
    let inc = invite(&core, &caller);
    let mut events = relay(&core, &inc, &[silent.local_addr().unwrap()]);
    let mut rounds = 0;
    while relay_done_status(&events).is_none() {
        rounds += 1;
        assert!(rounds < 500, "no final answer after the timeout");
        assert!(poll(core.timer_fd(), 5000), "no timer fired");
        core.on_timer(&mut events);
    }
    assert_eq!(relay_done_status(&events), Some(408));
    assert_eq!(*guard.timeouts.lock(), vec![BranchTimeout::NoResponse]);
    core.stop();
}
