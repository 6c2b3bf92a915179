//! The core's `tracing` events as records for the host program's logger
//! (Python `logging`: rust/src/python/logbridge.rs, python/sipr/corelog.py).
//!
//! Tokio threads never take the GIL, so an event becomes a small record in a
//! bounded queue and an eventfd wakes the serving loop, which hands the
//! records to `logging` on its own thread. Rate-limited: at most
//! `RECORDS_PER_SECOND` records a second pass; the others are counted, and
//! the count is handed over with the records. A peer that makes the core log
//! (a TLS port scanner) therefore costs a bounded amount: the first
//! suppression wakes the loop once, after which python/sipr/corelog.py
//! collects the count once a second until a second passes without any.

use std::fmt::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use crossbeam_queue::ArrayQueue;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// Records waiting for the loop thread; beyond this they are dropped (counted).
const QUEUE_CAPACITY: usize = 1024;
/// Records passed per second; the rest are counted as suppressed.
pub const RECORDS_PER_SECOND: u64 = 100;

/// One event as Python sees it: (logging level, logger name, message, Call-ID).
pub type Record = (u32, String, String, Option<String>);

/// The bounded, rate-limited queue between the tracing subscriber (any
/// thread) and the loop that hands records on (one thread).
pub struct Bridge {
    queue: ArrayQueue<Record>,
    wake: OwnedFd,
    /// Set once the loop has been woken and not drained since.
    signalled: AtomicBool,
    /// Set while the loop knows records are being suppressed (it then
    /// collects the count on its own schedule): no wake-up per suppression.
    suppressing: AtomicBool,
    /// The most verbose level passed, as a `level_rank` (0 = nothing).
    max_rank: AtomicUsize,
    started: Instant,
    /// The second the current rate window started (since `started`).
    window: AtomicU64,
    in_window: AtomicU64,
    suppressed: AtomicU64,
}

static BRIDGE: OnceLock<Bridge> = OnceLock::new();

