//! One dialog and its state machine, free of I/O: the hooks feed it what the
//! core saw and act on what it answers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::profiles::Profile;
use super::DialogId;
use crate::timer::TimerId;
use crate::transaction::TxnId;
use crate::transport::{Destination, Transport};

/// Forks whose early dialogs are remembered; more are still relayed, only
/// not listed (a bound on memory per dialog).
pub const MAX_FORKS: usize = 16;
/// Custom CDR fields per dialog, and their size.
pub const MAX_EXTRA: usize = 32;
pub const MAX_EXTRA_BYTES: usize = 4096;
pub const MAX_PROFILES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The INVITE was marked; no answer with a To tag yet.
    Unconfirmed,
    /// A provisional answer with a To tag (one early dialog per fork).
    Early,
    /// A 2xx went upstream.
    Confirmed,
    Terminated,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unconfirmed => "unconfirmed",
            State::Early => "early",
            State::Confirmed => "confirmed",
            State::Terminated => "terminated",
        }
    }
}

/// Why a dialog ended (the CDR's `end_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    CallerBye,
    CalleeBye,
    /// Its lifetime ran out: BYE sent to both sides.
    Timeout,
    /// A keepalive OPTIONS went unanswered (or got 408/481).
    Keepalive,
    /// `dlg.end` / `app.dialogs.end()`.
    Admin,
    /// sipr stopped with the call up (no BYE sent).
    Shutdown,
    /// The INVITE got a final answer >= 300, or none at all.
    Failed,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::CallerBye => "caller_bye",
            EndReason::CalleeBye => "callee_bye",
            EndReason::Timeout => "timeout",
            EndReason::Keepalive => "keepalive",
            EndReason::Admin => "admin",
            EndReason::Shutdown => "shutdown",
            EndReason::Failed => "failed",
        }
    }
}

/// What the route asked for when it marked the INVITE.
#[derive(Debug, Clone, Default)]
pub struct TrackSpec {
    pub profiles: Vec<Profile>,
    /// Lifetime once confirmed (None: the default).
    pub timeout: Option<Duration>,
    /// Interval of in-dialog OPTIONS to both sides (None: no keepalive).
    pub keepalive: Option<Duration>,
    /// Custom CDR fields.
    pub extra: Vec<(Box<str>, Box<str>)>,
    /// Account the INVITE and every request inside the dialog.
    pub account: bool,
}

/// One side of the dialog as seen from the proxy.
#[derive(Debug, Clone)]
pub struct Leg {
    pub tag: Box<str>,
    /// This side's From (caller) or To (callee) header value, tag included:
    /// what requests we send on its behalf carry.
    pub header: Box<str>,
    /// Its remote target (Contact URI).
    pub contact: Box<str>,
    /// Route set from us towards this side, each `<uri>`, in order.
    pub route: Box<[Box<str>]>,
    /// Where requests towards this side go.
    pub dest: Option<Destination>,
    /// Highest CSeq seen in requests from this side.
    pub cseq: u32,
    /// A keepalive OPTIONS to this side is still unanswered.
    pub keepalive_pending: bool,
}

impl Leg {
    fn heap_bytes(&self) -> usize {
        self.tag.len()
            + self.header.len()
            + self.contact.len()
            + self.route.len() * std::mem::size_of::<Box<str>>()
            + self.route.iter().map(|r| r.len()).sum::<usize>()
    }
}

