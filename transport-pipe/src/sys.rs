//! Small system-call helpers shared by both flavours.

use std::os::fd::{AsFd, BorrowedFd};

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
