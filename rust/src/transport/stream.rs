//! Stream transports (TCP, TLS, and WebSocket over either, RFC 7118) on a
//! tokio runtime thread of their own.
//!
//! Every connection, whatever its byte stream, is one reader task and one
//! writer task around a bounded write queue ([`spawn_connection`]): a peer that
//! stops reading fills only its own queue, and is then dropped. Connects never
//! block anyone: a message for a peer without a connection queues on a new
//! connection that is still connecting, and a connect that fails or times out
//! is reported to the [`StreamSink`] so the transactions towards that peer fail
//! at once (RFC 3261 §8.1.3.1) instead of waiting for Timer B/F.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

use super::backoff::ConnectBackoff;
use super::{ws, Destination, Source, Transport};
use crate::sip::Limits;
use crate::tls::TlsContext;

mod connection;
use connection::{spawn_connection, ConnMeta};

/// Initial size of a connection's read buffer.
const READ_BUFFER: usize = 4096;
/// A connection quiet for this long gives its (empty) read buffer back.
const SHED_BUFFER_AFTER: Duration = Duration::from_secs(5);
/// The kernel's send buffer per connection. Left to autotuning it grows to
/// megabytes, which a peer that stops reading would hold hostage (per
/// connection) long before its write queue fills; SIP needs far less.
const KERNEL_SEND_BUFFER: usize = 64 * 1024;

/// Tunables of the stream transports.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Messages queued per connection before the peer counts as not reading.
    pub write_queue: usize,
    /// A TCP connect plus TLS handshake that takes longer fails.
    pub connect_timeout: Duration,
    /// A connection with no traffic either way for this long is closed
    /// (Kamailio's `tcp_connection_lifetime`).
    pub idle_lifetime: Duration,
    /// Open connections (both directions); beyond it new ones are refused.
    pub max_connections: usize,
    /// After a connect to an address fails, messages needing a new
    /// connection to it fail at once for this long (zero: never).
    pub connect_backoff: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            write_queue: 512,
            connect_timeout: Duration::from_secs(5),
            idle_lifetime: Duration::from_secs(600),
            max_connections: 65_536,
            connect_backoff: Duration::from_secs(2),
        }
    }
}

/// Receives what the stream thread learns: messages and failed deliveries.
pub trait StreamSink: Send + Sync + 'static {
    fn on_message(&self, bytes: Bytes, source: Source);
    /// Messages to `addr` over `transport` were lost: the connect failed or
    /// timed out, the write queue overflowed, or a write failed.
    fn on_transport_error(&self, transport: Transport, addr: SocketAddr);
}

/// A bound listening socket and what runs on its connections.
pub struct StreamListener {
    pub transport: Transport,
    pub socket: std::net::TcpListener,
}

struct Conn {
    transport: Transport,
    peer: SocketAddr,
    tx: mpsc::Sender<Bytes>,
    /// Wakes the reader task to close the connection.
    close: Arc<Notify>,
    /// RFC 5923 aliases: other addresses this connection stands for.
    aliases: Vec<SocketAddr>,
}

#[derive(Default)]
struct Registry {
    by_id: HashMap<u64, Conn>,
    by_peer: HashMap<(Transport, SocketAddr), u64>,
}

impl Registry {
    fn lookup(&self, dest: &Destination) -> Option<&Conn> {
        dest.conn.and_then(|c| self.by_id.get(&c)).or_else(|| {
            self.by_peer
                .get(&(dest.transport, dest.addr))
                .and_then(|c| self.by_id.get(c))
        })
    }

    fn remove(&mut self, id: u64) -> Option<Conn> {
        let conn = self.by_id.remove(&id)?;
        for addr in std::iter::once(&conn.peer).chain(&conn.aliases) {
            if self.by_peer.get(&(conn.transport, *addr)) == Some(&id) {
                self.by_peer.remove(&(conn.transport, *addr));
            }
        }
        Some(conn)
    }
}

