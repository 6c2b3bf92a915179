//! OPTIONS probing of dispatcher destinations (Kamailio `ds_ping_interval`).
//! A thread of its own ("sipr-probe") sends one OPTIONS per destination per
//! interval — over UDP from a socket connected to the destination (so an
//! ICMP "port unreachable" fails the probe at once), over TCP/TLS hosts by
//! connecting — and moves destinations between active and inactive after
//! `fail_threshold` failures / `ok_threshold` successes in a row.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Dest, Dispatcher, State};
use crate::transport::Hop;
use crate::transport::Transport;

#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub interval: Duration,
    /// A probe not answered within this counts as failed.
    pub timeout: Duration,
    pub fail_threshold: u32,
    pub ok_threshold: u32,
    /// Answers that count as alive (besides every 2xx).
    pub alive_codes: Vec<u16>,
    pub from_uri: String,
    pub t1: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            fail_threshold: 1,
            ok_threshold: 1,
            alive_codes: Vec::new(),
            from_uri: "sip:dispatcher@localhost".into(),
            t1: Duration::from_millis(500),
        }
    }
}

/// Finds where a destination URI goes now (cache or IP literal), without
/// waiting for DNS.
pub type Locate = Arc<dyn Fn(&str) -> Option<Hop> + Send + Sync>;

/// The probing thread; dropping it stops probing.
pub struct Prober {
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub fn start(ds: Arc<Dispatcher>, config: ProbeConfig, locate: Locate) -> std::io::Result<Prober> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("sipr-probe".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                tracing::error!("dispatcher probing: cannot start its runtime");
                return;
            };
            rt.block_on(async move {
                tokio::select! {
                    _ = stop_rx => {}
                    () = run(ds, config, locate) => {}
                }
            });
        })?;
    Ok(Prober { _stop: stop_tx })
}

async fn run(ds: Arc<Dispatcher>, config: ProbeConfig, locate: Locate) {
    let config = Arc::new(config);
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq: u64 = 0;
    loop {
        tick.tick().await;
        for dest in ds.all() {
            if dest.state() == State::Disabled {
                continue;
            }
            seq += 1;
            let (config, locate) = (config.clone(), locate.clone());
            tokio::spawn(async move {
                let code = match locate(&dest.entry.uri) {
                    Some(hop) => probe(&dest.entry.uri, hop, &config, seq).await,
                    None => None,
                };
                record(&dest, code, &config);
            });
        }
    }
}

fn alive(code: Option<u16>, config: &ProbeConfig) -> bool {
    code.is_some_and(|c| (200..300).contains(&c) || config.alive_codes.contains(&c))
}

fn record(dest: &Dest, code: Option<u16>, config: &ProbeConfig) {
    dest.probes.fetch_add(1, Ordering::Relaxed);
    dest.last_code
        .store(u32::from(code.unwrap_or(0)), Ordering::Relaxed);
    if alive(code, config) {
        dest.fails.store(0, Ordering::Relaxed);
        let oks = dest.oks.fetch_add(1, Ordering::Relaxed) + 1;
        if dest.state() == State::Inactive && oks >= config.ok_threshold {
            dest.set_state(State::Active);
            tracing::warn!(uri = %dest.entry.uri, set = dest.entry.set, "dispatcher: destination active again");
        }
    } else {
        dest.oks.store(0, Ordering::Relaxed);
        let fails = dest.fails.fetch_add(1, Ordering::Relaxed) + 1;
        if dest.state() == State::Active && fails >= config.fail_threshold {
            dest.set_state(State::Inactive);
            tracing::warn!(uri = %dest.entry.uri, set = dest.entry.set, code, "dispatcher: destination inactive (probe failed)");
        }
    }
}

fn options(
    uri: &str,
    transport: Transport,
    local: SocketAddr,
    config: &ProbeConfig,
    seq: u64,
) -> (String, String) {
    let branch = format!("z9hG4bKsrprobe{seq:x}");
    let host = crate::sip::write::hostport(local);
    let msg = format!(
        "OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/{transport} {host};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: <{from}>;tag=p{seq:x}\r\nTo: <{uri}>\r\nCall-ID: probe-{seq:x}-{port}@{ip}\r\nCSeq: 1 OPTIONS\r\nUser-Agent: sipr dispatcher probe\r\nContent-Length: 0\r\n\r\n",
        from = config.from_uri,
        port = local.port(),
        ip = local.ip(),
    );
    (msg, branch)
}

