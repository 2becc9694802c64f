//! A doorbell a worker rings to wake the daemon: an eventfd.
//!
//! A worker that drops or holds a frame for a LAN host it has no MAC for
//! wants the host solicited now, not at the daemon's next tick. Ringing is
//! one `write` on an eventfd, made only when an address is newly recorded
//! for the daemon ([`crate::resolve::UnresolvedHosts::record`]): at most
//! once per address between two looks of the daemon, never per packet in a
//! steady flow.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug)]
pub struct Doorbell(OwnedFd);

impl Doorbell {
    pub fn new() -> io::Result<Doorbell> {
        // SAFETY: eventfd takes no pointer; the descriptor it returns is
        // new and owned by nothing else.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a valid descriptor just created, owned here alone.
        Ok(Doorbell(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Wakes whoever waits on [`Doorbell::fd`]. Never blocks; a failure
    /// (the counter at its maximum) means the bell already rings.
    pub fn ring(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer of 8 bytes.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Silences the bell after it woke the waiter.
    pub fn answer(&self) {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer of 8 bytes.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xsk::wait_readable;

    #[test]
    fn a_ring_wakes_the_waiter_once_until_answered() {
        let bell = Doorbell::new().unwrap();
        let rings = || wait_readable(&[bell.fd()], 0).unwrap();
        assert!(!rings());
        bell.ring();
        bell.ring();
        assert!(rings());
        bell.answer();
        assert!(!rings(), "two rings, one answer");
    }
}
