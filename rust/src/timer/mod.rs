//! Timers for the transaction layer without periodic ticks.
//!
//! `TimerQueue` groups timers by rounded deadline (cancellation drops a
//! deadline nobody waits for any more, so a cancelled retransmission timer
//! never causes a wake-up); `TimerFd` arms the kernel timer for the earliest
//! deadline only. Deadlines are rounded up
//! to a per-timer granularity so timers that need no precision (transaction
//! clean-up) share one wake-up: on this machine a timer wake costs more CPU
//! than a datagram (../shared/bench/README.md, "The floor").

mod fd;

pub use fd::TimerFd;

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Handle to a scheduled timer, used to cancel it. 16 bytes (an `Option` of
/// it too): every transaction keeps three or four of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    /// The rounded deadline, in nanoseconds since the queue's epoch.
    tick: u64,
    slot: u32,
    generation: NonZeroU32,
}

/// One coalesced deadline: every timer rounded to it, fired by one wake.
#[derive(Default)]
struct Bucket {
    /// (slot, generation); an entry whose slot moved on was cancelled.
    entries: Vec<(u32, NonZeroU32)>,
    live: u32,
}

struct Slot<K> {
    generation: NonZeroU32,
    key: Option<K>,
}

/// Timers grouped by rounded deadline (decision 0040): scheduling appends to
/// the deadline's bucket, cancelling frees the timer's slot and drops the
/// bucket once nothing in it is live, so the earliest deadline is always one
/// that will fire something, and one wake retires a whole bucket. Timers of
/// one granularity share few deadlines (a 1 s granularity over a 32 s hold is
/// ~33 buckets), so the ordered map stays small however many timers run.
pub struct TimerQueue<K> {
    buckets: BTreeMap<u64, Bucket>,
    slots: Vec<Slot<K>>,
    free: Vec<u32>,
    live: usize,
    epoch: Instant,
    /// Unit tests move this queue's clock forward instead of sleeping.
    #[cfg(test)]
    skew: Duration,
}

/// One epoch for every queue of the process, so a `TimerId` alone tells its
/// deadline (it holds ticks since the epoch, not an `Instant`).
fn process_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl TimerId {
    /// The instant this timer is (or was) due.
    pub fn deadline(&self) -> Instant {
        process_epoch() + Duration::from_nanos(self.tick)
    }
}

impl<K> Default for TimerQueue<K> {
    fn default() -> Self {
        TimerQueue {
            buckets: BTreeMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            epoch: process_epoch(),
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
        let tick = self.round_up(at, granularity);
        let slot = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: NonZeroU32::MIN,
                    key: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let entry = &mut self.slots[slot as usize];
        entry.key = Some(key);
        let generation = entry.generation;
        let bucket = self.buckets.entry(tick).or_default();
        bucket.entries.push((slot, generation));
        bucket.live += 1;
        self.live += 1;
        TimerId {
            tick,
            slot,
            generation,
        }
    }

    pub fn cancel(&mut self, id: TimerId) -> Option<K> {
        let key = self.release(id.slot, id.generation)?;
        if let Some(bucket) = self.buckets.get_mut(&id.tick) {
            bucket.live -= 1;
            if bucket.live == 0 {
                self.buckets.remove(&id.tick);
            }
        }
        Some(key)
    }

    /// Takes the key out of a live slot and frees the slot for reuse.
    fn release(&mut self, slot: u32, generation: NonZeroU32) -> Option<K> {
        let entry = self.slots.get_mut(slot as usize)?;
        if entry.generation != generation {
            return None;
        }
        let key = entry.key.take()?;
        entry.generation = entry.generation.checked_add(1).unwrap_or(NonZeroU32::MIN);
        self.free.push(slot);
        self.live -= 1;
        Some(key)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.buckets
            .first_key_value()
            .map(|(tick, _)| self.epoch + Duration::from_nanos(*tick))
    }

    /// The instant a timer of this queue is due.
    pub fn deadline(&self, id: TimerId) -> Instant {
        id.deadline()
    }

    /// Removes and returns every timer due at `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Vec<(TimerId, K)> {
        let now_tick = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let mut due = Vec::new();
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() > now_tick {
                break;
            }
            let (tick, bucket) = entry.remove_entry();
            for (slot, generation) in bucket.entries {
                if let Some(key) = self.release(slot, generation) {
                    let id = TimerId {
                        tick,
                        slot,
                        generation,
                    };
                    due.push((id, key));
                }
            }
        }
        due
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Distinct deadlines armed (each costs at most one wake-up).
    pub fn deadlines(&self) -> usize {
        self.buckets.len()
    }

    fn round_up(&self, at: Instant, granularity: Duration) -> u64 {
        let g = granularity.as_nanos().max(1);
        let since = at.saturating_duration_since(self.epoch).as_nanos();
        (since.div_ceil(g) * g).min(u128::from(u64::MAX)) as u64
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
        // Deadlines round to whole seconds of the process epoch: take one.
        let anchor = q.schedule(now, s, 0);
        let second = q.deadline(anchor);
        q.cancel(anchor);
        let x = q.schedule(second - Duration::from_millis(900), s, 1);
        let y = q.schedule(second - Duration::from_millis(300), s, 2);
        assert_eq!(q.deadline(x), second);
        assert_eq!(q.deadline(y), second);
        assert!(second >= now);
        assert_eq!(q.deadlines(), 1);
    }

    #[test]
    fn a_stale_handle_cancels_nothing_after_its_slot_is_reused() {
        let mut q = TimerQueue::default();
        let now = Instant::now();
        let ms = Duration::from_millis(1);
        let old = q.schedule(now + 5 * ms, ms, "old");
        assert_eq!(q.cancel(old), Some("old"));
        let new = q.schedule(now + 5 * ms, ms, "new");
        assert_eq!(q.cancel(old), None);
        assert_eq!(q.len(), 1);
        let due = q.pop_due(now + 10 * ms);
        assert_eq!(due, vec![(new, "new")]);
        assert_eq!(q.cancel(new), None, "fired timers cannot be cancelled");
    }

    #[test]
    fn a_deadline_whose_timers_were_all_cancelled_arms_no_wake() {
        let mut q = TimerQueue::default();
        let now = Instant::now();
        let ms = Duration::from_millis(10);
        let early: Vec<_> = (0..100).map(|i| q.schedule(now + ms, ms, i)).collect();
        let late = q.schedule(now + 50 * ms, ms, 1000);
        for id in early {
            q.cancel(id);
        }
        assert_eq!(q.next_deadline(), Some(q.deadline(late)));
        assert_eq!((q.len(), q.deadlines()), (1, 1));
    }

    #[test]
    fn one_wake_retires_a_whole_coalesced_deadline_in_order() {
        let mut q = TimerQueue::default();
        let now = Instant::now();
        let s = Duration::from_secs(1);
        let ids: Vec<_> = (0..1000u32)
            .map(|i| q.schedule(now + Duration::from_micros(u64::from(i)), s, i))
            .collect();
        q.cancel(ids[7]);
        assert_eq!(q.deadlines(), 1);
        let due: Vec<u32> = q.pop_due(now + 2 * s).into_iter().map(|(_, k)| k).collect();
        assert_eq!(due.len(), 999);
        assert!(due.windows(2).all(|w| w[0] < w[1]) && !due.contains(&7));
        assert!(q.is_empty() && q.next_deadline().is_none());
    }
}
