//! Dialogs (RFC 3261 §12) the application asked the core to track, their
//! profiles (live counts by name and value, for call limits), and the
//! accounting records they produce (Kamailio's `dialog` and `acc` modules).
//!
//! A dialog starts when the route marks a dialog-creating INVITE
//! (`req.track_dialog()`), goes unconfirmed → early (a provisional with a To
//! tag, one per fork) → confirmed (the first 2xx sent upstream) → terminated
//! (BYE from either side, its timeout, a failed keepalive, `dlg.end`, or a
//! failed setup). `Dialogs` is a service (`service::Service`, name
//! "dialog"): it sees requests and responses through its hooks (`hooks`), so
//! in-dialog requests routed in Rust update their dialog without any Python.
//! It registers itself with the node the first time a route tracks a dialog
//! or accounts a request, so a node that does neither pays nothing.
//!
//! The hooks run on the loop thread with the transaction layer held, except
//! `on_request` (also on UDP reader threads, without the layer). The table
//! has its own lock (taken after the layer's) so Python can read counts
//! without the layer.

mod events;
mod hooks;
mod msg;
mod profiles;
mod records;
mod requests;
mod state;
#[cfg(test)]
mod tests;
mod track;

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

pub use events::{DialogEvent, EventKind, MAX_EVENTS};
pub use hooks::{end, end_all};
pub use profiles::{Profile, Profiles};
pub use records::{AccMark, Cdr, Disposition, Record, RequestRecord};
pub use state::{
    Dialog, EndReason, Leg, State, TrackSpec, MAX_EXTRA, MAX_EXTRA_BYTES, MAX_PROFILES,
};
pub use track::{account, track, TrackError};

use crate::service::Ctx;
use crate::timer::{TimerId, TimerQueue};
use crate::transaction::TimerKey;

pub type DialogId = u64;

/// The service's name: the owner of its timers and client transactions.
pub const SERVICE: &str = "dialog";

/// A dialog's id as people and scripts see it: 16 hex digits in groups of
/// four (never a JSON number, so `sipr ctl dlg.end ID` passes it as text).
pub fn format_id(id: DialogId) -> String {
    let h = format!("{id:016x}");
    format!("{}-{}-{}-{}", &h[..4], &h[4..8], &h[8..12], &h[12..])
}

/// The id `format_id` wrote (dashes optional).
pub fn parse_id(text: &str) -> Option<DialogId> {
    let hex: String = text.trim().chars().filter(|c| *c != '-').collect();
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(&hex, 16).ok()
}

/// Limits and defaults; `Settings::default()` suits real phones.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Dialogs tracked at once; `track` refuses beyond (memory stays bounded).
    pub max_dialogs: usize,
    /// Lifetime of a confirmed dialog without a `timeout` of its own
    /// (Kamailio `default_timeout`: 12 h).
    pub default_timeout: Duration,
    /// An unconfirmed or early dialog whose INVITE got no final answer in
    /// this long is dropped (beyond Timer C, 3 min, so never before it).
    pub setup_timeout: Duration,
    /// Records waiting for the accounting writer; beyond, records are counted
    /// as dropped (the writer drains every ~50 ms, so this is a stalled loop).
    pub max_records: usize,
    /// Produce records (an accounting writer is attached).
    pub accounting: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_dialogs: 200_000,
            default_timeout: Duration::from_secs(43_200),
            setup_timeout: Duration::from_secs(200),
            max_records: 200_000,
            accounting: false,
        }
    }
}

/// Counters for `dlg.stats` and `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct DialogStats {
    pub created: u64,
    pub answered: u64,
    pub failed: u64,
    pub ended_bye: u64,
    pub ended_timeout: u64,
    pub ended_keepalive: u64,
    pub ended_admin: u64,
    pub ended_shutdown: u64,
    pub refused: u64,
    pub keepalives_sent: u64,
    pub requests_sent: u64,
    pub records: u64,
    pub records_dropped: u64,
    /// Dialog events queued for the app's hooks, and dropped (queue full).
    pub events_queued: u64,
    pub events_dropped: u64,
}

/// A request the dialog module sent itself (keepalive OPTIONS, BYE).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalRequest {
    pub dialog: DialogId,
    pub to_callee: bool,
    pub keepalive: bool,
}

