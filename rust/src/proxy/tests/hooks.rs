//! The proxy's hook points for other services: `on_relay` (change the hop,
//! add header edits) and `on_response` (hold a response, hand it back).

use std::sync::Arc;

use parking_lot::Mutex;

use super::*;
use crate::service::{BranchPlan, ResponseAt, Service, Verdict};
use crate::sip::write::HeaderEdit;
use crate::transaction::client::Outcome;
use crate::transport::Hop;

#[derive(Default)]
struct Recorder {
    /// Send every branch here instead.
    redirect: Mutex<Option<Hop>>,
    /// Responses held: (branch, outcome, status).
    held: Mutex<Vec<(ResponseAt, Message)>>,
    hold_provisionals: bool,
}

impl Service for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn on_relay(&self, _node: &Node, plan: &mut BranchPlan<'_>) {
        plan.edits
            .push(HeaderEdit::Add("X-Seen-By".into(), "recorder".into()));
        if let Some(hop) = *self.redirect.lock() {
            plan.hop = hop;
        }
    }

    fn on_response(&self, _cx: &mut Ctx<'_>, at: ResponseAt, msg: &Message) -> Verdict {
        if self.hold_provisionals && at.outcome == Outcome::Provisional {
            self.held.lock().push((at, msg.clone()));
            return Verdict::Stop;
        }
        Verdict::Continue
    }
}

#[test]
fn on_relay_may_move_a_branch_and_add_headers() {
    let mut rig = Rig::new();
    let (a, elsewhere) = (Peer::new(), Peer::new());
    let recorder = Arc::new(Recorder::default());
    *recorder.redirect.lock() = Some(Hop {
        transport: crate::transport::Transport::Udp,
        addr: elsewhere.addr,
    });
    rig.node.hooks.add(recorder.clone()).unwrap();
    let txn = rig.incoming("OPTIONS", "z9hG4bKh1", "");
    rig.relay_to(txn, &[&a], 1).unwrap();
    a.nothing();
    let got = elsewhere.one_message();
    let seen = got
        .headers_named("X-Seen-By")
        .next()
        .map(|h| got.header_value(h));
    assert_eq!(seen, Some("recorder"));
    // The stateless path calls it too.
    let inc = crate::service::Incoming {
        msg: rig.upstream.request("MESSAGE", "z9hG4bKh2", ""),
        source: rig.upstream.source(&rig.node.wire),
        txn: None,
    };
    let target = format!("sip:{}", a.addr);
    let fwd = crate::proxy::ForwardRequest {
        target: Some(&target),
        ..Default::default()
    };
    let hop = crate::proxy::forward_stateless(&rig.node, &inc, &fwd).unwrap();
    assert_eq!(hop.addr, elsewhere.addr);
    assert!(elsewhere.one().contains("\r\nX-Seen-By: recorder\r\n"));
}

#[test]
fn on_response_may_hold_a_response_and_hand_it_back() {
    let mut rig = Rig::new();
    let a = Peer::new();
    let recorder = Arc::new(Recorder {
        hold_provisionals: true,
        ..Recorder::default()
    });
    rig.node.hooks.add(recorder.clone()).unwrap();
    assert!(
        rig.node.hooks.add(recorder.clone()).is_err(),
        "one service per name"
    );
    let txn = rig.incoming("INVITE", "z9hG4bKh3", "");
    rig.relay_to(txn, &[&a], 1).unwrap();
    rig.upstream.take();
    let sent = a.one();
    rig.answer(&sent, 180, &[]);
    rig.upstream.nothing();
    let (at, msg) = recorder.held.lock().pop().expect("held");
    assert_eq!((at.server, at.outcome), (txn, Outcome::Provisional));
    rig.with(|cx, proxy| proxy.deliver_response(cx, at.branch, at.outcome, msg));
    assert_eq!(lines(&rig.upstream), ["SIP/2.0 180 Ringing"]);
    // Finals are not held by this service: straight through.
    rig.answer(&sent, 200, &[]);
    assert_eq!(lines(&rig.upstream), ["SIP/2.0 200 OK"]);
}

#[test]
fn services_are_found_by_name_and_the_proxy_name_is_reserved() {
    let rig = Rig::new();
    assert!(rig.node.hooks.is_empty());
    assert!(rig.node.hooks.all().is_none());
    rig.node.hooks.add(Arc::new(Recorder::default())).unwrap();
    assert!(!rig.node.hooks.is_empty());
    assert_eq!(
        rig.node.hooks.named("recorder").map(|s| s.name()),
        Some("recorder")
    );
    assert!(rig.node.hooks.named("other").is_none());
    struct Impostor;
    impl Service for Impostor {
        fn name(&self) -> &'static str {
            SERVICE
        }
    }
    assert!(rig.node.hooks.add(Arc::new(Impostor)).is_err());
}