/// The final status of one OPTIONS, None when nothing (or only 1xx) came.
async fn probe(uri: &str, hop: Hop, config: &ProbeConfig, seq: u64) -> Option<u16> {
    let work = async {
        match hop.transport {
            Transport::Udp => probe_udp(uri, hop.addr, config, seq).await,
            Transport::Tcp => probe_tcp(uri, hop.addr, config, seq).await,
            // TLS / WebSocket destinations: a completed TCP connect counts.
            _ => tokio::net::TcpStream::connect(hop.addr)
                .await
                .ok()
                .map(|_| 200),
        }
    };
    tokio::time::timeout(config.timeout, work)
        .await
        .ok()
        .flatten()
}

fn status_of(resp: &[u8], branch: &str) -> Option<u16> {
    let text = std::str::from_utf8(resp).ok()?;
    if !text.contains(branch) {
        return None;
    }
    let mut parts = text.strip_prefix("SIP/2.0 ")?.split(' ');
    parts.next()?.parse().ok()
}

async fn probe_udp(uri: &str, to: SocketAddr, config: &ProbeConfig, seq: u64) -> Option<u16> {
    let bind: SocketAddr = if to.is_ipv6() {
        "[::]:0".parse().ok()?
    } else {
        "0.0.0.0:0".parse().ok()?
    };
    let sock = tokio::net::UdpSocket::bind(bind).await.ok()?;
    sock.connect(to).await.ok()?;
    let local = sock.local_addr().ok()?;
    let (msg, branch) = options(uri, Transport::Udp, local, config, seq);
    let mut wait = config.t1;
    let mut buf = vec![0u8; 4096];
    loop {
        // A refused datagram surfaces as an error here or on recv.
        sock.send(msg.as_bytes()).await.ok()?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Ok(Ok(n)) => match status_of(&buf[..n], &branch) {
                    Some(code) if code >= 200 => return Some(code),
                    _ => continue,
                },
                Ok(Err(_)) => return None,
                Err(_) => break,
            }
        }
        wait = (wait * 2).min(Duration::from_secs(4));
    }
}

async fn probe_tcp(uri: &str, to: SocketAddr, config: &ProbeConfig, seq: u64) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(to).await.ok()?;
    let local = stream.local_addr().ok()?;
    let (msg, branch) = options(uri, Transport::Tcp, local, config, seq);
    stream.write_all(msg.as_bytes()).await.ok()?;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 65_536 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        // Responses are read one at a time; provisional ones are skipped.
        while let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            let head = buf[..end].to_vec();
            buf.drain(..end + 4);
            if let Some(code) = status_of(&head, &branch) {
                if code >= 200 {
                    return Some(code);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_needs_our_branch() {
        let r = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKsrprobe1\r\n";
        assert_eq!(status_of(r, "z9hG4bKsrprobe1"), Some(200));
        assert_eq!(status_of(r, "z9hG4bKsrprobe2"), None);
        assert_eq!(status_of(b"garbage", "x"), None);
    }

    #[test]
    fn alive_codes() {
        let mut c = ProbeConfig::default();
        assert!(alive(Some(200), &c));
        assert!(!alive(Some(404), &c));
        assert!(!alive(None, &c));
        c.alive_codes = vec![404];
        assert!(alive(Some(404), &c));
    }

    #[test]
    fn thresholds_move_state() {
        let d = Dest::new(super::super::Entry {
            set: 1,
            uri: "sip:127.0.0.1".into(),
            flags: 0,
            priority: 0,
            weight: 1,
            attrs: String::new(),
        });
        let c = ProbeConfig {
            fail_threshold: 2,
            ok_threshold: 2,
            ..ProbeConfig::default()
        };
        record(&d, None, &c);
        assert_eq!(d.state(), State::Active);
        record(&d, Some(503), &c);
        assert_eq!(d.state(), State::Inactive);
        record(&d, Some(200), &c);
        assert_eq!(d.state(), State::Inactive);
        record(&d, Some(200), &c);
        assert_eq!(d.state(), State::Active);
    }
}