pub struct Dialogs {
    table: Mutex<Table>,
    /// Something to observe (dialogs or accounting marks exist): lets the
    /// hot path skip the lock when nothing is tracked.
    observing: AtomicBool,
    /// Readable when records wait (see `records_fd`); None if the kernel
    /// refused an eventfd (the writer then polls).
    signal: Option<OwnedFd>,
    /// Readable when dialog events wait for the app's hooks (`events`).
    event_signal: Option<OwnedFd>,
    /// The transaction layer's hasher: accounting marks are keyed like
    /// server transactions, also where the layer is not at hand
    /// (`on_request` on a UDP reader thread).
    txn_hasher: OnceLock<ahash::RandomState>,
    /// Registered with the node's hooks (`serve`).
    registered: AtomicBool,
    /// Counter behind request record ids (`msg::record_id`).
    next_record: AtomicU64,
}

impl Default for Dialogs {
    fn default() -> Self {
        let signal = eventfd();
        let event_signal = eventfd();
        let mut table = Table::new(Settings::default());
        table.signal_fd = signal.as_ref().map_or(-1, |f| f.as_raw_fd());
        table.events.signal_fd = event_signal.as_ref().map_or(-1, |f| f.as_raw_fd());
        Dialogs {
            table: Mutex::new(table),
            observing: AtomicBool::new(false),
            signal,
            event_signal,
            txn_hasher: OnceLock::new(),
            registered: AtomicBool::new(false),
            next_record: AtomicU64::new(1),
        }
    }
}

/// A non-blocking eventfd (None if the kernel refuses one).
fn eventfd() -> Option<OwnedFd> {
    // SAFETY: eventfd returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    // SAFETY: a fresh descriptor we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Consumes an eventfd's count (it is readable no more until written).
fn clear_eventfd(fd: Option<&OwnedFd>) {
    if let Some(f) = fd {
        let mut counter = [0u8; 8];
        // SAFETY: reading 8 bytes from our own non-blocking eventfd.
        unsafe { libc::read(f.as_raw_fd(), counter.as_mut_ptr().cast(), 8) };
    }
}

impl Dialogs {
    /// True when responses and in-dialog requests must be shown to `hooks`.
    pub fn observing(&self) -> bool {
        self.observing.load(Ordering::Relaxed)
    }

    /// Joins the node's services (once), so that its hooks see the
    /// traffic from now on. Called by the first `track` or `account`.
    pub fn serve(self: &Arc<Self>, cx: &Ctx<'_>) {
        if self.registered.load(Ordering::Acquire) {
            return;
        }
        let _ = self.txn_hasher.set(cx.txns.hasher());
        if !self.registered.swap(true, Ordering::AcqRel) {
            if let Err(e) = cx.node.hooks.add(self.clone()) {
                tracing::error!(error = %e, "dialogs: cannot join the node's services");
            }
        }
    }

    pub(crate) fn lock(&self) -> TableGuard<'_> {
        TableGuard {
            table: self.table.lock(),
            flag: &self.observing,
        }
    }

    /// The table, with the timers of dialogs that ended where the timer
    /// queue was not at hand (`on_request`) cancelled now.
    pub(crate) fn lock_cx(&self, timers: &mut TimerQueue<TimerKey>) -> TableGuard<'_> {
        let mut t = self.lock();
        for id in t.stale_timers.drain(..) {
            timers.cancel(id);
        }
        t
    }

    pub fn settings(&self) -> Settings {
        self.table.lock().settings.clone()
    }

    pub fn set_settings(&self, settings: Settings) {
        self.lock().settings = settings;
    }

    /// Live dialogs in profile `name` with `value` (all values when None).
    pub fn count(&self, name: &str, value: Option<&str>) -> usize {
        self.table.lock().profiles.count(name, value)
    }

    /// Dialogs tracked now, by state: (unconfirmed, early, confirmed).
    pub fn states(&self) -> (usize, usize, usize) {
        let t = self.table.lock();
        let mut n = (0, 0, 0);
        for d in t.dialogs.values() {
            match d.state {
                State::Unconfirmed => n.0 += 1,
                State::Early => n.1 += 1,
                State::Confirmed => n.2 += 1,
                State::Terminated => {}
            }
        }
        n
    }

    pub fn len(&self) -> usize {
        self.table.lock().dialogs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> DialogStats {
        self.table.lock().stats.clone()
    }

    /// A copy of every dialog, for `dlg.list` (oldest first).
    pub fn snapshot(&self) -> Vec<Dialog> {
        let t = self.table.lock();
        let mut v: Vec<Dialog> = t.dialogs.values().map(|d| (**d).clone()).collect();
        v.sort_by_key(|d| d.started);
        v
    }

    pub fn get(&self, id: DialogId) -> Option<Dialog> {
        self.table.lock().dialogs.get(&id).map(|d| (**d).clone())
    }

    /// Profile names and values with their counts.
    pub fn profiles(&self) -> Vec<(String, String, usize)> {
        self.table.lock().profiles.entries()
    }

    /// An eventfd that becomes readable when the first record is queued after
    /// a `take_records` that emptied the queue: the writer wakes only when
    /// there is something to write (no polling while idle).
    pub fn records_fd(&self) -> Option<i32> {
        self.signal.as_ref().map(|f| f.as_raw_fd())
    }

    /// Clears the signal of `records_fd` (the reader then takes the records
    /// when it chooses; new ones do not signal again until the queue empties).
    pub fn clear_signal(&self) {
        clear_eventfd(self.signal.as_ref());
    }

    /// Takes up to `max` queued accounting records.
    pub fn take_records(&self, max: usize) -> Vec<Record> {
        let mut t = self.table.lock();
        let n = max.min(t.records.len());
        t.records.drain(..n).collect()
    }

    pub fn queued_records(&self) -> usize {
        self.table.lock().records.len()
    }

    /// Approximate heap and table bytes held per dialog right now.
    pub fn bytes_per_dialog(&self) -> usize {
        let t = self.table.lock();
        if t.dialogs.is_empty() {
            return 0;
        }
        let heap: usize = t.dialogs.values().map(|d| d.heap_bytes()).sum();
        // Each dialog has one entry in `dialogs` and one in `by_tags`
        // (hashbrown: key + value + a control byte, at ~7/8 load).
        let slots = (std::mem::size_of::<(DialogId, Box<Dialog>)>() + 1)
            + (std::mem::size_of::<(u64, DialogId)>() + 1);
        heap / t.dialogs.len() + slots * 8 / 7
    }
}

