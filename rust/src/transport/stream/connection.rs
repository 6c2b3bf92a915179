//! One registered connection at work: its writer task draining the bounded
//! queue, its reader task framing SIP messages, keep-alive pongs and the idle
//! lifetime.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Pending, Shared, READ_BUFFER, SHED_BUFFER_AFTER};
use crate::sip::{frame_stream, StreamFrame};
use crate::transport::{ws, Source, Transport};

#[derive(Clone, Copy)]
pub(super) struct ConnMeta {
    pub id: u64,
    pub transport: Transport,
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// Runs one registered connection over any byte stream: a writer task
/// draining its queue and a reader task framing SIP messages (RFC 3261
/// §18.3), answering CRLF keep-alive pings (RFC 5626 §4.4.1) and closing it
/// when idle for the configured lifetime.
pub(super) fn spawn_connection<S>(stream: S, meta: ConnMeta, pending: Pending, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let Pending { mut rx, tx, close } = pending;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let last_write = Arc::new(AtomicU64::new(shared.now_secs()));
    let writer_clock = last_write.clone();
    let writer_shared = shared.clone();
    let writer_close = close.clone();
    let writer = tokio::spawn(async move {
        let mut batch = BytesMut::new();
        while let Some(first) = rx.recv().await {
            // Coalesce what is already queued: fewer syscalls and TLS records.
            let ok = if rx.is_empty() {
                wr.write_all(&first).await.is_ok()
            } else {
                batch.clear();
                batch.extend_from_slice(&first);
                while batch.len() < 65_536 {
                    let Ok(more) = rx.try_recv() else { break };
                    batch.extend_from_slice(&more);
                }
                wr.write_all(&batch).await.is_ok()
            };
            if !ok || wr.flush().await.is_err() {
                writer_shared
                    .sink
                    .on_transport_error(meta.transport, meta.peer);
                writer_close.notify_one();
                break;
            }
            writer_clock.store(writer_shared.now_secs(), Ordering::Relaxed);
        }
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let source = Source {
            transport: meta.transport,
            addr: meta.peer,
            local: meta.local,
            conn: Some(meta.id),
        };
        let mut last_read = shared.now_secs();
        let idle = shared.config.idle_lifetime;
        // No read buffer while idle (most of the memory of an idle
        // connection): it is allocated when bytes arrive and released once
        // the connection has been quiet for SHED_BUFFER_AFTER.
        let mut buf = BytesMut::new();
        let mut websocket = meta
            .transport
            .is_websocket()
            .then(|| ws::WsSession::new(shared.limits.max_message_size));
        let opened = tokio::time::Instant::now();
        let mut ping_unanswered = false;
        'read: loop {
            let handshaking = websocket
                .as_ref()
                .is_some_and(ws::WsSession::awaiting_handshake);
            // A WebSocket handshake must complete soon: a slow one holds a
            // connection slot for nothing.
            let wait = if handshaking {
                (opened + ws::HANDSHAKE_TIMEOUT)
                    .saturating_duration_since(tokio::time::Instant::now())
            } else if buf.capacity() == 0 {
                idle
            } else {
                idle.min(SHED_BUFFER_AFTER)
            };
            let read = tokio::select! {
                r = tokio::time::timeout(wait, read_some(&mut rd, &mut buf)) => r,
                _ = close.notified() => break 'read,
            };
            match read {
                Ok(Ok(n)) if n > 0 => {
                    last_read = shared.now_secs();
                    ping_unanswered = false;
                }
                Ok(_) => break,
                Err(_) if handshaking => {
                    tracing::info!(peer = %meta.peer, "WebSocket handshake timed out");
                    break;
                }
                Err(_) => {
                    if buf.is_empty() {
                        buf = BytesMut::new();
                    }
                    let last = last_read.max(last_write.load(Ordering::Relaxed));
                    if shared.now_secs().saturating_sub(last) < idle.as_secs() {
                        continue;
                    }
                    // A quiet WebSocket client (a browser waiting for calls) is
                    // pinged rather than dropped; one that does not answer is.
                    if websocket.is_some() {
                        if ping_unanswered {
                            tracing::debug!(peer = %meta.peer, "WebSocket ping unanswered: closing");
                            let _ = tx.try_send(ws::encode_close(
                                Some(ws::close_code::GOING_AWAY),
                                "no pong",
                            ));
                            break;
                        }
                        if tx.try_send(ws::encode_ping(b"")).is_err() {
                            break;
                        }
                        ping_unanswered = true;
                        last_read = shared.now_secs();
                        continue;
                    }
                    tracing::debug!(peer = %meta.peer, "closing idle connection");
                    break;
                }
            }
            if let Some(session) = websocket.as_mut() {
                if !session.drive(&mut buf, &tx, meta.peer, |msg| {
                    shared.sink.on_message(msg, source)
                }) {
                    break 'read;
                }
                continue;
            }
            loop {
                match frame_stream(&buf, &shared.limits) {
                    StreamFrame::Incomplete => break,
                    StreamFrame::KeepAlive { consumed, pong } => {
                        let _ = buf.split_to(consumed);
                        if pong && tx.try_send(Bytes::from_static(b"\r\n")).is_err() {
                            break 'read;
                        }
                    }
                    StreamFrame::Message(len) => {
                        let msg = buf.split_to(len).freeze();
                        shared.sink.on_message(msg, source);
                    }
                    StreamFrame::Unframed(len) => {
                        // The core answers it 400 (queued before we close).
                        let msg = buf.split_to(len).freeze();
                        shared.sink.on_message(msg, source);
                        tracing::info!(peer = %meta.peer, "no Content-Length on a stream: closing");
                        break 'read;
                    }
                    StreamFrame::Invalid(why) => {
                        tracing::info!(peer = %meta.peer, why, "closing stream connection");
                        break 'read;
                    }
                }
            }
        }
        shared.unregister(meta.id);
        drop(tx);
        // Let queued answers (a final response, a pong) go out before closing.
        if tokio::time::timeout(Duration::from_secs(2), writer)
            .await
            .is_err()
        {
            tracing::debug!(peer = %meta.peer, "writer did not finish; dropped");
        }
    });
}

/// Reads what is available into `buf`; an empty (released) buffer reads
/// into a small scratch first, so that a connection only waiting for data
/// holds no read buffer.
async fn read_some<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() == 0 {
        let mut scratch = [0u8; 512];
        let n = rd.read(&mut scratch).await?;
        // Just what arrived: a keep-alive ping allocates next to nothing; a
        // message grows the buffer on the next read.
        *buf = BytesMut::from(&scratch[..n]);
        return Ok(n);
    }
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_BUFFER);
    }
    rd.read_buf(buf).await
}
