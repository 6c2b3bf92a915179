//! Digest nonce-counts in the SQLite file of a `sqlite:` store, so every
//! process sharing the file (`sipr run --workers N`) refuses a replay the
//! others accepted (decision 0051). One UPSERT per authorised request:
//! SQLite serialises writers across processes, so two workers racing on the
//! same nonce-count cannot both win.

use std::path::Path;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{params, Connection};

use super::StoreError;
use crate::registrar::digest::ReplayGuard;
use crate::registrar::unix_now;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS nonce_counts (
        nonce TEXT PRIMARY KEY, nc INTEGER NOT NULL, seen REAL NOT NULL);
    CREATE INDEX IF NOT EXISTS nonce_counts_seen ON nonce_counts (seen);
";

/// A nonce unused this long is gone: nonces expire (`nonce_ttl`, 300 s by
/// default) well before, and only their timestamp and MAC make them valid.
const FORGET_AFTER: f64 = 3600.0;
const PURGE_EVERY: f64 = 60.0;
/// How long one check waits for another process's write (the caller may
/// hold the GIL: short).
const BUSY_TIMEOUT: Duration = Duration::from_millis(500);

pub struct SqliteNonceCounts {
    db: Mutex<(Connection, f64)>,
}

impl SqliteNonceCounts {
    pub fn open(path: &Path) -> Result<SqliteNonceCounts, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // A lost nonce-count after a power cut only re-allows one replay
        // of a request already accepted: no fsync per check.
        conn.pragma_update(None, "synchronous", "normal")?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteNonceCounts {
            db: Mutex::new((conn, 0.0)),
        })
    }

    fn record(&self, nonce: &str, nc: u64) -> Result<bool, StoreError> {
        let now = unix_now();
        let mut db = self.db.lock();
        let (conn, purged_at) = &mut *db;
        let nc = i64::try_from(nc).unwrap_or(i64::MAX);
        let changed = conn
            .prepare_cached(
                "INSERT INTO nonce_counts (nonce, nc, seen) VALUES (?, ?, ?)
                 ON CONFLICT (nonce) DO UPDATE SET nc = excluded.nc, seen = excluded.seen
                 WHERE excluded.nc > nonce_counts.nc",
            )?
            .execute(params![nonce, nc, now])?;
        if now - *purged_at >= PURGE_EVERY {
            *purged_at = now;
            conn.execute(
                "DELETE FROM nonce_counts WHERE seen < ?",
                params![now - FORGET_AFTER],
            )?;
        }
        Ok(changed == 1)
    }
}

impl ReplayGuard for SqliteNonceCounts {
    /// A database error refuses (403): letting a replay through is worse
    /// than asking the phone to authenticate again.
    fn fresh(&self, nonce: &str, nc: u64) -> bool {
        self.record(nonce, nc).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "nonce-count check failed: refusing");
            false
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_connections_share_the_counts() {
        let dir = std::env::temp_dir().join(format!("sipr-nonces-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("n.db");
        let a = SqliteNonceCounts::open(&path).unwrap();
        let b = SqliteNonceCounts::open(&path).unwrap();
        assert!(a.fresh("n1", 1));
        assert!(!b.fresh("n1", 1), "a replay through the other connection");
        assert!(b.fresh("n1", 2));
        assert!(!a.fresh("n1", 2));
        assert!(a.fresh("n2", 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
