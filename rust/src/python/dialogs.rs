//! The dialog table as Python sees it (`sipr._core.DialogTable`, reached as
//! `core.dialogs()`; the public face is `sipr.dialogs.Dialogs`), and the
//! request methods `track_dialog` / `account`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use super::shared::Shared;
use super::SiprError;
use crate::core::HeldRequest;
use crate::dialog::{self, Dialog, DialogEvent, Profile, Record, TrackSpec};

pyo3::create_exception!(
    _core,
    DialogError,
    SiprError,
    "A dialog could not be tracked (not an initial INVITE, already answered, table full)."
);

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("DialogError", m.py().get_type::<DialogError>())?;
    m.add_class::<PyDialogTable>()?;
    Ok(())
}

/// `req.track_dialog(...)`.
pub fn track(
    shared: &Arc<Shared>,
    held: &HeldRequest,
    profiles: Option<&Bound<'_, PyAny>>,
    timeout: Option<f64>,
    keepalive: Option<f64>,
    cdr: Option<&Bound<'_, PyAny>>,
    account: bool,
) -> PyResult<String> {
    let spec = TrackSpec {
        profiles: extract_profiles(profiles)?,
        timeout: timeout.map(|s| seconds(s, "timeout")).transpose()?,
        keepalive: keepalive.map(|s| seconds(s, "keepalive")).transpose()?,
        extra: extract_fields(cdr, "cdr")?,
        account,
    };
    let id = held
        .track_dialog(&shared.core, spec)
        .map_err(|e| DialogError::new_err(e.to_string()))?;
    Ok(dialog::format_id(id))
}

/// `req.account(...)`.
pub fn account(
    shared: &Arc<Shared>,
    held: &HeldRequest,
    extra: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    held.account(&shared.core, extract_fields(extra, "extra")?);
    Ok(())
}

fn seconds(v: f64, name: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            PyValueError::new_err(format!("{name} must be a positive number of seconds"))
        })
}

/// Profiles as `[("user", "alice"), "trunk:gw1", "calls"]`.
fn extract_profiles(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<Profile>> {
    let Some(obj) = obj else {
        return Ok(Vec::new());
    };
    if obj.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "profiles must be a list of (name, value) pairs or 'name:value' strings, not str",
        ));
    }
    let mut out: Vec<Profile> = Vec::new();
    for item in obj.try_iter()? {
        let item = item?;
        let p = if let Ok(s) = item.extract::<String>() {
            Profile::parse(&s)
        } else if let Ok((n, v)) = item.extract::<(String, Bound<'_, PyAny>)>() {
            Profile::new(&n, &v.str()?.to_string())
        } else {
            return Err(PyTypeError::new_err(
                "a profile is a (name, value) pair or a 'name:value' string",
            ));
        };
        if p.name.is_empty() || p.name.len() > 64 || p.value.len() > 256 {
            return Err(PyValueError::new_err(
                "a profile name is 1-64 characters and its value at most 256",
            ));
        }
        if !out.contains(&p) {
            out.push(p);
        }
    }
    if out.len() > dialog::MAX_PROFILES {
        return Err(PyValueError::new_err(format!(
            "at most {} profiles per dialog",
            dialog::MAX_PROFILES
        )));
    }
    Ok(out)
}

/// Custom record fields: a dict of name → value (values become strings).
fn extract_fields(
    obj: Option<&Bound<'_, PyAny>>,
    what: &str,
) -> PyResult<Vec<(Box<str>, Box<str>)>> {
    let Some(obj) = obj else {
        return Ok(Vec::new());
    };
    let d = obj.cast::<PyDict>().map_err(|_| {
        PyTypeError::new_err(format!("{what} must be a dict of field name to value"))
    })?;
    let mut out = Vec::with_capacity(d.len());
    let mut size = 0;
    for (k, v) in d.iter() {
        let k: String = k.extract()?;
        let v = if v.is_none() {
            String::new()
        } else {
            v.str()?.to_string()
        };
        size += k.len() + v.len();
        out.push((k.into_boxed_str(), v.into_boxed_str()));
    }
    if out.len() > dialog::MAX_EXTRA || size > dialog::MAX_EXTRA_BYTES {
        return Err(PyValueError::new_err(format!(
            "{what}: at most {} fields and {} bytes",
            dialog::MAX_EXTRA,
            dialog::MAX_EXTRA_BYTES
        )));
    }
    Ok(out)
}

