//! The core: owns the listeners, turns received bytes into requests for the
//! application, answers what needs no application (malformed input, overload,
//! responses to relay), and sends what the application decides.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use parking_lot::Mutex;

use crate::proxy::context::Final;
use crate::proxy::stateful;
use crate::sip::{write, Framing, Limits, Message, Method, ParseError, Scheme};
use crate::stats::Stats;
use crate::timer::TimerFd;
use crate::tls::{CertInfo, TlsContext, TlsError, TlsSettings};
use crate::transaction::{server, Layer, Timing, TxnId};
use crate::transport::stream::{StreamConfig, StreamListener, StreamSink, Streams};
use crate::transport::udp::{ReaderThread, RecvBatch, UdpEndpoint, UdpReaderMode, BATCH};
use crate::transport::{Destination, ListenSpec, Source, Transport};

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<ListenSpec>,
    pub limits: Limits,
    /// Requests handed to the application and not yet acted on; beyond this
    /// the core answers new requests 503 itself (DESIGN §1, overload), and
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
        }
    }
}

/// A request the application must decide on.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub msg: Message,
    pub source: Source,
    /// Its server transaction (none for ACK and stateless-only requests).
    pub txn: Option<TxnId>,
}

/// What the core tells the application layer after reading or a timer.
pub enum Event {
    Request(Incoming),
    /// A `relay()` round finished with this final answer.
    RelayDone {
        relay: u64,
        result: Final,
    },
    /// A CANCEL ended this request while the application held it.
    Cancelled(TxnId),
}

