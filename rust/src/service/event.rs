//! What the services tell the application layer (`python/`), in the order
//! it happened, after a read, a timer or an action.

use bytes::Bytes;

use crate::sip::Message;
use crate::transaction::client::Outcome;
use crate::transaction::{BranchId, TxnId};
use crate::transport::Source;

/// A request the application must decide on.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub msg: Message,
    pub source: Source,
    /// Its server transaction (none for ACK and stateless-only requests).
    pub txn: Option<TxnId>,
}

/// A final answer a relay round produced, ready for the application and for
/// upstream.
#[derive(Clone)]
pub struct Final {
    pub status: u16,
    /// As received (or synthesised), for the application.
    pub message: Message,
    /// With our Via removed, for upstream.
    pub upstream: Bytes,
}

pub enum Event {
    Request(Incoming),
    /// A `relay()` round finished with this final answer.
    RelayDone {
        relay: u64,
        result: Final,
    },
    /// A CANCEL ended this request while the application held it.
    Cancelled(TxnId),
    /// A response held for the application's `on_reply` (`onreply`
    /// service); it goes on when handed back (`Proxy::deliver_held`).
    Reply(HeldReply),
    /// A server transaction whose replies were watched ended: the
    /// application forgets its per-relay `on_reply` handler.
    ReplyWatchEnded(TxnId),
}

/// A response on a proxied branch, held for the application.
#[derive(Clone)]
pub struct HeldReply {
    /// The server transaction it answers.
    pub server: TxnId,
    /// The branch (client transaction) it came on.
    pub branch: BranchId,
    pub outcome: Outcome,
    pub msg: Message,
    /// Where the branch was sent, so where the response came from: the
    /// callee's public address when it is behind NAT.
    pub source: Option<std::net::SocketAddr>,
}
