//! Heap bytes a relayed call leaves held after it completed (issue 14 point
//! 4): the transactions RFC 3261 / RFC 6026 keep to absorb retransmissions
//! (INVITE server Accepted / Timer L, INVITE client Accepted / Timer M, BYE
//! server Completed / Timer J, BYE client Completed / Timer K) and whatever
//! else outlives the call.
//!
//!     cargo bench --bench held_memory [-- CALLS]
//!     cargo test --bench held_memory -- CALLS    (debug build, same allocation sizes, ~15 s)
//!
//! A real core on 127.0.0.1 relays CALLS calls (INVITE → 200, BYE → 200)
//! between two UDP sockets, within one Timer J so nothing expires; a counting
//! allocator gives the live heap before and after, divided by CALLS and by
//! the held transactions. Exits 1 over 1 KB per held transaction.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sipr::core::{Config, Core, HeldRequest};
use sipr::proxy::stateful::Target;
use sipr::service::Event;
use sipr::transport::ListenSpec;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

/// Live allocations by size class (16-byte steps; the last one is "larger"),
/// so the report can say which objects the held bytes are.
const CLASSES: usize = 129;
static BY_SIZE: [AtomicIsize; CLASSES] = [const { AtomicIsize::new(0) }; CLASSES];

fn class(size: usize) -> usize {
    (size / 16).min(CLASSES - 1)
}

fn count(size: usize, delta: isize) {
    LIVE.fetch_add(size as isize * delta, Ordering::Relaxed);
    BY_SIZE[class(size)].fetch_add(delta, Ordering::Relaxed);
}