pub struct Core {
    me: std::sync::Weak<Core>,
    pub config: Config,
    udp: Vec<UdpEndpoint>,
    /// Bound stream listeners (port 0 resolved).
    stream_local: Vec<(Transport, SocketAddr)>,
    recv: Mutex<RecvBatch>,
    /// `UdpReaderMode::Thread`: the threads reading `udp`.
    udp_readers: Mutex<Vec<ReaderThread>>,
    streams: Mutex<Option<Arc<Streams>>>,
    tls: Option<Arc<TlsContext>>,
    /// Messages read by the stream thread, processed on the loop thread.
    ingress: ArrayQueue<(Message, Source)>,
    /// Destinations the stream thread failed to deliver to.
    transport_errors: ArrayQueue<(Transport, SocketAddr)>,
    layer: Mutex<Layer>,
    timerfd: Mutex<TimerFd>,
    /// The application handles in-dialog requests itself (`@app.in_dialog`).
    in_dialog_to_app: AtomicBool,
    wake: OwnedFd,
    pending: AtomicUsize,
    /// `Config::max_pending` and `retry_after`, changeable while running.
    max_pending: AtomicUsize,
    retry_after: AtomicU32,
    /// Shutting down: new transactions are refused, in-flight ones go on.
    draining: AtomicBool,
    pub stats: Stats,
    pub resolver: crate::dns::Resolver,
    tag_counter: AtomicU64,
    tag_seed: u64,
    /// Prefix of the To tags of stateless answers (`stateless_tag`).
    stateless_prefix: String,
    /// REGISTERs answered before Python (`registrar.serve(app)`).
    pub registrars: crate::registrar::Registrars,
    /// Dialogs the routes track, their profiles and accounting records.
    pub dialogs: crate::dialog::Dialogs,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {transport}:{addr}: {source}")]
    Bind {
        transport: Transport,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl Core {
    /// Binds every listener (so a port in use fails here, before anything
    /// runs) and starts the stream thread.
    pub fn start(config: Config) -> Result<Arc<Core>, StartError> {
        let mut udp = Vec::new();
        let mut stream_listeners = Vec::new();
        for l in &config.listen {
            let bind_err = |source| StartError::Bind {
                transport: l.transport,
                addr: l.addr,
                source,
            };
            match l.transport {
                Transport::Udp => udp.push(UdpEndpoint::bind(l.addr).map_err(bind_err)?),
                Transport::Tcp | Transport::Tls | Transport::Ws | Transport::Wss => {
                    stream_listeners.push(StreamListener {
                        transport: l.transport,
                        socket: bind_tcp(l.addr).map_err(bind_err)?,
                    });
                }
            }
        }
        if config.listen.iter().any(|l| l.transport.is_stream()) {
            raise_fd_limit();
        }
        // SAFETY: eventfd returns a new descriptor or -1.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(StartError::Other(format!(
                "eventfd: {}",
                io::Error::last_os_error()
            )));
        }
        let has_tls_listener = stream_listeners
            .iter()
            .any(|l| matches!(l.transport, Transport::Tls | Transport::Wss));
        let tls = if has_tls_listener || !config.tls.is_empty() {
            let ctx = TlsContext::new(config.tls.clone())
                .map_err(|e| StartError::Other(e.to_string()))?;
            if has_tls_listener && !ctx.has_server_cert() {
                return Err(StartError::Other(
                    "a tls: or wss: listener needs a certificate (--tls-cert and --tls-key)".into(),
                ));
            }
            Some(Arc::new(ctx))
        } else {
            None
        };
        let stream_local = stream_listeners
            .iter()
            .filter_map(|l| Some((l.transport, l.socket.local_addr().ok()?)))
            .collect();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()) << 32;
        let timerfd = TimerFd::new().map_err(|e| StartError::Other(format!("timerfd: {e}")))?;
        let (max_pending, retry_after) = (config.max_pending.max(1), config.retry_after);
        let core = Arc::new_cyclic(|me| Core {
            me: me.clone(),
            layer: Mutex::new(Layer::default()),
            timerfd: Mutex::new(timerfd),
            in_dialog_to_app: AtomicBool::new(false),
            ingress: ArrayQueue::new(config.ingress_capacity.max(1)),
            transport_errors: ArrayQueue::new(1024),
            config,
            udp,
            stream_local,
            recv: Mutex::new(RecvBatch::default()),
            udp_readers: Mutex::new(Vec::new()),
            streams: Mutex::new(None),
            tls: tls.clone(),
            // SAFETY: efd is a fresh descriptor we own.
            wake: unsafe { OwnedFd::from_raw_fd(efd) },
            pending: AtomicUsize::new(0),
            max_pending: AtomicUsize::new(max_pending),
            retry_after: AtomicU32::new(retry_after),
            draining: AtomicBool::new(false),
            stats: Stats::default(),
            resolver: crate::dns::Resolver::default(),
            tag_counter: AtomicU64::new(1),
            tag_seed: seed,
            stateless_prefix: format!("{:x}-", mix64(seed ^ 0x5354_4154_454C_4553)),
            registrars: Default::default(),
            dialogs: Default::default(),
        });
        if !stream_listeners.is_empty() || tls.is_some() {
            let sink: Arc<dyn StreamSink> = Arc::new(SinkRef(core.me.clone()));
            let streams = Streams::start(
                stream_listeners,
                core.config.limits.clone(),
                core.config.stream.clone(),
                tls,
                sink,
            )
            .map_err(|e| StartError::Other(format!("stream runtime: {e}")))?;
            *core.streams.lock() = Some(Arc::new(streams));
        }
        if core.config.udp_reader == UdpReaderMode::Thread {
            core.start_udp_readers()
                .map_err(|e| StartError::Other(format!("udp reader thread: {e}")))?;
        }
        Ok(core)
    }

    pub fn stop(&self) {
        if let Some(s) = self.streams.lock().take() {
            s.stop();
        }
        for reader in std::mem::take(&mut *self.udp_readers.lock()) {
            reader.stop();
        }
    }

    /// Queues a message for the loop thread (the caller wakes it); a full
    /// queue answers a request 503 instead. True if queued.
    fn enqueue(&self, msg: Message, source: Source) -> bool {
        match self.ingress.push((msg, source)) {
            Ok(()) => true,
            Err((msg, source)) => {
                self.stats.overload_rejects.fetch_add(1, Ordering::Relaxed);
                if msg.is_request() && msg.method() != Method::Ack {
                    self.reply_to(&msg, source, 503, None, &self.retry_after_header());
                }
                false
            }
        }
    }

    /// Local addresses actually bound (port 0 resolved), per transport.
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        self.udp
            .iter()
            .map(|u| (Transport::Udp, u.local))
            .chain(self.stream_local.iter().copied())
            .collect()
    }

    pub fn udp_fds(&self) -> Vec<i32> {
        self.udp.iter().map(UdpEndpoint::fd).collect()
    }

    /// The eventfd that becomes readable when stream requests are queued.
    pub fn wake_fd(&self) -> i32 {
        self.wake.as_raw_fd()
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// The application finished with a request (it acted, or gave up).
    pub fn release(&self) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
    }

    /// Reads every datagram waiting on UDP listener `index` (bounded, for
    /// fairness) and processes it; what the application must see is appended.
    pub fn poll_udp(&self, index: usize, out: &mut Vec<Event>) {
        let Some(ep) = self.udp.get(index) else {
            return;
        };
        let mut batch = self.recv.lock();
        let mut layer = self.layer.lock();
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
                    self.process(&mut layer, msg, source, out);
                }
            }
            if n < BATCH {
                break;
            }
        }
        self.rearm(&layer);
    }

    /// Processes the messages queued by the stream thread.
    pub fn drain_streams(&self, out: &mut Vec<Event>) {
        let mut counter = [0u8; 8];
        // SAFETY: reading 8 bytes from our own non-blocking eventfd.
        unsafe { libc::read(self.wake.as_raw_fd(), counter.as_mut_ptr().cast(), 8) };
        let mut layer = self.layer.lock();
        while let Some((msg, source)) = self.ingress.pop() {
            self.process(&mut layer, msg, source, out);
        }
        while let Some((transport, addr)) = self.transport_errors.pop() {
            stateful::on_transport_error(self, &mut layer, transport, addr, out);
        }
        self.rearm(&layer);
    }

    /// The timer descriptor the event loop watches.
    pub fn timer_fd(&self) -> i32 {
        self.timerfd.lock().raw()
    }

    /// Runs every due transaction timer.
    pub fn on_timer(&self, out: &mut Vec<Event>) {
        self.timerfd.lock().clear();
        let mut layer = self.layer.lock();
        let due = layer.timers.pop_due(std::time::Instant::now());
        for (_, key) in due {
            stateful::on_timer(self, &mut layer, key, out);
        }
        self.rearm(&layer);
    }

    fn rearm(&self, layer: &Layer) {
        self.timerfd.lock().arm(layer.timers.next_deadline());
    }

    /// Runs `f` on the transaction layer, then re-arms the timer.
    pub fn with_layer<R>(&self, f: impl FnOnce(&Core, &mut Layer) -> R) -> R {
        let mut layer = self.layer.lock();
        let r = f(self, &mut layer);
        self.rearm(&layer);
        r
    }

    pub fn set_in_dialog_to_app(&self, on: bool) {
        self.in_dialog_to_app.store(on, Ordering::Relaxed);
    }

    pub fn set_timing(&self, timing: Timing) {
        self.layer.lock().timing = timing;
    }

    pub fn timing(&self) -> Timing {
        self.layer.lock().timing.clone()
    }

    /// Parses received bytes; malformed ones are answered (or dropped) here.
    pub fn parse_inbound(&self, bytes: Bytes, source: Source) -> Option<Message> {
        // A WebSocket message is one whole SIP message (RFC 7118 §5): no
        // Content-Length needed, as in a datagram.
        let framing = if source.transport.is_stream() && !source.transport.is_websocket() {
            Framing::Stream
        } else {
            Framing::Datagram
        };
        match Message::parse(bytes.clone(), framing, &self.config.limits) {
            Ok(m) => Some(m),
            Err(e) => {
                self.reject_unparsable(&bytes, &e, source);
                None
            }
        }
    }

    /// Runs a parsed message through the transaction layer and proxy core;
    /// requests that need policy are appended to `out`.
    pub fn process(&self, layer: &mut Layer, msg: Message, source: Source, out: &mut Vec<Event>) {
        if !msg.is_request() {
            self.stats.count_response_in(msg.status().unwrap_or(0));
            stateful::on_response(self, layer, msg, out);
            return;
        }
        self.stats.count_request(msg.method());
        if let Some(conn) = source.conn {
            self.note_alias(&msg, source, conn);
        }
        let routed_by_us = |m: &Message| {
            m.to_tag().is_some()
                && !self.in_dialog_to_app.load(Ordering::Relaxed)
                && crate::proxy::route_set(m)
                    .ok()
                    .and_then(|r| {
                        r.first()
                            .map(|n| self.is_local(n.uri.host, n.uri.port, None))
                    })
                    .unwrap_or(false)
        };
        match msg.method() {
            Method::Ack => {
                if let Some(id) = layer
                    .find_invite_server(&msg)
                    .or_else(|| layer.find_ack_target(&msg))
                {
                    server::on_ack(layer, id);
                    return;
                }
                if self.acks_stateless_reply(&msg) {
                    // ACK for our stateless non-2xx (e.g. the overload 503):
                    // absorbed here, never passed to Python or relayed on.
                    return;
                }
                if self.dialogs.observing() {
                    crate::dialog::on_ack(self, layer, &msg);
                }
                if routed_by_us(&msg) {
                    // ACK for a 2xx: no transaction, loose-routed statelessly.
                    let inc = Incoming {
                        msg,
                        source,
                        txn: None,
                    };
                    let _ = crate::proxy::forward_stateless(self, &inc, &Default::default());
                    return;
                }
                self.to_app(msg, source, None, out);
            }
            Method::Cancel if stateful::on_cancel(self, layer, &msg, source, out) => {}
            _ => {
                if let Some(id) = layer.find_server(&msg) {
                    // Same branch and sent-by is a retransmission (§17.2.3) only
                    // if it is the same request: some peers reuse branches.
                    let same = layer.servers.get(&id).is_some_and(|t| {
                        t.request.call_id() == msg.call_id() && t.request.cseq() == msg.cseq()
                    });
                    if same {
                        server::on_retransmission(self, layer, id);
                        return;
                    }
                }
                if msg.request_uri().is_some_and(|u| u.scheme == Scheme::Other) {
                    self.reply_to(&msg, source, 416, None, &[]);
                    return;
                }
                if crate::proxy::route::is_loop(self, &msg) {
                    self.reply_to(&msg, source, 482, None, &[]);
                    return;
                }
                if self.dialogs.observing() && msg.to_tag().is_some() {
                    crate::dialog::on_in_dialog_request(self, layer, &msg);
                }
                if routed_by_us(&msg) {
                    stateful::route_in_core(self, layer, msg, source, out);
                    return;
                }
                if msg.method() == Method::Register && self.registrars.handle(self, &msg, source) {
                    return;
                }
                if self.overloaded(&msg, source) {
                    return;
                }
                let id = server::create(layer, msg.clone(), source);
                if let Some(t) = layer.servers.get_mut(&id) {
                    t.app_holds = true;
                }
                self.pending.fetch_add(1, Ordering::Relaxed);
                out.push(Event::Request(Incoming {
                    msg,
                    source,
                    txn: Some(id),
                }));
            }
        }
    }

    /// RFC 5923: a request whose top Via carries `alias` makes its sent-by
    /// address reach back over the connection it came in on. Only IP
    /// sent-bys are taken (a name would need resolving and, over TLS,
    /// matching against the peer's certificate).
    fn note_alias(&self, msg: &Message, source: Source, conn: u64) {
        let via = msg.top_via();
        if via.param("alias").is_none() {
            return;
        }
        let Ok(ip) = via
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            return;
        };
        let default_port = if source.transport == Transport::Tls {
            5061
        } else {
            5060
        };
        let alias = SocketAddr::new(ip, via.port.unwrap_or(default_port));
        if alias != source.addr {
            self.add_connection_alias(conn, alias);
        }
    }

    fn to_app(&self, msg: Message, source: Source, txn: Option<TxnId>, out: &mut Vec<Event>) {
        if self.overloaded(&msg, source) {
            return;
        }
        self.pending.fetch_add(1, Ordering::Relaxed);
        out.push(Event::Request(Incoming { msg, source, txn }));
    }

    /// The bound on requests the application holds (`Config::max_pending`).
    pub fn max_pending(&self) -> usize {
        self.max_pending.load(Ordering::Relaxed)
    }

    pub fn set_max_pending(&self, n: usize) {
        self.max_pending.store(n.max(1), Ordering::Relaxed);
    }

    /// Seconds in the Retry-After of the core's 503s.
    pub fn retry_after(&self) -> u32 {
        self.retry_after.load(Ordering::Relaxed)
    }

    pub fn set_retry_after(&self, seconds: u32) {
        self.retry_after.store(seconds, Ordering::Relaxed);
    }

    /// From now on new transactions (initial requests) are answered 503 +
    /// Retry-After, so callers try another server; requests inside dialogs,
    /// CANCELs and responses still flow, so calls in progress complete.
    pub fn start_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Server and client transactions still waiting for a final response
    /// (not those only absorbing retransmissions before they end).
    pub fn open_transactions(&self) -> (usize, usize) {
        let layer = self.layer.lock();
        (
            layer.servers.values().filter(|t| !t.is_final()).count(),
            layer.clients.values().filter(|t| !t.is_final()).count(),
        )
    }

    fn retry_after_header(&self) -> Vec<(String, String)> {
        vec![("Retry-After".to_string(), self.retry_after().to_string())]
    }

    /// Sheds load before any Python runs: 503 + Retry-After (ACKs are dropped).
    ///
    /// Requests inside a dialog (To tag: ACK, BYE, re-INVITE) belong to calls
    /// already admitted; shedding them would leave those calls hanging (a BYE
    /// refused with 503), so they get headroom up to twice the bound, which
    /// still caps what the application holds.
    ///
    /// While draining, every request outside a dialog is refused the same way.
    fn overloaded(&self, msg: &Message, source: Source) -> bool {
        let in_dialog = msg.to_tag().is_some();
        if self.draining() && !in_dialog {
            self.stats.drain_rejects.fetch_add(1, Ordering::Relaxed);
        } else {
            let limit = if in_dialog {
                self.max_pending().saturating_mul(2)
            } else {
                self.max_pending()
            };
            if self.pending.load(Ordering::Relaxed) < limit {
                return false;
            }
            self.stats.overload_rejects.fetch_add(1, Ordering::Relaxed);
        }
        if msg.method() != Method::Ack {
            self.reply_to(msg, source, 503, None, &self.retry_after_header());
        }
        true
    }

    fn reject_unparsable(&self, bytes: &[u8], e: &ParseError, source: Source) {
        self.stats.parse_errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(peer = %source.addr, error = %e, "rejecting malformed message");
        if let Some(resp) = write::error_response_raw(bytes, e.status, e.reason) {
            self.send(
                Destination {
                    transport: source.transport,
                    addr: source.addr,
                    conn: source.conn,
                },
                resp.into(),
            );
        }
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
        let tag = self.stateless_tag();
        let resp = write::build_response(
            req,
            Some(source.addr),
            status,
            reason,
            Some(&tag),
            extra,
            b"",
        );
        self.send_response(req, source, resp.into());
    }

    /// Sends a response to a request per RFC 3261 §18.2.2: back over the
    /// request's connection, else to `received`/`rport` (the source address).
    pub fn send_response(&self, req: &Message, source: Source, bytes: Bytes) {
        self.stats.count_response_out(&bytes);
        let via = req.top_via();
        let mut dest = Destination {
            transport: source.transport,
            addr: source.addr,
            conn: source.conn,
        };
        if !source.transport.is_stream() {
            // Without rport, the response goes to the port in sent-by (§18.2.2).
            if via.rport().is_none() {
                dest.addr.set_port(via.port.unwrap_or(5060));
            }
            if let Some(maddr) = via.param("maddr").and_then(|m| m.parse::<IpAddr>().ok()) {
                dest.addr.set_ip(maddr);
            }
        }
        self.send(dest, bytes);
    }

    /// Sends bytes; UDP straight from this thread, streams through their queue.
    pub fn send(&self, dest: Destination, bytes: Bytes) -> bool {
        if dest.transport.is_stream() {
            let streams = self.streams.lock().clone();
            let Some(streams) = streams else { return false };
            return streams.send(dest, bytes);
        }
        let Some(ep) = self.udp_for(dest.addr) else {
            self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        match ep.send_to(&bytes, dest.addr) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(to = %dest.addr, error = %e, "UDP send failed");
                self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn udp_for(&self, to: SocketAddr) -> Option<&UdpEndpoint> {
        self.udp
            .iter()
            .find(|u| u.local.is_ipv6() == to.is_ipv6())
            .or(self.udp.first())
    }

    /// The listener to put in our Via / Record-Route for `transport` and the
    /// destination's address family.
    pub fn advertised(&self, transport: Transport, to: SocketAddr) -> SocketAddr {
        let candidates: Vec<SocketAddr> = match transport {
            Transport::Udp => self.udp.iter().map(|u| u.local).collect(),
            _ => {
                let same: Vec<SocketAddr> = self
                    .stream_local
                    .iter()
                    .filter(|(t, _)| *t == transport)
                    .map(|(_, a)| *a)
                    .collect();
                if same.is_empty() {
                    self.stream_local.iter().map(|(_, a)| *a).collect()
                } else {
                    same
                }
            }
        };
        let mut a = candidates
            .iter()
            .find(|a| a.is_ipv6() == to.is_ipv6())
            .or(candidates.first())
            .copied()
            .unwrap_or(to);
        if a.ip().is_unspecified() {
            if let Some(ip) = local_ip_towards(to) {
                a.set_ip(ip);
            }
        }
        a
    }

    /// Whether `host:port` names this proxy (a listener or an alias).
    pub fn is_local(&self, host: &str, port: Option<u16>, transport: Option<Transport>) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let default_port = if transport == Some(Transport::Tls) {
            5061
        } else {
            5060
        };
        let port = port.unwrap_or(default_port);
        if self
            .config
            .aliases
            .iter()
            .any(|a| a.eq_ignore_ascii_case(host))
        {
            return self.local_addrs().iter().any(|(_, a)| a.port() == port);
        }
        let Ok(ip) = host.parse::<IpAddr>() else {
            return false;
        };
        self.local_addrs().iter().any(|(_, a)| {
            a.port() == port
                && (a.ip() == ip || (a.ip().is_unspecified() && a.is_ipv6() == ip.is_ipv6()))
        })
    }

    /// A fresh To tag / identifier: unique per process run, not guessable.
    pub fn new_tag(&self) -> String {
        let n = self.tag_counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "{:x}",
            mix64(self.tag_seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        )
    }

    /// The To tag of a response the core sends without a transaction
    /// (`reply_to`: overload 503, 416, 482, ...): a per-run secret prefix, so
    /// that the ACK for such a non-2xx answer, which is hop-by-hop and ours to
    /// absorb (RFC 3261 §17.2.1), is recognised without keeping any state.
    pub fn stateless_tag(&self) -> String {
        format!("{}{}", self.stateless_prefix, self.new_tag())
    }

    /// Whether `ack` acknowledges a stateless answer of ours (`stateless_tag`).
    fn acks_stateless_reply(&self, ack: &Message) -> bool {
        ack.to_tag()
            .is_some_and(|t| t.starts_with(self.stateless_prefix.as_str()))
    }

    /// A per-run secret mixed into stateless branches.
    pub fn branch_key(&self) -> u64 {
        self.tag_seed
    }

    /// Messages read by the stream thread and not yet processed.
    pub fn ingress_depth(&self) -> usize {
        self.ingress.len()
    }

    /// Re-reads the TLS certificates, keys and CAs; open connections keep
    /// theirs. An error leaves the running configuration in place.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        match &self.tls {
            Some(t) => t.reload(),
            None => Err(TlsError::Config("TLS is not configured".into())),
        }
    }

    /// The loaded TLS certificates (empty without TLS).
    pub fn tls_info(&self) -> Vec<CertInfo> {
        self.tls.as_ref().map_or_else(Vec::new, |t| t.cert_info())
    }

    /// RFC 5923: requests for `alias` may reuse connection `conn`.
    pub fn add_connection_alias(&self, conn: u64, alias: SocketAddr) {
        if let Some(s) = self.streams.lock().as_ref() {
            s.add_alias(conn, alias);
        }
    }

    pub fn connection_count(&self) -> usize {
        self.streams
            .lock()
            .as_ref()
            .map_or(0, |s| s.connection_count())
    }

    /// Open connections per stream transport, for `stats.get`.
    pub fn connections_by_transport(&self) -> Vec<(Transport, usize)> {
        let streams = self.streams.lock();
        [
            Transport::Tcp,
            Transport::Tls,
            Transport::Ws,
            Transport::Wss,
        ]
        .into_iter()
        .map(|t| (t, streams.as_ref().map_or(0, |s| s.connections_of(t))))
        .collect()
    }
}

fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Lifts the soft open-files limit to the hard one: each stream connection
/// is a descriptor, and distributions' default soft limit (1024) would cap a
/// proxy meant for tens of thousands of connections (decision 0016).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::debug!("cannot raise the open-files limit");
            }
        }
    }
}

/// The local address the kernel would use to reach `to` (no packet is sent).
fn local_ip_towards(to: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if to.is_ipv6() {
        "[::]:0".parse().ok()?
    } else {
        "0.0.0.0:0".parse().ok()?
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(to).ok()?;
    Some(s.local_addr().ok()?.ip())
}

impl Core {
    /// Wakes the loop thread to run `drain_streams`.
    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes to our own eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// SplitMix64 finaliser: spreads a counter into an unpredictable-looking tag.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[path = "core_udp_reader.rs"]
mod udp_reader;

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
        if core.enqueue(msg, source) {
            core.wake();
        }
    }
}