/// ERROR = 1 … TRACE = 5: larger is more verbose.
fn level_rank(level: &Level) -> usize {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

/// Python `logging` level numbers.
fn python_level(level: &Level) -> u32 {
    match *level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

/// The most verbose tracing rank that a Python level lets through.
pub fn rank_for_python_level(level: i64) -> usize {
    match level {
        l if l <= 5 => 5,
        l if l <= 10 => 4,
        l if l <= 20 => 3,
        l if l <= 30 => 2,
        l if l <= 40 => 1,
        _ => 0,
    }
}

/// `sipr::transport::stream` → `sipr.core.transport.stream`.
fn logger_name(target: &str) -> String {
    let rest = target.strip_prefix("sipr").unwrap_or(target);
    let rest = rest.trim_start_matches(':');
    if rest.is_empty() {
        "sipr.core".to_string()
    } else {
        format!("sipr.core.{}", rest.replace("::", "."))
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    extra: String,
    call_id: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "call_id" => self.call_id = Some(value.to_string()),
            name => {
                let _ = write!(self.extra, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "call_id" => self.call_id = Some(format!("{value:?}").trim_matches('"').to_string()),
            name => {
                let _ = write!(self.extra, " {name}={value:?}");
            }
        }
    }
}

impl Bridge {
    fn new() -> std::io::Result<Bridge> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Bridge {
            queue: ArrayQueue::new(QUEUE_CAPACITY),
            // SAFETY: `fd` is a new descriptor that nothing else owns.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
            signalled: AtomicBool::new(false),
            suppressing: AtomicBool::new(false),
            max_rank: AtomicUsize::new(level_rank(&Level::INFO)),
            started: Instant::now(),
            window: AtomicU64::new(0),
            in_window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        })
    }

    /// Whether one more record fits in this second's budget.
    fn admit(&self) -> bool {
        let now = self.started.elapsed().as_secs();
        let window = self.window.load(Ordering::Relaxed);
        if now != window
            && self
                .window
                .compare_exchange(window, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.in_window.store(0, Ordering::Relaxed);
        }
        self.in_window.fetch_add(1, Ordering::Relaxed) < RECORDS_PER_SECOND
    }

    fn wake(&self) {
        if !self.signalled.swap(true, Ordering::AcqRel) {
            let one: u64 = 1;
            // SAFETY: writing 8 bytes to our own eventfd.
            unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    fn push(&self, record: Record) {
        if self.queue.push(record).is_err() {
            self.suppress();
            return;
        }
        self.wake();
    }

    fn suppress(&self) {
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        if !self.suppressing.swap(true, Ordering::AcqRel) {
            self.wake();
        }
    }

    /// The queued records and how many were suppressed since the last call.
    pub fn drain(&self) -> (Vec<Record>, u64) {
        // Consume the wake-up first, then allow the next one: the other
        // order lets a push between the two set `signalled` and have its
        // write consumed here, leaving `signalled` set with nothing to read,
        // and no record would ever wake the loop again.
        self.consume_wakeup();
        self.rearm();
        self.collect()
    }

    fn consume_wakeup(&self) {
        let mut counter = [0u8; 8];
        // SAFETY: reading 8 bytes from our own non-blocking eventfd.
        unsafe { libc::read(self.wake.as_raw_fd(), counter.as_mut_ptr().cast(), 8) };
    }

    /// The next push writes the eventfd again. A swap, not a store: it
    /// acquires the push of a record whose wake-up it cancels, so `collect`
    /// pops that record.
    fn rearm(&self) {
        self.signalled.swap(false, Ordering::AcqRel);
    }

    fn collect(&self) -> (Vec<Record>, u64) {
        let mut out = Vec::with_capacity(self.queue.len());
        while let Some(record) = self.queue.pop() {
            out.push(record);
        }
        let suppressed = self.suppressed.swap(0, Ordering::AcqRel);
        if suppressed == 0 {
            // The loop stops collecting; the next suppression wakes it. One
            // that slipped in meanwhile wakes it now.
            self.suppressing.store(false, Ordering::Release);
            if self.suppressed.load(Ordering::Acquire) > 0
                && !self.suppressing.swap(true, Ordering::AcqRel)
            {
                self.wake();
            }
        }
        (out, suppressed)
    }
}

/// The subscriber installed as the process's global default.
struct BridgeSubscriber(&'static Bridge);

impl Subscriber for BridgeSubscriber {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // The level changes at run time (`cfg.set log.level`): ask each time.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        level_rank(metadata.level()) <= self.0.max_rank.load(Ordering::Relaxed)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(match self.0.max_rank.load(Ordering::Relaxed) {
            0 => LevelFilter::OFF,
            1 => LevelFilter::ERROR,
            2 => LevelFilter::WARN,
            3 => LevelFilter::INFO,
            4 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        })
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1) // spans carry nothing to Python
    }

    fn record(&self, _: &Id, _: &SpanRecord<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let bridge = self.0;
        if !bridge.admit() {
            bridge.suppress();
            return;
        }
        let metadata = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut message = fields.message;
        message.push_str(&fields.extra);
        bridge.push((
            python_level(metadata.level()),
            logger_name(metadata.target()),
            message,
            fields.call_id,
        ));
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// The process's bridge, installed (with its subscriber as the global
/// default) on first use.
pub fn bridge() -> std::io::Result<&'static Bridge> {
    if let Some(b) = BRIDGE.get() {
        return Ok(b);
    }
    let made = Bridge::new()?;
    let bridge = BRIDGE.get_or_init(|| made);
    // Fails only if another global subscriber was set first (an embedding
    // program's own): its events then stay with it.
    let _ = tracing::subscriber::set_global_default(BridgeSubscriber(bridge));
    Ok(bridge)
}

impl Bridge {
    /// The eventfd that becomes readable when records wait in `drain`.
    pub fn wake_fd(&self) -> i32 {
        self.wake.as_raw_fd()
    }

    /// Passes events up to `rank` (`rank_for_python_level`) from now on.
    pub fn set_max_rank(&self, rank: usize) {
        self.max_rank.store(rank, Ordering::Relaxed);
        tracing::callsite::rebuild_interest_cache();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u32) -> Record {
        (30, "sipr.core.test".into(), format!("record {n}"), None)
    }

    /// One step of a drain, handing over what it collects.
    type Step<'a> = &'a dyn Fn(&Bridge, &mut Vec<Record>);

    fn readable(bridge: &Bridge) -> bool {
        let mut poll = libc::pollfd {
            fd: bridge.wake_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut poll, 1, 0) == 1 }
    }

    #[test]
    fn a_push_wakes_the_loop_and_a_drain_hands_the_record_over() {
        let bridge = Bridge::new().unwrap();
        assert!(!readable(&bridge));
        bridge.push(record(1));
        bridge.push(record(2));
        assert!(readable(&bridge));
        let (records, suppressed) = bridge.drain();
        assert_eq!(records, vec![record(1), record(2)]);
        assert_eq!(suppressed, 0);
        assert!(!readable(&bridge));
        bridge.push(record(3));
        assert!(readable(&bridge));
    }

    /// Another thread may push between any two steps of a drain; the
    /// record is then either handed over by that drain or wakes the loop
    /// for the next one. (Rearming before consuming the wake-up lost it.)
    #[test]
    fn a_push_racing_a_drain_is_never_stranded() {
        for point in 0..4 {
            let bridge = Bridge::new().unwrap();
            bridge.push(record(1));
            let mut collected = Vec::new();
            let steps: [Step; 3] = [&|b, _| b.consume_wakeup(), &|b, _| b.rearm(), &|b, out| {
                out.extend(b.collect().0)
            }];
            for (step, run) in steps.iter().enumerate() {
                if step == point {
                    bridge.push(record(2));
                }
                run(&bridge, &mut collected);
            }
            if point == 3 {
                bridge.push(record(2));
            }
            let handed_over = collected.contains(&record(2));
            assert!(
                handed_over || readable(&bridge),
                "push before step {point} stranded"
            );
            if !handed_over {
                assert_eq!(bridge.drain().0, vec![record(2)]);
            }
            bridge.push(record(3));
            assert!(readable(&bridge), "after a push at step {point}");
        }
    }

    #[test]
    fn records_beyond_the_queue_are_counted_and_wake_the_loop_once() {
        let bridge = Bridge::new().unwrap();
        for n in 0..QUEUE_CAPACITY as u32 + 5 {
            bridge.push(record(n));
        }
        let (records, suppressed) = bridge.drain();
        assert_eq!(records.len(), QUEUE_CAPACITY);
        assert_eq!(suppressed, 5);
        // Still suppressing: the loop collects on its own schedule, and a
        // collection that finds nothing ends it; the next one wakes it.
        assert_eq!(bridge.drain(), (vec![], 0));
        bridge.suppress();
        assert!(readable(&bridge));
        assert_eq!(bridge.drain().1, 1);
    }
}
