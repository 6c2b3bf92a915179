//! Dialog start/end events for the application's hooks (Kamailio's
//! `event_route[dialog:start]` / `[dialog:end]`; docs/decisions/0053).
//!
//! The places where a dialog is confirmed or ends run with the transaction
//! layer held (or on a UDP reader thread), so they never call Python: they
//! queue an event in the table, and an eventfd of its own (not the records'
//! one: the accounting writer batches on its own rhythm) wakes the Python
//! side, which takes the events with `loop.add_reader` and runs the hooks.
//! Nothing is built or queued for a kind no served app listens to
//! (`EventQueue::wants`); the queue is bounded and counts what it drops.

use std::collections::VecDeque;
use std::time::{Instant, SystemTime};

use super::records::unix;
use super::state::{Dialog, EndReason};
use super::{Dialogs, Table};

/// Events waiting for the Python side (it drains them every loop turn; a
/// full queue means a stalled loop, and then events are dropped, counted).
pub const MAX_EVENTS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The dialog was confirmed: its first 2xx went upstream.
    Start,
    /// The dialog left the table (ended, or its setup failed).
    End,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::End => "end",
        }
    }
}

/// What a dialog hook is told (plain values: built under the table lock).
#[derive(Debug, Clone)]
pub struct DialogEvent {
    pub kind: EventKind,
    /// `format_id`'s form.
    pub id: String,
    pub call_id: String,
    pub caller: String,
    pub callee: String,
    /// None for a start.
    pub reason: Option<EndReason>,
    /// The INVITE's final status (0 while none: a setup that timed out).
    pub code: u16,
    /// Unix seconds of the event.
    pub time: f64,
    /// Seconds from answer to end (0 for a start or an unanswered dialog).
    pub duration: f64,
    /// `name` or `name:value`.
    pub profiles: Vec<String>,
    /// The `cdr` fields the route gave `track_dialog`.
    pub extra: Vec<(Box<str>, Box<str>)>,
    pub source: String,
    /// Where the answering branch went (None: answered by the app itself,
    /// or never answered).
    pub destination: Option<String>,
    pub from_tag: String,
    pub to_tag: String,
}

impl DialogEvent {
    pub fn of(d: &Dialog, kind: EventKind, reason: Option<EndReason>, now: Instant) -> DialogEvent {
        let duration = match kind {
            EventKind::Start => 0.0,
            EventKind::End => d
                .answered
                .map_or(0.0, |a| now.saturating_duration_since(a).as_secs_f64()),
        };
        DialogEvent {
            kind,
            id: super::format_id(d.id),
            call_id: d.call_id.to_string(),
            caller: d.caller_uri.to_string(),
            callee: d.callee_uri.to_string(),
            reason,
            code: d.final_status,
            time: unix(SystemTime::now()),
            duration,
            profiles: d
                .profiles
                .iter()
                .map(|p| match p.value.is_empty() {
                    true => p.name.to_string(),
                    false => format!("{}:{}", p.name, p.value),
                })
                .collect(),
            extra: d.extra.clone(),
            source: format!(
                "{}:{}",
                d.source.0.as_str().to_ascii_lowercase(),
                d.source.1
            ),
            destination: d.destination.map(|a| a.to_string()),
            from_tag: d.caller.tag.to_string(),
            to_tag: d
                .callee
                .as_ref()
                .map_or_else(String::new, |c| c.tag.to_string()),
        }
    }
}

/// The table's queue of events, off until an app wants them.
#[derive(Debug)]
pub(crate) struct EventQueue {
    want_start: bool,
    want_end: bool,
    pub max: usize,
    queue: VecDeque<DialogEvent>,
    /// `Dialogs::event_signal`'s descriptor (-1: none).
    pub signal_fd: i32,
}

impl Default for EventQueue {
    fn default() -> Self {
        EventQueue {
            want_start: false,
            want_end: false,
            max: MAX_EVENTS,
            queue: VecDeque::new(),
            signal_fd: -1,
        }
    }
}

impl EventQueue {
    pub fn wants(&self, kind: EventKind) -> bool {
        match kind {
            EventKind::Start => self.want_start,
            EventKind::End => self.want_end,
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }
}

impl Table {
    /// Queues the `kind` event of `d` if some app listens to it (false when
    /// nobody does or the queue is full).
    pub fn dialog_event(
        &mut self,
        d: &Dialog,
        kind: EventKind,
        reason: Option<EndReason>,
        now: Instant,
    ) -> bool {
        if !self.events.wants(kind) {
            return false;
        }
        if self.events.queue.len() >= self.events.max {
            self.stats.events_dropped += 1;
            tracing::error!(
                "dialog event queue full: a {} event was dropped",
                kind.as_str()
            );
            return false;
        }
        self.stats.events_queued += 1;
        if self.events.queue.is_empty() && self.events.signal_fd >= 0 {
            let one: u64 = 1;
            // SAFETY: writing 8 bytes to the eventfd `Dialogs` owns.
            unsafe { libc::write(self.events.signal_fd, (&one as *const u64).cast(), 8) };
        }
        self.events
            .queue
            .push_back(DialogEvent::of(d, kind, reason, now));
        true
    }

    /// Which events to queue from now on; turning a kind off drops its
    /// queued events (nobody is left to take them).
    pub fn want_events(&mut self, start: bool, end: bool) {
        self.events.want_start = start;
        self.events.want_end = end;
        self.events.queue.retain(|e| match e.kind {
            EventKind::Start => start,
            EventKind::End => end,
        });
    }

    pub fn take_events(&mut self, max: usize) -> Vec<DialogEvent> {
        let n = max.min(self.events.queue.len());
        self.events.queue.drain(..n).collect()
    }
}

impl Dialogs {
    /// Which dialog events to queue for the application's hooks (both off
    /// by default: then nothing is built nor queued).
    pub fn want_events(&self, start: bool, end: bool) {
        self.lock().want_events(start, end);
    }

    /// An eventfd readable when the first event is queued after a
    /// `take_events` that emptied the queue (None: the kernel refused one).
    pub fn events_fd(&self) -> Option<i32> {
        use std::os::fd::AsRawFd;
        self.event_signal.as_ref().map(|f| f.as_raw_fd())
    }

    /// Clears the readiness of `events_fd`; take every event after this
    /// (a non-empty queue does not signal again).
    pub fn clear_events_signal(&self) {
        super::clear_eventfd(self.event_signal.as_ref());
    }

    /// Takes up to `max` queued events, oldest first.
    pub fn take_events(&self, max: usize) -> Vec<DialogEvent> {
        self.table.lock().take_events(max)
    }

    pub fn queued_events(&self) -> usize {
        self.table.lock().events.len()
    }
}
