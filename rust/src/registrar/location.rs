//! The in-memory location table (Kamailio's usrloc, db_mode 0): AoR →
//! bindings in insertion order. Shared by the native REGISTER path and the
//! Python `memory:` store, so `registrar.lookup()` sees what either wrote.
//! Expired bindings are dropped lazily on read and by a periodic sweep.

use std::collections::HashMap;

use ahash::RandomState;

use parking_lot::Mutex;

/// One registered contact; the same fields as Python's `sipr.store.Binding`.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub contact: String,
    /// Unix time in seconds.
    pub expires_at: f64,
    pub q: f64,
    pub call_id: String,
    pub cseq: u64,
    pub received: Option<String>,
    pub path: Vec<String>,
    pub user_agent: Option<String>,
    pub instance: Option<String>,
}

impl Binding {
    /// Seconds left, rounded as Python's `Binding.remaining()` does.
    pub fn remaining(&self, now: f64) -> u64 {
        let left = (self.expires_at - now + 0.5).trunc();
        if left > 0.0 {
            left as u64
        } else {
            0
        }
    }
}

/// Seconds between sweeps of the whole table for expired bindings.
const SWEEP_EVERY: f64 = 60.0;

#[derive(Default)]
struct Table {
    aors: HashMap<String, Vec<Binding>, RandomState>,
    swept_at: f64,
}

#[derive(Default)]
pub struct Location {
    table: Mutex<Table>,
}

impl Location {
    /// Live bindings of `aor`, dropping the expired ones from the table.
    pub fn bindings(&self, aor: &str, now: f64) -> Vec<Binding> {
        let mut t = self.table.lock();
        t.sweep_if_due(now);
        t.live(aor, now).cloned().unwrap_or_default()
    }

    /// Runs `f` on the live bindings of `aor` under the table lock, so a
    /// read-check-write (a REGISTER) is atomic; an emptied AoR is removed.
    pub fn with_aor<R>(&self, aor: &str, now: f64, f: impl FnOnce(&mut Vec<Binding>) -> R) -> R {
        let mut t = self.table.lock();
        t.sweep_if_due(now);
        let _ = t.live(aor, now);
        let entry = t.aors.entry(aor.to_string()).or_default();
        let r = f(entry);
        if entry.is_empty() {
            t.aors.remove(aor);
        }
        r
    }

    /// Deletes `delete`, then inserts or replaces `upsert` by contact.
    pub fn update(&self, aor: &str, upsert: Vec<Binding>, delete: &[String]) {
        let mut t = self.table.lock();
        let entry = t.aors.entry(aor.to_string()).or_default();
        entry.retain(|b| !delete.contains(&b.contact));
        for b in upsert {
            upsert_one(entry, b);
        }
        if entry.is_empty() {
            t.aors.remove(aor);
        }
    }

    /// Removes every binding of `aor`; returns how many there were.
    pub fn remove(&self, aor: &str) -> usize {
        self.table.lock().aors.remove(aor).map_or(0, |v| v.len())
    }

    /// AoRs with at least one live binding, sorted.
    pub fn aors(&self, now: f64) -> Vec<String> {
        let mut t = self.table.lock();
        t.sweep(now);
        let mut out: Vec<String> = t.aors.keys().cloned().collect();
        out.sort();
        out
    }

    pub fn len(&self) -> usize {
        self.table.lock().aors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Replaces the binding with the same contact in place (keeping its
/// position, as a Python dict does), else appends.
pub fn upsert_one(entry: &mut Vec<Binding>, b: Binding) {
    match entry.iter_mut().find(|x| x.contact == b.contact) {
        Some(slot) => *slot = b,
        None => entry.push(b),
    }
}

impl Table {
    fn live(&mut self, aor: &str, now: f64) -> Option<&Vec<Binding>> {
        let entry = self.aors.get_mut(aor)?;
        entry.retain(|b| b.expires_at > now);
        if entry.is_empty() {
            self.aors.remove(aor);
            return None;
        }
        self.aors.get(aor)
    }

    fn sweep_if_due(&mut self, now: f64) {
        if now - self.swept_at >= SWEEP_EVERY {
            self.sweep(now);
        }
    }

    fn sweep(&mut self, now: f64) {
        self.swept_at = now;
        self.aors.retain(|_, v| {
            v.retain(|b| b.expires_at > now);
            !v.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(contact: &str, expires_at: f64) -> Binding {
        Binding {
            contact: contact.into(),
            expires_at,
            q: 1.0,
            call_id: "c".into(),
            cseq: 1,
            received: None,
            path: vec![],
            user_agent: None,
            instance: None,
        }
    }

    #[test]
    fn upsert_keeps_position_and_expired_ones_vanish() {
        let loc = Location::default();
        loc.update("a@h", vec![b("sip:1@h", 100.0), b("sip:2@h", 200.0)], &[]);
        loc.update("a@h", vec![b("sip:1@h", 300.0)], &[]);
        let got = loc.bindings("a@h", 50.0);
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].contact.as_str(), got[0].expires_at),
            ("sip:1@h", 300.0)
        );
        assert_eq!(loc.bindings("a@h", 250.0).len(), 1);
        assert_eq!(loc.bindings("a@h", 400.0).len(), 0);
        assert!(loc.is_empty());
    }

    #[test]
    fn remove_and_aors() {
        let loc = Location::default();
        loc.update("b@h", vec![b("sip:1@h", 100.0)], &[]);
        loc.update("a@h", vec![b("sip:1@h", 100.0), b("sip:2@h", 100.0)], &[]);
        assert_eq!(loc.aors(0.0), vec!["a@h".to_string(), "b@h".to_string()]);
        assert_eq!(loc.remove("a@h"), 2);
        assert_eq!(loc.remove("a@h"), 0);
        loc.update("b@h", vec![], &["sip:1@h".to_string()]);
        assert!(loc.aors(0.0).is_empty());
    }

    #[test]
    fn remaining_rounds_like_python() {
        assert_eq!(b("x", 100.6).remaining(40.0), 61);
        assert_eq!(b("x", 100.0).remaining(200.0), 0);
    }
}
