//! `UdpReaderMode::Thread` (docs/decisions/0019): a thread per UDP socket
//! answers the REGISTERs the native registrar decides, with no event loop
//! wake-up and no transaction layer lock, and queues everything else for the
//! loop thread as the stream thread does.

use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;

use bytes::Bytes;

use super::Core;
use crate::service::Verdict;
use crate::sip::{Message, Method, Scheme};
use crate::transport::udp::{ReaderThread, RecvBatch};
use crate::transport::Source;

impl Core {
    pub(super) fn start_udp_readers(&self) -> io::Result<()> {
        let mut readers = self.udp_readers.lock();
        for ep in self.node.wire.udp() {
            let (me, local) = (self.me.clone(), ep.local);
            let reader = ReaderThread::spawn(
                ep.socket.try_clone()?,
                format!("sipr-udp-{}", local.port()),
                move |batch, n| match me.upgrade() {
                    Some(core) => {
                        core.on_udp_batch(batch, n, local);
                        ControlFlow::Continue(())
                    }
                    None => ControlFlow::Break(()),
                },
            )?;
            readers.push(reader);
        }
        Ok(())
    }

    /// On a UDP reader thread: answers the REGISTERs the native registrar
    /// decides, and queues everything else for the loop thread.
    fn on_udp_batch(&self, batch: &RecvBatch, n: usize, local: SocketAddr) {
        let mut queued = false;
        for i in 0..n {
            let Some((data, from)) = batch.get(i) else {
                continue;
            };
            let source = Source::udp(from, local);
            let Some(msg) = self.parse_inbound(Bytes::copy_from_slice(data), source) else {
                continue;
            };
            match self.register_answered_natively(&msg, source) {
                Native::Answered => {}
                Native::Declined { screened } => queued |= self.enqueue(msg, source, screened),
            }
        }
        if queued {
            self.wake();
        }
    }

    /// The native registrar step of `process`, taken without the
    /// transaction layer: a REGISTER that `process` would stop earlier (loop,
    /// in-core routing, unusable Request-URI) is left to it. A retransmission
    /// of a REGISTER the application holds is not answered here either,
    /// since the registrar declined it the first time. The services'
    /// `on_request` hooks run first, as in `process`, and not again there.
    fn register_answered_natively(&self, msg: &Message, source: Source) -> Native {
        if !msg.is_request()
            || msg.method() != Method::Register
            || self.registrars.is_empty()
            || msg.to_tag().is_some()
            || msg.request_uri().is_none_or(|u| u.scheme == Scheme::Other)
            || crate::proxy::route::is_loop(&self.node, msg)
        {
            return Native::Declined { screened: false };
        }
        let node = &self.node;
        if node.hooks.on_request(node, msg, &source) == Verdict::Stop {
            self.stats.count_request(Method::Register);
            return Native::Answered;
        }
        if !self.registrars.handle(node, msg, source) {
            return Native::Declined { screened: true };
        }
        self.stats.count_request(Method::Register);
        Native::Answered
    }
}

enum Native {
    /// Answered (or stopped by a service) on the reader thread.
    Answered,
    /// Left to the loop thread; `screened`: the hooks already saw it.
    Declined { screened: bool },
}