#[derive(Debug, Clone)]
pub struct Dialog {
    pub id: DialogId,
    pub state: State,
    pub call_id: Box<str>,
    pub caller: Leg,
    /// Known once a 2xx confirmed the dialog.
    pub callee: Option<Box<Leg>>,
    /// To tags of early dialogs (forks) that have not failed.
    pub forks: Vec<Box<str>>,
    /// The INVITE's server transaction while the dialog is being set up.
    pub invite_txn: Option<TxnId>,
    pub started: Instant,
    pub answered: Option<Instant>,
    pub timeout: Duration,
    pub keepalive: Option<Duration>,
    pub next_keepalive: Option<Instant>,
    pub timer: Option<TimerId>,
    pub profiles: Vec<Profile>,
    pub account: bool,
    pub extra: Vec<(Box<str>, Box<str>)>,
    /// From URI and the dialled To URI.
    pub caller_uri: Box<str>,
    pub callee_uri: Box<str>,
    pub source: (Transport, SocketAddr),
    /// Where the answering branch was sent.
    pub destination: Option<SocketAddr>,
    pub final_status: u16,
    pub final_reason: Box<str>,
    /// CSeq of the last ACK seen (ACK retransmissions are not accounted twice).
    pub acked_cseq: u32,
}

impl Dialog {
    pub fn has_callee_tag(&self, tag: &str) -> bool {
        self.callee.as_ref().is_some_and(|c| c.tag.as_ref() == tag)
            || self.forks.iter().any(|f| f.as_ref() == tag)
    }

    /// A provisional answer with a To tag arrived: an early dialog (per fork).
    pub fn on_provisional(&mut self, to_tag: &str) {
        if matches!(self.state, State::Confirmed | State::Terminated) {
            return;
        }
        self.state = State::Early;
        if self.forks.len() < MAX_FORKS && !self.forks.iter().any(|f| f.as_ref() == to_tag) {
            self.forks.push(to_tag.into());
        }
    }

    /// The first 2xx went upstream: the dialog is confirmed with that fork.
    /// Returns false when it was already confirmed or over.
    pub fn on_answer(&mut self, callee: Leg, status: u16, reason: &str, now: Instant) -> bool {
        if matches!(self.state, State::Confirmed | State::Terminated) {
            return false;
        }
        self.forks.clear();
        self.callee = Some(Box::new(callee));
        self.state = State::Confirmed;
        self.answered = Some(now);
        self.final_status = status;
        self.final_reason = reason.into();
        self.invite_txn = None;
        if let Some(k) = self.keepalive {
            self.next_keepalive = Some(now + k);
        }
        true
    }

    /// The INVITE's final answer >= 300 went upstream.
    pub fn on_failure(&mut self, status: u16, reason: &str) {
        self.final_status = status;
        self.final_reason = reason.into();
        self.state = State::Terminated;
        self.forks.clear();
    }

    /// When the dialog's timer should fire next: its lifetime end once
    /// confirmed (or the earlier keepalive), the setup bound before that.
    pub fn next_deadline(&self, setup_timeout: Duration) -> Option<Instant> {
        match self.state {
            State::Unconfirmed | State::Early => Some(self.started + setup_timeout),
            State::Confirmed => {
                let end = self.answered? + self.timeout;
                Some(self.next_keepalive.map_or(end, |k| k.min(end)))
            }
            State::Terminated => None,
        }
    }

    /// Lifetime over (confirmed dialogs only).
    pub fn expired(&self, now: Instant) -> bool {
        self.state == State::Confirmed && self.answered.is_some_and(|a| now >= a + self.timeout)
    }

    /// A session refresh (2xx to a re-INVITE or UPDATE) restarts the lifetime.
    pub fn refresh(&mut self, now: Instant) {
        if self.state == State::Confirmed {
            self.answered = Some(now);
        }
    }

    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// Heap bytes this dialog holds, its box included.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Dialog>()
            + self.call_id.len()
            + self.caller.heap_bytes()
            + self
                .callee
                .as_ref()
                .map_or(0, |c| std::mem::size_of::<Leg>() + c.heap_bytes())
            + self.forks.capacity() * std::mem::size_of::<Box<str>>()
            + self.forks.iter().map(|f| f.len()).sum::<usize>()
            + self.profiles.capacity() * std::mem::size_of::<Profile>()
            + self.profiles.iter().map(Profile::heap_bytes).sum::<usize>()
            + self.extra.capacity() * std::mem::size_of::<(Box<str>, Box<str>)>()
            + self
                .extra
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + self.caller_uri.len()
            + self.callee_uri.len()
            + self.final_reason.len()
    }
}
