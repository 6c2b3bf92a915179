//! Stream transports (TCP now; TLS and WebSocket build on it) on a tokio
//! runtime thread of their own. Each connection has a bounded write queue: a
//! peer that stops reading fills only its own queue, and is then dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{Source, Transport};
use crate::sip::{frame_stream, Limits, StreamFrame};

/// Messages queued per connection before the peer counts as not reading.
const WRITE_QUEUE: usize = 512;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection with no traffic for this long is closed.
const IDLE_LIFETIME: Duration = Duration::from_secs(3600);
/// The kernel's send buffer per connection. Left to autotuning it grows to
/// megabytes, which a peer that stops reading would hold hostage (per
/// connection) long before its write queue fills; SIP needs far less.
const KERNEL_SEND_BUFFER: usize = 64 * 1024;

/// Receives what the stream thread learns: messages and failed deliveries.
pub trait StreamSink: Send + Sync + 'static {
    fn on_message(&self, bytes: Bytes, source: Source);
    /// Messages to `addr` over `transport` were lost: the connect failed or
    /// timed out, the write queue overflowed, or a write failed.
    fn on_transport_error(&self, transport: Transport, addr: SocketAddr);
}

struct Conn {
    tx: mpsc::Sender<Bytes>,
    /// Wakes the reader task to close the connection (its peer stopped reading).
    close: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct Registry {
    by_id: HashMap<u64, Conn>,
    by_peer: HashMap<SocketAddr, u64>,
}

/// Handle to the stream runtime, shared with the loop thread.
pub struct Streams {
    rt: tokio::runtime::Handle,
    registry: Arc<Mutex<Registry>>,
    next_id: Arc<AtomicU64>,
    sink: Arc<dyn StreamSink>,
    limits: Limits,
    shutdown: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Streams {
    /// Starts the runtime thread serving `listeners` (already bound, so a port
    /// in use is reported by the caller before anything starts).
    pub fn start(
        listeners: Vec<std::net::TcpListener>,
        limits: Limits,
        sink: Arc<dyn StreamSink>,
    ) -> std::io::Result<Streams> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let registry = Arc::new(Mutex::new(Registry::default()));
        let next_id = Arc::new(AtomicU64::new(1));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (reg, ids, sink2, limits2) = (
            registry.clone(),
            next_id.clone(),
            sink.clone(),
            limits.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("sipr-streams".into())
            .spawn(move || {
                rt.block_on(async move {
                    for l in listeners {
                        let local = l.local_addr().expect("bound listener");
                        let l = TcpListener::from_std(l).expect("non-blocking listener");
                        let (reg, ids, sink, limits) =
                            (reg.clone(), ids.clone(), sink2.clone(), limits2.clone());
                        tokio::spawn(async move {
                            loop {
                                let Ok((stream, peer)) = l.accept().await else {
                                    // EMFILE and friends: back off instead of spinning.
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                    continue;
                                };
                                let _ = stream.set_nodelay(true);
                                bound_send_buffer(&stream);
                                let id = ids.fetch_add(1, Ordering::Relaxed);
                                run_conn(
                                    stream,
                                    id,
                                    peer,
                                    local,
                                    reg.clone(),
                                    sink.clone(),
                                    limits.clone(),
                                );
                            }
                        });
                    }
                    let _ = stop_rx.await;
                });
            })?;
        Ok(Streams {
            rt: handle,
            registry,
            next_id,
            sink,
            limits,
            shutdown: Mutex::new(Some(stop_tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues bytes on connection `conn` if it is open, else on any open
    /// connection to `addr`, else opens one. Returns false when the message was
    /// dropped (queue full: that connection is closed).
    pub fn send(&self, conn: Option<u64>, addr: SocketAddr, bytes: Bytes) -> bool {
        let tx = {
            let reg = self.registry.lock();
            conn.and_then(|c| reg.by_id.get(&c))
                .or_else(|| reg.by_peer.get(&addr).and_then(|c| reg.by_id.get(c)))
                .map(|c| (c.tx.clone(), c.close.clone()))
        };
        if let Some((tx, close)) = tx {
            return match tx.try_send(bytes) {
                Ok(()) => true,
                Err(_) => {
                    // A full queue means the peer stopped reading: close this
                    // connection (its transactions fail over), never wait.
                    tracing::info!(%addr, "stream write queue full: closing the connection");
                    close.notify_one();
                    self.sink.on_transport_error(Transport::Tcp, addr);
                    false
                }
            };
        }
        let reg = self.registry.clone();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (limits, sink) = (self.limits.clone(), self.sink.clone());
        self.rt.spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await
            else {
                tracing::debug!(%addr, "TCP connect failed");
                sink.on_transport_error(Transport::Tcp, addr);
                return;
            };
            let _ = stream.set_nodelay(true);
            bound_send_buffer(&stream);
            let local = stream.local_addr().unwrap_or(addr);
            let tx = run_conn(stream, id, addr, local, reg, sink, limits);
            let _ = tx.send(bytes).await;
        });
        true
    }

    pub fn connection_count(&self) -> usize {
        self.registry.lock().by_id.len()
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

fn bound_send_buffer(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_send_buffer_size(KERNEL_SEND_BUFFER);
}

/// Spawns the reader and writer of one connection; returns its queue.
fn run_conn(
    stream: TcpStream,
    id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    registry: Arc<Mutex<Registry>>,
    sink: Arc<dyn StreamSink>,
    limits: Limits,
) -> mpsc::Sender<Bytes> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    let close = Arc::new(tokio::sync::Notify::new());
    {
        let mut reg = registry.lock();
        reg.by_id.insert(
            id,
            Conn {
                tx: tx.clone(),
                close: close.clone(),
            },
        );
        reg.by_peer.insert(peer, id);
    }
    let (mut rd, mut wr) = stream.into_split();
    let pong_tx = tx.clone();
    let write_sink = sink.clone();
    let writer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                write_sink.on_transport_error(Transport::Tcp, peer);
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let source = Source {
            transport: Transport::Tcp,
            addr: peer,
            local,
            conn: Some(id),
        };
        let mut buf = BytesMut::with_capacity(4096);
        'read: loop {
            let read = tokio::select! {
                r = tokio::time::timeout(IDLE_LIFETIME, rd.read_buf(&mut buf)) => r,
                _ = close.notified() => break 'read,
            };
            match read {
                Ok(Ok(n)) if n > 0 => {}
                _ => break,
            }
            loop {
                match frame_stream(&buf, &limits) {
                    StreamFrame::Incomplete => break,
                    StreamFrame::KeepAlive { consumed, pong } => {
                        let _ = buf.split_to(consumed);
                        if pong && pong_tx.try_send(Bytes::from_static(b"\r\n")).is_err() {
                            break 'read;
                        }
                    }
                    StreamFrame::Message(len) => {
                        let msg = buf.split_to(len).freeze();
                        sink.on_message(msg, source);
                    }
                    StreamFrame::Invalid(why) => {
                        tracing::info!(%peer, why, "closing stream connection");
                        break 'read;
                    }
                }
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(4096);
            }
        }
        let mut reg = registry.lock();
        reg.by_id.remove(&id);
        if reg.by_peer.get(&peer) == Some(&id) {
            reg.by_peer.remove(&peer);
        }
        drop(reg);
        writer.abort();
    });
    tx
}
