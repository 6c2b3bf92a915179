//! REGISTER processing per RFC 3261 §10.3 (steps 5–8) against the native
//! location table, with the exact outcomes of `python/sipr/registrar.py`
//! (same statuses, reasons and 200 contents), so an application sees the
//! same registrar whichever path answered.

use std::net::IpAddr;

use super::location::{upsert_one, Binding, Location};
use crate::sip::{scan::split_commas, HeaderId, Message, Scheme};
use crate::transport::Source;

/// The registrar's limits (`sipr.Registrar(min_expires=..., ...)`).
#[derive(Debug, Clone)]
pub struct Policy {
    pub min_expires: u64,
    pub max_expires: u64,
    pub default_expires: u64,
    pub max_contacts: usize,
}

/// What the native path decided.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Reply {
        status: u16,
        reason: Option<String>,
        headers: Vec<(String, String)>,
    },
    /// Not decidable here (an unusual form the Python registrar reads more
    /// leniently): the request goes to the application.
    Python,
}

fn fail(status: u16, reason: &str) -> Outcome {
    Outcome::Reply {
        status,
        reason: Some(reason.to_string()),
        headers: Vec::new(),
    }
}

const OUT_OF_ORDER: &str = "Server Internal Error (out-of-order REGISTER)";

/// The AoR key of the To URI (`user@host`, host lower-cased), or None for
/// a To that is not a SIP URI.
pub fn aor_of(msg: &Message) -> Option<(String, String)> {
    let to = msg.to();
    if !matches!(to.uri.scheme, Scheme::Sip | Scheme::Sips) {
        return None;
    }
    let host = to.uri.host.to_ascii_lowercase();
    let aor = match to.uri.user {
        Some(u) if !u.is_empty() => format!("{u}@{host}"),
        _ => host.clone(),
    };
    Some((aor, host))
}

/// Every element of every `id` header line (comma lists split as the
/// Python `headers.getall` does).
pub fn list_values(msg: &Message, id: HeaderId) -> Vec<&str> {
    let mut out = Vec::new();
    for h in msg.headers().iter().filter(|h| h.id == id) {
        let v = msg.header_value(h);
        match split_commas(v.as_bytes(), 0, v.len()) {
            Some(parts) => out.extend(parts.into_iter().map(|(a, b)| v[a..b].trim())),
            None => out.push(v),
        }
    }
    out
}

/// delta-seconds (ASCII digits), saturating instead of overflowing.
fn delta(value: &str) -> Option<u64> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(v.bytes().fold(0u64, |acc, c| {
        acc.saturating_mul(10).saturating_add(u64::from(c - b'0'))
    }))
}

/// `"Name" <sip:u@h;tr>;expires=60;q=0.5` → ("sip:u@h;tr", params), read
/// as `_split_contact` does; None for a `<` without a later `>`.
fn split_contact(raw: &str) -> Option<(&str, Vec<(String, &str)>)> {
    let raw = raw.trim();
    let (uri, rest) = match raw.find('<') {
        Some(start) => {
            let end = raw.find('>')?;
            if end < start {
                return None;
            }
            (&raw[start + 1..end], &raw[end + 1..])
        }
        None => match raw.split_once(';') {
            Some((u, r)) => (u, r),
            None => (raw, ""),
        },
    };
    let mut params = Vec::new();
    for p in rest.split(';') {
        let p = p.trim();
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        if !k.is_empty() {
            params.push((k.to_lowercase(), v.trim().trim_matches('"')));
        }
    }
    Some((uri.trim(), params))
}

fn param<'a>(params: &[(String, &'a str)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| *v)
}

/// The source as a URI when the UA registered over a connection (TCP, TLS,
/// WS: its flow, as in RFC 5626 — it may accept no connections at all) or
/// when the top Via's sent-by is not where the request came from (NAT, as
/// Kamailio's `nat_uac_test("18")`), else None. Mirrors `_nat_source` in
/// python/sipr/registrar.py.
fn nat_source(msg: &Message, source: &Source) -> Option<String> {
    let ip = source.addr.ip();
    let host = match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let here = format!(
        "sip:{host}:{};transport={}",
        source.addr.port(),
        source.transport.as_str().to_ascii_lowercase()
    );
    if source.transport.is_stream() {
        return Some(here);
    }
    let via = msg.top_via();
    let default_port =
        if via.transport.eq_ignore_ascii_case("TLS") || via.transport.eq_ignore_ascii_case("WSS") {
            5061
        } else {
            5060
        };
    let via_host = via.host_unbracketed();
    let same_host = match via_host.parse::<IpAddr>() {
        Ok(v) => v == ip,
        Err(_) => via_host.eq_ignore_ascii_case(&ip.to_string()),
    };
    if same_host && via.port.unwrap_or(default_port) == source.addr.port() {
        return None;
    }
    Some(here)
}

/// q formatted as Python's `{q:g}` for values in [0, 1].
pub fn format_q(q: f64) -> String {
    if q == 1.0 {
        return "1".into();
    }
    let s = format!("{q:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.into()
    }
}

