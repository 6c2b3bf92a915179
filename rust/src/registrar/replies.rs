//! The answers of the native registrar for the last seconds, by request
//! identity: a retransmitted REGISTER (same branch, Call-ID, CSeq and source)
//! gets the same bytes again instead of being re-processed, which RFC 3261
//! §10.3 step 7 would refuse as out of order. Bounded in age and count.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::sip::Message;
use crate::transport::Source;

/// 64 × T1: how long a client may retransmit a non-INVITE request.
const KEEP: Duration = Duration::from_secs(32);

pub struct RecentReplies {
    hasher: ahash::RandomState,
    by_key: HashMap<u64, Bytes, ahash::RandomState>,
    order: VecDeque<(Instant, u64)>,
    max: usize,
}

impl RecentReplies {
    pub fn new(max: usize) -> RecentReplies {
        RecentReplies {
            hasher: ahash::RandomState::new(),
            by_key: HashMap::default(),
            order: VecDeque::new(),
            max: max.max(1),
        }
    }

    pub fn key(&self, msg: &Message, source: &Source) -> u64 {
        let mut h = self.hasher.build_hasher();
        msg.branch().hash(&mut h);
        msg.call_id().hash(&mut h);
        msg.cseq().hash(&mut h);
        source.addr.hash(&mut h);
        h.finish()
    }

    pub fn get(&self, key: u64) -> Option<Bytes> {
        self.by_key.get(&key).cloned()
    }

    pub fn insert(&mut self, key: u64, reply: Bytes, now: Instant) {
        while let Some(&(at, k)) = self.order.front() {
            if now.duration_since(at) < KEEP && self.order.len() < self.max {
                break;
            }
            self.order.pop_front();
            self.by_key.remove(&k);
        }
        if self.by_key.insert(key, reply).is_none() {
            self.order.push_back((now, key));
        }
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}
