//! One conformance suite for the Rust stores (memory:, SQLite in a temp
//! file); the Python suite (tests/unit/test_store.py) runs the same
//! interface through the facade, with the Python redis store as well.

use std::sync::Arc;

use super::*;

fn stores() -> Vec<(&'static str, Arc<dyn Store>, tempdir::Dir)> {
    let dir = tempdir::Dir::new();
    let url = format!("sqlite://{}/sub/location.db", dir.path.display());
    vec![
        (
            "memory",
            open("memory:").unwrap().unwrap(),
            tempdir::Dir::new(),
        ),
        ("sqlite", open(&url).unwrap().unwrap(), dir),
    ]
}

/// A directory removed when dropped.
mod tempdir {
    pub struct Dir {
        pub path: std::path::PathBuf,
    }

    impl Dir {
        pub fn new() -> Dir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "sipr-store-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Dir { path }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

const NOW: f64 = 1_000_000.0;

fn b(contact: &str, ttl: f64) -> Binding {
    Binding::new(contact, NOW + ttl)
}

#[test]
fn bindings_upsert_delete_keep_position_and_every_field() {
    for (kind, st, _dir) in stores() {
        let mut full = b("sip:alice@192.0.2.1;transport=tcp", 600.0);
        full.q = 0.5;
        full.call_id = "c1".into();
        full.cseq = 7;
        full.received = Some("sip:198.51.100.7:40000;transport=udp".into());
        full.path = vec!["<sip:edge;lr>".into()];
        full.user_agent = Some("UA/1".into());
        full.instance = Some("\"<urn:uuid:1>\"".into());
        st.update("a@h", vec![full.clone(), b("sip:2@h", 600.0)], &[])
            .unwrap();
        st.update("a@h", vec![b("sip:3@h", 600.0)], &[]).unwrap();
        // Replacing the first keeps its place; a delete removes one.
        let mut newer = full.clone();
        newer.cseq = 8;
        st.update("a@h", vec![newer.clone()], &["sip:2@h".into()])
            .unwrap();
        let got = st.bindings("a@h", NOW).unwrap();
        assert_eq!(got, vec![newer, b("sip:3@h", 600.0)], "{kind}");
        st.update("a@h", vec![], &[full.contact.clone(), "sip:3@h".into()])
            .unwrap();
        assert!(st.bindings("a@h", NOW).unwrap().is_empty(), "{kind}");
        assert!(st.aors(NOW).unwrap().is_empty(), "{kind}");
        st.update("nobody@h", vec![], &["sip:x".into()]).unwrap();
    }
}

#[test]
fn expired_bindings_are_filtered_aors_and_remove() {
    for (kind, st, _dir) in stores() {
        st.update("c@h", vec![b("sip:c@h", 60.0)], &[]).unwrap();
        st.update("a@h", vec![b("sip:old@h", -5.0), b("sip:a@h", 60.0)], &[])
            .unwrap();
        st.update("gone@h", vec![b("sip:old@h", -1.0)], &[])
            .unwrap();
        let live: Vec<String> = st
            .bindings("a@h", NOW)
            .unwrap()
            .into_iter()
            .map(|b| b.contact)
            .collect();
        assert_eq!(live, ["sip:a@h"], "{kind}");
        assert_eq!(st.aors(NOW).unwrap(), ["a@h", "c@h"], "{kind}");
        assert_eq!(st.remove("c@h").unwrap(), 1, "{kind}");
        assert_eq!(st.remove("c@h").unwrap(), 0, "{kind}");
        assert_eq!(st.aors(NOW).unwrap(), ["a@h"], "{kind}");
        // Later than every expiry: nothing is live.
        assert!(st.aors(NOW + 61.0).unwrap().is_empty(), "{kind}");
    }
}

#[test]
fn modify_writes_only_when_asked() {
    for (kind, st, _dir) in stores() {
        st.update("m@h", vec![b("sip:1@h", 60.0)], &[]).unwrap();
        st.modify("m@h", NOW, &mut |list| {
            list.push(b("sip:2@h", 60.0));
            false
        })
        .unwrap();
        assert_eq!(st.bindings("m@h", NOW).unwrap().len(), 1, "{kind}: refused");
        st.modify("m@h", NOW, &mut |list| {
            list.remove(0);
            list.push(b("sip:2@h", 60.0));
            true
        })
        .unwrap();
        let got = st.bindings("m@h", NOW).unwrap();
        assert_eq!(got, vec![b("sip:2@h", 60.0)], "{kind}");
        st.modify("m@h", NOW, &mut |list| {
            list.clear();
            true
        })
        .unwrap();
        assert!(st.aors(NOW).unwrap().is_empty(), "{kind}");
    }
}

#[test]
fn users() {
    for (kind, st, _dir) in stores() {
        let map = |pairs: &[(&str, &str)]| -> Ha1Map {
            pairs
                .iter()
                .map(|(a, h)| (a.to_string(), h.to_string()))
                .collect()
        };
        assert_eq!(st.user("sipr", "alice").unwrap(), None, "{kind}");
        st.set_user("sipr", "alice", &map(&[("MD5", "m1"), ("SHA-256", "s1")]))
            .unwrap();
        st.set_user("sipr", "bob", &map(&[("MD5", "m2")])).unwrap();
        st.set_user("other", "alice", &map(&[("MD5", "m3")]))
            .unwrap();
        st.set_user("sipr", "alice", &map(&[("MD5", "m4")]))
            .unwrap(); // replaced, not merged
        assert_eq!(
            st.user("sipr", "alice").unwrap(),
            Some(map(&[("MD5", "m4")])),
            "{kind}"
        );
        let all = st.users(None).unwrap();
        assert_eq!(all.len(), 3, "{kind}");
        assert_eq!(all[0], ("other".to_string(), "alice".to_string()), "{kind}");
        assert_eq!(st.users(Some("sipr")).unwrap().len(), 2, "{kind}");
        assert!(st.remove_user("sipr", "alice").unwrap(), "{kind}");
        assert!(!st.remove_user("sipr", "alice").unwrap(), "{kind}");
        // Only a store other processes open too keeps nonce-counts for them
        // (`--workers`, decision 0051).
        assert_eq!(
            st.shared_nonce_counts().is_some(),
            kind.starts_with("sqlite"),
            "{kind}"
        );
    }
}

#[test]
fn sqlite_is_shared_between_connections_and_survives_reopening() {
    let dir = tempdir::Dir::new();
    let url = format!("sqlite://{}/x.db?synchronous=full", dir.path.display());
    let first = open(&url).unwrap().unwrap();
    first.update("p@h", vec![b("sip:p@h", 60.0)], &[]).unwrap();
    let second = open(&url).unwrap().unwrap();
    second
        .modify("p@h", NOW, &mut |list| {
            list.push(b("sip:q@h", 60.0));
            true
        })
        .unwrap();
    assert_eq!(first.bindings("p@h", NOW).unwrap().len(), 2);
    drop((first, second));
    let again = open(&url).unwrap().unwrap();
    assert_eq!(again.bindings("p@h", NOW).unwrap().len(), 2);
}

#[test]
fn urls() {
    assert!(open("redis://127.0.0.1/0").is_none(), "not a Rust store");
    assert!(open("sqlite://").unwrap().is_err());
    let dir = tempdir::Dir::new();
    let bad = format!("sqlite://{}/y.db?synchronous=sometimes", dir.path.display());
    let err = open(&bad).unwrap().err().unwrap().to_string();
    assert!(err.contains("synchronous"), "{err}");
    let ok = format!("sqlite://{}/z.db?synchronous=OFF", dir.path.display());
    assert!(open(&ok).unwrap().is_ok());
}
