//! REGISTER processing per RFC 3261 §10.3 (steps 2–8), Path (RFC 3327) and
//! NAT source addresses (Kamailio's `received`), once for both entry points:
//! the native path (`Registrars::handle`) and `sipr.Registrar.save`. The
//! rules are pure: they read the request and edit an AoR's bindings; where
//! the bindings live is the store's business (`store::Store::modify`, or a
//! Python store loading and writing around `decide`).

use std::net::IpAddr;

use super::binding::{changes, Binding};
use super::store::memory::upsert_one;
use super::store::{Store, StoreError};
use crate::sip::{scan::split_commas, HeaderId, Message, Method, Scheme};
use crate::transport::Source;

/// The registrar's limits (`sipr.Registrar(min_expires=..., ...)`).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Lower-case domains served; None serves every domain.
    pub domains: Option<Vec<String>>,
    pub min_expires: u64,
    pub max_expires: u64,
    pub default_expires: u64,
    pub max_contacts: usize,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            domains: None,
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 10,
        }
    }
}

impl Policy {
    pub fn serves(&self, host: &str) -> bool {
        self.domains
            .as_ref()
            .is_none_or(|d| d.iter().any(|x| x.eq_ignore_ascii_case(host)))
    }
}

/// An answer: status, reason (None: the standard one) and extra headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub reason: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn new(status: u16, reason: Option<&str>) -> Reply {
        Reply {
            status,
            reason: reason.map(str::to_string),
            headers: Vec::new(),
        }
    }
}

fn fail(status: u16, reason: &str) -> Reply {
    Reply::new(status, Some(reason))
}

const OUT_OF_ORDER: &str = "Server Internal Error (out-of-order REGISTER)";

/// The AoR key of a URI: `user@host` (host lower-cased, no port or params).
pub fn aor_key(user: Option<&str>, host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match user {
        Some(u) if !u.is_empty() => format!("{u}@{host}"),
        _ => host,
    }
}

/// The AoR key of the To URI and its host, or None for a To that is not a
/// SIP URI.
pub fn aor_of(msg: &Message) -> Option<(String, String)> {
    let to = msg.to();
    if !matches!(to.uri.scheme, Scheme::Sip | Scheme::Sips) {
        return None;
    }
    Some((
        aor_key(to.uri.user, to.uri.host),
        to.uri.host.to_ascii_lowercase(),
    ))
}

/// Steps 1–3: the request is a REGISTER for a domain of `policy`; its AoR,
/// or the refusal.
pub fn target(msg: &Message, policy: &Policy) -> Result<String, Reply> {
    if msg.method() != Method::Register {
        let mut r = Reply::new(405, None);
        r.headers.push(("Allow".into(), "REGISTER".into()));
        return Err(r);
    }
    let Some((aor, host)) = aor_of(msg) else {
        return Err(fail(404, "Not Found (AoR must be a SIP URI)"));
    };
    if !policy.serves(&host) {
        return Err(fail(404, "Not Found (domain not served here)"));
    }
    Ok(aor)
}

/// Every element of every `id` header line (comma lists split).
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

