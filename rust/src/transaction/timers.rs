//! A fired transaction timer: what the layer does itself (retransmit, 100
//! Trying, end a transaction) and what it reports to the transaction's owner.

use super::{client, server, BranchId, CtxId, Layer, Owner, TimerKey, TxnId};
use crate::transport::Wire;

/// What the owner of a transaction must hear about a fired timer.
pub enum Expiry {
    /// Nothing: the layer dealt with it (or the transaction was gone).
    Done,
    /// A server transaction ended (Timer H, I, J or L) and left the tables;
    /// its proxy context `ctx` may go too; `final_status`: its final answer.
    ServerEnded {
        id: TxnId,
        ctx: Option<CtxId>,
        final_status: Option<u16>,
    },
    /// Timer B / F, or the 64*T1 after a CANCEL: client transaction `id`
    /// has no final answer. Not reported for a transaction already final.
    ClientTimeout { id: BranchId, owner: Owner },
    /// Timer C (RFC 3261 §16.8) of INVITE client transaction `id`, not final.
    TimerC { id: BranchId, owner: Owner },
    /// A timer a service set for itself.
    Service(Owner),
}

pub fn on_timer(wire: &Wire, layer: &mut Layer, key: TimerKey) -> Expiry {
    match key {
        TimerKey::ServerRetransmit(id) => server::on_retransmit_timer(wire, layer, id),
        TimerKey::ServerTrying(id) => {
            if let Some(t) = layer.servers.get_mut(&id) {
                t.timers[2] = None;
            }
            server::send_trying(wire, layer, id);
        }
        TimerKey::ServerEnd(id) => {
            if let Some(t) = layer.remove_server(id) {
                return Expiry::ServerEnded {
                    id,
                    ctx: t.ctx,
                    final_status: t.final_status,
                };
            }
            if let Some(h) = layer.remove_held_server(id) {
                return Expiry::ServerEnded {
                    id,
                    ctx: h.ctx,
                    final_status: Some(h.final_status),
                };
            }
        }
        TimerKey::ClientRetransmit(id) => client::on_retransmit_timer(wire, layer, id),
        TimerKey::ClientTimeout(id) => {
            if let Some(c) = layer.clients.get(&id).filter(|c| !c.is_final()) {
                return Expiry::ClientTimeout { id, owner: c.owner };
            }
        }
        TimerKey::ClientTimerC(id) => {
            if let Some(c) = layer.clients.get_mut(&id) {
                c.timers[2] = None;
                if !c.is_final() {
                    return Expiry::TimerC { id, owner: c.owner };
                }
            }
        }
        TimerKey::ClientEnd(id) => {
            if layer.remove_client(id).is_none() {
                layer.remove_held_client(id);
            }
        }
        TimerKey::Service(owner) => return Expiry::Service(owner),
    }
    Expiry::Done
}
