//! Topology hiding with stored state (Kamailio `topos`; decision 0035).
//!
//! A relayed dialog is cut in two sides that never see each other's
//! addresses: towards the callee (side B) the request carries only our Via,
//! no Record-Route, a Contact of ours naming the dialog (`sr-a-ID`) and a
//! Call-ID of our own; towards the caller (side A) responses get their Vias,
//! Call-ID and Record-Route back from the server transaction and a Contact
//! of ours (`sr-b-ID`). What each side needs to be reached again (its
//! Contact, its route set, its Call-ID, its tag) is kept in a [`HiddenDialog`]
//! record; an in-dialog request addressed to one of our Contacts is routed
//! by it, in the core, in both directions.
//!
//! Records live in a bounded table here; every change is also queued for
//! the store (`sipr.topology`: SQLite by default, or Redis), which loads
//! them back at start, so dialogs survive a restart. [`TopologyService`]
//! joins the proxy through the service hooks (`route_in_dialog`,
//! `on_relay` with a branch writer, `on_response`, `on_upstream`).

mod rewrite;
mod service;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

pub use service::{TopologyService, NAME};

/// The user-part prefix of our Contacts that name a dialog side.
pub const TOKEN_PREFIX: &str = "sr-";

/// Which side of a hidden dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The caller: sent the dialog-creating request.
    A,
    /// The callee(s): answered it (one per To tag when forked).
    B,
}

impl Side {
    pub fn letter(self) -> char {
        match self {
            Side::A => 'a',
            Side::B => 'b',
        }
    }

    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// How a proxied request is hidden (decided from the request itself, the
/// same way when it is relayed and when its responses come back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hidden {
    /// Part of dialog `id`, going towards `towards` (an initial request goes
    /// towards B; an in-dialog one towards the side its R-URI token names).
    Dialog { id: String, towards: Side },
    /// Outside any dialog (OPTIONS, MESSAGE): Vias, Record-Routes and the
    /// Contact hidden, nothing stored.
    Plain,
}

/// One side's reach: what a request towards it carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reach {
    /// Its tag (A: the From tag; B: the To tag).
    pub tag: String,
    /// Its remote target (Contact URI, without `<>`).
    pub contact: String,
    /// Route set towards it, first hop first (each `<uri>`).
    pub routes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HiddenDialog {
    pub id: String,
    /// Call-ID on side A (as the caller sent it) and on side B (ours).
    pub a_call_id: String,
    pub b_call_id: String,
    pub a: Reach,
    /// Side B per To tag (several after a forked INVITE).
    pub b: Vec<Reach>,
    /// A 2xx answered the dialog-creating request.
    pub confirmed: bool,
    /// Unix time the record was made, and until when it is kept.
    pub created: f64,
    pub expires: f64,
}

impl HiddenDialog {
    pub fn b_side(&self, tag: Option<&str>) -> Option<&Reach> {
        match tag {
            Some(t) => self.b.iter().find(|r| r.tag == t),
            None => self.b.first(),
        }
    }
}

/// A change for the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Upsert(HiddenDialog),
    Delete(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopologyConfig {
    /// Records kept at most (memory bound).
    pub max_dialogs: usize,
    /// Seconds a confirmed dialog is kept without traffic.
    pub dialog_ttl: f64,
    /// Seconds an unanswered (early) dialog is kept.
    pub early_ttl: f64,
    /// Seconds a dialog is kept after its BYE or its failed INVITE (the ACK
    /// and retransmissions may still come).
    pub linger: f64,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            max_dialogs: 200_000,
            dialog_ttl: 12.0 * 3600.0,
            early_ttl: 300.0,
            linger: 32.0,
        }
    }
}

/// Changes kept for the store at most; beyond, they are counted as lost.
const MAX_PENDING_CHANGES: usize = 100_000;

#[derive(Default)]
struct Table {
    config: TopologyConfig,
    dialogs: HashMap<String, HiddenDialog, ahash::RandomState>,
    changes: VecDeque<Change>,
}

