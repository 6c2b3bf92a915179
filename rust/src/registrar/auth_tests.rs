//! The digest check and the native registrar's decision, with no sockets
//! and no Python.

use std::collections::HashMap;
use std::sync::Arc;

use super::auth::ha1;
use super::digest::{Algorithm, NonceCounts, Nonces};
use super::rules_tests::{register, register_as, source};
use super::store::memory::MemoryStore;
use super::*;
use crate::sip::Method;

const NOW: f64 = 1_000_000.0;

fn rules(check_identity: bool) -> DigestRules {
    DigestRules {
        nonces: Nonces::new(b"s", "sipr", 300.0),
        algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
        check_identity,
        replay: Arc::new(NonceCounts::new(100)),
    }
}

fn users() -> HashMap<String, Ha1Map, ahash::RandomState> {
    let mut t = HashMap::default();
    let mut alice = Ha1Map::new();
    for alg in [Algorithm::Md5, Algorithm::Sha256] {
        alice.insert(alg.name().into(), ha1("alice", "sipr", "secret", alg));
    }
    t.insert("alice".to_string(), alice);
    let mut bob = Ha1Map::new();
    bob.insert("MD5".into(), ha1("bob", "sipr", "pw", Algorithm::Md5));
    t.insert("bob".to_string(), bob);
    t
}

fn registrar(check_identity: bool) -> Registrar {
    Registrar {
        store: Arc::new(MemoryStore::default()),
        policy: Policy {
            domains: Some(vec!["example.com".into()]),
            min_expires: 1,
            ..Policy::default()
        },
        auth: Some((Arc::new(rules(check_identity)), Users::Table(users()))),
    }
}

fn reply(o: Outcome) -> Reply {
    match o {
        Outcome::Reply(r) => r,
        Outcome::HandOn => panic!("handed on"),
    }
}

