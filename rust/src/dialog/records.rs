//! Accounting records (Kamailio `acc`): one per accounted transaction when
//! its final answer goes upstream, and a CDR per dialog when it ends. They
//! queue in the table until the Python writer takes them.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::state::{Dialog, EndReason};
use crate::sip::{Message, Uri};

/// How a call went, from its INVITE's final answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Answered,
    /// 486 Busy Here, 600 Busy Everywhere.
    Busy,
    /// 487: the caller cancelled.
    Cancelled,
    /// 408, 480: nobody answered in time.
    NoAnswer,
    /// Any other final answer >= 300, or none.
    Failed,
}

impl Disposition {
    pub fn of(status: u16) -> Disposition {
        match status {
            200..=299 => Disposition::Answered,
            486 | 600 => Disposition::Busy,
            487 => Disposition::Cancelled,
            408 | 480 => Disposition::NoAnswer,
            _ => Disposition::Failed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Answered => "answered",
            Disposition::Busy => "busy",
            Disposition::Cancelled => "cancelled",
            Disposition::NoAnswer => "no_answer",
            Disposition::Failed => "failed",
        }
    }

    /// Missed calls (Kamailio `acc` missed-call flag): not answered, and
    /// not because the request was refused.
    pub fn missed(self) -> bool {
        matches!(
            self,
            Disposition::Busy | Disposition::Cancelled | Disposition::NoAnswer
        )
    }
}

/// A transaction the route marked for accounting (`req.account()`), or a
/// request inside an accounted dialog.
#[derive(Debug, Clone)]
pub struct AccMark {
    pub extra: Vec<(Box<str>, Box<str>)>,
    pub at: Instant,
}

impl AccMark {
    pub fn new(extra: Vec<(Box<str>, Box<str>)>) -> AccMark {
        AccMark {
            extra,
            at: Instant::now(),
        }
    }

    pub fn merge(&mut self, other: AccMark) {
        for (k, v) in other.extra {
            match self.extra.iter_mut().find(|(n, _)| *n == k) {
                Some(slot) => slot.1 = v,
                None => self.extra.push((k, v)),
            }
        }
    }
}

/// One accounted request (the seed's "accounting table").
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub id: String,
    /// Unix seconds when the final answer went upstream (ACK: when it came).
    pub time: f64,
    pub method: String,
    pub from_user: String,
    pub from_domain: String,
    pub to_user: String,
    pub to_domain: String,
    pub request_uri: String,
    pub call_id: String,
    pub from_tag: String,
    pub to_tag: String,
    pub code: u16,
    pub reason: String,
    pub source: String,
    pub extra: Vec<(Box<str>, Box<str>)>,
}

impl RequestRecord {
    /// The record of `req` answered with `code` / `reason` (and the To tag of
    /// the answer, when the request had none).
    pub fn of(
        id: String,
        req: &Message,
        code: u16,
        reason: &str,
        to_tag: Option<&str>,
        source: String,
        extra: Vec<(Box<str>, Box<str>)>,
    ) -> RequestRecord {
        let (from_user, from_domain) = user_domain(req.from().uri);
        let (to_user, to_domain) = user_domain(req.to().uri);
        RequestRecord {
            id,
            time: unix(SystemTime::now()),
            method: req.method_str().to_string(),
            from_user,
            from_domain,
            to_user,
            to_domain,
            request_uri: req.request_uri_str().unwrap_or_default().to_string(),
            call_id: req.call_id().to_string(),
            from_tag: req.from_tag().unwrap_or_default().to_string(),
            to_tag: req.to_tag().or(to_tag).unwrap_or_default().to_string(),
            code,
            reason: reason.to_string(),
            source,
            extra,
        }
    }

    pub fn failed(&self) -> bool {
        self.code >= 300
    }
}

/// The call detail record of one dialog.
#[derive(Debug, Clone)]
pub struct Cdr {
    pub id: String,
    pub call_id: String,
    pub caller: String,
    pub callee: String,
    pub source: String,
    pub destination: String,
    pub start: f64,
    pub answer: Option<f64>,
    pub end: f64,
    /// Seconds from answer to end (0 when not answered).
    pub duration: f64,
    pub disposition: Disposition,
    pub code: u16,
    pub reason: String,
    pub end_reason: EndReason,
    pub from_tag: String,
    pub to_tag: String,
    pub extra: Vec<(Box<str>, Box<str>)>,
}

impl Cdr {
    pub fn of(d: &Dialog, end_reason: EndReason, now: Instant) -> Cdr {
        let end_at = unix(SystemTime::now());
        // Wall-clock times from the monotonic clock, so the duration is exact
        // even when the system clock steps during a call.
        let answer = d
            .answered
            .map(|a| end_at - now.saturating_duration_since(a).as_secs_f64());
        let duration = d
            .answered
            .map_or(0.0, |a| now.saturating_duration_since(a).as_secs_f64());
        let status = if d.final_status == 0 {
            408
        } else {
            d.final_status
        };
        Cdr {
            id: super::format_id(d.id),
            call_id: d.call_id.to_string(),
            caller: d.caller_uri.to_string(),
            callee: d.callee_uri.to_string(),
            source: format!(
                "{}:{}",
                d.source.0.as_str().to_ascii_lowercase(),
                d.source.1
            ),
            destination: d.destination.map_or_else(String::new, |a| a.to_string()),
            start: end_at - now.saturating_duration_since(d.started).as_secs_f64(),
            answer,
            end: end_at,
            duration,
            disposition: Disposition::of(status),
            code: status,
            reason: d.final_reason.to_string(),
            end_reason,
            from_tag: d.caller.tag.to_string(),
            to_tag: d
                .callee
                .as_ref()
                .map_or_else(String::new, |c| c.tag.to_string()),
            extra: d.extra.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Record {
    Request(RequestRecord),
    Cdr(Cdr),
}

pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// User and host of a URI (empty strings for parts it has not).
pub fn user_domain(uri: Uri<'_>) -> (String, String) {
    let user = uri
        .user
        .map(|u| String::from_utf8_lossy(&crate::sip::unescape(u)).into_owned())
        .unwrap_or_default();
    (user, uri.host.to_string())
}

/// The reason phrase of a serialized response (`SIP/2.0 486 Busy Here`).
pub fn reason_of(response: &[u8]) -> &str {
    let line_end = memchr::memchr(b'\r', response).unwrap_or(response.len());
    response
        .get(12..line_end)
        .and_then(|r| std::str::from_utf8(r).ok())
        .unwrap_or("")
}
