//! The native REGISTER entry point end to end, with no Python: a core on a
//! UDP socket of 127.0.0.1, a registrar handed to it as `registrar.serve`
//! does, REGISTERs from a real socket, answers read back from it.

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use sipr::core::{Config, Core, Event};
use sipr::registrar::store::memory::MemoryStore;
use sipr::registrar::{unix_now, Policy, Registrar, Store};
use sipr::transport::ListenSpec;

fn start() -> (Arc<Core>, Arc<MemoryStore>) {
    let config = Config {
        listen: vec![ListenSpec::parse("udp:127.0.0.1:0").unwrap()],
        ..Config::default()
    };
    let core = Core::start(config).unwrap();
    let store = Arc::new(MemoryStore::default());
    core.registrars.add(Arc::new(Registrar {
        store: store.clone(),
        policy: Policy {
            domains: Some(vec!["example.com".into()]),
            ..Policy::default()
        },
        auth: None,
    }));
    (core, store)
}

/// Waits (bounded) for a datagram on the core's socket and processes it.
fn serve_one(core: &Core) -> Vec<Event> {
    let mut pfd = libc::pollfd {
        fd: core.udp_fds()[0],
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, 5000) };
    assert_eq!(n, 1, "no datagram reached the core");
    let mut out = Vec::new();
    core.poll_udp(0, &mut out);
    out
}

fn register(sock: &UdpSocket, domain: &str, branch: &str, cseq: u32) -> String {
    let port = sock.local_addr().unwrap().port();
    format!(
        "REGISTER sip:{domain} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch}\r\n\
         From: <sip:alice@{domain}>;tag=1\r\nTo: <sip:alice@{domain}>\r\n\
         Call-ID: native-{port}\r\nCSeq: {cseq} REGISTER\r\nMax-Forwards: 70\r\n\
         Contact: <sip:alice@127.0.0.1:{port}>;expires=600\r\nContent-Length: 0\r\n\r\n"
    )
}

fn exchange(core: &Core, sock: &UdpSocket, text: &str) -> (Vec<Event>, Option<String>) {
    sock.send_to(text.as_bytes(), core.local_addrs()[0].1)
        .unwrap();
    let events = serve_one(core);
    let mut buf = [0u8; 4096];
    let answer = sock
        .recv(&mut buf)
        .ok()
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    (events, answer)
}

#[test]
fn register_answered_in_the_core_and_retransmission_replayed() {
    let (core, store) = start();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let first = register(&sock, "example.com", "a", 1);
    let (events, answer) = exchange(&core, &sock, &first);
    let answer = answer.expect("a 200");
    assert!(events.is_empty(), "nothing for the application");
    assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
    assert!(answer.contains(";expires=600;q=1"), "{answer}");
    assert!(answer.contains("\r\nServer: sipr/"), "{answer}");
    assert_eq!(
        store
            .bindings("alice@example.com", unix_now())
            .unwrap()
            .len(),
        1
    );
    // The same bytes again: the same answer (its To tag too), not a 500.
    let (_, again) = exchange(&core, &sock, &first);
    assert_eq!(again.as_deref(), Some(answer.as_str()));
    // A REGISTER for a domain not served goes to the application, and
    // nothing was answered by the time the core handed it on (a reply
    // would have been sent within `poll_udp`, on loopback at once).
    let other = register(&sock, "other.net", "b", 2);
    sock.send_to(other.as_bytes(), core.local_addrs()[0].1)
        .unwrap();
    let events = serve_one(&core);
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    assert!(sock.recv(&mut buf).is_err(), "answered natively");
    assert!(matches!(events.as_slice(), [Event::Request(_)]));
    assert!(!core.registrars.is_empty());
    core.registrars.clear();
    assert!(core.registrars.is_empty());
    core.stop();
}