#[derive(Default)]
pub struct Topology {
    enabled: AtomicBool,
    table: Mutex<Table>,
    pub routed: AtomicU64,
    pub unknown: AtomicU64,
    pub evicted: AtomicU64,
    pub lost_changes: AtomicU64,
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Topology {
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn enable(&self, config: TopologyConfig) {
        self.table.lock().config = config;
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn disable(&self) {
        self.enabled.store(false, Ordering::Relaxed);
    }

    pub fn config(&self) -> TopologyConfig {
        self.table.lock().config.clone()
    }

    pub fn get(&self, id: &str) -> Option<HiddenDialog> {
        self.table.lock().dialogs.get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.table.lock().dialogs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores a new or changed record (and queues it for the store).
    pub fn put(&self, dialog: HiddenDialog) {
        let mut t = self.table.lock();
        if !t.dialogs.contains_key(&dialog.id) && t.dialogs.len() >= t.config.max_dialogs.max(1) {
            // Full: the record closest to its end goes (an ended or early
            // dialog first, by construction of the expiries).
            let victim = t
                .dialogs
                .values()
                .min_by(|x, y| x.expires.total_cmp(&y.expires))
                .map(|d| d.id.clone());
            if let Some(v) = victim {
                t.dialogs.remove(&v);
                self.evicted.fetch_add(1, Ordering::Relaxed);
                self.queue(&mut t, Change::Delete(v));
            }
        }
        t.dialogs.insert(dialog.id.clone(), dialog.clone());
        self.queue(&mut t, Change::Upsert(dialog));
    }

    /// Changes one record in place (queued for the store when `f` says so).
    pub fn update(&self, id: &str, f: impl FnOnce(&mut HiddenDialog, &TopologyConfig) -> bool) {
        let mut t = self.table.lock();
        let config = t.config.clone();
        let Some(d) = t.dialogs.get_mut(id) else {
            return;
        };
        if f(d, &config) {
            let copy = d.clone();
            self.queue(&mut t, Change::Upsert(copy));
        }
    }

    fn queue(&self, t: &mut Table, change: Change) {
        if t.changes.len() >= MAX_PENDING_CHANGES {
            self.lost_changes.fetch_add(1, Ordering::Relaxed);
            return;
        }
        t.changes.push_back(change);
    }

    /// The changes since the last call, oldest first (for the store).
    pub fn take_changes(&self) -> Vec<Change> {
        self.table.lock().changes.drain(..).collect()
    }

    /// Records read back from the store at start (not queued again).
    pub fn load(&self, dialogs: Vec<HiddenDialog>) -> usize {
        let now = unix_now();
        let mut t = self.table.lock();
        let max = t.config.max_dialogs.max(1);
        let mut n = 0;
        for d in dialogs {
            if d.expires > now && t.dialogs.len() < max {
                t.dialogs.insert(d.id.clone(), d);
                n += 1;
            }
        }
        n
    }

    /// Forgets expired records.
    pub fn sweep(&self) {
        let now = unix_now();
        let mut t = self.table.lock();
        let expired: Vec<String> = t
            .dialogs
            .values()
            .filter(|d| d.expires <= now)
            .map(|d| d.id.clone())
            .collect();
        for id in expired {
            t.dialogs.remove(&id);
            self.queue(&mut t, Change::Delete(id));
        }
    }

    /// Up to `limit` records, newest first.
    pub fn list(&self, limit: usize) -> Vec<HiddenDialog> {
        let t = self.table.lock();
        let mut all: Vec<HiddenDialog> = t.dialogs.values().cloned().collect();
        all.sort_by(|x, y| y.created.total_cmp(&x.created));
        all.truncate(limit);
        all
    }

    pub fn snapshot(&self) -> Vec<(String, u64)> {
        vec![
            ("security.topology.dialogs".into(), self.len() as u64),
            (
                "security.topology.routed".into(),
                self.routed.load(Ordering::Relaxed),
            ),
            (
                "security.topology.unknown".into(),
                self.unknown.load(Ordering::Relaxed),
            ),
            (
                "security.topology.evicted".into(),
                self.evicted.load(Ordering::Relaxed),
            ),
        ]
    }
}

/// `sr-a-ID` / `sr-b-ID`: the dialog and the side a request so addressed
/// goes to.
pub fn parse_token(user: &str) -> Option<(Side, &str)> {
    let rest = user.strip_prefix(TOKEN_PREFIX)?;
    let (side, id) = rest.split_at_checked(2)?;
    let side = match side {
        "a-" => Side::A,
        "b-" => Side::B,
        _ => return None,
    };
    (!id.is_empty() && id.bytes().all(|c| c.is_ascii_alphanumeric())).then_some((side, id))
}

pub fn token(side: Side, id: &str) -> String {
    format!("{TOKEN_PREFIX}{}-{id}", side.letter())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialog(id: &str, expires: f64) -> HiddenDialog {
        HiddenDialog {
            id: id.into(),
            a_call_id: "a".into(),
            b_call_id: "b".into(),
            a: Reach::default(),
            b: Vec::new(),
            confirmed: false,
            created: 0.0,
            expires,
        }
    }

    #[test]
    fn tokens_round_trip() {
        assert_eq!(
            parse_token(&token(Side::A, "12ab")),
            Some((Side::A, "12ab"))
        );
        assert_eq!(parse_token("sr-b-ff"), Some((Side::B, "ff")));
        for bad in ["alice", "sr-c-12", "sr-a-", "sr-a-1;x", "sr-"] {
            assert_eq!(parse_token(bad), None, "{bad}");
        }
    }

    #[test]
    fn table_is_bounded_and_expires() {
        let t = Topology::default();
        t.enable(TopologyConfig {
            max_dialogs: 2,
            ..TopologyConfig::default()
        });
        let now = unix_now();
        t.put(dialog("1", now + 10.0));
        t.put(dialog("2", now + 100.0));
        t.put(dialog("3", now + 50.0));
        assert_eq!(t.len(), 2);
        assert!(t.get("1").is_none(), "the one closest to its end made room");
        let changes = t.take_changes();
        assert_eq!(changes.len(), 4);
        assert!(changes.contains(&Change::Delete("1".into())));
        t.update("2", |d, _| {
            d.expires = now - 1.0;
            true
        });
        t.sweep();
        assert_eq!(t.len(), 1);
        assert_eq!(t.take_changes().last(), Some(&Change::Delete("2".into())));
        assert_eq!(
            t.load(vec![dialog("9", now + 5.0), dialog("8", now - 5.0)]),
            1
        );
        assert!(
            t.take_changes().is_empty(),
            "loaded records are not written back"
        );
    }
}
