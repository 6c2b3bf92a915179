//! The wire as the layers above the transports see it: every bound socket,
//! sending to a destination (UDP from the calling thread, streams through
//! their write queues), answering along a request's Via (RFC 3261 §18.2.2),
//! and our own addresses (what goes in Via / Record-Route, what names us).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use super::stream::{StreamConfig, StreamListener, StreamSink, Streams};
use super::udp::UdpEndpoint;
use super::{Destination, ListenSpec, Source, Transport};
use crate::sip::{Limits, Message};
use crate::stats::Stats;
use crate::tls::{CertInfo, TlsContext, TlsError, TlsSettings};

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

pub struct Wire {
    udp: Vec<UdpEndpoint>,
    /// Bound stream listeners (port 0 resolved).
    stream_local: Vec<(Transport, SocketAddr)>,
    /// The stream thread, once started (`start_streams`).
    streams: Mutex<Option<Arc<Streams>>>,
    tls: Option<Arc<TlsContext>>,
    /// Extra host names that mean "this proxy" in Route / Request-URI.
    aliases: Vec<String>,
    stats: Arc<Stats>,
}

impl Wire {
    /// Binds every listener (so a port in use fails here, before anything
    /// runs) and loads TLS; returns the stream listeners for `start_streams`.
    pub fn bind(
        listen: &[ListenSpec],
        tls: &TlsSettings,
        aliases: Vec<String>,
        stats: Arc<Stats>,
    ) -> Result<(Wire, Vec<StreamListener>), StartError> {
        let mut udp = Vec::new();
        let mut stream_listeners = Vec::new();
        for l in listen {
            let bind_err = |source| StartError::Bind {
                transport: l.transport,
                addr: l.addr,
                source,
            };
            match l.transport {
                Transport::Udp => udp.push(
                    match l.fd {
                        Some(fd) => UdpEndpoint::adopt(fd),
                        None => UdpEndpoint::bind(l.addr),
                    }
                    .map_err(bind_err)?,
                ),
                Transport::Tcp | Transport::Tls | Transport::Ws | Transport::Wss => {
                    stream_listeners.push(StreamListener {
                        transport: l.transport,
                        socket: match l.fd {
                            Some(fd) => adopt_tcp(fd),
                            None => bind_tcp(l.addr),
                        }
                        .map_err(bind_err)?,
                    });
                }
            }
        }
        if listen.iter().any(|l| l.transport.is_stream()) {
            raise_fd_limit();
        }
        let has_tls_listener = stream_listeners
            .iter()
            .any(|l| matches!(l.transport, Transport::Tls | Transport::Wss));
        let tls = if has_tls_listener || !tls.is_empty() {
            let ctx = TlsContext::new(tls.clone()).map_err(|e| StartError::Other(e.to_string()))?;
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
        let wire = Wire {
            udp,
            stream_local,
            streams: Mutex::new(None),
            tls,
            aliases,
            stats,
        };
        Ok((wire, stream_listeners))
    }

    /// Starts the stream thread (when there are stream listeners or TLS for
    /// outgoing connections); what it reads goes to `sink`.
    pub fn start_streams(
        &self,
        listeners: Vec<StreamListener>,
        limits: Limits,
        config: StreamConfig,
        sink: Arc<dyn StreamSink>,
    ) -> Result<(), StartError> {
        if listeners.is_empty() && self.tls.is_none() {
            return Ok(());
        }
        let streams = Streams::start(listeners, limits, config, self.tls.clone(), sink)
            .map_err(|e| StartError::Other(format!("stream runtime: {e}")))?;
        *self.streams.lock() = Some(Arc::new(streams));
        Ok(())
    }

    pub fn stop_streams(&self) {
        if let Some(s) = self.streams.lock().take() {
            s.stop();
        }
    }

    pub fn udp(&self) -> &[UdpEndpoint] {
        &self.udp
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn shared_stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Sends bytes; UDP straight from this thread, streams through their queue.
    pub fn send(&self, dest: Destination, bytes: Bytes) -> bool {
        self.send_from(None, dest, bytes)
    }

    /// `send`, over UDP from the listener bound to `local` when there is one
    /// (a response leaves from the socket its request came in on: the port
    /// a NAT binding or a `--workers` shared port expects, decision 0050).
    fn send_from(&self, local: Option<SocketAddr>, dest: Destination, bytes: Bytes) -> bool {
        if dest.transport.is_stream() {
            let streams = self.streams.lock().clone();
            let Some(streams) = streams else { return false };
            return streams.send(dest, bytes);
        }
        let from = local.and_then(|l| self.udp.iter().find(|u| u.local == l));
        let Some(ep) = from.or_else(|| self.udp_for(dest.addr)) else {
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

    /// Sends a response to a request per RFC 3261 §18.2.2: back over the
    /// request's connection, else to `received`/`rport` (the source address).
    pub fn send_response(&self, req: &Message, source: Source, bytes: Bytes) {
        self.send_reply(reply_to(req, source), bytes);
    }

    /// Sends a response to where `reply_to` said the request's answers go.
    pub fn send_reply(&self, to: Source, bytes: Bytes) {
        self.stats.count_response_out(&bytes);
        let dest = Destination {
            transport: to.transport,
            addr: to.addr,
            conn: to.conn,
        };
        self.send_from(Some(to.local), dest, bytes);
    }

    fn udp_for(&self, to: SocketAddr) -> Option<&UdpEndpoint> {
        self.udp
            .iter()
            .find(|u| u.local.is_ipv6() == to.is_ipv6())
            .or(self.udp.first())
    }

    /// Local addresses actually bound (port 0 resolved), per transport.
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        self.each_local_addr().collect()
    }

    /// `local_addrs` without collecting them: asked for every routed request.
    fn each_local_addr(&self) -> impl Iterator<Item = (Transport, SocketAddr)> + '_ {
        self.udp
            .iter()
            .map(|u| (Transport::Udp, u.local))
            .chain(self.stream_local.iter().copied())
    }

    pub fn udp_fds(&self) -> Vec<i32> {
        self.udp.iter().map(UdpEndpoint::fd).collect()
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
        if self.aliases.iter().any(|a| a.eq_ignore_ascii_case(host)) {
            return self.each_local_addr().any(|(_, a)| a.port() == port);
        }
        let Ok(ip) = host.parse::<IpAddr>() else {
            return false;
        };
        self.each_local_addr().any(|(_, a)| {
            a.port() == port
                && (a.ip() == ip || (a.ip().is_unspecified() && a.is_ipv6() == ip.is_ipv6()))
        })
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

    /// `Streams::connect_failures` (zeros without stream transports).
    pub fn connect_failures(&self) -> (u64, u64) {
        self.streams
            .lock()
            .as_ref()
            .map_or((0, 0), |s| s.connect_failures())
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

/// A listening TCP socket handed down by the `--workers` supervisor.
fn adopt_tcp(fd: i32) -> io::Result<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    // SAFETY: the caller hands over ownership of an open, listening TCP
    // socket descriptor that nothing else in this process uses.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    listener.set_nonblocking(true)?;
    Ok(listener)
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

/// Where the answers to `req`, received from `source`, go (RFC 3261 §18.2.2):
/// `source` itself over a stream; over UDP its address, with the sent-by
/// port unless the request asked for rport, and its maddr if it named one.
/// Worked out once for a transaction held after its final answer, which then
/// keeps this instead of its request.
pub fn reply_to(req: &Message, source: Source) -> Source {
    let mut to = source;
    if !source.transport.is_stream() {
        let via = req.top_via();
        if via.rport().is_none() {
            to.addr.set_port(via.port.unwrap_or(5060));
        }
        if let Some(maddr) = via.param("maddr").and_then(|m| m.parse::<IpAddr>().ok()) {
            to.addr.set_ip(maddr);
        }
    }
    to
}
