//! For the transaction and proxy unit tests: fire the transaction layer's
//! timers one deadline at a time, without waiting for them, and check when
//! a timer was set for.

use std::time::{Duration, Instant};

use super::{Layer, TimerKey};
use crate::timer::TimerId;

/// Takes the timers due at the earliest deadline (several when they were
/// coalesced), as if that moment had come.
pub fn pop_next(layer: &mut Layer) -> Vec<TimerKey> {
    let Some(at) = layer.timers.next_deadline() else {
        return Vec::new();
    };
    layer.timers.advance_to(at);
    layer
        .timers
        .pop_due(at)
        .into_iter()
        .map(|(_, k)| k)
        .collect()
}

/// Asserts that `id` was set `after` from some moment in `[from, to]`,
/// rounded up to `granularity`.
pub fn assert_set_for(
    id: TimerId,
    from: Instant,
    to: Instant,
    after: Duration,
    granularity: Duration,
) {
    let at = id.deadline();
    assert!(
        at >= from + after && at <= to + after + granularity,
        "timer due {:?} after the call, expected {after:?}",
        at.saturating_duration_since(from)
    );
}
