//! Timers for the transaction layer without periodic ticks.
//!
//! `TimerQueue` orders deadlines in a B-tree (cancellation removes exactly, so
//! a cancelled retransmission timer never causes a wake-up); `TimerFd` arms
//! the kernel timer for the earliest deadline only. Deadlines are rounded up
//! to a per-timer granularity so timers that need no precision (transaction
//! clean-up) share one wake-up: on this machine a timer wake costs more CPU
//! than a datagram (../shared/bench/README.md, "The floor").

mod fd;

pub use fd::TimerFd;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Handle to a scheduled timer, used to cancel it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId {
    deadline: Instant,
    seq: u64,
}

impl TimerId {
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

pub struct TimerQueue<K> {
    entries: BTreeMap<TimerId, K>,
    seq: u64,
    epoch: Instant,
    /// Unit tests move this queue's clock forward instead of sleeping.
    #[cfg(test)]
    skew: Duration,
}

impl<K> Default for TimerQueue<K> {
    fn default() -> Self {
        TimerQueue {
            entries: BTreeMap::new(),
            seq: 0,
            epoch: Instant::now(),
            #[cfg(test)]
            skew: Duration::ZERO,
        }
    }
}

impl<K> TimerQueue<K> {
    /// The time timers are set from: the clock, which unit tests can move
    /// forward (`advance_to`).
    pub fn now(&self) -> Instant {
        #[cfg(test)]
        {
            Instant::now() + self.skew
        }
        #[cfg(not(test))]
        {
            Instant::now()
        }
    }

    /// Moves this queue's clock forward to at least `at` (unit tests).
    #[cfg(test)]
    pub fn advance_to(&mut self, at: Instant) {
        let real = Instant::now();
        self.skew = self.skew.max(at.saturating_duration_since(real));
    }

    /// Schedules `key` at `at`, rounded up to a multiple of `granularity`
    /// (measured from the queue's epoch) so nearby timers coalesce.
    pub fn schedule(&mut self, at: Instant, granularity: Duration, key: K) -> TimerId {
        let deadline = self.round_up(at, granularity);
        self.seq += 1;
        let id = TimerId {
            deadline,
            seq: self.seq,
        };
        self.entries.insert(id, key);
        id
    }

    pub fn cancel(&mut self, id: TimerId) -> Option<K> {
        self.entries.remove(&id)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries.first_key_value().map(|(id, _)| id.deadline)
    }

    /// Removes and returns every timer due at `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Vec<(TimerId, K)> {
        let mut due = Vec::new();
        while let Some(entry) = self.entries.first_entry() {
            if entry.key().deadline > now {
                break;
            }
            let (id, k) = entry.remove_entry();
            due.push((id, k));
        }
        due
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn round_up(&self, at: Instant, granularity: Duration) -> Instant {
        let g = granularity.as_nanos().max(1);
        let since = at.saturating_duration_since(self.epoch).as_nanos();
        let rounded = since.div_ceil(g) * g;
        self.epoch + Duration::from_nanos(rounded.min(u64::MAX as u128) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_timers_pop_in_order_and_cancelled_ones_never_do() {
        let mut q = TimerQueue::default();
        let now = Instant::now();
        let ms = Duration::from_millis(1);
        let a = q.schedule(now + 30 * ms, ms, "a");
        q.schedule(now + 10 * ms, ms, "b");
        q.schedule(now + 20 * ms, ms, "c");
        assert_eq!(q.cancel(a), Some("a"));
        assert!(q.pop_due(now).is_empty());
        let due: Vec<_> = q
            .pop_due(now + 40 * ms)
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        assert_eq!(due, vec!["b", "c"]);
        assert!(q.is_empty());
    }

    #[test]
    fn coarse_timers_share_a_deadline() {
        let mut q = TimerQueue::default();
        let now = Instant::now();
        let s = Duration::from_secs(1);
        let x = q.schedule(now + Duration::from_millis(100), s, 1);
        let y = q.schedule(now + Duration::from_millis(700), s, 2);
        assert_eq!(x.deadline(), y.deadline());
        assert!(x.deadline() >= now + Duration::from_millis(700));
    }
}
