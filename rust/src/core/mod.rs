//! The dispatcher: owns the node (sockets, identity), the transaction layer
//! and the proxy's state; turns what the sockets and timers deliver into
//! calls of the transaction layer and the services (`inbound`), and what the
//! application decides into actions (`actions`). It holds no SIP rule of its
//! own beyond which service a message goes to, and overload admission
//! (`admission`). See docs/architecture.md.

mod actions;
mod admission;
mod held;
mod held_dialogs;
mod inbound;
pub mod rport;
mod udp_reader;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use parking_lot::Mutex;

pub use crate::service::{Event, Incoming};
pub use crate::transport::StartError;
pub use actions::Reply;
use admission::Admission;
pub use held::{ActionError, HeldRequest, Relayed};

use crate::proxy::Proxy;
use crate::registrar::Registrars;
use crate::service::{Ctx, Node};
use crate::sip::{Limits, Message};
use crate::stats::Stats;
use crate::timer::TimerFd;
use crate::tls::{CertInfo, TlsError, TlsSettings};
use crate::transaction::{Layer, Timing};
use crate::transport::stream::{StreamConfig, StreamSink};
use crate::transport::udp::{ReaderThread, RecvBatch, UdpReaderMode, BATCH};
use crate::transport::{ListenSpec, Source, Transport, Wire};

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<ListenSpec>,
    pub limits: Limits,
    /// Requests handed to the application and not yet acted on; beyond this
    /// the core answers new requests 503 itself (docs/architecture.md), and
    /// in-dialog ones beyond twice this.
    pub max_pending: usize,
    /// Requests read from streams waiting for the loop thread.
    pub ingress_capacity: usize,
    pub retry_after: u32,
    /// Extra host names that mean "this proxy" in Route / Request-URI.
    pub aliases: Vec<String>,
    pub server_name: String,
    pub stream: StreamConfig,
    pub tls: TlsSettings,
    pub udp_reader: UdpReaderMode,
    /// Key of the MAC in the branches we mint (service/branch.rs); None: a
    /// random key for this run only.
    pub branch_secret: Option<Vec<u8>>,
    /// Nameservers and cache bounds for RFC 3263 lookups.
    pub dns: crate::dns::DnsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![
                ListenSpec::parse("udp:127.0.0.1:5060").expect("valid"),
                ListenSpec::parse("tcp:127.0.0.1:5060").expect("valid"),
            ],
            limits: Limits::default(),
            max_pending: 10_000,
            ingress_capacity: 4096,
            retry_after: 5,
            aliases: Vec::new(),
            server_name: format!("sipr/{}", env!("CARGO_PKG_VERSION")),
            stream: StreamConfig::default(),
            tls: TlsSettings::default(),
            udp_reader: UdpReaderMode::Loop,
            branch_secret: None,
            dns: crate::dns::DnsConfig::default(),
        }
    }
}

/// What the loop thread's lock guards: the transaction layer and the
/// proxy's response contexts, changed together.
#[derive(Default)]
pub struct Stack {
    pub txns: Layer,
    pub proxy: Proxy,
}

/// A message read by another thread, waiting for the loop thread.
struct Inbound {
    msg: Message,
    source: Source,
    /// The services' `on_request` hooks already ran (on a UDP reader thread).
    screened: bool,
}

pub struct Core {
    me: std::sync::Weak<Core>,
    pub config: Config,
    /// The wire, identity, resolver, counters and registered services.
    pub node: Node,
    /// The same counters as `node.stats`.
    pub stats: Arc<Stats>,
    recv: Mutex<RecvBatch>,
    /// `UdpReaderMode::Thread`: the threads reading the UDP sockets.
    udp_readers: Mutex<Vec<ReaderThread>>,
    /// Messages read by the stream / UDP reader threads, for the loop thread.
    ingress: ArrayQueue<Inbound>,
    /// Destinations the stream thread failed to deliver to.
    transport_errors: ArrayQueue<(Transport, SocketAddr)>,
    stack: Mutex<Stack>,
    timerfd: Mutex<TimerFd>,
    /// The application handles in-dialog requests itself (`@app.in_dialog`).
    in_dialog_to_app: AtomicBool,
    /// `App(force_rport=True)` (rport.rs).
    force_rport: AtomicBool,
    wake: OwnedFd,
    admission: Admission,
    /// REGISTERs answered before Python (`registrar.serve(app)`).
    pub registrars: Registrars,
    /// Tracked dialogs, their profiles and accounting records: a service
    /// that joins the node's hooks when first used (`Dialogs::serve`).
    pub dialogs: Arc<crate::dialog::Dialogs>,
}

