//! The one `Binding` type: a registered contact of an address-of-record, as
//! every store keeps it and as Python sees it (`sipr.store.Binding` is this
//! type, through `rust/src/python/registrar.rs`).

use serde::{Deserialize, Serialize};

/// One registered contact. Stored as JSON with these field names by the
/// SQLite and Redis stores (the format earlier Python versions wrote).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    pub contact: String,
    /// Unix time in seconds.
    pub expires_at: f64,
    #[serde(default = "one")]
    pub q: f64,
    #[serde(default)]
    pub call_id: String,
    #[serde(default)]
    pub cseq: u64,
    /// Where to reach the UA instead of its Contact (NAT, or its connection).
    #[serde(default)]
    pub received: Option<String>,
    #[serde(default)]
    pub path: Vec<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
    /// `+sip.instance` (RFC 5626).
    #[serde(default)]
    pub instance: Option<String>,
}

fn one() -> f64 {
    1.0
}

impl Binding {
    /// A binding with only a contact and an expiry, the rest defaulted.
    pub fn new(contact: impl Into<String>, expires_at: f64) -> Binding {
        Binding {
            contact: contact.into(),
            expires_at,
            q: 1.0,
            call_id: String::new(),
            cseq: 0,
            received: None,
            path: Vec::new(),
            user_agent: None,
            instance: None,
        }
    }

    /// Whole seconds left at `now`, rounded to nearest (never negative).
    pub fn remaining(&self, now: f64) -> u64 {
        let left = (self.expires_at - now + 0.5).trunc();
        if left > 0.0 {
            left as u64
        } else {
            0
        }
    }

    pub fn is_live(&self, now: f64) -> bool {
        self.expires_at > now
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Binding, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// What turns `old` into `new` (both lists of one AoR): contacts to delete
/// and bindings to insert or replace. Unchanged bindings are in neither.
pub fn changes(old: &[Binding], new: &[Binding]) -> (Vec<Binding>, Vec<String>) {
    let delete = old
        .iter()
        .filter(|o| !new.iter().any(|n| n.contact == o.contact))
        .map(|o| o.contact.clone())
        .collect();
    let upsert = new
        .iter()
        .filter(|n| !old.iter().any(|o| o == *n))
        .cloned()
        .collect();
    (upsert, delete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_python_format() {
        let mut b = Binding::new("sip:a@h", 1_000.5);
        b.path = vec!["<sip:p;lr>".into()];
        b.received = Some("sip:1.2.3.4:5;transport=udp".into());
        let text = b.to_json();
        assert!(text.starts_with(r#"{"contact":"sip:a@h","expires_at":1000.5,"q":1.0,"#));
        assert_eq!(Binding::from_json(&text).unwrap(), b);
        // Every float reads back as written (serde_json's float_roundtrip).
        for t in [1_796_600_127.315_258_3, 1_796_600_127.315_258_5, 0.1 + 0.2] {
            let x = Binding::new("sip:t", t);
            assert_eq!(Binding::from_json(&x.to_json()).unwrap().expires_at, t);
        }
        // Written by an earlier (Python) sipr: same keys, q as an int.
        let old = Binding::from_json(r#"{"contact":"sip:x","expires_at":5,"q":1}"#).unwrap();
        assert_eq!((old.q, old.cseq, old.path.len()), (1.0, 0, 0));
        assert!(Binding::from_json("{}").is_err());
    }

    #[test]
    fn remaining_rounds_and_never_goes_negative() {
        let b = Binding::new("sip:a@h", 100.0);
        assert_eq!(b.remaining(40.4), 60);
        assert_eq!(b.remaining(40.6), 59);
        assert_eq!(b.remaining(200.0), 0);
        assert!(b.is_live(99.9) && !b.is_live(100.0));
    }

    #[test]
    fn changes_lists_only_what_differs() {
        let a = Binding::new("sip:a", 10.0);
        let b = Binding::new("sip:b", 10.0);
        let b2 = Binding::new("sip:b", 20.0);
        let c = Binding::new("sip:c", 10.0);
        let (up, del) = changes(&[a.clone(), b], &[b2.clone(), c.clone()]);
        assert_eq!(up, vec![b2, c]);
        assert_eq!(del, vec!["sip:a".to_string()]);
        let same = [a];
        assert_eq!(changes(&same, &same), (vec![], vec![]));
    }
}