/// Applies a REGISTER to `aor`'s bindings; on success the 200's headers.
pub fn save(
    msg: &Message,
    source: &Source,
    aor: &str,
    policy: &Policy,
    location: &Location,
    now: f64,
) -> Outcome {
    let call_id = msg.call_id();
    let cseq = u64::from(msg.cseq());
    let contacts = list_values(msg, HeaderId::Contact);
    let expires_hdr = msg.header(HeaderId::Expires);
    let mut default = policy.default_expires;
    if let Some(e) = expires_hdr {
        match delta(e) {
            Some(v) => default = v,
            None => return fail(400, "Bad Request (malformed Expires)"),
        }
    }
    let star = contacts.iter().any(|c| c.trim() == "*");
    // Parsed before taking the table lock: nothing below needs it.
    let mut parsed = Vec::with_capacity(contacts.len());
    if !star {
        for raw in &contacts {
            match split_contact(raw) {
                Some(p) => parsed.push(p),
                None => return Outcome::Python,
            }
        }
    }
    let received = if star { None } else { nat_source(msg, source) };
    location.with_aor(aor, now, |entry| {
        let mut existing = entry.clone();
        if star {
            if contacts.len() != 1 || expires_hdr.and_then(delta) != Some(0) {
                return fail(400, "Bad Request (Contact: * needs Expires: 0 alone)");
            }
            if existing
                .iter()
                .any(|b| b.call_id == call_id && cseq <= b.cseq)
            {
                return fail(500, OUT_OF_ORDER);
            }
            existing.clear();
        } else {
            let path: Vec<String> = list_values(msg, HeaderId::Path)
                .into_iter()
                .map(str::to_string)
                .collect();
            let ua = msg
                .headers_named("User-Agent")
                .next()
                .map(|h| msg.header_value(h).to_string());
            for (uri, params) in &parsed {
                let exp = param(params, "expires");
                let seconds = match exp {
                    Some(e) => match delta(e) {
                        Some(v) => v,
                        None => return fail(400, "Bad Request (malformed expires parameter)"),
                    },
                    None => default,
                };
                if 0 < seconds && seconds < policy.min_expires {
                    return Outcome::Reply {
                        status: 423,
                        reason: Some("Interval Too Brief".into()),
                        headers: vec![("Min-Expires".into(), policy.min_expires.to_string())],
                    };
                }
                let seconds = seconds.min(policy.max_expires);
                let old = existing.iter().position(|b| b.contact == *uri);
                if let Some(i) = old {
                    if existing[i].call_id == call_id && cseq <= existing[i].cseq {
                        return fail(500, OUT_OF_ORDER);
                    }
                }
                if seconds == 0 {
                    if let Some(i) = old {
                        existing.remove(i);
                    }
                    continue;
                }
                let q_text = param(params, "q").unwrap_or("1");
                if q_text.contains('_') {
                    return Outcome::Python;
                }
                let q = match q_text.trim().parse::<f64>() {
                    Ok(q) => q,
                    Err(_) => return fail(400, "Bad Request (malformed q)"),
                };
                if !(0.0..=1.0).contains(&q) {
                    return fail(400, "Bad Request (q out of range)");
                }
                upsert_one(
                    &mut existing,
                    Binding {
                        contact: uri.to_string(),
                        expires_at: now + seconds as f64,
                        q,
                        call_id: call_id.to_string(),
                        cseq,
                        received: received.clone(),
                        path: path.clone(),
                        user_agent: ua.clone(),
                        instance: param(params, "+sip.instance").map(str::to_string),
                    },
                );
            }
            if existing.len() > policy.max_contacts {
                return fail(
                    403,
                    &format!("Forbidden (more than {} contacts)", policy.max_contacts),
                );
            }
        }
        let mut headers = listing(&existing, now);
        *entry = existing;
        let supports_path = list_values(msg, HeaderId::Supported)
            .iter()
            .any(|t| t.trim().eq_ignore_ascii_case("path"));
        if supports_path {
            headers.extend(
                list_values(msg, HeaderId::Path)
                    .into_iter()
                    .map(|p| ("Path".to_string(), p.to_string())),
            );
        }
        Outcome::Reply {
            status: 200,
            reason: None,
            headers,
        }
    })
}

/// The 200's Contact list (best q first, stable) and Date.
fn listing(bindings: &[Binding], now: f64) -> Vec<(String, String)> {
    let mut sorted: Vec<&Binding> = bindings.iter().collect();
    sorted.sort_by(|a, b| b.q.total_cmp(&a.q));
    let mut headers: Vec<(String, String)> = sorted
        .into_iter()
        .map(|b| {
            (
                "Contact".to_string(),
                format!(
                    "<{}>;expires={};q={}",
                    b.contact,
                    b.remaining(now),
                    format_q(b.q)
                ),
            )
        })
        .collect();
    headers.push(("Date".into(), cached_http_date(now as i64)));
    headers
}

/// `http_date` changes once a second: formatted once per second per thread.
fn cached_http_date(unix: i64) -> String {
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> = const {
            std::cell::RefCell::new((i64::MIN, String::new()))
        };
    }
    LAST.with(|cell| {
        let mut last = cell.borrow_mut();
        if last.0 != unix {
            *last = (unix, http_date(unix));
        }
        last.1.clone()
    })
}

/// RFC 7231 IMF-fixdate, as Python's `email.utils.formatdate(usegmt=True)`.
pub fn http_date(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
pub(crate) mod tests_support;