fn parse_id(id: &str) -> PyResult<u64> {
    dialog::parse_id(id).ok_or_else(|| {
        PyValueError::new_err(format!(
            "bad dialog id {id:?}: expected xxxx-xxxx-xxxx-xxxx (hex)"
        ))
    })
}

/// The running core's dialogs.
#[pyclass(module = "sipr._core", name = "DialogTable")]
pub struct PyDialogTable {
    shared: Arc<Shared>,
}

impl PyDialogTable {
    pub fn new(shared: Arc<Shared>) -> PyDialogTable {
        PyDialogTable { shared }
    }
}

fn dialog_dict<'py>(py: Python<'py>, d: &Dialog, now: Instant) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("id", dialog::format_id(d.id))?;
    out.set_item("state", d.state.as_str())?;
    out.set_item("caller", d.caller_uri.as_ref())?;
    out.set_item("callee", d.callee_uri.as_ref())?;
    out.set_item("age", (d.age(now).as_secs_f64() * 10.0).round() / 10.0)?;
    out.set_item("call_id", d.call_id.as_ref())?;
    out.set_item("from_tag", d.caller.tag.as_ref())?;
    let to_tag = d.callee.as_ref().map(|c| c.tag.to_string());
    out.set_item("to_tag", to_tag)?;
    out.set_item(
        "forks",
        d.forks.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
    )?;
    out.set_item(
        "source",
        format!(
            "{}:{}",
            d.source.0.as_str().to_ascii_lowercase(),
            d.source.1
        ),
    )?;
    out.set_item("destination", d.destination.map(|a| a.to_string()))?;
    let profiles: Vec<String> = d
        .profiles
        .iter()
        .map(|p| {
            if p.value.is_empty() {
                p.name.to_string()
            } else {
                format!("{}:{}", p.name, p.value)
            }
        })
        .collect();
    out.set_item("profiles", profiles)?;
    let duration = d
        .answered
        .map(|a| now.saturating_duration_since(a).as_secs_f64());
    out.set_item("duration", duration.map(|s| (s * 10.0).round() / 10.0))?;
    let left = d
        .answered
        .map(|a| (a + d.timeout).saturating_duration_since(now).as_secs());
    out.set_item("timeout_in", left)?;
    out.set_item("keepalive", d.keepalive.map(|k| k.as_secs_f64()))?;
    Ok(out)
}

fn fields<'py>(py: Python<'py>, f: &[(Box<str>, Box<str>)]) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in f {
        d.set_item(k.as_ref(), v.as_ref())?;
    }
    Ok(d)
}

fn record_dict<'py>(py: Python<'py>, r: &Record) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    match r {
        Record::Request(q) => {
            d.set_item("type", "request")?;
            d.set_item("id", &q.id)?;
            d.set_item("time", q.time)?;
            d.set_item("method", &q.method)?;
            d.set_item("from_user", &q.from_user)?;
            d.set_item("from_domain", &q.from_domain)?;
            d.set_item("to_user", &q.to_user)?;
            d.set_item("to_domain", &q.to_domain)?;
            d.set_item("request_uri", &q.request_uri)?;
            d.set_item("call_id", &q.call_id)?;
            d.set_item("from_tag", &q.from_tag)?;
            d.set_item("to_tag", &q.to_tag)?;
            d.set_item("code", q.code)?;
            d.set_item("reason", &q.reason)?;
            d.set_item("source", &q.source)?;
            d.set_item("failed", q.failed())?;
            d.set_item("extra", fields(py, &q.extra)?)?;
        }
        Record::Cdr(c) => {
            d.set_item("type", "cdr")?;
            d.set_item("id", &c.id)?;
            d.set_item("call_id", &c.call_id)?;
            d.set_item("caller", &c.caller)?;
            d.set_item("callee", &c.callee)?;
            d.set_item("source", &c.source)?;
            d.set_item("destination", &c.destination)?;
            d.set_item("start", c.start)?;
            d.set_item("answer", c.answer)?;
            d.set_item("end", c.end)?;
            d.set_item("duration", c.duration)?;
            d.set_item("disposition", c.disposition.as_str())?;
            d.set_item("missed", c.disposition.missed())?;
            d.set_item("code", c.code)?;
            d.set_item("reason", &c.reason)?;
            d.set_item("end_reason", c.end_reason.as_str())?;
            d.set_item("from_tag", &c.from_tag)?;
            d.set_item("to_tag", &c.to_tag)?;
            d.set_item("extra", fields(py, &c.extra)?)?;
        }
    }
    Ok(d)
}

