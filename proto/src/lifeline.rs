//! The lifeline: how a child learns that the master has gone when its
//! channel cannot say so itself.
//!
//! A pipe's write end, a datagram socket and shared memory do not tell a
//! child that the master left. Transports built on them also hand each
//! child the read end of a pipe whose only write end the master holds,
//! passed as the auxiliary descriptor [`LIFELINE`]. The master never writes
//! it; when the master closes it or dies, the read end reports hang-up, and
//! that is the child's disconnect fd.
//!
//! A dying master's files are released in no promised order, so a child may
//! see the lifeline fire while its channel still accepts a write. A sink
//! therefore looks at the lifeline ([`fired`]) before it sends, so that a
//! `notify` after the disconnect fd fired always says `Disconnected`.

use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Name of the auxiliary descriptor that carries the lifeline.
pub const LIFELINE: &str = "lifeline";

/// Whether `fd` is readable or hung up right now (a zero-timeout `poll`,
/// `EINTR` retried).
///
/// # Errors
///
/// The `poll` error, other than `EINTR`.
pub fn fired(fd: BorrowedFd<'_>) -> Result<bool, Errno> {
    loop {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(n) => return Ok(n > 0),
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(errno),
        }
    }
}
