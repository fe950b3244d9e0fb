//! The doorbell: a close-on-exec, non-blocking eventfd that children ring
//! and a master waits on.
//!
//! # Safety
//!
//! Creating the eventfd is the one `unsafe` call: the kernel returns a new
//! descriptor, which is owned at once.
//!
//! # Errors
//!
//! [`eventfd`] returns the `eventfd(2)` error; ringing and resetting return
//! the `write(2)` or `read(2)` errno other than `EINTR` (retried) and
//! `EAGAIN` (a counter at its maximum is readable already; an empty one is
//! reset already).

#![allow(unsafe_code)] // Safety: eventfd(2) returns a descriptor that is owned at once.

use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::libc;

/// A close-on-exec, non-blocking eventfd with a counter of zero.
///
/// # Errors
///
/// The error of `eventfd(2)`.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes integers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter (rings the doorbell). A counter at its
/// maximum is readable already, so `EAGAIN` is success.
///
/// # Errors
///
/// The errno of `write(2)` other than `EINTR` and `EAGAIN`.
#[inline]
pub fn ring_bell(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    let one = 1u64.to_ne_bytes();
    loop {
        match nix::unistd::write(fd, &one) {
            Ok(_) | Err(Errno::EAGAIN) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Resets a non-blocking eventfd's counter to zero.
///
/// # Errors
///
/// The errno of `read(2)` other than `EINTR` and `EAGAIN`.
pub fn drain_bell(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    let mut buf = [0u8; 8];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(_) | Err(Errno::EAGAIN) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// An eventfd's counter, read without changing it (from
/// `/proc/self/fdinfo`); `None` if that cannot be read. For diagnostics
/// and tests: how often a doorbell was rung.
#[must_use]
pub fn bell_count(fd: BorrowedFd<'_>) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    let line = info.lines().find_map(|l| l.strip_prefix("eventfd-count:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn rings_count_and_reset() {
        let bell = eventfd().expect("eventfd");
        assert_eq!(bell_count(bell.as_fd()), Some(0));
        for _ in 0..3 {
            ring_bell(bell.as_fd()).expect("ring");
        }
        assert_eq!(bell_count(bell.as_fd()), Some(3));
        drain_bell(bell.as_fd()).expect("reset");
        drain_bell(bell.as_fd()).expect("reset an empty bell");
        assert_eq!(bell_count(bell.as_fd()), Some(0));
    }
}
