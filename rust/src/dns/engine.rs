//! The asynchronous side: a tokio runtime on its own thread ("sipr-dns")
//! running hickory-resolver, and the RFC 3263 client procedure (§4.1, §4.2)
//! on top of it: NAPTR → SRV → A/AAAA.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;

use super::target::{default_port, Group, Resolved, Server, SipTarget};
use crate::transport::Transport;

/// How the resolver is set up (`sipr run --resolver`, listeners' families).
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Nameservers; empty: the system's (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Which address families to look up (those we have listeners for).
    pub ipv4: bool,
    pub ipv6: bool,
    /// How long "no such name" is remembered when the answer has no SOA.
    pub negative_ttl: Duration,
    /// How long a server failure or timeout is remembered.
    pub error_ttl: Duration,
    /// Upper bound on any cached entry.
    pub max_ttl: Duration,
    /// Entries in the cache.
    pub max_entries: usize,
    /// Names being resolved at once; more are refused (503).
    pub max_inflight: usize,
    /// Requests waiting for names, all names together.
    pub max_waiters: usize,
    /// Per query, per nameserver.
    pub timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            nameservers: Vec::new(),
            ipv4: true,
            ipv6: true,
            negative_ttl: Duration::from_secs(60),
            error_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(3600),
            max_entries: 10_000,
            max_inflight: 1024,
            max_waiters: 100_000,
            timeout: Duration::from_secs(3),
        }
    }
}

