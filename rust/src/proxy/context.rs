//! The response context of one proxied request (RFC 3261 §16.7): its branches,
//! the finals received, and whether the application still holds it.

pub use crate::service::Final;
use crate::timer::TimerId;
use crate::transaction::{BranchId, CtxId, TxnId};

pub struct ProxyCtx {
    pub id: CtxId,
    pub server: TxnId,
    /// Branches of the current relay round.
    pub branches: Vec<BranchId>,
    pub finals: Vec<Final>,
    pub loop_hash: u64,
    /// A final answer went upstream (a 2xx, or the held non-2xx).
    pub final_sent: bool,
    /// The application's handler has not returned yet.
    pub handler_active: bool,
    /// `relay()` calls waiting for this round's result.
    pub waiting: Vec<u64>,
    /// This round's chosen non-2xx, sent upstream when the handler returns.
    /// Boxed: a context lives as long as its server transaction (32 s after
    /// a 2xx) and is rarely holding one.
    pub held: Option<Box<Final>>,
    pub relay_timer: Option<TimerId>,
    pub cancelled: bool,
    /// Responses a service holds (`on_response` said `Stop`, e.g. for the
    /// application's `on_reply`): the round is not complete before they
    /// come back (`Proxy::deliver_held`).
    pub held_replies: u32,
}

impl ProxyCtx {
    pub fn new(id: CtxId, server: TxnId, loop_hash: u64, handler_active: bool) -> ProxyCtx {
        ProxyCtx {
            id,
            server,
            branches: Vec::new(),
            finals: Vec::new(),
            loop_hash,
            final_sent: false,
            handler_active,
            waiting: Vec::new(),
            held: None,
            relay_timer: None,
            cancelled: false,
            held_replies: 0,
        }
    }
}

/// RFC 3261 §16.7 step 6: a 6xx if any, else the lowest class; within a
/// class prefer 401/407 (challenges can be answered) then the first seen.
pub fn best_index(finals: &[Final]) -> Option<usize> {
    if let Some(i) = finals.iter().position(|f| f.status >= 600) {
        return Some(i);
    }
    let lowest = finals.iter().map(|f| f.status / 100).min()?;
    finals
        .iter()
        .position(|f| f.status / 100 == lowest && matches!(f.status, 401 | 407))
        .or_else(|| finals.iter().position(|f| f.status / 100 == lowest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Framing, Limits, Message};
    use bytes::Bytes;

    fn fin(status: u16) -> Final {
        let raw = format!(
            "SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        let m = Message::parse(Bytes::from(raw), Framing::Datagram, &Limits::default()).unwrap();
        Final {
            status,
            message: m,
            upstream: Bytes::new(),
        }
    }

    #[test]
    fn selection_follows_16_7() {
        let pick = |s: &[u16]| {
            let f: Vec<Final> = s.iter().map(|&x| fin(x)).collect();
            best_index(&f).map(|i| f[i].status)
        };
        assert_eq!(pick(&[486, 603, 302]), Some(603));
        assert_eq!(pick(&[503, 404, 480]), Some(404));
        assert_eq!(pick(&[404, 407, 500]), Some(407));
        assert_eq!(pick(&[302, 404]), Some(302));
        assert_eq!(pick(&[]), None);
    }
}