/// The keyword arguments of `sipr.DialogEvent`.
fn event_dict<'py>(py: Python<'py>, e: &DialogEvent) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("kind", e.kind.as_str())?;
    d.set_item("id", &e.id)?;
    d.set_item("call_id", &e.call_id)?;
    d.set_item("caller", &e.caller)?;
    d.set_item("callee", &e.callee)?;
    d.set_item("reason", e.reason.map(|r| r.as_str()))?;
    d.set_item("code", e.code)?;
    d.set_item("time", e.time)?;
    d.set_item("duration", e.duration)?;
    d.set_item("profiles", pyo3::types::PyTuple::new(py, &e.profiles)?)?;
    d.set_item("cdr", fields(py, &e.extra)?)?;
    d.set_item("source", &e.source)?;
    d.set_item("destination", e.destination.as_deref())?;
    d.set_item("from_tag", &e.from_tag)?;
    d.set_item("to_tag", &e.to_tag)?;
    Ok(d)
}

#[pymethods]
impl PyDialogTable {
    /// Live dialogs in profile `name` with `value` (any value when None).
    #[pyo3(signature = (name, value=None))]
    fn count(&self, name: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<usize> {
        let value = value.map(|v| v.str().map(|s| s.to_string())).transpose()?;
        Ok(self.shared.core.dialogs.count(name, value.as_deref()))
    }

    fn __len__(&self) -> usize {
        self.shared.core.dialogs.len()
    }

    /// Every tracked dialog, oldest first.
    fn list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let now = Instant::now();
        let out = PyList::empty(py);
        for d in self.shared.core.dialogs.snapshot() {
            out.append(dialog_dict(py, &d, now)?)?;
        }
        Ok(out)
    }