/// The table with the `observing` flag kept in step when it is released.
pub(crate) struct TableGuard<'a> {
    table: MutexGuard<'a, Table>,
    flag: &'a AtomicBool,
}

impl std::ops::Deref for TableGuard<'_> {
    type Target = Table;
    fn deref(&self) -> &Table {
        &self.table
    }
}

impl std::ops::DerefMut for TableGuard<'_> {
    fn deref_mut(&mut self) -> &mut Table {
        &mut self.table
    }
}

impl Drop for TableGuard<'_> {
    fn drop(&mut self) {
        let busy = !self.table.dialogs.is_empty() || !self.table.marks.is_empty();
        self.flag.store(busy, Ordering::Relaxed);
    }
}

pub(crate) struct Table {
    pub settings: Settings,
    pub dialogs: HashMap<DialogId, Box<Dialog>>,
    /// (Call-ID, caller's tag) → dialog: finds in-dialog requests both ways.
    pub by_tags: HashMap<u64, DialogId>,
    /// The INVITE server transaction of a dialog being set up.
    pub by_invite: HashMap<crate::transaction::TxnId, DialogId>,
    /// Requests the module sent, by the id in their client transactions'
    /// `Owner`.
    pub local: HashMap<u64, LocalRequest>,
    /// Timers of dialogs ended without the timer queue at hand, cancelled
    /// at the next `lock_cx` (bounded: beyond, they fire on nothing).
    pub stale_timers: Vec<TimerId>,
    /// Transactions to account when their final answer goes upstream, by
    /// server transaction key (see `records::AccMark`).
    pub marks: HashMap<u64, AccMark>,
    last_mark_sweep: Instant,
    pub profiles: Profiles,
    pub records: VecDeque<Record>,
    pub stats: DialogStats,
    /// Start/end events for the app's hooks (`events`).
    pub events: events::EventQueue,
    hasher: ahash::RandomState,
    /// `Dialogs::signal`'s descriptor (-1: none).
    signal_fd: i32,
}

