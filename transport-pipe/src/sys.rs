//! Small system-call helpers shared by both flavours, and what the
//! platform's pipes can do.
//!
//! # Safety
//!
//! [`write_nosignal`] calls `pwritev2(2)` through libc with an iovec over a
//! borrowed slice that outlives the call.

#![allow(unsafe_code)] // Safety: one FFI call, pwritev2, over a borrowed slice.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use master_proto::NotifyError;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};

/// Makes `fd`'s open file description non-blocking.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> nix::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

/// Sends all of `bytes` with `write_some`, retrying `EINTR` and continuing
/// after a partial write, and maps the errors of a writer whose reader has
/// gone to [`NotifyError::Disconnected`].
pub(crate) fn write_all(
    bytes: &[u8],
    mut write_some: impl FnMut(&[u8]) -> nix::Result<usize>,
) -> Result<(), NotifyError> {
    let mut rest = bytes;
    while !rest.is_empty() {
        match write_some(rest) {
            // A record is small enough that the kernel writes it whole; a
            // partial write (a signal after part of it was copied) would
            // split the frame, so finish it rather than desynchronise.
            Ok(n) => rest = rest.get(n..).unwrap_or_default(),
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(NotifyError::from_send_errno(errno)),
        }
    }
    Ok(())
}

/// Duplicates `fd` (close-on-exec) for a child's end.
pub(crate) fn dup(fd: impl AsFd) -> std::io::Result<std::os::fd::OwnedFd> {
    fd.as_fd().try_clone_to_owned()
}

cfg_if::cfg_if! {
    if #[cfg(any(target_os = "linux", target_os = "android"))] {
        /// Whether a `pipe` channel needs a lifeline. Not on Linux: a
        /// pipe's write end reports `POLLERR` (which every poll reports,
        /// whatever it asked for) as soon as no reader is left, so fd 5
        /// itself is the child's disconnect fd, and since the same open
        /// file both carries the writes and reports the reader gone, no
        /// write can succeed after it fired.
        pub(crate) const NEEDS_LIFELINE: bool = false;

        /// `RWF_NOSIGNAL` (Linux 6.18, `include/uapi/linux/fs.h`): a
        /// `pwritev2` that finds no reader fails with `EPIPE` without
        /// raising `SIGPIPE`.
        const RWF_NOSIGNAL: nix::libc::c_int = 0x100;

        /// Set once `pwritev2` refused [`RWF_NOSIGNAL`] (an older kernel):
        /// from then on, writes take the `SIGPIPE` mask instead.
        static NO_RWF_NOSIGNAL: AtomicBool = AtomicBool::new(false);

        /// One `pwritev2(fd, bytes, RWF_NOSIGNAL)`: `None` where the kernel
        /// does not know the flag (the caller then writes another way).
        pub(crate) fn write_nosignal(fd: BorrowedFd<'_>, bytes: &[u8]) -> Option<nix::Result<usize>> {
            if NO_RWF_NOSIGNAL.load(Ordering::Relaxed) {
                return None;
            }
            let iov = nix::libc::iovec { iov_base: bytes.as_ptr().cast_mut().cast(), iov_len: bytes.len() };
            // SAFETY: `iov` names `bytes`, which lives across the call and
            // which the kernel only reads; `fd` is a valid descriptor for
            // the call's duration; offset -1 means "the current position",
            // which a pipe ignores.
            let n = unsafe { nix::libc::pwritev2(fd.as_raw_fd(), &raw const iov, 1, -1, RWF_NOSIGNAL) };
            match usize::try_from(n) {
                Ok(n) => Some(Ok(n)),
                Err(_) => match Errno::last() {
                    // An unknown flag, or no pwritev2 at all.
                    Errno::EOPNOTSUPP | Errno::ENOSYS | Errno::EINVAL => {
                        NO_RWF_NOSIGNAL.store(true, Ordering::Relaxed);
                        None
                    }
                    errno => Some(Err(errno)),
                },
            }
        }
    } else {
        /// Whether a `pipe` channel needs a lifeline: yes where a pipe's
        /// write end is not known to report its reader's leaving.
        pub(crate) const NEEDS_LIFELINE: bool = true;

        /// No `RWF_NOSIGNAL` here: the caller writes another way.
        pub(crate) fn write_nosignal(_fd: BorrowedFd<'_>, _bytes: &[u8]) -> Option<nix::Result<usize>> {
            None
        }
    }
}