/// `"Name" <sip:u@h;tr>;expires=60;q=0.5` → ("sip:u@h;tr", params); None
/// for a `<` without a later `>`.
fn split_contact(raw: &str) -> Option<(&str, Vec<(String, &str)>)> {
    let raw = raw.trim();
    let (uri, rest) = match raw.find('<') {
        Some(start) => {
            let end = start + raw[start..].find('>')?;
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
/// Kamailio's `nat_uac_test("18")`), else None: the Contact is reachable as
/// registered, which includes a third-party registration made from another
/// address (RFC 3261 §10.2), where routing to the source would reach the
/// wrong UA.
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

/// What a REGISTER asks for, read once before the store is touched.
pub struct Request<'m> {
    msg: &'m Message,
    call_id: &'m str,
    cseq: u64,
    /// The Expires header: Some(Err) when malformed.
    expires: Option<Option<u64>>,
    star: bool,
    contacts: usize,
    parsed: Vec<(&'m str, Vec<(String, &'m str)>)>,
    received: Option<String>,
}

impl<'m> Request<'m> {
    /// Reads the Contact list and Expires; a malformed Expires header or
    /// Contact is refused here.
    pub fn read(msg: &'m Message, source: &Source) -> Result<Request<'m>, Reply> {
        let contacts = list_values(msg, HeaderId::Contact);
        let expires = msg.header(HeaderId::Expires).map(delta);
        if expires == Some(None) {
            return Err(fail(400, "Bad Request (malformed Expires)"));
        }
        let star = contacts.iter().any(|c| c.trim() == "*");
        let mut parsed = Vec::with_capacity(contacts.len());
        if !star {
            for raw in &contacts {
                match split_contact(raw) {
                    Some(p) => parsed.push(p),
                    None => return Err(fail(400, "Bad Request (malformed Contact)")),
                }
            }
        }
        Ok(Request {
            msg,
            call_id: msg.call_id(),
            cseq: u64::from(msg.cseq()),
            expires,
            star,
            contacts: contacts.len(),
            parsed,
            received: if star { None } else { nat_source(msg, source) },
        })
    }

    /// Steps 5–8 on `bindings` (the AoR's live bindings), edited in place
    /// when the REGISTER is accepted. Returns the answer and whether
    /// `bindings` changed and must be stored.
    pub fn apply(&self, bindings: &mut Vec<Binding>, policy: &Policy, now: f64) -> (Reply, bool) {
        let mut edited = bindings.clone();
        if let Err(refusal) = self.edit(&mut edited, policy, now) {
            return (refusal, false);
        }
        let changed = edited != *bindings;
        let mut headers = listing(&edited, now);
        *bindings = edited;
        let supports_path = list_values(self.msg, HeaderId::Supported)
            .iter()
            .any(|t| t.trim().eq_ignore_ascii_case("path"));
        if supports_path {
            headers.extend(
                list_values(self.msg, HeaderId::Path)
                    .into_iter()
                    .map(|p| ("Path".to_string(), p.to_string())),
            );
        }
        let reply = Reply {
            status: 200,
            reason: None,
            headers,
        };
        (reply, changed)
    }

    fn out_of_order(&self, b: &Binding) -> bool {
        b.call_id == self.call_id && self.cseq <= b.cseq
    }

    fn edit(&self, existing: &mut Vec<Binding>, policy: &Policy, now: f64) -> Result<(), Reply> {
        if self.star {
            // Step 6: "*" must stand alone, with Expires: 0.
            if self.contacts != 1 || self.expires != Some(Some(0)) {
                return Err(fail(400, "Bad Request (Contact: * needs Expires: 0 alone)"));
            }
            if existing.iter().any(|b| self.out_of_order(b)) {
                return Err(fail(500, OUT_OF_ORDER));
            }
            existing.clear();
            return Ok(());
        }
        let default = self.expires.flatten().unwrap_or(policy.default_expires);
        let msg = self.msg;
        let path: Vec<String> = list_values(msg, HeaderId::Path)
            .into_iter()
            .map(str::to_string)
            .collect();
        let ua = msg
            .headers_named("User-Agent")
            .next()
            .map(|h| msg.header_value(h).to_string());
        for (uri, params) in &self.parsed {
            let seconds = match param(params, "expires") {
                Some(e) => delta(e)
                    .ok_or_else(|| fail(400, "Bad Request (malformed expires parameter)"))?,
                None => default,
            };
            if 0 < seconds && seconds < policy.min_expires {
                let mut r = Reply::new(423, Some("Interval Too Brief"));
                r.headers
                    .push(("Min-Expires".into(), policy.min_expires.to_string()));
                return Err(r);
            }
            let seconds = seconds.min(policy.max_expires);
            let old = existing.iter().position(|b| b.contact == *uri);
            if old.is_some_and(|i| self.out_of_order(&existing[i])) {
                return Err(fail(500, OUT_OF_ORDER));
            }
            if seconds == 0 {
                if let Some(i) = old {
                    existing.remove(i);
                }
                continue;
            }
            let q = match param(params, "q").unwrap_or("1").trim().parse::<f64>() {
                Ok(q) => q,
                Err(_) => return Err(fail(400, "Bad Request (malformed q)")),
            };
            if !(0.0..=1.0).contains(&q) {
                return Err(fail(400, "Bad Request (q out of range)"));
            }
            upsert_one(
                existing,
                Binding {
                    contact: uri.to_string(),
                    expires_at: now + seconds as f64,
                    q,
                    call_id: self.call_id.to_string(),
                    cseq: self.cseq,
                    received: self.received.clone(),
                    path: path.clone(),
                    user_agent: ua.clone(),
                    instance: param(params, "+sip.instance").map(str::to_string),
                },
            );
        }
        if existing.len() > policy.max_contacts {
            return Err(fail(
                403,
                &format!("Forbidden (more than {} contacts)", policy.max_contacts),
            ));
        }
        Ok(())
    }
}

/// A REGISTER against `store`, atomically: the answer (200 with the
/// bindings, or the refusal).
pub fn save(
    msg: &Message,
    source: &Source,
    policy: &Policy,
    store: &dyn Store,
    now: f64,
) -> Result<Reply, StoreError> {
    let aor = match target(msg, policy) {
        Ok(aor) => aor,
        Err(refusal) => return Ok(refusal),
    };
    let req = match Request::read(msg, source) {
        Ok(r) => r,
        Err(refusal) => return Ok(refusal),
    };
    let mut reply = None;
    store.modify(&aor, now, &mut |bindings| {
        let (r, changed) = req.apply(bindings, policy, now);
        reply = Some(r);
        changed
    })?;
    Ok(reply.unwrap_or_else(|| fail(500, "Server Internal Error (store)")))
}

/// The same REGISTER for a store that is not in Rust: the answer, and the
/// bindings to upsert and contacts to delete so that `existing` (the AoR's
/// live bindings, loaded by the caller) becomes what was decided.
pub fn decide(
    msg: &Message,
    source: &Source,
    policy: &Policy,
    existing: Vec<Binding>,
    now: f64,
) -> (Reply, Vec<Binding>, Vec<String>) {
    let req = match Request::read(msg, source) {
        Ok(r) => r,
        Err(refusal) => return (refusal, Vec::new(), Vec::new()),
    };
    let mut edited = existing.clone();
    let (reply, changed) = req.apply(&mut edited, policy, now);
    if !changed {
        return (reply, Vec::new(), Vec::new());
    }
    let (upsert, delete) = changes(&existing, &edited);
    (reply, upsert, delete)
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
