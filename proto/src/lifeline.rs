//! The lifeline: how a child learns that the master has gone when its
//! channel cannot say so itself.
//!
//! A pipe's write end, a datagram socket and shared memory do not tell a
//! child that the master left. Transports built on them also hand each
//! child the read end of a pipe whose only write end the master holds
//! ([`Lifeline`]), passed as the auxiliary descriptor [`LIFELINE`]. The
//! master never writes it; when the master closes it or dies, the read end
//! reports hang-up, and that is the child's disconnect fd.
//!
//! A dying master's files are released in no promised order, so a child may
//! see the lifeline fire while its channel still accepts a write. A sink
//! therefore looks at the lifeline ([`check`]) before it sends, so that a
//! `notify` after the disconnect fd fired always says `Disconnected`.
//!
//! # Errors
//!
//! Making a lifeline fails with the `pipe(2)` or `fcntl(2)` error; looking
//! at one with the `poll(2)` error.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::env::{ChildEnv, EnvError};
use crate::sink::NotifyError;

/// Name of the auxiliary descriptor that carries the lifeline.
pub const LIFELINE: &str = "lifeline";

/// The master's half of a lifeline: the write end, held only here and
/// never written, and the read end that each child gets a duplicate of.
/// Both are close-on-exec. Dropping it (or [`cut`](Self::cut)) fires every
/// child's copy.
#[derive(Debug)]
pub struct Lifeline {
    read: OwnedFd,
    write: Option<OwnedFd>,
}

impl Lifeline {
    /// Makes a new lifeline.
    ///
    /// # Errors
    ///
    /// The `pipe(2)` error.
    pub fn new() -> io::Result<Lifeline> {
        // std makes both ends close-on-exec.
        let (read, write) = io::pipe()?;
        Ok(Lifeline { read: read.into(), write: Some(write.into()) })
    }

    /// The auxiliary descriptor for one child: `(LIFELINE, a duplicate of
    /// the read end)`, close-on-exec until installed.
    ///
    /// # Errors
    ///
    /// The `fcntl(2)` error (out of descriptors, say).
    pub fn aux(&self) -> io::Result<(&'static str, OwnedFd)> {
        Ok((LIFELINE, self.read.try_clone()?))
    }

    /// Closes the write end now, so that every child's copy fires, before
    /// the rest of a channel is torn down.
    pub fn cut(&mut self) {
        self.write = None;
    }
}

/// Takes the lifeline out of a child's environment.
///
/// # Errors
///
/// [`EnvError::MissingAux`] when the master passed none.
pub fn take(env: &mut ChildEnv) -> Result<OwnedFd, EnvError> {
    env.take_aux(LIFELINE)
}

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

/// What a sink does before it sends: `Err(Disconnected)` once the lifeline
/// `fd` has fired.
///
/// # Errors
///
/// [`NotifyError::Disconnected`] once the master has gone;
/// [`NotifyError::Io`] when `poll` fails.
pub fn check(fd: impl AsFd) -> Result<(), NotifyError> {
    match fired(fd.as_fd()) {
        Ok(false) => Ok(()),
        Ok(true) => Err(NotifyError::Disconnected),
        Err(errno) => Err(NotifyError::Io(errno)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_when_cut_and_not_before() {
        let mut lifeline = Lifeline::new().expect("pipe");
        let (name, child) = lifeline.aux().expect("dup");
        assert_eq!(name, LIFELINE);
        assert_eq!(check(&child), Ok(()));
        lifeline.cut();
        assert_eq!(check(&child), Err(NotifyError::Disconnected));
    }

    #[test]
    fn fires_when_dropped() {
        let lifeline = Lifeline::new().expect("pipe");
        let (_, child) = lifeline.aux().expect("dup");
        drop(lifeline);
        assert_eq!(fired(child.as_fd()), Ok(true));
    }
}