pub struct Engine {
    handle: tokio::runtime::Handle,
    resolver: Arc<TokioResolver>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Engine {
    pub fn start(config: &DnsConfig) -> Result<Engine, String> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("sipr-dns".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(rt.handle().clone()));
                // Serves every spawned lookup until the Engine is dropped.
                let _ = rt.block_on(stop_rx);
            })
            .map_err(|e| format!("cannot start the DNS thread: {e}"))?;
        let handle = ready_rx
            .recv()
            .map_err(|_| "the DNS thread ended at start".to_string())??;
        let resolver = {
            // The provider binds to the runtime it is built in.
            let _guard = handle.enter();
            build_resolver(config)?
        };
        Ok(Engine {
            handle,
            resolver: Arc::new(resolver),
            _stop: stop_tx,
        })
    }

    pub fn spawn<F>(&self, f: impl FnOnce(Arc<TokioResolver>) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let fut = f(self.resolver.clone());
        self.handle.spawn(fut);
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

fn build_resolver(config: &DnsConfig) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if config.nameservers.is_empty() {
        TokioResolver::builder(provider)
            .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?
    } else {
        let servers = config
            .nameservers
            .iter()
            .map(|a| {
                let mut udp = ConnectionConfig::udp();
                udp.port = a.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = a.port();
                NameServerConfig::new(a.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.timeout = config.timeout;
    opts.attempts = 2;
    // sipr keeps its own cache (shown by `dns.cache`); hickory's stays small.
    opts.cache_size = 256;
    opts.ndots = 0;
    builder
        .build()
        .map_err(|e| format!("cannot build the resolver: {e}"))
}

/// A failed lookup of one record set.
#[derive(Debug, Clone)]
struct Miss {
    /// The name does not exist, or has no record of that type (cacheable).
    negative: bool,
    ttl: Option<u32>,
    reason: String,
}

fn miss(e: &NetError) -> Miss {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => Miss {
            negative: true,
            ttl: nr.negative_ttl,
            reason: format!("no {} record", nr.query.query_type()),
        },
        other => Miss {
            negative: false,
            ttl: None,
            reason: other.to_string(),
        },
    }
}

/// Collects the smallest TTL seen and the reasons of failures.
struct Ttl {
    min: Option<u32>,
    errors: Vec<String>,
    /// Only negative answers so far (no server failure).
    all_negative: bool,
    neg_ttl: Option<u32>,
}

impl Ttl {
    fn seen(&mut self, ttl: u32) {
        self.min = Some(self.min.map_or(ttl, |m| m.min(ttl)));
    }
    fn missed(&mut self, m: &Miss) {
        self.errors.push(m.reason.clone());
        if m.negative {
            if let Some(t) = m.ttl {
                self.neg_ttl = Some(self.neg_ttl.map_or(t, |n| n.min(t)));
            }
        } else {
            self.all_negative = false;
        }
    }
}

fn fqdn(name: &str) -> Result<Name, String> {
    let n = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    Name::from_str(&n).map_err(|e| format!("invalid name {name:?}: {e}"))
}

fn name_text(n: &Name) -> String {
    n.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

async fn addresses(
    r: &TokioResolver,
    name: &str,
    config: &DnsConfig,
    ttl: &mut Ttl,
) -> Vec<IpAddr> {
    let Ok(n) = fqdn(name) else {
        ttl.errors.push(format!("invalid name {name:?}"));
        return Vec::new();
    };
    let v4 = async {
        if config.ipv4 {
            Some(r.lookup(n.clone(), RecordType::A).await)
        } else {
            None
        }
    };
    let v6 = async {
        if config.ipv6 {
            Some(r.lookup(n.clone(), RecordType::AAAA).await)
        } else {
            None
        }
    };
    let (a, aaaa) = tokio::join!(v4, v6);
    let mut out = Vec::new();
    let mut misses = Vec::new();
    for answer in [a, aaaa].into_iter().flatten() {
        match answer {
            Ok(lookup) => {
                for rec in lookup.answers() {
                    if let Some(ip) = rec.data.ip_addr() {
                        ttl.seen(rec.ttl);
                        out.push(ip);
                    }
                }
            }
            Err(e) => misses.push(miss(&e)),
        }
    }
    // A name with only A (or only AAAA) records is fine.
    if out.is_empty() {
        for m in &misses {
            ttl.missed(m);
        }
    }
    out
}

/// `_sip._udp.host`-style name of the SRV records for `transport`.
fn srv_name(transport: Transport, host: &str) -> String {
    match transport {
        Transport::Udp => format!("_sip._udp.{host}"),
        Transport::Tcp => format!("_sip._tcp.{host}"),
        _ => format!("_sips._tcp.{host}"),
    }
}

/// The servers named by SRV records at `name` (None: no SRV records).
async fn srv_servers(
    r: &TokioResolver,
    name: &str,
    config: &DnsConfig,
    ttl: &mut Ttl,
) -> Option<Vec<Server>> {
    let n = fqdn(name).ok()?;
    let lookup = match r.lookup(n, RecordType::SRV).await {
        Ok(l) => l,
        Err(e) => {
            ttl.missed(&miss(&e));
            return None;
        }
    };
    let mut records = Vec::new();
    for rec in lookup.answers() {
        if let RData::SRV(srv) = &rec.data {
            ttl.seen(rec.ttl);
            // Target "." : the service is decidedly not available (RFC 2782).
            if !srv.target.is_root() {
                records.push((srv.priority, srv.weight, srv.port, name_text(&srv.target)));
            }
        }
    }
    let mut servers = Vec::with_capacity(records.len());
    let mut tasks = Vec::new();
    for (_, _, _, target) in &records {
        tasks.push(addresses_owned(r, target.clone(), config));
    }
    // Targets are resolved concurrently: with a slow server, one round trip.
    let results = join_all(tasks).await;
    for ((priority, weight, port, target), (addrs, t)) in records.into_iter().zip(results) {
        if let Some(m) = t.min {
            ttl.seen(m);
        }
        if addrs.is_empty() {
            ttl.errors.extend(t.errors);
        }
        servers.push(Server {
            name: target,
            priority,
            weight,
            port,
            addrs,
        });
    }
    Some(servers)
}

async fn addresses_owned(
    r: &TokioResolver,
    name: String,
    config: &DnsConfig,
) -> (Vec<IpAddr>, Ttl) {
    let mut t = Ttl {
        min: None,
        errors: Vec::new(),
        all_negative: true,
        neg_ttl: None,
    };
    let a = addresses(r, &name, config, &mut t).await;
    (a, t)
}

async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_some() {
                continue;
            }
            match f.as_mut().poll(cx) {
                std::task::Poll::Ready(v) => out[i] = Some(v),
                std::task::Poll::Pending => pending = true,
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("all ready")).collect()
}

/// NAPTR services of SIP (RFC 3263 §4.1) this proxy can send over.
fn naptr_transport(service: &str, secure: bool) -> Option<Transport> {
    let t = match service.to_ascii_uppercase().as_str() {
        "SIP+D2U" => Transport::Udp,
        "SIP+D2T" => Transport::Tcp,
        "SIPS+D2T" => Transport::Tls,
        _ => return None, // SCTP and anything unknown
    };
    (!secure || t == Transport::Tls).then_some(t)
}

/// The RFC 3263 client procedure for `target` (a name, not an IP literal).
pub async fn resolve(r: &TokioResolver, target: &SipTarget, config: &DnsConfig) -> Resolved {
    let mut ttl = Ttl {
        min: None,
        errors: Vec::new(),
        all_negative: true,
        neg_ttl: None,
    };
    let mut groups = Vec::new();
    let host = target.host.as_str();
    if let Some(port) = target.port {
        // §4.2: an explicit port means A/AAAA only.
        let transport = target.fixed_transport();
        let addrs = addresses(r, host, config, &mut ttl).await;
        groups.push(direct(transport, host, port, addrs));
    } else if target.transport.is_some() {
        // §4.2: transport known, no port: SRV for it, else A/AAAA.
        let transport = target.fixed_transport();
        groups.push(srv_or_direct(r, transport, host, config, &mut ttl).await);
    } else {
        groups = naptr_groups(r, target, config, &mut ttl).await;
        if groups.iter().all(|g| g.servers.is_empty()) {
            groups.clear();
            // §4.1: no NAPTR: SRV per supported transport, UDP first.
            let order: &[Transport] = if target.secure {
                &[Transport::Tls]
            } else {
                &[Transport::Udp, Transport::Tcp]
            };
            for &t in order {
                let name = srv_name(t, host);
                if let Some(servers) = srv_servers(r, &name, config, &mut ttl).await {
                    if !servers.is_empty() {
                        groups.push(Group {
                            transport: t,
                            via: format!("SRV {name}"),
                            servers,
                        });
                    }
                }
            }
            if groups.is_empty() {
                let t = target.fixed_transport();
                let addrs = addresses(r, host, config, &mut ttl).await;
                groups.push(direct(t, host, default_port(t), addrs));
            }
        }
    }
    finish(groups, ttl, config)
}

fn direct(transport: Transport, host: &str, port: u16, addrs: Vec<IpAddr>) -> Group {
    Group {
        transport,
        via: "A/AAAA".into(),
        servers: vec![Server {
            name: host.to_string(),
            priority: 0,
            weight: 0,
            port,
            addrs,
        }],
    }
}

async fn srv_or_direct(
    r: &TokioResolver,
    transport: Transport,
    host: &str,
    config: &DnsConfig,
    ttl: &mut Ttl,
) -> Group {
    let name = srv_name(transport, host);
    match srv_servers(r, &name, config, ttl).await {
        Some(servers) if !servers.is_empty() => Group {
            transport,
            via: format!("SRV {name}"),
            servers,
        },
        _ => {
            let addrs = addresses(r, host, config, ttl).await;
            direct(transport, host, default_port(transport), addrs)
        }
    }
}

async fn naptr_groups(
    r: &TokioResolver,
    target: &SipTarget,
    config: &DnsConfig,
    ttl: &mut Ttl,
) -> Vec<Group> {
    let Ok(n) = fqdn(&target.host) else {
        return Vec::new();
    };
    let lookup = match r.lookup(n, RecordType::NAPTR).await {
        Ok(l) => l,
        Err(e) => {
            let m = miss(&e);
            if !m.negative {
                ttl.missed(&m);
            }
            return Vec::new();
        }
    };
    let mut rules = Vec::new();
    for rec in lookup.answers() {
        if let RData::NAPTR(naptr) = &rec.data {
            ttl.seen(rec.ttl);
            let flags = String::from_utf8_lossy(&naptr.flags).to_ascii_lowercase();
            let service = String::from_utf8_lossy(&naptr.services).to_string();
            let Some(t) = naptr_transport(&service, target.secure) else {
                continue;
            };
            if flags == "s" && !naptr.replacement.is_root() {
                rules.push((
                    naptr.order,
                    naptr.preference,
                    t,
                    name_text(&naptr.replacement),
                    service,
                ));
            }
        }
    }
    rules.sort_by_key(|(order, pref, ..)| (*order, *pref));
    let mut groups = Vec::new();
    for (_, _, t, srv, service) in rules {
        if let Some(servers) = srv_servers(r, &srv, config, ttl).await {
            if !servers.is_empty() {
                groups.push(Group {
                    transport: t,
                    via: format!("NAPTR {service} → SRV {srv}"),
                    servers,
                });
            }
        }
    }
    groups
}

fn finish(groups: Vec<Group>, ttl: Ttl, config: &DnsConfig) -> Resolved {
    let now = Instant::now();
    let mut resolved = Resolved {
        groups,
        expires: now,
        error: None,
    };
    if resolved.is_negative() {
        let life = if ttl.all_negative {
            ttl.neg_ttl
                .map_or(config.negative_ttl, |t| Duration::from_secs(u64::from(t)))
        } else {
            config.error_ttl
        };
        resolved.expires = now + life.min(config.max_ttl);
        let mut errors = ttl.errors;
        errors.dedup();
        resolved.error = Some(if errors.is_empty() {
            "no address".to_string()
        } else {
            errors.join("; ")
        });
    } else {
        let life = ttl
            .min
            .map_or(config.max_ttl, |t| Duration::from_secs(u64::from(t)));
        resolved.expires = now + life.min(config.max_ttl);
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naptr_services_map_to_transports() {
        assert_eq!(naptr_transport("SIP+D2U", false), Some(Transport::Udp));
        assert_eq!(naptr_transport("sip+d2t", false), Some(Transport::Tcp));
        assert_eq!(naptr_transport("SIPS+D2T", false), Some(Transport::Tls));
        assert_eq!(naptr_transport("SIP+D2S", false), None);
        assert_eq!(naptr_transport("SIP+D2U", true), None);
        assert_eq!(naptr_transport("SIPS+D2T", true), Some(Transport::Tls));
        assert_eq!(naptr_transport("E2U+sip", false), None);
    }

    #[test]
    fn srv_names_follow_rfc_3263() {
        assert_eq!(srv_name(Transport::Udp, "a.test"), "_sip._udp.a.test");
        assert_eq!(srv_name(Transport::Tcp, "a.test"), "_sip._tcp.a.test");
        assert_eq!(srv_name(Transport::Tls, "a.test"), "_sips._tcp.a.test");
    }
}
