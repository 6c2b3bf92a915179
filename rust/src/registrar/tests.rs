use super::register::tests_support::{register, source};
use super::*;

const NOW: f64 = 1_000_000.0;

fn registrar(check_identity: bool) -> FastRegistrar {
    let md5 = Algorithm::Md5.hex(&[b"alice:sipr:secret"]);
    let sha = Algorithm::Sha256.hex(&[b"alice:sipr:secret"]);
    let mut ha1 = HashMap::default();
    ha1.insert(
        "alice".to_string(),
        Ha1s {
            md5: Some(md5),
            sha256: Some(sha),
        },
    );
    ha1.insert(
        "bob".to_string(),
        Ha1s {
            md5: Some(Algorithm::Md5.hex(&[b"bob:sipr:pw"])),
            sha256: None,
        },
    );
    FastRegistrar {
        location: Arc::new(Location::default()),
        domains: Some(vec!["example.com".into()]),
        policy: Policy {
            min_expires: 1,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 10,
        },
        auth: Some(Auth {
            nonces: Nonces::new(b"s", "sipr", 300.0),
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            check_identity,
            ha1,
            counts: Arc::new(NonceCounts::new(100)),
        }),
    }
}

fn nonce_of(o: &Outcome) -> (u16, String, bool) {
    let Outcome::Reply {
        status, headers, ..
    } = o
    else {
        panic!("undecided")
    };
    let www = headers
        .iter()
        .find(|(n, _)| n == "WWW-Authenticate")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let nonce = www
        .split("nonce=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
        .to_string();
    (*status, nonce, www.contains("stale=true"))
}

fn authorization(user: &str, password: &str, alg: Algorithm, nonce: &str, nc: &str) -> String {
    let ha1 = alg.hex(&[format!("{user}:sipr:{password}").as_bytes()]);
    let ha2 = alg.hex(&[b"REGISTER:sip:example.com"]);
    let resp = alg.hex(&[format!("{ha1}:{nonce}:{nc}:cn:auth:{ha2}").as_bytes()]);
    format!(
        "Authorization: Digest username=\"{user}\", realm=\"sipr\", nonce=\"{nonce}\", \
         uri=\"sip:example.com\", response=\"{resp}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"cn\"",
        alg.name()
    )
}

fn decide(r: &FastRegistrar, cseq: u32, extra: &[&str]) -> Outcome {
    let m = register(cseq, "c", extra);
    r.decide(&m, &source(), "alice@example.com", NOW)
}

fn status(o: &Outcome) -> u16 {
    nonce_of(o).0
}

#[test]
fn challenge_then_accept_then_refuse_replay() {
    let r = registrar(true);
    let (st, nonce, stale) = nonce_of(&decide(&r, 1, &["Contact: <sip:a@h>"]));
    assert_eq!((st, stale), (401, false));
    for (i, alg) in [Algorithm::Md5, Algorithm::Sha256].into_iter().enumerate() {
        let cseq = 2 + 2 * i as u32;
        let a = authorization("alice", "secret", alg, &nonce, "00000001");
        let a2 = authorization("alice", "secret", alg, &nonce, "00000002");
        let ok = if alg == Algorithm::Md5 { &a } else { &a2 };
        assert_eq!(status(&decide(&r, cseq, &["Contact: <sip:a@h>", ok])), 200);
        // The same Authorization again: the nonce-count did not grow.
        let again = decide(&r, cseq + 1, &["Contact: <sip:a@h>", ok]);
        assert_eq!(status(&again), 403);
    }
    assert_eq!(r.location.bindings("alice@example.com", NOW).len(), 1);
}

#[test]
fn wrong_password_stale_identity_and_unknown_user() {
    let r = registrar(true);
    let nonce = r.auth.as_ref().unwrap().nonces.issue((NOW * 1000.0) as u64);
    let bad = authorization("alice", "nope", Algorithm::Md5, &nonce, "00000001");
    assert_eq!(status(&decide(&r, 1, &[&bad])), 403);
    // bob has no SHA-256 HA1; and may not register alice's AoR.
    let bob = authorization("bob", "pw", Algorithm::Sha256, &nonce, "00000001");
    assert_eq!(status(&decide(&r, 1, &[&bob])), 403);
    let bob = authorization("bob", "pw", Algorithm::Md5, &nonce, "00000002");
    let Outcome::Reply { reason, .. } = decide(&r, 1, &[&bob]) else {
        panic!()
    };
    assert!(reason.unwrap().contains("identity"));
    let carol = authorization("carol", "pw", Algorithm::Md5, &nonce, "00000001");
    assert_eq!(decide(&r, 1, &[&carol]), Outcome::Python);
    let old = r
        .auth
        .as_ref()
        .unwrap()
        .nonces
        .issue(((NOW - 400.0) * 1000.0) as u64);
    let a = authorization("alice", "secret", Algorithm::Md5, &old, "00000001");
    let (st, fresh, stale) = nonce_of(&decide(&r, 1, &[&a]));
    assert_eq!((st, stale), (401, true));
    assert_ne!(fresh, old);
    let forged = format!("0{nonce}");
    let a = authorization("alice", "secret", Algorithm::Md5, &forged, "00000001");
    let (st, _, stale) = nonce_of(&decide(&r, 1, &[&a]));
    assert_eq!(
        (st, stale),
        (401, false),
        "not our nonce: a fresh challenge"
    );
}

#[test]
fn serves_only_its_domains() {
    let r = registrar(false);
    assert!(r.serves("example.com"));
    assert!(!r.serves("other.net"));
}

#[test]
fn recent_replies_are_bounded() {
    let mut rr = RecentReplies::new(2);
    let t = std::time::Instant::now();
    for k in 0..5u64 {
        rr.insert(k, bytes::Bytes::from_static(b"x"), t);
    }
    assert!(rr.len() <= 2);
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
    /// native path answers or hands on; it never panics.
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
            let _ = r.decide(&m, &source(), "alice@example.com", NOW);
            let plain = FastRegistrar { auth: None, ..registrar(false) };
            let _ = plain.decide(&m, &source(), "alice@example.com", NOW);
        }
    }
}
