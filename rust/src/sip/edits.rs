//! The headers of a received request as the application sees and changes
//! them: names compared case-insensitively with compact forms folded, list
//! headers split at their commas, and the edits applied when the request is
//! relayed (`write::HeaderEdit`). The headers the core manages (Via,
//! Call-ID, CSeq, From, To, Content-Length) cannot be changed.

use super::header::HeaderId;
use super::message::Message;
use super::scan::{is_token, split_commas};
use super::write::HeaderEdit;

/// The application's changes to a request's headers, in the order made.
#[derive(Debug, Clone, Default)]
pub struct HeaderEdits {
    edits: Vec<HeaderEdit>,
}

impl HeaderEdits {
    pub fn as_slice(&self) -> &[HeaderEdit] {
        &self.edits
    }

    /// Every (name, value) of `msg` with the edits applied: received headers
    /// minus removed ones (canonical names), then added ones.
    pub fn pairs(&self, msg: &Message) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::with_capacity(msg.headers().len());
        for h in msg.headers() {
            let name = msg.header_name(h);
            if !self.is_removed(name) {
                out.push((canonical_name(name), msg.header_value(h).to_string()));
            }
        }
        // `set`/`remove` drop earlier additions, so every remaining Add stands.
        for e in &self.edits {
            if let HeaderEdit::Add(n, v) = e {
                out.push((n.clone(), v.clone()));
            }
        }
        out
    }

    /// The first value `pairs` gives for `name` (its first element for a
    /// list header), without building every pair: `headers.get` runs on
    /// every request of a typical route.
    pub fn first(&self, msg: &Message, name: &str) -> Option<String> {
        let id = HeaderId::from_name(name.as_bytes());
        // `same_header`, with the id of the received name already known.
        let same = |hid: HeaderId, n: &str| {
            if hid == HeaderId::Other || id == HeaderId::Other {
                n.eq_ignore_ascii_case(name)
            } else {
                hid == id
            }
        };
        for h in msg.headers() {
            let n = msg.header_name(h);
            if same(h.id, n) && !self.is_removed(n) {
                return Some(first_value(h.id, msg.header_value(h)));
            }
        }
        self.edits.iter().find_map(|e| match e {
            HeaderEdit::Add(n, v) => {
                let hid = HeaderId::from_name(n.as_bytes());
                same(hid, n).then(|| first_value(hid, v))
            }
            _ => None,
        })
    }

    fn is_removed(&self, name: &str) -> bool {
        self.edits
            .iter()
            .any(|e| matches!(e, HeaderEdit::Remove(n) if same_header(n, name)))
    }

    /// Appends a `name: value` line.
    pub fn add(&mut self, name: &str, value: &str) -> Result<(), String> {
        check_edit(name, value)?;
        self.edits
            .push(HeaderEdit::Add(name.to_string(), value.to_string()));
        Ok(())
    }

    /// Replaces every `name` header with one carrying `value`.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        check_edit(name, value)?;
        self.drop_additions(name);
        self.edits.push(HeaderEdit::Remove(name.to_string()));
        self.edits
            .push(HeaderEdit::Add(name.to_string(), value.to_string()));
        Ok(())
    }

    /// Removes every `name` header.
    pub fn remove(&mut self, name: &str) -> Result<(), String> {
        if managed(HeaderId::from_name(name.as_bytes())) {
            return Err(format!(
                "{name} is managed by the core and cannot be removed"
            ));
        }
        self.drop_additions(name);
        self.edits.push(HeaderEdit::Remove(name.to_string()));
        Ok(())
    }

    /// Sends `body` instead of the received one (Content-Length follows):
    /// an SDP rewritten by a media relay or for NAT.
    pub fn set_body(&mut self, body: bytes::Bytes) {
        self.edits.retain(|e| !matches!(e, HeaderEdit::Body(_)));
        self.edits.push(HeaderEdit::Body(body));
    }

    /// The body set by `set_body`, if any.
    pub fn body(&self) -> Option<&[u8]> {
        super::write::body_override(&self.edits)
    }

    fn drop_additions(&mut self, name: &str) {
        self.edits
            .retain(|e| !matches!(e, HeaderEdit::Add(n, _) if same_header(n, name)));
    }
}

/// Every (name, value) of a message, with canonical names.
pub fn message_pairs(msg: &Message) -> Vec<(String, String)> {
    msg.headers()
        .iter()
        .map(|h| {
            (
                canonical_name(msg.header_name(h)),
                msg.header_value(h).to_string(),
            )
        })
        .collect()
}

/// `Call-ID` for `i`, `call-id` or `Call-Id`; an unknown name as given.
pub fn canonical_name(name: &str) -> String {
    HeaderId::from_name(name.as_bytes())
        .canonical()
        .map_or_else(|| name.to_string(), str::to_string)
}

/// Whether two header names mean the same header (case, compact forms).
pub fn same_header(a: &str, b: &str) -> bool {
    let (ia, ib) = (
        HeaderId::from_name(a.as_bytes()),
        HeaderId::from_name(b.as_bytes()),
    );
    if ia == HeaderId::Other || ib == HeaderId::Other {
        a.eq_ignore_ascii_case(b)
    } else {
        ia == ib
    }
}