/// What every connection task shares.
struct Shared {
    registry: Mutex<Registry>,
    next_id: AtomicU64,
    open: AtomicUsize,
    sink: Arc<dyn StreamSink>,
    limits: Limits,
    config: StreamConfig,
    tls: Option<Arc<TlsContext>>,
    /// Reference point of the coarse activity clocks (seconds).
    epoch: Instant,
    backoff: ConnectBackoff,
    /// Connects that failed or timed out, and messages failed at once
    /// instead of connecting (`backoff`), since start.
    connects_failed: AtomicU64,
    connects_held_back: AtomicU64,
}

impl Shared {
    fn now_secs(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// Reserves a connection slot, or refuses when the bound is reached.
    fn admit(&self) -> bool {
        let max = self.config.max_connections;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Adds a connection (connected or still connecting) to the registry.
    fn register(&self, transport: Transport, peer: SocketAddr) -> (u64, Pending) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel::<Bytes>(self.config.write_queue.max(1));
        let close = Arc::new(Notify::new());
        let mut reg = self.registry.lock();
        reg.by_id.insert(
            id,
            Conn {
                transport,
                peer,
                tx: tx.clone(),
                close: close.clone(),
                aliases: Vec::new(),
            },
        );
        reg.by_peer.insert((transport, peer), id);
        (id, Pending { rx, tx, close })
    }

    fn unregister(&self, id: u64) {
        if self.registry.lock().remove(id).is_some() {
            self.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The queue ends of a registered connection, before its tasks run.
struct Pending {
    rx: mpsc::Receiver<Bytes>,
    tx: mpsc::Sender<Bytes>,
    close: Arc<Notify>,
}

/// Handle to the stream runtime, shared with the loop thread.
pub struct Streams {
    rt: tokio::runtime::Handle,
    shared: Arc<Shared>,
    shutdown: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Streams {
    /// Starts the runtime thread serving `listeners` (already bound, so a port
    /// in use is reported by the caller before anything starts). `tls` is
    /// needed for TLS listeners and outgoing TLS.
    pub fn start(
        listeners: Vec<StreamListener>,
        limits: Limits,
        config: StreamConfig,
        tls: Option<Arc<TlsContext>>,
        sink: Arc<dyn StreamSink>,
    ) -> std::io::Result<Streams> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let backoff = ConnectBackoff::new(config.connect_backoff);
        let shared = Arc::new(Shared {
            backoff,
            connects_failed: AtomicU64::new(0),
            connects_held_back: AtomicU64::new(0),
            registry: Mutex::new(Registry::default()),
            next_id: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            sink,
            limits,
            config,
            tls,
            epoch: Instant::now(),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let accept_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sipr-streams".into())
            .spawn(move || {
                rt.block_on(async move {
                    for l in listeners {
                        let shared = accept_shared.clone();
                        let local = l.socket.local_addr().expect("bound listener");
                        let socket =
                            TcpListener::from_std(l.socket).expect("non-blocking listener");
                        tokio::spawn(accept_loop(socket, l.transport, local, shared));
                    }
                    let _ = stop_rx.await;
                });
            })?;
        Ok(Streams {
            rt: handle,
            shared,
            shutdown: Mutex::new(Some(stop_tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues bytes on connection `dest.conn` if it is open, else on an open
    /// connection to `dest.addr` (or one aliased to it), else on a new
    /// connection. Returns false when the message was dropped: that is also
    /// reported through [`StreamSink::on_transport_error`], possibly later
    /// (a connect that fails after this returned true).
    pub fn send(&self, dest: Destination, bytes: Bytes) -> bool {
        let found = {
            let reg = self.shared.registry.lock();
            reg.lookup(&dest)
                .map(|c| (c.tx.clone(), c.close.clone(), c.transport, c.peer))
        };
        if let Some((tx, close, transport, peer)) = found {
            let bytes = if transport.is_websocket() {
                ws::encode_message(&bytes)
            } else {
                bytes
            };
            return match tx.try_send(bytes) {
                Ok(()) => true,
                Err(_) => {
                    // A full queue means the peer stopped reading: close this
                    // connection (its transactions fail over), never wait.
                    tracing::info!(%peer, "stream write queue full: closing the connection");
                    close.notify_one();
                    self.shared.sink.on_transport_error(transport, peer);
                    false
                }
            };
        }
        if dest.transport.is_websocket() {
            // A WebSocket client is reached only over the connection it opened.
            tracing::debug!(addr = %dest.addr, "no open WebSocket connection to this client");
            self.shared
                .sink
                .on_transport_error(dest.transport, dest.addr);
            return false;
        }
        if self.shared.backoff.refuses(dest.transport, dest.addr) {
            self.shared
                .connects_held_back
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(addr = %dest.addr, "a connect there failed moments ago: not connecting");
            self.shared
                .sink
                .on_transport_error(dest.transport, dest.addr);
            return false;
        }
        if !self.shared.admit() {
            tracing::info!(addr = %dest.addr, "connection limit reached: not connecting");
            self.shared
                .sink
                .on_transport_error(dest.transport, dest.addr);
            return false;
        }
        let (id, pending) = self.shared.register(dest.transport, dest.addr);
        let _ = pending.tx.try_send(bytes);
        self.rt
            .spawn(connect(self.shared.clone(), id, dest, pending));
        true
    }

    /// RFC 5923: requests for `alias` may reuse connection `conn`.
    pub fn add_alias(&self, conn: u64, alias: SocketAddr) {
        let mut reg = self.shared.registry.lock();
        let Some(c) = reg.by_id.get_mut(&conn) else {
            return;
        };
        if c.peer == alias || c.aliases.contains(&alias) || c.aliases.len() >= 4 {
            return;
        }
        c.aliases.push(alias);
        let transport = c.transport;
        reg.by_peer.insert((transport, alias), conn);
    }

    /// Whether connection `conn` is still open.
    pub fn is_open(&self, conn: u64) -> bool {
        self.shared.registry.lock().by_id.contains_key(&conn)
    }

    pub fn connection_count(&self) -> usize {
        self.shared.registry.lock().by_id.len()
    }

    /// Connects failed, and messages failed without a connect because one
    /// to the same address had just failed (`StreamConfig::connect_backoff`).
    pub fn connect_failures(&self) -> (u64, u64) {
        (
            self.shared.connects_failed.load(Ordering::Relaxed),
            self.shared.connects_held_back.load(Ordering::Relaxed),
        )
    }

    /// Open connections of `transport` (a walk over the registry: for
    /// monitoring, not for the message path).
    pub fn connections_of(&self, transport: Transport) -> usize {
        let reg = self.shared.registry.lock();
        reg.by_id
            .values()
            .filter(|c| c.transport == transport)
            .count()
    }

    pub fn stop(&self) {
        if let Some(tx) = self.shutdown.lock().take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(
    socket: TcpListener,
    transport: Transport,
    local: SocketAddr,
    shared: Arc<Shared>,
) {
    loop {
        let Ok((stream, peer)) = socket.accept().await else {
            // EMFILE and friends: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if !shared.admit() {
            tracing::debug!(%peer, "connection limit reached: refusing");
            continue;
        }
        let _ = stream.set_nodelay(true);
        bound_send_buffer(&stream);
        let (id, pending) = shared.register(transport, peer);
        let meta = ConnMeta {
            id,
            transport,
            peer,
            local,
        };
        match transport {
            Transport::Tls | Transport::Wss => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let Some(acceptor) = shared.tls.as_ref().and_then(|t| t.acceptor(local)) else {
                        shared.unregister(id);
                        return;
                    };
                    let handshake = tokio::time::timeout(
                        shared.config.connect_timeout,
                        acceptor.accept(stream),
                    );
                    match handshake.await {
                        Ok(Ok(tls_stream)) => spawn_connection(tls_stream, meta, pending, shared),
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "TLS handshake failed");
                            shared.unregister(id);
                        }
                        Err(_) => {
                            tracing::info!(%peer, "TLS handshake timed out");
                            shared.unregister(id);
                        }
                    }
                });
            }
            _ => spawn_connection(stream, meta, pending, shared.clone()),
        }
    }
}

fn bound_send_buffer(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_send_buffer_size(KERNEL_SEND_BUFFER);
}

/// Opens connection `id` to `dest` (TCP, then TLS when asked) within the
/// connect timeout, then runs it; a failure is reported to the sink.
async fn connect(shared: Arc<Shared>, id: u64, dest: Destination, pending: Pending) {
    let attempt = async {
        let tcp = TcpStream::connect(dest.addr)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        bound_send_buffer(&tcp);
        let local = tcp.local_addr().map_err(|e| e.to_string())?;
        if local == dest.addr {
            // TCP simultaneous open with itself: connecting to a closed port
            // of this host can pick that very port as the source (Linux
            // does, now and then, for loopback), and the "peer" is our own
            // socket: what we send would come back to us as if from it.
            return Err("connected to itself (no one listens there)".to_string());
        }
        let meta = ConnMeta {
            id,
            transport: dest.transport,
            peer: dest.addr,
            local,
        };
        if dest.transport != Transport::Tls {
            spawn_connection(tcp, meta, pending, shared.clone());
            return Ok(());
        }
        let tls = shared
            .tls
            .clone()
            .ok_or_else(|| "no TLS configuration".to_string())?;
        let tls_stream = tls
            .connector()
            .connect(crate::tls::server_name_for(dest.addr), tcp)
            .await
            .map_err(|e| e.to_string())?;
        spawn_connection(tls_stream, meta, pending, shared.clone());
        Ok::<(), String>(())
    };
    let outcome = tokio::time::timeout(shared.config.connect_timeout, attempt).await;
    let error = match outcome {
        Ok(Ok(())) => {
            shared.backoff.connected(dest.transport, dest.addr);
            return;
        }
        Ok(Err(e)) => e,
        Err(_) => "timed out".to_string(),
    };
    tracing::info!(addr = %dest.addr, transport = %dest.transport, error, "connect failed");
    shared.backoff.connect_failed(dest.transport, dest.addr);
    shared.connects_failed.fetch_add(1, Ordering::Relaxed);
    shared.unregister(id);
    shared.sink.on_transport_error(dest.transport, dest.addr);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(transport: Transport, port: u16, conn: Option<u64>) -> Destination {
        Destination {
            transport,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            conn,
        }
    }

    #[test]
    fn registry_lookup_prefers_connection_then_peer_and_alias() {
        let mut reg = Registry::default();
        let (tx, _rx) = mpsc::channel(1);
        let peer = SocketAddr::from(([127, 0, 0, 1], 5000));
        let alias = SocketAddr::from(([127, 0, 0, 1], 5060));
        reg.by_id.insert(
            7,
            Conn {
                transport: Transport::Tls,
                peer,
                tx,
                close: Arc::new(Notify::new()),
                aliases: vec![alias],
            },
        );
        reg.by_peer.insert((Transport::Tls, peer), 7);
        reg.by_peer.insert((Transport::Tls, alias), 7);
        assert!(reg.lookup(&dest(Transport::Tls, 5000, None)).is_some());
        assert!(reg.lookup(&dest(Transport::Tls, 5060, None)).is_some());
        // Same address, other transport: not this connection.
        assert!(reg.lookup(&dest(Transport::Tcp, 5000, None)).is_none());
        assert!(reg.lookup(&dest(Transport::Tcp, 1, Some(7))).is_some());
        assert!(reg.remove(7).is_some());
        assert!(reg.by_peer.is_empty());
        assert!(reg.lookup(&dest(Transport::Tls, 5060, None)).is_none());
    }
}
