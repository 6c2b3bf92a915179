//! `sqlite:///path.db`: embedded and persistent, in WAL mode so several
//! processes can share one file (readers never wait for the writer). A
//! binding committed before the 200 survives a crash of sipr with
//! `synchronous=normal` (the default), a power cut with `synchronous=full`
//! (one fsync per REGISTER). The schema is the one earlier Python versions
//! created, so existing databases keep working.

use std::path::Path;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{Ha1Map, Store, StoreError};
use crate::registrar::binding::{changes, Binding};

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS location (
        aor TEXT NOT NULL, contact TEXT NOT NULL, data TEXT NOT NULL,
        expires_at REAL NOT NULL, PRIMARY KEY (aor, contact));
    CREATE INDEX IF NOT EXISTS location_expiry ON location (expires_at);
    CREATE TABLE IF NOT EXISTS users (
        realm TEXT NOT NULL, username TEXT NOT NULL, ha1 TEXT NOT NULL,
        PRIMARY KEY (realm, username));
";

/// Seconds between deletions of expired rows (done after a REGISTER).
const PURGE_EVERY: f64 = 60.0;

/// How long a write waits for another process holding the database lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

pub struct SqliteStore {
    db: Mutex<Db>,
    path: std::path::PathBuf,
}

struct Db {
    conn: Connection,
    purged_at: f64,
}

impl SqliteStore {
    /// Opens (creating the file and its parent directories) with
    /// `synchronous` = normal, full or off.
    pub fn open(path: &Path, synchronous: &str) -> Result<SqliteStore, StoreError> {
        let sync = synchronous.to_ascii_lowercase();
        if !matches!(sync.as_str(), "normal" | "full" | "off") {
            return Err(StoreError::Url(format!(
                "synchronous must be normal, full or off, not {synchronous:?}"
            )));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", &sync)?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore {
            db: Mutex::new(Db {
                conn,
                purged_at: 0.0,
            }),
            path: path.to_path_buf(),
        })
    }
}

fn read_bindings(conn: &Connection, aor: &str, now: f64) -> Result<Vec<Binding>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT data FROM location WHERE aor = ? AND expires_at > ? ORDER BY rowid",
    )?;
    let rows = stmt.query_map(params![aor, now], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for text in rows {
        let text = text?;
        out.push(Binding::from_json(&text).map_err(|e| StoreError::Corrupt(e.to_string()))?);
    }
    Ok(out)
}

fn write(
    conn: &Connection,
    aor: &str,
    upsert: &[Binding],
    delete: &[String],
) -> Result<(), StoreError> {
    let mut del = conn.prepare_cached("DELETE FROM location WHERE aor = ? AND contact = ?")?;
    for c in delete {
        del.execute(params![aor, c])?;
    }
    // An UPSERT keeps the row (and its rowid, the binding's position).
    let mut put = conn.prepare_cached(
        "INSERT INTO location (aor, contact, data, expires_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (aor, contact) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at",
    )?;
    for b in upsert {
        put.execute(params![aor, b.contact, b.to_json(), b.expires_at])?;
    }
    Ok(())
}

impl Db {
    fn purge_if_due(&mut self, now: f64) -> Result<(), StoreError> {
        if now - self.purged_at >= PURGE_EVERY {
            self.purged_at = now;
            self.conn
                .execute("DELETE FROM location WHERE expires_at <= ?", params![now])?;
        }
        Ok(())
    }
}

impl Store for SqliteStore {
    fn bindings(&self, aor: &str, now: f64) -> Result<Vec<Binding>, StoreError> {
        read_bindings(&self.db.lock().conn, aor, now)
    }

    fn modify(
        &self,
        aor: &str,
        now: f64,
        decide: &mut dyn FnMut(&mut Vec<Binding>) -> bool,
    ) -> Result<(), StoreError> {
        let mut db = self.db.lock();
        // IMMEDIATE: the write lock is taken before the read, so another
        // process cannot change this AoR between our read and our write.
        let tx = db
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let old = read_bindings(&tx, aor, now)?;
        let mut edited = old.clone();
        if decide(&mut edited) {
            let (upsert, delete) = changes(&old, &edited);
            write(&tx, aor, &upsert, &delete)?;
        }
        tx.commit()?;
        db.purge_if_due(now)
    }

    fn update(&self, aor: &str, upsert: Vec<Binding>, delete: &[String]) -> Result<(), StoreError> {
        let mut db = self.db.lock();
        let tx = db.conn.transaction()?;
        write(&tx, aor, &upsert, delete)?;
        Ok(tx.commit()?)
    }

    fn remove(&self, aor: &str) -> Result<usize, StoreError> {
        let db = self.db.lock();
        Ok(db
            .conn
            .execute("DELETE FROM location WHERE aor = ?", params![aor])?)
    }

    fn aors(&self, now: f64) -> Result<Vec<String>, StoreError> {
        let db = self.db.lock();
        let mut stmt = db.conn.prepare_cached(
            "SELECT DISTINCT aor FROM location WHERE expires_at > ? ORDER BY aor",
        )?;
        let rows = stmt.query_map(params![now], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn user(&self, realm: &str, user: &str) -> Result<Option<Ha1Map>, StoreError> {
        let db = self.db.lock();
        let text: Option<String> = db
            .conn
            .prepare_cached("SELECT ha1 FROM users WHERE realm = ? AND username = ?")?
            .query_row(params![realm, user], |r| r.get(0))
            .optional()?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    fn set_user(&self, realm: &str, user: &str, ha1: &Ha1Map) -> Result<(), StoreError> {
        let text = serde_json::to_string(ha1).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.db.lock().conn.execute(
            "INSERT OR REPLACE INTO users (realm, username, ha1) VALUES (?, ?, ?)",
            params![realm, user, text],
        )?;
        Ok(())
    }

    fn remove_user(&self, realm: &str, user: &str) -> Result<bool, StoreError> {
        let n = self.db.lock().conn.execute(
            "DELETE FROM users WHERE realm = ? AND username = ?",
            params![realm, user],
        )?;
        Ok(n > 0)
    }

    fn users(&self, realm: Option<&str>) -> Result<Vec<(String, String)>, StoreError> {
        let db = self.db.lock();
        let mut stmt = db.conn.prepare_cached(
            "SELECT realm, username FROM users WHERE ?1 IS NULL OR realm = ?1
             ORDER BY realm, username",
        )?;
        let rows = stmt.query_map(params![realm], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn shared_nonce_counts(
        &self,
    ) -> Option<std::sync::Arc<dyn crate::registrar::digest::ReplayGuard>> {
        match super::sqlite_nonces::SqliteNonceCounts::open(&self.path) {
            Ok(counts) => Some(std::sync::Arc::new(counts)),
            Err(e) => {
                tracing::warn!(error = %e, "no shared nonce-counts in the SQLite store");
                None
            }
        }
    }
}