/// Marks older than this lost their transaction without a final answer
/// (e.g. the route forwarded statelessly): swept.
const MARK_LIFETIME: Duration = Duration::from_secs(300);
/// Bound on `Table::stale_timers`.
const MAX_STALE_TIMERS: usize = 65_536;
/// Bound on pending marks (one per transaction in flight that is accounted).
const MAX_MARKS: usize = 200_000;

impl Table {
    fn new(settings: Settings) -> Table {
        Table {
            settings,
            dialogs: HashMap::new(),
            by_tags: HashMap::new(),
            by_invite: HashMap::new(),
            local: HashMap::new(),
            stale_timers: Vec::new(),
            marks: HashMap::new(),
            last_mark_sweep: Instant::now(),
            profiles: Profiles::default(),
            records: VecDeque::new(),
            stats: DialogStats::default(),
            events: events::EventQueue::default(),
            hasher: ahash::RandomState::new(),
            signal_fd: -1,
        }
    }

    pub fn tag_key(&self, call_id: &str, caller_tag: &str) -> u64 {
        self.hasher.hash_one((call_id, caller_tag))
    }

    /// The dialog a request with these Call-ID and tags belongs to, and
    /// whether it comes from the caller.
    pub fn find(&self, call_id: &str, from_tag: &str, to_tag: &str) -> Option<(DialogId, bool)> {
        if let Some(&id) = self.by_tags.get(&self.tag_key(call_id, from_tag)) {
            let d = self.dialogs.get(&id)?;
            if d.call_id.as_ref() == call_id && d.caller.tag.as_ref() == from_tag {
                return Some((id, true));
            }
        }
        let &id = self.by_tags.get(&self.tag_key(call_id, to_tag))?;
        let d = self.dialogs.get(&id)?;
        (d.call_id.as_ref() == call_id
            && d.caller.tag.as_ref() == to_tag
            && d.has_callee_tag(from_tag))
        .then_some((id, false))
    }

    pub fn insert(&mut self, d: Dialog) {
        let key = self.tag_key(&d.call_id, &d.caller.tag);
        for p in &d.profiles {
            self.profiles.add(p);
        }
        if let Some(txn) = d.invite_txn {
            self.by_invite.insert(txn, d.id);
        }
        self.by_tags.insert(key, d.id);
        self.stats.created += 1;
        self.dialogs.insert(d.id, Box::new(d));
    }

    /// Drops a dialog from every index and its profiles.
    pub fn remove(&mut self, id: DialogId) -> Option<Box<Dialog>> {
        let d = self.dialogs.remove(&id)?;
        let key = self.tag_key(&d.call_id, &d.caller.tag);
        if self.by_tags.get(&key) == Some(&id) {
            self.by_tags.remove(&key);
        }
        if let Some(txn) = d.invite_txn {
            if self.by_invite.get(&txn) == Some(&id) {
                self.by_invite.remove(&txn);
            }
        }
        for p in &d.profiles {
            self.profiles.remove(p);
        }
        Some(d)
    }

    /// Queues a record for the writer (when one is attached).
    pub fn emit(&mut self, r: Record) {
        if !self.settings.accounting {
            return;
        }
        if self.records.len() >= self.settings.max_records {
            self.stats.records_dropped += 1;
            tracing::error!("accounting queue full: a record was dropped");
            return;
        }
        self.stats.records += 1;
        if self.records.is_empty() && self.signal_fd >= 0 {
            let one: u64 = 1;
            // SAFETY: writing 8 bytes to the eventfd `Dialogs` owns.
            unsafe { libc::write(self.signal_fd, (&one as *const u64).cast(), 8) };
        }
        self.records.push_back(r);
    }

    /// Remembers to account the transaction with this key.
    pub fn mark(&mut self, key: u64, mark: AccMark) {
        if self.marks.len() >= MAX_MARKS / 2 {
            let now = Instant::now();
            if now.duration_since(self.last_mark_sweep) > Duration::from_secs(5) {
                self.last_mark_sweep = now;
                self.marks
                    .retain(|_, m| now.duration_since(m.at) < MARK_LIFETIME);
            }
        }
        if self.marks.len() >= MAX_MARKS {
            self.stats.records_dropped += 1;
            return;
        }
        match self.marks.get_mut(&key) {
            Some(m) => m.merge(mark),
            None => {
                self.marks.insert(key, mark);
            }
        }
    }
}
