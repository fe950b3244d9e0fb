//! `duplex`: Postfix's own status channel, an `AF_UNIX SOCK_STREAM`
//! socketpair shared by all children of a service.
//!
//! The master keeps one end (non-blocking) and hands a duplicate of the
//! other to every child at fd 5. Nobody ever writes towards the children, so
//! fd 5 becomes readable in a child only at EOF, when the master's end is
//! closed: that is the child's disconnect signal, exactly as a Postfix
//! daemon watches it. A child's `send` after that fails with `EPIPE`, which
//! `MSG_NOSIGNAL` keeps from raising `SIGPIPE`.
//!
//! # See also
//!
//! Postfix `src/master/master_status.c` (`master_status_init` makes the
//! same socketpair with `duplex_pipe()`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use master_proto::env::ChildEnv;
use master_proto::{Caps, EndFds, EnvError, NotifyError, Status, StatusSink, StatusUpdate, Transport};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, send, socketpair};

use crate::source::StreamSource;
use crate::sys;

/// Postfix's duplex pipe: a `SOCK_STREAM` socketpair shared by a service's
/// children, byte-exact with Postfix master(8).
///
/// # Examples
///
/// ```
/// use master_proto::{StatusSource, Transport};
/// let mut source = master_proto_pipe::Duplex.open()?;
/// let end = master_proto_pipe::Duplex.child_end(&mut source, 1)?;
/// assert_eq!(source.try_recv(), Ok(None));
/// # drop(end); Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Duplex;

impl Transport for Duplex {
    type Source = StreamSource;
    type Sink = DuplexSink;

    fn name(&self) -> &'static str {
        "duplex"
    }

    fn caps(&self) -> Caps {
        crate::source::STREAM_CAPS.with_postfix_wire(true)
    }

    fn open(&self) -> io::Result<StreamSource> {
        let (master, child) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)?;
        // Only the master's end is non-blocking: the two ends are separate
        // open files, so children keep blocking sends.
        sys::set_nonblocking(master.as_fd())?;
        Ok(StreamSource::new(master, child, None))
    }

    fn end_fds(&self, source: &mut StreamSource, _generation: u32) -> io::Result<EndFds> {
        Ok(EndFds { status: sys::dup(&source.child_status)?, aux: Vec::new() })
    }

    /// Builds the sink on fd 5. [`Transport::sink`] accepts an environment
    /// that names no transport for this one, since a real Postfix master
    /// sets none.
    fn open_sink(&self, env: &mut ChildEnv) -> Result<DuplexSink, EnvError> {
        let status = env.take_status()?;
        Ok(DuplexSink::new(status, env.pid, env.generation))
    }
}

/// A child's end of a [`Duplex`] channel.
#[derive(Debug)]
pub struct DuplexSink {
    fd: OwnedFd,
    pid: i32,
    generation: u32,
}

impl DuplexSink {
    /// A sink that writes to `fd` (a Postfix daemon's fd 5) on behalf of
    /// `pid` in `generation`.
    #[must_use]
    pub fn new(fd: OwnedFd, pid: i32, generation: u32) -> DuplexSink {
        DuplexSink { fd, pid, generation }
    }
}

impl StatusSink for DuplexSink {
    fn notify(&self, status: Status) -> Result<(), NotifyError> {
        let record = StatusUpdate { pid: self.pid, generation: self.generation, status }.encode();
        sys::write_all(&record, |rest| send(self.fd.as_raw_fd(), rest, MsgFlags::MSG_NOSIGNAL))
    }

    fn disconnect_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn pid(&self) -> i32 {
        self.pid
    }

    fn generation(&self) -> u32 {
        self.generation
    }
}