/// The elements of a header value: split at commas for list headers.
pub fn split_values(name: &str, value: &str) -> Vec<String> {
    if !HeaderId::from_name(name.as_bytes()).is_list() {
        return vec![value.to_string()];
    }
    match split_commas(value.as_bytes(), 0, value.len()) {
        Some(parts) => parts
            .into_iter()
            .map(|(a, b)| value[a..b].to_string())
            .collect(),
        None => vec![value.to_string()],
    }
}

/// The first element of `split_values`, without the others.
fn first_value(id: HeaderId, value: &str) -> String {
    let first = if id.is_list() {
        split_commas(value.as_bytes(), 0, value.len())
            .and_then(|parts| parts.first().map(|&(a, b)| &value[a..b]))
    } else {
        None
    };
    first.unwrap_or(value).to_string()
}

/// A header the application adds to an answer: a token name, one line.
pub fn check_answer_header(name: &str, value: &str) -> Result<(), String> {
    if name.is_empty() || !name.bytes().all(is_token) || value.contains(['\r', '\n']) {
        return Err(format!("invalid header {name:?}: {value:?}"));
    }
    Ok(())
}

fn managed(id: HeaderId) -> bool {
    matches!(
        id,
        HeaderId::Via | HeaderId::CallId | HeaderId::CSeq | HeaderId::From | HeaderId::To
    )
}

fn check_edit(name: &str, value: &str) -> Result<(), String> {
    if name.is_empty() || !name.bytes().all(is_token) {
        return Err(format!("invalid header name {name:?}"));
    }
    if value.contains(['\r', '\n']) {
        return Err(format!("header {name} value must be a single line"));
    }
    let id = HeaderId::from_name(name.as_bytes());
    if managed(id) || id == HeaderId::ContentLength {
        return Err(format!("{name} is managed by the core"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Framing, Limits};
    use bytes::Bytes;

    fn msg() -> Message {
        let text = "INVITE sip:b@h SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
                    f: <sip:a@h>;tag=1\r\nt: <sip:b@h>\r\ni: c\r\nCSeq: 1 INVITE\r\n\
                    Supported: timer, 100rel\r\nX-A: 1\r\nl: 0\r\n\r\n";
        Message::parse(Bytes::from(text), Framing::Datagram, &Limits::default()).unwrap()
    }

    #[test]
    fn the_view_folds_compact_forms_and_applies_edits_in_order() {
        let m = msg();
        let mut e = HeaderEdits::default();
        let names: Vec<String> = e.pairs(&m).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "Via",
                "From",
                "To",
                "Call-ID",
                "CSeq",
                "Supported",
                "X-A",
                "Content-Length"
            ]
        );
        e.add("x-b", "2").unwrap();
        e.add("X-B", "3").unwrap();
        e.set("x-a", "9").unwrap();
        e.remove("supported").unwrap();
        let pairs = e.pairs(&m);
        assert!(!pairs.iter().any(|(n, _)| n == "Supported"));
        assert_eq!(
            pairs[pairs.len() - 3..],
            [
                ("x-b".to_string(), "2".to_string()),
                ("X-B".to_string(), "3".to_string()),
                ("x-a".to_string(), "9".to_string())
            ]
        );
        for name in [
            "supported",
            "k",
            "x-a",
            "X-B",
            "i",
            "Via",
            "x-none",
            "content-length",
        ] {
            let want = e
                .pairs(&m)
                .into_iter()
                .find(|(n, _)| same_header(n, name))
                .map(|(n, v)| split_values(&n, &v).into_iter().next().unwrap_or(v));
            assert_eq!(e.first(&m, name), want, "{name}");
        }
        e.remove("X-b").unwrap();
        assert!(!e.pairs(&m).iter().any(|(n, _)| same_header(n, "x-b")));
        assert_eq!(
            e.as_slice().len(),
            4,
            "removing x-b dropped its two additions"
        );
        assert_eq!(message_pairs(&m)[0].0, "Via");
    }

    #[test]
    fn managed_and_malformed_headers_are_refused() {
        let mut e = HeaderEdits::default();
        assert_eq!(e.add("Via", "x").unwrap_err(), "Via is managed by the core");
        assert_eq!(e.set("l", "5").unwrap_err(), "l is managed by the core");
        assert_eq!(
            e.remove("i").unwrap_err(),
            "i is managed by the core and cannot be removed"
        );
        assert!(
            e.remove("Content-Length").is_ok(),
            "as before: only add/set refuse it"
        );
        assert_eq!(
            e.add("Bad Name", "x").unwrap_err(),
            "invalid header name \"Bad Name\""
        );
        assert_eq!(
            e.add("X-Ok", "a\r\nb").unwrap_err(),
            "header X-Ok value must be a single line"
        );
        assert!(check_answer_header("X-Ok", "v").is_ok());
        assert!(check_answer_header("", "v").is_err());
        assert!(check_answer_header("X", "a\nb").is_err());
    }

    #[test]
    fn list_headers_split_at_commas() {
        assert_eq!(
            split_values("Supported", "timer, 100rel"),
            ["timer", "100rel"]
        );
        assert_eq!(split_values("Subject", "a, b"), ["a, b"]);
        assert_eq!(
            split_values("Contact", "<sip:a@h;x=\"1,2\">, <sip:b@h>"),
            ["<sip:a@h;x=\"1,2\">", "<sip:b@h>"]
        );
        assert!(same_header("i", "Call-ID"));
        assert!(!same_header("X-A", "X-B"));
        assert_eq!(canonical_name("call-id"), "Call-ID");
        assert_eq!(canonical_name("X-Odd"), "X-Odd");
    }
}
