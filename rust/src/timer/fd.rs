//! A Linux timerfd armed for one absolute deadline at a time. The event loop
//! watches its descriptor; the core re-arms it only when the earliest
//! deadline moves.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

pub struct TimerFd {
    fd: OwnedFd,
    armed: Option<Instant>,
}

impl TimerFd {
    pub fn new() -> io::Result<TimerFd> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(TimerFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            armed: None,
        })
    }

    pub fn raw(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Arms for `deadline` unless an earlier, still future wake-up is already
    /// armed: that one fires first and re-arms, so cancelled timers cost at
    /// most a spurious wake instead of a syscall each.
    pub fn arm(&mut self, deadline: Option<Instant>) {
        if self.armed == deadline {
            return;
        }
        if let (Some(armed), Some(d)) = (self.armed, deadline) {
            if armed <= d && armed > Instant::now() {
                return;
            }
        }
        if deadline.is_none() && self.armed.is_some() {
            // Leave it: a spurious wake is cheaper than two syscalls per cancel.
            return;
        }
        self.armed = deadline;
        let mut spec: libc::itimerspec = unsafe { std::mem::zeroed() };
        if let Some(d) = deadline {
            let wait = d.saturating_duration_since(Instant::now());
            // A zero it_value disarms: fire "now" as 1 ns instead.
            let nanos = wait.as_nanos().max(1);
            spec.it_value.tv_sec = (nanos / 1_000_000_000) as libc::time_t;
            spec.it_value.tv_nsec = (nanos % 1_000_000_000) as libc::c_long;
        }
        // SAFETY: valid fd and a fully initialised itimerspec.
        unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    }

    /// Consumes the expiration count after the descriptor became readable.
    pub fn clear(&mut self) {
        let mut buf = [0u8; 8];
        // SAFETY: reading 8 bytes into a local buffer from our own fd.
        unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
        self.armed = None;
    }
}
