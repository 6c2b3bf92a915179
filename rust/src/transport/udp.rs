//! UDP sockets read in batches with `recvmmsg` (one syscall for up to
//! `BATCH` datagrams) and written with plain `sendto`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use socket2::{Domain, Protocol, Socket, Type};

pub const BATCH: usize = 32;
/// RFC 3261 §18.1.1 lets a datagram be up to 65,535 octets.
const MAX_DATAGRAM: usize = 65_535;

pub struct UdpEndpoint {
    pub socket: UdpSocket,
    pub local: SocketAddr,
}

impl UdpEndpoint {
    pub fn bind(addr: SocketAddr) -> io::Result<UdpEndpoint> {
        let domain = if addr.is_ipv6() {
            Domain::IPV6
        } else {
            Domain::IPV4
        };
        let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        // Large buffers absorb bursts while the loop thread runs Python.
        let _ = s.set_recv_buffer_size(4 << 20);
        let _ = s.set_send_buffer_size(4 << 20);
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        let socket: UdpSocket = s.into();
        let local = socket.local_addr()?;
        Ok(UdpEndpoint { socket, local })
    }

    /// Takes over a UDP socket bound by another process (the `--workers`
    /// supervisor keeps it open across worker restarts, decision 0050).
    pub fn adopt(fd: i32) -> io::Result<UdpEndpoint> {
        use std::os::fd::FromRawFd;
        // SAFETY: the caller hands over ownership of an open UDP socket
        // descriptor that nothing else in this process uses.
        let socket = unsafe { UdpSocket::from_raw_fd(fd) };
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        Ok(UdpEndpoint { socket, local })
    }

    pub fn fd(&self) -> i32 {
        self.socket.as_raw_fd()
    }

    /// Sends one datagram; a full socket buffer drops it (UDP is lossy and SIP
    /// retransmits) and reports the error to the caller for counting.
    pub fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<()> {
        self.socket.send_to(buf, to).map(|_| ())
    }
}

/// Reusable receive buffers for `recvmmsg`, built once: the headers point
/// into heap buffers owned by the same struct, which never move.
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    count: usize,
}

// SAFETY: the raw pointers inside `iovecs`/`hdrs` refer only to heap memory
// owned by this struct, so moving it to another thread moves their targets too.
unsafe impl Send for RecvBatch {}

impl Default for RecvBatch {
    fn default() -> Self {
        let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; MAX_DATAGRAM]).collect();
        // SAFETY: sockaddr_storage and mmsghdr are plain old data; zero is valid.
        let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut iovecs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
        for i in 0..BATCH {
            hdrs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_iov = &mut iovecs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        RecvBatch {
            bufs,
            addrs,
            iovecs,
            hdrs,
            count: 0,
        }
    }
}

impl RecvBatch {
    /// Receives up to `BATCH` datagrams without blocking; returns how many.
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        for h in &mut self.hdrs {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        }
        debug_assert_eq!(self.iovecs.len(), BATCH);
        // SAFETY: hdrs holds BATCH initialised headers pointing at live buffers.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        self.count = n as usize;
        Ok(self.count)
    }

    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.count {
            return None;
        }
        let addr = sockaddr_to_std(&self.addrs[i])?;
        Some((&self.bufs[i][..self.hdrs[i].msg_len as usize], addr))
    }
}

/// Who reads the UDP sockets (docs/decisions/0019).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UdpReaderMode {
    /// The event loop thread, when the socket is readable (`poll_udp`).
    #[default]
    Loop,
    /// One thread per socket, blocking in `poll` + `recvmmsg`.
    Thread,
}

impl std::str::FromStr for UdpReaderMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "loop" => Ok(UdpReaderMode::Loop),
            "thread" => Ok(UdpReaderMode::Thread),
            other => Err(format!(
                "udp_reader must be \"loop\" or \"thread\", not {other:?}"
            )),
        }
    }
}

/// How often a reader thread with nothing to read looks at its stop flag.
const STOP_CHECK_MS: i32 = 50;

/// A thread reading one UDP socket until `stop`.
pub struct ReaderThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl ReaderThread {
    /// Reads `socket` on a new thread, handing each batch of datagrams
    /// (the batch and how many it holds) to `on_batch` until it breaks or
    /// `stop` is called.
    pub fn spawn<F>(socket: UdpSocket, name: String, on_batch: F) -> io::Result<ReaderThread>
    where
        F: FnMut(&RecvBatch, usize) -> ControlFlow<()> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || read_until_stopped(&socket, &flag, on_batch))?;
        Ok(ReaderThread {
            stop,
            handle: Some(handle),
        })
    }

    /// Asks the thread to finish and waits for it.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for ReaderThread {
    // Not joined here: the last owner of the core may be the thread itself.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_until_stopped<F>(socket: &UdpSocket, stop: &AtomicBool, mut on_batch: F)
where
    F: FnMut(&RecvBatch, usize) -> ControlFlow<()>,
{
    let mut batch = RecvBatch::default();
    while !stop.load(Ordering::Relaxed) {
        if !wait_readable(socket, STOP_CHECK_MS) {
            continue;
        }
        match batch.recv(socket) {
            Ok(n) => {
                if on_batch(&batch, n).is_break() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // ICMP errors surface here on Linux; the socket stays usable.
            Err(e) => tracing::debug!("udp recv: {e}"),
        }
    }
}

/// Blocks until `socket` is readable or `timeout_ms` passes.
fn wait_readable(socket: &UdpSocket, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    n > 0 && pfd.revents & libc::POLLIN != 0
}

fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::new(ip.into(), u16::from_be(sin6.sin6_port)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_receives_several_datagrams() {
        let ep = UdpEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..5u8 {
            client.send_to(&[i; 10], ep.local).unwrap();
        }
        let mut batch = RecvBatch::default();
        let mut got = 0;
        for _ in 0..100 {
            match batch.recv(&ep.socket) {
                Ok(n) => {
                    for i in 0..n {
                        let (data, from) = batch.get(i).unwrap();
                        assert_eq!(data.len(), 10);
                        assert_eq!(from, client.local_addr().unwrap());
                    }
                    got += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            if got == 5 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(got, 5);
    }

    #[test]
    fn reader_thread_hands_over_datagrams_and_stops() {
        let ep = UdpEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = ReaderThread::spawn(
            ep.socket.try_clone().unwrap(),
            "test-udp".into(),
            move |batch, n| {
                for i in 0..n {
                    let (data, _) = batch.get(i).unwrap();
                    tx.send(data.to_vec()).unwrap();
                }
                ControlFlow::Continue(())
            },
        )
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..3u8 {
            client.send_to(&[i; 4], ep.local).unwrap();
        }
        let timeout = std::time::Duration::from_secs(5);
        for i in 0..3u8 {
            assert_eq!(rx.recv_timeout(timeout).unwrap(), vec![i; 4]);
        }
        reader.stop();
        // The closure (and its sender) went with the thread.
        assert!(rx.recv_timeout(timeout).is_err());
    }

    #[test]
    fn reader_mode_is_loop_or_thread() {
        assert_eq!("thread".parse(), Ok(UdpReaderMode::Thread));
        assert_eq!("loop".parse(), Ok(UdpReaderMode::Loop));
        assert!("threads"
            .parse::<UdpReaderMode>()
            .unwrap_err()
            .contains("threads"));
    }
}