fn by_size() -> Vec<isize> {
    BY_SIZE.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(layout.size(), -1);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(layout.size(), -1);
        count(new_size, 1);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const TARGET_BYTES: f64 = 1024.0;

struct Rig {
    core: Arc<Core>,
    proxy: SocketAddr,
    uac: UdpSocket,
    uas: UdpSocket,
    relay_id: u64,
}

impl Rig {
    fn new() -> Rig {
        let core = Core::start(Config {
            listen: vec![ListenSpec::parse("udp:127.0.0.1:0").expect("valid")],
            max_pending: 1_000_000,
            ..Config::default()
        })
        .expect("start on 127.0.0.1");
        let proxy = core.local_addrs()[0].1;
        let bind = || {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s
        };
        Rig {
            core,
            proxy,
            uac: bind(),
            uas: bind(),
            relay_id: 0,
        }
    }

    fn poll(&self) -> Vec<Event> {
        let mut events = Vec::new();
        self.core.poll_udp(0, &mut events);
        events
    }

    fn recv(socket: &UdpSocket) -> String {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a datagram within 2 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// One request from the UAC, relayed by the "application" to the UAS,
    /// answered 200 there and back at the UAC.
    fn transaction(&mut self, request: String) {
        self.uac.send_to(request.as_bytes(), self.proxy).unwrap();
        // An in-dialog request may be routed by the core itself (no event).
        let mut held = match self.poll().into_iter().next() {
            Some(Event::Request(inc)) => {
                let mut held = HeldRequest::new(inc);
                self.relay_id += 1;
                let uas = self.uas.local_addr().unwrap();
                let target = Target {
                    hop: Some(format!("sip:{uas}")),
                    request_uri: None,
                    routes: Vec::new(),
                };
                held.relay(&self.core, vec![target], None, None, true, self.relay_id)
                    .expect("relay");
                Some(held)
            }
            _ => None,
        };
        let relayed = Self::recv(&self.uas);
        self.uas
            .send_to(answer(&relayed, 200).as_bytes(), self.proxy)
            .unwrap();
        self.poll();
        if let Some(held) = &mut held {
            held.finish(&self.core);
        }
        loop {
            let back = Self::recv(&self.uac);
            if back.starts_with("SIP/2.0 1") {
                continue; // 100 Trying
            }
            assert!(back.starts_with("SIP/2.0 200"), "{back}");
            break;
        }
    }

    fn call(&mut self, i: usize) {
        let uac = self.uac.local_addr().unwrap();
        let uas = self.uas.local_addr().unwrap();
        let common = |method: &str, cseq: u32, branch: &str, to_tag: &str| {
            format!(
                "{method} sip:bob@{uas} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {uac};branch=z9hG4bK{branch};rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: \"Alice\" <sip:alice@{uac}>;tag=a{i}\r\n\
                 To: <sip:bob@{uas}>{to_tag}\r\n\
                 Call-ID: held-{i}@{uac}\r\n\
                 CSeq: {cseq} {method}\r\n\
                 Contact: <sip:alice@{uac}>\r\n\
                 User-Agent: held_memory bench\r\n\
                 Content-Length: 0\r\n\r\n"
            )
        };
        self.transaction(common("INVITE", 1, &format!("i{i}"), ""));
        self.transaction(common("BYE", 2, &format!("b{i}"), &format!(";tag=b{i}")));
    }
}

/// A response to `request` from the UAS: its Via, From, To (tagged), Call-ID
/// and CSeq copied, as RFC 3261 §8.2.6.2 says.
fn answer(request: &str, status: u16) -> String {
    let mut out = format!("SIP/2.0 {status} Whatever\r\n");
    for line in request.split("\r\n").skip(1) {
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        match name.as_str() {
            "via" | "from" | "call-id" | "cseq" | "record-route" => {
                out.push_str(line);
                out.push_str("\r\n");
            }
            "to" if !line.contains("tag=") => {
                out.push_str(line);
                out.push_str(";tag=uas\r\n");
            }
            "to" => {
                out.push_str(line);
                out.push_str("\r\n");
            }
            _ => {}
        }
    }
    out.push_str("Contact: <sip:bob@127.0.0.1>\r\nContent-Length: 0\r\n\r\n");
    out
}

/// The size classes holding most of the held bytes, per call: which objects
/// a cut should go after.
fn print_size_classes(before: &[isize], after: &[isize], calls: usize) {
    let mut rows: Vec<(usize, f64)> = (0..CLASSES)
        .map(|c| (c, (after[c] - before[c]) as f64 / calls as f64))
        .filter(|(_, per_call)| *per_call > 0.05)
        .collect();
    rows.sort_by(|a, b| {
        let bytes = |(c, n): &(usize, f64)| n * (c * 16 + 8) as f64;
        bytes(b).total_cmp(&bytes(a))
    });
    println!("live allocations per call by size (top 12):");
    for (c, per_call) in rows.into_iter().take(12) {
        let range = if c == CLASSES - 1 {
            format!(">= {} B", c * 16)
        } else {
            format!("{}-{} B", c * 16, c * 16 + 15)
        };
        println!("  {range:>12}: {per_call:5.2} per call");
    }
}

fn main() {
    let calls: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let mut rig = Rig::new();
    // Warm-up: tables, allocator pools, the core's lazily built state.
    for i in 0..1000 {
        rig.call(1_000_000 + i);
    }
    let before = LIVE.load(Ordering::Relaxed);
    let sizes_before = by_size();
    let tables_before = rig.core.table_sizes();
    for i in 0..calls {
        rig.call(i);
    }
    let after = LIVE.load(Ordering::Relaxed);
    let sizes_after = by_size();
    let t = rig.core.table_sizes();
    let held_txns = (t.servers + t.clients) - (tables_before.servers + tables_before.clients);
    let bytes = (after - before) as f64;
    let per_txn = bytes / held_txns as f64;
    println!(
        "{calls} calls completed and held: +{:.1} MB live heap, {:.0} B per call, \
         {held_txns} transactions held ({} server, {} client, {} proxy contexts): \
         {per_txn:.0} B per held transaction (target <= {TARGET_BYTES:.0})",
        bytes / 1e6,
        bytes / calls as f64,
        t.servers - tables_before.servers,
        t.clients - tables_before.clients,
        t.contexts,
    );
    print_size_classes(&sizes_before, &sizes_after, calls);
    rig.core.stop();
    if per_txn > TARGET_BYTES {
        std::process::exit(1);
    }
}
