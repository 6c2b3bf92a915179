//! `memory:`, the in-process store (Kamailio's usrloc, db_mode 0): AoR →
//! bindings in insertion order under one lock, and digest users. Expired
//! bindings are dropped lazily on read and by a sweep of the whole table at
//! most once a minute (no timer per binding).

use std::collections::HashMap;

use ahash::RandomState;
use parking_lot::Mutex;

use super::{Ha1Map, Store, StoreError};
use crate::registrar::binding::Binding;

/// Seconds between sweeps of the whole table for expired bindings.
const SWEEP_EVERY: f64 = 60.0;

#[derive(Default)]
struct Table {
    aors: HashMap<String, Vec<Binding>, RandomState>,
    swept_at: f64,
}

#[derive(Default)]
pub struct MemoryStore {
    table: Mutex<Table>,
    users: Mutex<HashMap<(String, String), Ha1Map, RandomState>>,
}

/// Replaces the binding with the same contact in place (keeping its
/// position), else appends.
pub fn upsert_one(entry: &mut Vec<Binding>, b: Binding) {
    match entry.iter_mut().find(|x| x.contact == b.contact) {
        Some(slot) => *slot = b,
        None => entry.push(b),
    }
}

impl MemoryStore {
    pub fn len(&self) -> usize {
        self.table.lock().aors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Store for MemoryStore {
    fn bindings(&self, aor: &str, now: f64) -> Result<Vec<Binding>, StoreError> {
        let mut t = self.table.lock();
        t.sweep_if_due(now);
        Ok(t.live(aor, now).cloned().unwrap_or_default())
    }

    fn modify(
        &self,
        aor: &str,
        now: f64,
        decide: &mut dyn FnMut(&mut Vec<Binding>) -> bool,
    ) -> Result<(), StoreError> {
        let mut t = self.table.lock();
        t.sweep_if_due(now);
        let mut edited = t.live(aor, now).cloned().unwrap_or_default();
        if decide(&mut edited) {
            if edited.is_empty() {
                t.aors.remove(aor);
            } else {
                t.aors.insert(aor.to_string(), edited);
            }
        }
        Ok(())
    }

    fn update(&self, aor: &str, upsert: Vec<Binding>, delete: &[String]) -> Result<(), StoreError> {
        let mut t = self.table.lock();
        let entry = t.aors.entry(aor.to_string()).or_default();
        entry.retain(|b| !delete.contains(&b.contact));
        for b in upsert {
            upsert_one(entry, b);
        }
        if entry.is_empty() {
            t.aors.remove(aor);
        }
        Ok(())
    }

    fn remove(&self, aor: &str) -> Result<usize, StoreError> {
        Ok(self.table.lock().aors.remove(aor).map_or(0, |v| v.len()))
    }

    fn aors(&self, now: f64) -> Result<Vec<String>, StoreError> {
        let mut t = self.table.lock();
        t.sweep(now);
        let mut out: Vec<String> = t.aors.keys().cloned().collect();
        out.sort();
        Ok(out)
    }

    fn user(&self, realm: &str, user: &str) -> Result<Option<Ha1Map>, StoreError> {
        let key = (realm.to_string(), user.to_string());
        Ok(self.users.lock().get(&key).cloned())
    }

    fn set_user(&self, realm: &str, user: &str, ha1: &Ha1Map) -> Result<(), StoreError> {
        let key = (realm.to_string(), user.to_string());
        self.users.lock().insert(key, ha1.clone());
        Ok(())
    }

    fn remove_user(&self, realm: &str, user: &str) -> Result<bool, StoreError> {
        let key = (realm.to_string(), user.to_string());
        Ok(self.users.lock().remove(&key).is_some())
    }

    fn users(&self, realm: Option<&str>) -> Result<Vec<(String, String)>, StoreError> {
        let mut out: Vec<(String, String)> = self
            .users
            .lock()
            .keys()
            .filter(|(r, _)| realm.is_none_or(|want| want == r))
            .cloned()
            .collect();
        out.sort();
        Ok(out)
    }
}

impl Table {
    fn live(&mut self, aor: &str, now: f64) -> Option<&Vec<Binding>> {
        let entry = self.aors.get_mut(aor)?;
        entry.retain(|b| b.is_live(now));
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
            v.retain(|b| b.is_live(now));
            !v.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_empties_expired_aors_without_a_read() {
        let s = MemoryStore::default();
        s.update("a@h", vec![Binding::new("sip:1@h", 100.0)], &[])
            .unwrap();
        s.update("b@h", vec![Binding::new("sip:2@h", 1000.0)], &[])
            .unwrap();
        assert_eq!(s.len(), 2);
        // A read of another AoR after a minute sweeps the whole table.
        s.bindings("c@h", 200.0).unwrap();
        assert_eq!(s.len(), 1);
        assert!(!s.is_empty());
    }
}
