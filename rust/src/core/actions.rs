//! What the application does with a request it holds: answer it, relay it
//! statefully, forward it statelessly, or let it go. The Python layer calls
//! these and only translates arguments and errors.

use bytes::Bytes;

use super::{Core, Event, Incoming, Stack};
use crate::proxy::stateful::RelayOptions;
use crate::proxy::{forward_stateless, ForwardError, ForwardRequest, Hop};
use crate::service::Ctx;
use crate::sip::write::build_response;
use crate::transaction::TxnId;

/// An answer the application gives.
pub struct Reply<'a> {
    pub status: u16,
    pub reason: Option<&'a str>,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl Core {
    /// Answers a held request: through its server transaction when it has
    /// one (retransmissions, ACK matching), else statelessly with `to_tag`,
    /// which is made once and kept for later answers. False when the
    /// transaction already answered finally or ended (nothing is sent).
    pub fn reply(&self, inc: &Incoming, to_tag: &mut Option<String>, reply: &Reply<'_>) -> bool {
        let Some(txn) = inc.txn else {
            if to_tag.is_none() && reply.status > 100 && inc.msg.to_tag().is_none() {
                *to_tag = Some(self.node.new_tag());
            }
            let resp = build_response(
                &inc.msg,
                Some(inc.source.addr),
                reply.status,
                reply.reason,
                to_tag.as_deref(),
                reply.headers,
                reply.body,
            );
            self.node
                .wire
                .send_response(&inc.msg, inc.source, Bytes::from(resp));
            return true;
        };
        let mut events = Vec::new();
        let mut stack = self.stack.lock();
        let Stack { txns, proxy } = &mut *stack;
        let cx = &mut Ctx::new(&self.node, txns, &mut events);
        let tag = match cx.txns.servers.get_mut(&txn) {
            Some(t) if t.is_final() => return false,
            Some(t) => {
                if t.to_tag.is_none() && reply.status > 100 && t.request.to_tag().is_none() {
                    t.to_tag = Some(self.node.new_tag());
                }
                t.to_tag.clone()
            }
            None => return false,
        };
        let resp = build_response(
            &inc.msg,
            Some(inc.source.addr),
            reply.status,
            reply.reason,
            tag.as_deref(),
            reply.headers,
            reply.body,
        );
        let sent = crate::proxy::send_final(cx, txn, reply.status, Bytes::from(resp), true);
        if sent && reply.status >= 200 {
            proxy.on_local_final(cx, txn);
        }
        self.rearm(&stack.txns);
        sent
    }

    /// Relays server transaction `txn` statefully (`Proxy::relay`); the
    /// events are the round's results when it ended at once.
    pub fn relay(
        &self,
        txn: TxnId,
        opts: &RelayOptions<'_>,
        relay_id: u64,
    ) -> (Result<(), ForwardError>, Vec<Event>) {
        self.with_services(|cx, proxy| proxy.relay(cx, txn, opts, relay_id))
    }

    /// A response the application held in `on_reply` goes on (changed or
    /// not): the proxy passes it upstream or keeps it for the round.
    pub fn deliver_reply(&self, held: crate::service::HeldReply) -> Vec<Event> {
        let (_, events) = self.with_services(|cx, proxy| {
            proxy.deliver_held(cx, held.server, held.branch, held.outcome, held.msg)
        });
        events
    }

    /// Forwards statelessly (§16.11).
    pub fn forward(&self, inc: &Incoming, fwd: &ForwardRequest<'_>) -> Result<Hop, ForwardError> {
        forward_stateless(&self.node, inc, fwd)
    }

    /// The application is done with a held request (it acted, or gave up):
    /// its overload slot is freed and a held relay result goes upstream.
    pub fn finish(&self, txn: Option<TxnId>) {
        self.release();
        if let Some(txn) = txn {
            self.with_services(|cx, proxy| {
                if let Some(t) = cx.txns.servers.get_mut(&txn) {
                    t.app_holds = false;
                }
                proxy.finish(cx, txn);
                // A final sent while the handler held the request: the
                // transaction can take its held form now.
                if cx.node.hooks.settled_may_be_held() && cx.txns.hold_server(txn) {
                    if let Some(ctx) = cx.txns.server_ctx(txn) {
                        proxy.settle(cx, ctx);
                    }
                }
            });
        }
    }

    /// Drops a server transaction: the request is handled statelessly.
    pub fn forget(&self, txn: TxnId) {
        let mut stack = self.stack.lock();
        stack.txns.remove_server(txn);
        self.rearm(&stack.txns);
    }
}