    fn get<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
        let id = parse_id(id)?;
        self.shared
            .core
            .dialogs
            .get(id)
            .map(|d| dialog_dict(py, &d, Instant::now()))
            .transpose()
    }

    /// Ends a confirmed dialog with a BYE to each side; False when there is
    /// no such confirmed dialog.
    fn end(&self, id: &str) -> PyResult<bool> {
        let id = parse_id(id)?;
        let core = &self.shared.core;
        Ok(core
            .with_services(|cx, _| dialog::end(&core.dialogs, cx, id))
            .0)
    }

    /// At shutdown: a CDR for every dialog still tracked (no BYE sent).
    fn end_all(&self) -> usize {
        let core = &self.shared.core;
        core.with_services(|cx, _| dialog::end_all(&core.dialogs, cx))
            .0
    }

    /// (profile, value, live dialogs) for every value in use.
    fn profiles(&self) -> Vec<(String, String, usize)> {
        self.shared.core.dialogs.profiles()
    }

    /// Counters and gauges as (name, value), for stats.get and dlg.stats.
    fn stats(&self) -> Vec<(String, u64)> {
        let d = &self.shared.core.dialogs;
        let s = d.stats();
        let (unconfirmed, early, confirmed) = d.states();
        [
            ("dialogs.active", (unconfirmed + early + confirmed) as u64),
            ("dialogs.unconfirmed", unconfirmed as u64),
            ("dialogs.early", early as u64),
            ("dialogs.confirmed", confirmed as u64),
            ("dialogs.created", s.created),
            ("dialogs.answered", s.answered),
            ("dialogs.failed", s.failed),
            ("dialogs.refused", s.refused),
            ("dialogs.ended.bye", s.ended_bye),
            ("dialogs.ended.timeout", s.ended_timeout),
            ("dialogs.ended.keepalive", s.ended_keepalive),
            ("dialogs.ended.admin", s.ended_admin),
            ("dialogs.ended.shutdown", s.ended_shutdown),
            ("dialogs.keepalives_sent", s.keepalives_sent),
            ("dialogs.requests_sent", s.requests_sent),
            ("dialogs.bytes_per_dialog", d.bytes_per_dialog() as u64),
            ("acc.records", s.records),
            ("acc.records_dropped", s.records_dropped),
            ("acc.records_queued", d.queued_records() as u64),
            ("dialogs.events_queued", s.events_queued),
            ("dialogs.events_dropped", s.events_dropped),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Applies the table's settings (seconds for durations); None keeps one.
    #[pyo3(signature = (*, max_dialogs=None, default_timeout=None, setup_timeout=None, max_records=None, accounting=None))]
    fn configure(
        &self,
        max_dialogs: Option<usize>,
        default_timeout: Option<f64>,
        setup_timeout: Option<f64>,
        max_records: Option<usize>,
        accounting: Option<bool>,
    ) -> PyResult<()> {
        let d = &self.shared.core.dialogs;
        let mut s = d.settings();
        if let Some(n) = max_dialogs {
            s.max_dialogs = n;
        }
        if let Some(v) = default_timeout {
            s.default_timeout = seconds(v, "default_timeout")?;
        }
        if let Some(v) = setup_timeout {
            s.setup_timeout = seconds(v, "setup_timeout")?;
        }
        if let Some(n) = max_records {
            s.max_records = n.max(1);
        }
        if let Some(a) = accounting {
            s.accounting = a;
        }
        d.set_settings(s);
        Ok(())
    }

    /// Takes up to `max` accounting records (dicts with a "type" of
    /// "request" or "cdr").
    #[pyo3(signature = (max=10_000))]
    fn take_records<'py>(&self, py: Python<'py>, max: usize) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for r in self.shared.core.dialogs.take_records(max) {
            out.append(record_dict(py, &r)?)?;
        }
        Ok(out)
    }

    /// A descriptor readable when records wait (None: poll instead).
    fn records_fd(&self) -> Option<i32> {
        self.shared.core.dialogs.records_fd()
    }

    /// Clears the readiness of `records_fd`.
    fn clear_records_signal(&self) {
        self.shared.core.dialogs.clear_signal();
    }

    /// Records waiting for `take_records`.
    fn queued_records(&self) -> usize {
        self.shared.core.dialogs.queued_records()
    }

    /// Which dialog events the core queues for the app's hooks (both off:
    /// nothing is built nor queued; turning one off drops its queued events).
    #[pyo3(signature = (*, start, end))]
    fn want_events(&self, start: bool, end: bool) {
        self.shared.core.dialogs.want_events(start, end);
    }

    /// A descriptor readable when dialog events wait (None: none available).
    fn events_fd(&self) -> Option<i32> {
        self.shared.core.dialogs.events_fd()
    }

    /// Clears the readiness of `events_fd` (then take every event).
    fn clear_events_signal(&self) {
        self.shared.core.dialogs.clear_events_signal();
    }

    /// Takes up to `max` queued dialog events, oldest first: dicts of
    /// `sipr.DialogEvent`'s fields.
    #[pyo3(signature = (max=1_000))]
    fn take_events<'py>(&self, py: Python<'py>, max: usize) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for e in self.shared.core.dialogs.take_events(max) {
            out.append(event_dict(py, &e)?)?;
        }
        Ok(out)
    }

    /// Dialog events waiting for `take_events`.
    fn queued_events(&self) -> usize {
        self.shared.core.dialogs.queued_events()
    }

    fn __repr__(&self) -> String {
        format!("<DialogTable {} dialogs>", self.shared.core.dialogs.len())
    }
}