fn nonce_of(r: &Reply) -> (u16, String, bool) {
    let www = r
        .headers
        .iter()
        .find(|(n, _)| n == "WWW-Authenticate" || n == "Proxy-Authenticate")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let nonce = www
        .split("nonce=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
        .to_string();
    (r.status, nonce, www.contains("stale=true"))
}

fn credentials(
    method: &str,
    user: &str,
    password: &str,
    alg: Algorithm,
    nonce: &str,
    nc: &str,
) -> String {
    let key = ha1(user, "sipr", password, alg);
    let ha2 = alg.hex(&[format!("{method}:sip:example.com").as_bytes()]);
    let resp = alg.hex(&[format!("{key}:{nonce}:{nc}:cn:auth:{ha2}").as_bytes()]);
    let header = if method == "REGISTER" {
        "Authorization"
    } else {
        "Proxy-Authorization"
    };
    format!(
        "{header}: Digest username=\"{user}\", realm=\"sipr\", nonce=\"{nonce}\", \
         uri=\"sip:example.com\", response=\"{resp}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"cn\"",
        alg.name()
    )
}

fn authorization(user: &str, password: &str, alg: Algorithm, nonce: &str, nc: &str) -> String {
    credentials("REGISTER", user, password, alg, nonce, nc)
}

fn decide(r: &Registrar, cseq: u32, extra: &[&str]) -> Outcome {
    r.decide(&register(cseq, "c", extra), &source(), NOW)
}

fn status(o: Outcome) -> u16 {
    reply(o).status
}

#[test]
fn challenge_then_accept_then_refuse_replay() {
    let r = registrar(true);
    let first = reply(decide(&r, 1, &["Contact: <sip:a@h>"]));
    let (st, nonce, stale) = nonce_of(&first);
    assert_eq!((st, stale), (401, false));
    let offered: Vec<&str> = first.headers.iter().map(|(_, v)| v.as_str()).collect();
    assert!(offered[0].ends_with("algorithm=SHA-256") && offered[1].ends_with("algorithm=MD5"));
    for (i, alg) in [Algorithm::Md5, Algorithm::Sha256].into_iter().enumerate() {
        let cseq = 2 + 2 * i as u32;
        let nc = format!("0000000{}", i + 1);
        let ok = authorization("alice", "secret", alg, &nonce, &nc);
        assert_eq!(status(decide(&r, cseq, &["Contact: <sip:a@h>", &ok])), 200);
        // The same Authorization again: the nonce-count did not grow.
        let again = reply(decide(&r, cseq + 1, &["Contact: <sip:a@h>", &ok]));
        assert_eq!(
            (again.status, again.reason.as_deref()),
            (403, Some(auth::REPLAYED))
        );
    }
    assert_eq!(r.store.bindings("alice@example.com", NOW).unwrap().len(), 1);
}

#[test]
fn wrong_password_stale_identity_and_unknown_user() {
    let r = registrar(true);
    let rules = &r.auth.as_ref().unwrap().0;
    let nonce = rules.nonces.issue((NOW * 1000.0) as u64);
    let bad = authorization("alice", "nope", Algorithm::Md5, &nonce, "00000001");
    assert_eq!(status(decide(&r, 1, &[&bad])), 403);
    // bob has no SHA-256 HA1; and may not register alice's AoR.
    let bob = authorization("bob", "pw", Algorithm::Sha256, &nonce, "00000001");
    assert_eq!(status(decide(&r, 1, &[&bob])), 403);
    let bob = authorization("bob", "pw", Algorithm::Md5, &nonce, "00000002");
    let refused = reply(decide(&r, 1, &[&bob]));
    assert_eq!(refused.reason.as_deref(), Some(auth::IDENTITY));
    let carol = authorization("carol", "pw", Algorithm::Md5, &nonce, "00000001");
    assert_eq!(
        decide(&r, 1, &[&carol]),
        Outcome::HandOn,
        "the dict may have grown"
    );
    let old = rules.nonces.issue(((NOW - 400.0) * 1000.0) as u64);
    let a = authorization("alice", "secret", Algorithm::Md5, &old, "00000001");
    let (st, fresh, stale) = nonce_of(&reply(decide(&r, 1, &[&a])));
    assert_eq!((st, stale), (401, true));
    assert_ne!(fresh, old);
    let forged = format!("0{nonce}");
    let a = authorization("alice", "secret", Algorithm::Md5, &forged, "00000001");
    let (st, _, stale) = nonce_of(&reply(decide(&r, 1, &[&a])));
    assert_eq!(
        (st, stale),
        (401, false),
        "not our nonce: a fresh challenge"
    );
}

#[test]
fn odd_credentials_are_challenged_or_refused() {
    let r = registrar(false);
    let rules = &r.auth.as_ref().unwrap().0;
    let nonce = rules.nonces.issue((NOW * 1000.0) as u64);
    let good = authorization("alice", "secret", Algorithm::Md5, &nonce, "00000001");
    for (from, to, want) in [
        ("qop=auth", "qop=auth-int", 401),
        ("cnonce=\"cn\"", "cnonce=\"\"", 401),
        ("nc=00000001", "nc=0x1", 401),
        ("algorithm=MD5", "algorithm=SHA-512", 401),
        ("realm=\"sipr\"", "realm=\"elsewhere\"", 401),
        ("Digest ", "Basic ", 401),
    ] {
        let odd = good.replace(from, to);
        assert_eq!(status(decide(&r, 1, &[&odd])), want, "{odd}");
    }
    // A zero or oversized nonce-count is never fresh.
    for nc in ["00000000", "1ffffffffffffffff"] {
        let a = authorization("alice", "secret", Algorithm::Md5, &nonce, nc);
        let refused = reply(decide(&r, 1, &[&a]));
        assert_eq!(refused.reason.as_deref(), Some(auth::REPLAYED), "{nc}");
    }
    // Without the identity check bob may register alice; SHA256 is read as SHA-256.
    let bob = authorization("bob", "pw", Algorithm::Md5, &nonce, "00000003");
    assert_eq!(status(decide(&r, 2, &["Contact: <sip:b@h>", &bob])), 200);
    let sha = authorization("alice", "secret", Algorithm::Sha256, &nonce, "00000004")
        .replace("algorithm=SHA-256", "algorithm=sha256");
    assert_eq!(status(decide(&r, 3, &[&sha])), 200);
}

#[test]
fn other_methods_get_407_and_the_from_identity() {
    let rules = rules(true);
    let m = register_as("INVITE", "bob@example.com", 1, "i", &[]);
    let Step::Answer(ch) = rules.begin(&m, NOW) else {
        panic!("no challenge")
    };
    let (st, nonce, _) = nonce_of(&ch);
    assert_eq!((st, ch.headers[0].0.as_str()), (407, "Proxy-Authenticate"));
    // Calling bob as alice (the From), authenticated as alice: allowed.
    let cred = credentials(
        "INVITE",
        "alice",
        "secret",
        Algorithm::Md5,
        &nonce,
        "00000001",
    );
    let m = register_as("INVITE", "bob@example.com", 2, "i", &[&cred]);
    let Step::Verify(a) = rules.begin(&m, NOW) else {
        panic!("not verified")
    };
    assert_eq!((a.user.as_str(), a.algorithm), ("alice", Algorithm::Md5));
    let key = ha1("alice", "sipr", "secret", Algorithm::Md5);
    assert_eq!(rules.finish(&m, &a, Some(&key)), None);
    assert_eq!(rules.finish(&m, &a, None).map(|r| r.status), Some(403));
    assert_eq!(rules.challenge(Method::Register, NOW, true).status, 401);
}

#[test]
fn users_from_a_store_and_store_errors() {
    let store = Arc::new(MemoryStore::default());
    let mut alice = Ha1Map::new();
    alice.insert("MD5".into(), ha1("alice", "sipr", "secret", Algorithm::Md5));
    store.set_user("sipr", "alice", &alice).unwrap();
    let r = Registrar {
        store: store.clone(),
        policy: Policy::default(),
        auth: Some((Arc::new(rules(true)), Users::Store(store.clone()))),
    };
    let nonce = r
        .auth
        .as_ref()
        .unwrap()
        .0
        .nonces
        .issue((NOW * 1000.0) as u64);
    let ok = authorization("alice", "secret", Algorithm::Md5, &nonce, "00000001");
    assert_eq!(status(decide(&r, 1, &["Contact: <sip:a@h>", &ok])), 200);
    let carol = authorization("carol", "pw", Algorithm::Md5, &nonce, "00000002");
    assert_eq!(
        status(decide(&r, 2, &[&carol])),
        403,
        "not in the store: refused"
    );
    assert!(r.serves("anywhere.net"));
}

#[test]
fn recent_replies_are_bounded() {
    let mut rr = RecentReplies::new(2);
    let t = std::time::Instant::now();
    for k in 0..5u64 {
        rr.insert(k, bytes::Bytes::from_static(b"x"), t);
    }
    assert!(rr.len() <= 2 && !rr.is_empty());
    assert!(rr.get(4).is_some());
    rr.insert(
        9,
        bytes::Bytes::new(),
        t + std::time::Duration::from_secs(40),
    );
    assert_eq!(rr.len(), 1);
}

proptest::proptest! {
    /// Whatever a client puts in Authorization, Contact or Expires, the
    /// registrar answers or hands on; it never panics.
    #[test]
    fn odd_headers_never_panic(
        auth in "[ -~]{0,120}",
        contact in "[ -~]{0,80}",
        expires in "[ -~]{0,12}",
    ) {
        let r = registrar(true);
        let a = format!("Authorization: Digest {auth}");
        let c = format!("Contact: {contact}");
        let e = format!("Expires: {expires}");
        let text = String::from_utf8_lossy(register(1, "c", &[]).as_bytes()).replace(
            "Content-Length",
            &format!("{a}\r\n{c}\r\n{e}\r\nContent-Length"),
        );
        if let Ok(m) = crate::sip::Message::parse(
            bytes::Bytes::from(text),
            crate::sip::Framing::Datagram,
            &crate::sip::Limits::default(),
        ) {
            let _ = r.decide(&m, &source(), NOW);
            let plain = Registrar { auth: None, ..registrar(false) };
            let _ = plain.decide(&m, &source(), NOW);
        }
    }
}
