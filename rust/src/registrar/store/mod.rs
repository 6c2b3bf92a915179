//! Where bindings and digest users live, behind one trait: `memory:` (this
//! process) and `sqlite:///path.db` (embedded, persistent, shared by the
//! processes that open the same file, in WAL mode). Both the native REGISTER
//! path and the Python facade (`sipr.store`) call these; a store written in
//! Python (`redis://`, or an application's own) is driven through the same
//! rules by the facade instead (docs/decisions/0028).
//!
//! Every method is synchronous and quick (a lock or a local B-tree update),
//! so it may run on the event loop thread or a UDP reader thread.

pub mod memory;
pub mod sqlite;
pub mod sqlite_nonces;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::binding::Binding;

/// HA1 per algorithm name (`{"MD5": ..., "SHA-256": ...}`), as
/// `sipr user add` stores them.
pub type Ha1Map = BTreeMap<String, String>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store: bad URL {0}")]
    Url(String),
    #[error("store: {0}")]
    Io(#[from] std::io::Error),
    #[error("store: corrupt record: {0}")]
    Corrupt(String),
}

/// A location and credential store. `now` is Unix time in seconds; expired
/// bindings are never returned.
pub trait Store: Send + Sync {
    /// Live bindings of `aor`, in the order they were first added.
    fn bindings(&self, aor: &str, now: f64) -> Result<Vec<Binding>, StoreError>;

    /// One REGISTER, atomically (also against other processes sharing the
    /// store): `decide` gets the live bindings of `aor` and edits them; when
    /// it returns true, what it left is stored.
    fn modify(
        &self,
        aor: &str,
        now: f64,
        decide: &mut dyn FnMut(&mut Vec<Binding>) -> bool,
    ) -> Result<(), StoreError>;

    /// Deletes `delete` (by contact), then inserts or replaces `upsert`.
    fn update(&self, aor: &str, upsert: Vec<Binding>, delete: &[String]) -> Result<(), StoreError>;

    /// Removes every binding of `aor`; returns how many there were.
    fn remove(&self, aor: &str) -> Result<usize, StoreError>;

    /// AoRs with a live binding, sorted.
    fn aors(&self, now: f64) -> Result<Vec<String>, StoreError>;

    fn user(&self, realm: &str, user: &str) -> Result<Option<Ha1Map>, StoreError>;
    fn set_user(&self, realm: &str, user: &str, ha1: &Ha1Map) -> Result<(), StoreError>;
    fn remove_user(&self, realm: &str, user: &str) -> Result<bool, StoreError>;
    /// (realm, user) pairs, sorted; every realm when `realm` is None.
    fn users(&self, realm: Option<&str>) -> Result<Vec<(String, String)>, StoreError>;

    /// Replay state for digest nonce-counts shared by every process using
    /// this store, when the store can keep it (issue 20: workers); None
    /// keeps it in the process (`digest::NonceCounts`).
    fn shared_nonce_counts(&self) -> Option<Arc<dyn super::digest::ReplayGuard>> {
        None
    }
}

/// `memory:` or `sqlite:///abs/path.db` (`sqlite://rel/path.db`), with
/// `?synchronous=normal|full|off`. Other schemes are not Rust stores: None.
pub fn open(url: &str) -> Option<Result<Arc<dyn Store>, StoreError>> {
    if matches!(url, "memory:" | "memory://" | "memory") {
        return Some(Ok(Arc::new(memory::MemoryStore::default())));
    }
    let rest = url.strip_prefix("sqlite://")?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() {
        return Some(Err(StoreError::Url(format!(
            "{url:?} names no database file"
        ))));
    }
    let mut sync = "normal".to_string();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        if let Some(v) = pair.strip_prefix("synchronous=") {
            sync = v.to_string();
        }
    }
    Some(
        sqlite::SqliteStore::open(std::path::Path::new(path), &sync)
            .map(|s| Arc::new(s) as Arc<dyn Store>),
    )
}

#[cfg(test)]
mod tests;
