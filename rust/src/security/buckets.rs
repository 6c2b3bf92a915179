//! Token buckets (Kamailio `ratelimit` / `pipelimit`): a table keyed by any
//! string the route chooses (`sipr.limits.take`), and one bucket per request
//! method that the core applies before Python (503 + Retry-After).
//!
//! A bucket holds at most `burst` tokens and gains `rate` per second; a
//! request takes `cost`. Nothing runs in the background: a bucket is brought
//! up to date when it is used. A bucket that would be full again is the same
//! as no bucket, which is what keeps the table small (and bounded).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::sip::Method;

#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
    /// Tokens per second.
    pub rate: f64,
    pub burst: f64,
}

/// The answer to one `take`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Take {
    pub ok: bool,
    /// Tokens left after this take.
    pub remaining: f64,
    /// Seconds until `cost` tokens are there again (0 when `ok`).
    pub retry_after: f64,
}

impl Bucket {
    pub fn new(rate: f64, burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            last: now,
            rate,
            burst,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    pub fn take(&mut self, cost: f64, now: Instant) -> Take {
        self.refill(now);
        if self.tokens >= cost {
            self.tokens -= cost;
            return Take {
                ok: true,
                remaining: self.tokens,
                retry_after: 0.0,
            };
        }
        let missing = cost - self.tokens;
        Take {
            ok: false,
            remaining: self.tokens,
            retry_after: if self.rate > 0.0 {
                missing / self.rate
            } else {
                f64::INFINITY
            },
        }
    }

    /// Full again by `now` (forgetting it changes nothing).
    fn idle(&self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + dt * self.rate >= self.burst
    }
}

/// Validates a limit given as `rate` per `per` seconds with a `burst`.
pub fn per_second(rate: f64, per: f64, burst: Option<f64>) -> Result<(f64, f64), String> {
    if !(rate.is_finite() && rate >= 0.0) {
        return Err(format!("rate must be a number >= 0, got {rate}"));
    }
    if !(per.is_finite() && per > 0.0) {
        return Err(format!(
            "per must be a positive number of seconds, got {per}"
        ));
    }
    let burst = burst.unwrap_or(rate);
    if !(burst.is_finite() && burst >= 1.0) {
        return Err(format!("burst must be at least 1, got {burst}"));
    }
    Ok((rate / per, burst))
}

pub struct Buckets {
    map: Mutex<HashMap<String, Bucket, ahash::RandomState>>,
    capacity: usize,
}

/// Keys longer than this are refused (they are kept in memory).
pub const MAX_KEY_LEN: usize = 512;

impl Buckets {
    pub fn new(capacity: usize) -> Buckets {
        Buckets {
            map: Mutex::new(HashMap::default()),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes `cost` tokens from the bucket `key` (`rate` tokens/s, at most
    /// `burst`). A changed rate or burst applies from now on.
    pub fn take(&self, key: &str, rate: f64, burst: f64, cost: f64, now: Instant) -> Take {
        let mut map = self.map.lock();
        if let Some(b) = map.get_mut(key) {
            b.refill(now);
            b.rate = rate;
            if b.burst != burst {
                b.burst = burst;
                b.tokens = b.tokens.min(burst);
            }
            return b.take(cost, now);
        }
        if map.len() >= self.capacity {
            map.retain(|_, b| !b.idle(now));
            if map.len() >= self.capacity {
                // Every bucket is in use: forget one at random (its key gets
                // a full bucket next time) rather than grow.
                if let Some(k) = map.keys().next().cloned() {
                    map.remove(&k);
                }
            }
        }
        let mut b = Bucket::new(rate, burst, now);
        let t = b.take(cost, now);
        map.insert(key.to_string(), b);
        t
    }

    /// (key, tokens now, rate/s, burst) of the buckets in use.
    pub fn snapshot(&self, now: Instant) -> Vec<(String, f64, f64, f64)> {
        let mut map = self.map.lock();
        map.retain(|_, b| !b.idle(now));
        let mut rows: Vec<_> = map
            .iter_mut()
            .map(|(k, b)| {
                b.refill(now);
                (k.clone(), b.tokens, b.rate, b.burst)
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    }
}

/// Global per-method limits the core applies to requests outside dialogs.
#[derive(Default)]
pub struct MethodLimits {
    buckets: Mutex<Vec<(Method, String, Bucket)>>,
    /// Whether any limit is set: the per-request check takes no lock without.
    any: AtomicBool,
}

impl MethodLimits {
    /// Sets (or with `rate_per_second` None, removes) the limit of `method`.
    pub fn set(&self, method: &str, limit: Option<(f64, f64)>) {
        let id = Method::from_bytes(method.as_bytes());
        let mut b = self.buckets.lock();
        b.retain(|(m, name, _)| !(*m == id && (id != Method::Other || name == method)));
        if let Some((rate, burst)) = limit {
            b.push((
                id,
                method.to_string(),
                Bucket::new(rate, burst, Instant::now()),
            ));
        }
        self.any.store(!b.is_empty(), Ordering::Relaxed);
    }

    pub fn clear(&self) {
        self.buckets.lock().clear();
        self.any.store(false, Ordering::Relaxed);
    }

    /// `Some(retry_after seconds)` when `method` is over its limit.
    pub fn check(&self, method: Method, name: &str, now: Instant) -> Option<f64> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let mut b = self.buckets.lock();
        let (_, _, bucket) = b
            .iter_mut()
            .find(|(m, n, _)| *m == method && (method != Method::Other || n == name))?;
        let t = bucket.take(1.0, now);
        (!t.ok).then_some(t.retry_after)
    }

    /// (method, rate/s, burst, tokens now).
    pub fn list(&self, now: Instant) -> Vec<(String, f64, f64, f64)> {
        let mut b = self.buckets.lock();
        b.iter_mut()
            .map(|(_, name, bucket)| {
                bucket.refill(now);
                (name.clone(), bucket.rate, bucket.burst, bucket.tokens)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn five_per_second() {
        let buckets = Buckets::new(100);
        let t0 = Instant::now();
        let (rate, burst) = per_second(5.0, 1.0, None).unwrap();
        let ok = (0..50)
            .filter(|_| buckets.take("calls:alice", rate, burst, 1.0, t0).ok)
            .count();
        assert_eq!(ok, 5);
        let denied = buckets.take("calls:alice", rate, burst, 1.0, t0);
        assert!(!denied.ok && (denied.retry_after - 0.2).abs() < 1e-9);
        // Another key has its own bucket.
        assert!(buckets.take("calls:bob", rate, burst, 1.0, t0).ok);
        // One second later, five more.
        let t1 = t0 + Duration::from_secs(1);
        let ok = (0..50)
            .filter(|_| buckets.take("calls:alice", rate, burst, 1.0, t1).ok)
            .count();
        assert_eq!(ok, 5);
    }

    #[test]
    fn idle_buckets_make_room() {
        let buckets = Buckets::new(3);
        let t0 = Instant::now();
        for k in ["a", "b", "c"] {
            buckets.take(k, 1.0, 2.0, 1.0, t0);
        }
        // Two seconds later all are full again: they are forgotten first.
        let t1 = t0 + Duration::from_secs(2);
        buckets.take("d", 1.0, 2.0, 1.0, t1);
        assert_eq!(buckets.len(), 1);
        for k in ["e", "f", "g", "h"] {
            buckets.take(k, 1.0, 2.0, 1.0, t1);
        }
        assert_eq!(buckets.len(), 3);
        assert!(per_second(5.0, 0.0, None).is_err());
        assert!(per_second(-1.0, 1.0, None).is_err());
        assert!(
            per_second(0.5, 1.0, None).is_err(),
            "a burst below one never passes"
        );
    }

    #[test]
    fn method_limits() {
        let m = MethodLimits::default();
        let now = Instant::now();
        assert_eq!(m.check(Method::Invite, "INVITE", now), None);
        m.set("INVITE", Some((2.0, 2.0)));
        m.set("FOO", Some((1.0, 1.0)));
        assert_eq!(m.check(Method::Invite, "INVITE", now), None);
        assert_eq!(m.check(Method::Invite, "INVITE", now), None);
        let retry = m.check(Method::Invite, "INVITE", now).unwrap();
        assert!((retry - 0.5).abs() < 1e-9);
        assert_eq!(m.check(Method::Options, "OPTIONS", now), None);
        assert_eq!(m.check(Method::Other, "FOO", now), None);
        assert!(m.check(Method::Other, "FOO", now).is_some());
        assert_eq!(m.check(Method::Other, "BAR", now), None);
        m.set("INVITE", None);
        assert_eq!(m.check(Method::Invite, "INVITE", now), None);
        assert_eq!(m.list(now).len(), 1);
    }
}
