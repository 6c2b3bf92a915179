//! Rust `tracing` events into Python `logging` (the `sipr.core.*` loggers,
//! see python/sipr/corelog.py).
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
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// Records waiting for the loop thread; beyond this they are dropped (counted).
const QUEUE_CAPACITY: usize = 1024;
/// Records passed per second; the rest are counted as suppressed.
const RECORDS_PER_SECOND: u64 = 100;

/// One event as Python sees it: (logging level, logger name, message, Call-ID).
type PyRecord = (u32, String, String, Option<String>);

struct Bridge {
    queue: ArrayQueue<PyRecord>,
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
fn rank_for_python_level(level: i64) -> usize {
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

    fn push(&self, record: PyRecord) {
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
    fn drain(&self) -> (Vec<PyRecord>, u64) {
        self.signalled.store(false, Ordering::Release);
        let mut counter = [0u8; 8];
        // SAFETY: reading 8 bytes from our own non-blocking eventfd.
        unsafe { libc::read(self.wake.as_raw_fd(), counter.as_mut_ptr().cast(), 8) };
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

fn bridge() -> PyResult<&'static Bridge> {
    if let Some(b) = BRIDGE.get() {
        return Ok(b);
    }
    let made = Bridge::new().map_err(|e| PyOSError::new_err(format!("eventfd: {e}")))?;
    let bridge = BRIDGE.get_or_init(|| made);
    // Fails only if another global subscriber was set first (an embedding
    // program's own): its events then stay with it.
    let _ = tracing::subscriber::set_global_default(BridgeSubscriber(bridge));
    Ok(bridge)
}

/// Installs the bridge (once per process) and returns the eventfd that
/// becomes readable when core log records wait in `drain_logs()`.
#[pyfunction]
pub fn log_fd() -> PyResult<i32> {
    Ok(bridge()?.wake.as_raw_fd())
}

/// The waiting core log records as (level, logger, message, call_id), and
/// how many the rate limit (or a full queue) suppressed since the last call.
#[pyfunction]
pub fn drain_logs() -> PyResult<(Vec<PyRecord>, u64)> {
    Ok(bridge()?.drain())
}

/// Records a second that pass the rate limit.
#[pyfunction]
pub fn log_rate_limit() -> u64 {
    RECORDS_PER_SECOND
}

/// Passes core events at Python `logging` level `level` and above.
#[pyfunction]
pub fn set_log_level(level: i64) -> PyResult<()> {
    bridge()?
        .max_rank
        .store(rank_for_python_level(level), Ordering::Relaxed);
    tracing::callsite::rebuild_interest_cache();
    Ok(())
}