impl Core {
    /// Binds every listener (so a port in use fails here, before anything
    /// runs) and starts the stream thread.
    pub fn start(config: Config) -> Result<Arc<Core>, StartError> {
        let stats = Arc::new(Stats::default());
        let (wire, stream_listeners) = Wire::bind(
            &config.listen,
            &config.tls,
            config.aliases.clone(),
            stats.clone(),
        )?;
        // SAFETY: eventfd returns a new descriptor or -1.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(StartError::Other(format!(
                "eventfd: {}",
                std::io::Error::last_os_error()
            )));
        }
        let timerfd = TimerFd::new().map_err(|e| StartError::Other(format!("timerfd: {e}")))?;
        let mut node = Node::new(wire, config.server_name.clone());
        if let Some(secret) = &config.branch_secret {
            node.branch_mac = crate::service::branch::BranchKey::new(secret);
        }
        node.resolver = crate::dns::Resolver::new(crate::dns::DnsConfig {
            ipv4: config.listen.iter().any(|l| l.addr.is_ipv4()),
            ipv6: config.listen.iter().any(|l| l.addr.is_ipv6()),
            ..config.dns.clone()
        });
        let admission = Admission::new(config.max_pending, config.retry_after);
        let core = Arc::new_cyclic(|me| Core {
            me: me.clone(),
            node,
            stats,
            stack: Mutex::new(Stack::default()),
            timerfd: Mutex::new(timerfd),
            in_dialog_to_app: AtomicBool::new(false),
            force_rport: AtomicBool::new(false),
            ingress: ArrayQueue::new(config.ingress_capacity.max(1)),
            transport_errors: ArrayQueue::new(1024),
            recv: Mutex::new(RecvBatch::default()),
            udp_readers: Mutex::new(Vec::new()),
            // SAFETY: efd is a fresh descriptor we own.
            wake: unsafe { OwnedFd::from_raw_fd(efd) },
            admission,
            registrars: Default::default(),
            dialogs: Default::default(),
            config,
        });
        // Finished DNS lookups wake the loop thread (`drain_streams`).
        let waker = core.me.clone();
        core.node.resolver.set_waker(Box::new(move || {
            if let Some(c) = waker.upgrade() {
                c.wake();
            }
        }));
        let sink: Arc<dyn StreamSink> = Arc::new(SinkRef(core.me.clone()));
        core.node.wire.start_streams(
            stream_listeners,
            core.config.limits.clone(),
            core.config.stream.clone(),
            sink,
        )?;
        if core.config.udp_reader == UdpReaderMode::Thread {
            core.start_udp_readers()
                .map_err(|e| StartError::Other(format!("udp reader thread: {e}")))?;
        }
        Ok(core)
    }

    pub fn stop(&self) {
        self.node.wire.stop_streams();
        for reader in std::mem::take(&mut *self.udp_readers.lock()) {
            reader.stop();
        }
    }

    /// Queues a message for the loop thread (the caller wakes it); a full
    /// queue answers a request 503 instead. True if queued.
    fn enqueue(&self, msg: Message, source: Source, screened: bool) -> bool {
        let inbound = Inbound {
            msg,
            source,
            screened,
        };
        match self.ingress.push(inbound) {
            Ok(()) => true,
            Err(Inbound { msg, source, .. }) => {
                self.stats.overload_rejects.fetch_add(1, Ordering::Relaxed);
                if msg.is_request() && msg.method() != crate::sip::Method::Ack {
                    self.node.reply_stateless(
                        &msg,
                        source,
                        503,
                        None,
                        &self.admission.retry_after_header(),
                    );
                }
                false
            }
        }
    }

    /// Local addresses actually bound (port 0 resolved), per transport.
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        self.node.wire.local_addrs()
    }

    pub fn udp_fds(&self) -> Vec<i32> {
        self.node.wire.udp_fds()
    }

    /// The eventfd that becomes readable when stream requests are queued.
    pub fn wake_fd(&self) -> i32 {
        self.wake.as_raw_fd()
    }

    /// Reads every datagram waiting on UDP listener `index` (bounded, for
    /// fairness) and processes it; what the application must see is appended.
    pub fn poll_udp(&self, index: usize, out: &mut Vec<Event>) {
        let Some(ep) = self.node.wire.udp().get(index) else {
            return;
        };
        let mut batch = self.recv.lock();
        let mut stack = self.stack.lock();
        for _ in 0..8 {
            let n = match batch.recv(&ep.socket) {
                Ok(n) => n,
                Err(_) => break,
            };
            for i in 0..n {
                let Some((data, from)) = batch.get(i) else {
                    continue;
                };
                let source = Source::udp(from, ep.local);
                if let Some(msg) = self.parse_inbound(Bytes::copy_from_slice(data), source) {
                    self.process(&mut stack, msg, source, false, out);
                }
            }
            if n < BATCH {
                break;
            }
        }
        self.rearm(&stack.txns);
    }

    /// Processes the messages queued by the stream and UDP reader threads.
    pub fn drain_streams(&self, out: &mut Vec<Event>) {
        let mut counter = [0u8; 8];
        // SAFETY: reading 8 bytes from our own non-blocking eventfd.
        unsafe { libc::read(self.wake.as_raw_fd(), counter.as_mut_ptr().cast(), 8) };
        let mut stack = self.stack.lock();
        while let Some(inbound) = self.ingress.pop() {
            let Inbound {
                msg,
                source,
                screened,
            } = inbound;
            self.process(&mut stack, msg, source, screened, out);
        }
        while let Some((transport, addr)) = self.transport_errors.pop() {
            self.on_transport_error(&mut stack, transport, addr, out);
        }
        let Stack { txns, proxy } = &mut *stack;
        proxy.resume_dns_waits(&mut Ctx::new(&self.node, txns, out));
        self.rearm(&stack.txns);
    }

    /// The timer descriptor the event loop watches.
    pub fn timer_fd(&self) -> i32 {
        self.timerfd.lock().raw()
    }

    /// Runs every due transaction and service timer.
    pub fn on_timer(&self, out: &mut Vec<Event>) {
        self.timerfd.lock().clear();
        let mut stack = self.stack.lock();
        let now = stack.txns.timers.now();
        let due = stack.txns.timers.pop_due(now);
        for (_, key) in due {
            self.fire(&mut stack, key, out);
        }
        self.rearm(&stack.txns);
    }

    fn rearm(&self, txns: &Layer) {
        self.timerfd.lock().arm(txns.timers.next_deadline());
    }

    /// Runs `f` with a service context (the transaction layer held), then
    /// re-arms the timer: how a service is driven from outside a message or
    /// a timer (the control socket, the application). Events `f` leaves in
    /// the context are returned.
    pub fn with_services<R>(
        &self,
        f: impl FnOnce(&mut Ctx<'_>, &mut Proxy) -> R,
    ) -> (R, Vec<Event>) {
        let mut events = Vec::new();
        let mut stack = self.stack.lock();
        let Stack { txns, proxy } = &mut *stack;
        let r = f(&mut Ctx::new(&self.node, txns, &mut events), proxy);
        self.rearm(&stack.txns);
        (r, events)
    }

    pub fn set_in_dialog_to_app(&self, on: bool) {
        self.in_dialog_to_app.store(on, Ordering::Relaxed);
    }

    pub fn set_timing(&self, timing: Timing) {
        self.stack.lock().txns.timing = timing;
    }

    pub fn timing(&self) -> Timing {
        self.stack.lock().txns.timing.clone()
    }

    /// Server and client transactions still waiting for a final response
    /// (not those only absorbing retransmissions before they end).
    pub fn open_transactions(&self) -> (usize, usize) {
        let stack = self.stack.lock();
        (
            stack
                .txns
                .servers
                .values()
                .filter(|t| !t.is_final())
                .count(),
            stack
                .txns
                .clients
                .values()
                .filter(|t| !t.is_final())
                .count(),
        )
    }

    /// Table sizes for `tm.stats` / `stats.get`.
    pub fn table_sizes(&self) -> TableSizes {
        let stack = self.stack.lock();
        TableSizes {
            servers: stack.txns.server_count(),
            clients: stack.txns.client_count(),
            contexts: stack.proxy.contexts(),
            contexts_settled: stack.proxy.settled_contexts(),
            timers: stack.txns.timers.len(),
            servers_created: stack.txns.servers_created,
            clients_created: stack.txns.clients_created,
        }
    }

    /// Zeroes the transactions-created counters (`stats.reset`).
    pub fn reset_created(&self) {
        let mut stack = self.stack.lock();
        stack.txns.servers_created = 0;
        stack.txns.clients_created = 0;
    }

    /// Answers `req` statelessly (an error or overload reply from the core).
    pub fn reply_to(
        &self,
        req: &Message,
        source: Source,
        status: u16,
        reason: Option<&str>,
        extra: &[(String, String)],
    ) {
        self.node
            .reply_stateless(req, source, status, reason, extra);
    }

    /// Messages read by the stream thread and not yet processed.
    pub fn ingress_depth(&self) -> usize {
        self.ingress.len()
    }

    /// Re-reads the TLS certificates, keys and CAs; open connections keep
    /// theirs. An error leaves the running configuration in place.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        self.node.wire.reload_tls()
    }

    /// The loaded TLS certificates (empty without TLS).
    pub fn tls_info(&self) -> Vec<CertInfo> {
        self.node.wire.tls_info()
    }

    pub fn connection_count(&self) -> usize {
        self.node.wire.connection_count()
    }

    /// Open connections per stream transport, for `stats.get`.
    pub fn connections_by_transport(&self) -> Vec<(Transport, usize)> {
        self.node.wire.connections_by_transport()
    }

    /// Failed connects, and messages failed at once after one (`Wire`).
    pub fn connect_failures(&self) -> (u64, u64) {
        self.node.wire.connect_failures()
    }

    /// Wakes the loop thread to run `drain_streams`.
    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes to our own eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// Sizes of the transaction layer's tables.
#[derive(Debug, Clone, Copy)]
pub struct TableSizes {
    pub servers: usize,
    pub clients: usize,
    pub contexts: usize,
    /// Contexts whose work is done, kept as their server transaction's id
    /// until it ends (decision 0065).
    pub contexts_settled: usize,
    pub timers: usize,
    pub servers_created: u64,
    pub clients_created: u64,
}

/// The stream thread's way back into the core without keeping it alive.
struct SinkRef(std::sync::Weak<Core>);

impl StreamSink for SinkRef {
    fn on_transport_error(&self, transport: Transport, addr: SocketAddr) {
        let Some(core) = self.0.upgrade() else { return };
        core.stats.send_errors.fetch_add(1, Ordering::Relaxed);
        if core.transport_errors.push((transport, addr)).is_ok() {
            core.wake();
        }
    }

    fn on_message(&self, bytes: Bytes, source: Source) {
        let Some(core) = self.0.upgrade() else { return };
        let Some(msg) = core.parse_inbound(bytes, source) else {
            return;
        };
        if core.enqueue(msg, source, false) {
            core.wake();
        }
    }
}

#[cfg(test)]
mod tests;
