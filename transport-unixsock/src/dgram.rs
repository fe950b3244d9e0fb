//! `dgram`: an `AF_UNIX SOCK_DGRAM` socketpair shared by all children of a
//! service, with a lifeline.
//!
//! The master reads one end (non-blocking, `SO_PASSCRED` on Linux); every
//! child sends 12-byte datagrams on a duplicate of the other end at fd 5.
//! The kernel keeps each datagram whole and names its sender
//! (`SCM_CREDENTIALS`), so a record can be neither torn nor forged.
//!
//! A datagram socket is not told when its peer closes: a child's fd 5 never
//! becomes readable, and only its next `send` fails (`ECONNREFUSED`, then
//! `ENOTCONN`). So each child also gets the read end of a *lifeline* pipe
//! (auxiliary descriptor `lifeline`) whose only write end the master holds
//! and never writes: it becomes readable, at EOF, exactly when the master
//! closes the channel or dies.
//!
//! The lifeline and the socket are two open files, which a dying master's
//! kernel releases one after the other, in no promised order: a child could
//! see the lifeline fire while the socket still takes datagrams for a
//! moment. So `notify` looks at the lifeline (a zero-timeout `poll`) before
//! sending, and a notify after the disconnect fd fired always returns
//! `Disconnected`. A notify is two system calls (poll, send); the
//! `seqpacket` flavour, one file for both jobs, needs one.
//!
//! On Linux, a socketpair's datagrams are limited by the sending socket's
//! buffer (`SO_SNDBUF`, shared here by all children), not by the receive
//! queue length (`net.unix.max_dgram_qlen` applies only to sockets that are
//! not each other's peer): a child whose datagram does not fit blocks until
//! the master reads, or its exit frees the queue and the send fails.
//!
//! # See also
//!
//! `unix(7)`, `socketpair(2)`; Postfix `src/master/master_status.c`.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use master_proto::env::ChildEnv;
use master_proto::lifeline::{self, Lifeline};
use master_proto::{BackPressure, Caps, EndFds, EnvError, Transport};

use crate::packet::{DgramSource, PACKET_CAPS, PacketSink, open_pair};

pub use master_proto::lifeline::LIFELINE;

/// A `SOCK_DGRAM` socketpair shared by a service's children, plus a
/// lifeline; kernel-verified sender pids on Linux.
///
/// # Examples
///
/// ```
/// use master_proto::{StatusSource, Transport};
/// let mut source = master_proto_unixsock::Dgram.open()?;
/// let end = master_proto_unixsock::Dgram.child_end(&mut source, 1)?;
/// assert_eq!(end.aux[0].0, "lifeline");
/// assert_eq!(source.try_recv(), Ok(None));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Dgram;

impl Transport for Dgram {
    type Source = DgramSource;
    type Sink = PacketSink;

    fn name(&self) -> &'static str {
        "dgram"
    }

    fn caps(&self) -> Caps {
        PACKET_CAPS
    }

    fn open(&self) -> io::Result<DgramSource> {
        let (master, child) = open_pair(socket2::Type::DGRAM)?;
        Ok(DgramSource::new(master, child, Lifeline::new()?))
    }

    fn end_fds(&self, source: &mut DgramSource, _generation: u32) -> io::Result<EndFds> {
        Ok(EndFds { status: OwnedFd::from(source.child_status.try_clone()?), aux: vec![source.lifeline.aux()?] })
    }

    fn open_sink(&self, env: &mut ChildEnv) -> Result<PacketSink, EnvError> {
        let lifeline = lifeline::take(env)?;
        let status = env.take_status()?;
        Ok(PacketSink::new(status, Some(lifeline), env.pid, env.generation))
    }
}

impl Dgram {
    /// The same channel, whose `notify` waits at most `bound` for room in
    /// a full channel and then returns
    /// [`NotifyError::Full`](master_proto::NotifyError::Full)
    /// ([`BackPressure::BlockFor`]).
    #[must_use]
    pub const fn with_timeout(self, bound: Duration) -> BoundedDgram {
        BoundedDgram { bound }
    }
}

/// A [`Dgram`] channel whose `notify` waits for room at most a bound, then
/// returns [`NotifyError::Full`](master_proto::NotifyError::Full): a child
/// of a stuck master goes on serving, having lost that one update (it
/// knows, and may send its state again later). Made by
/// [`Dgram::with_timeout`]; the default bound is one second.
///
/// The socket children send on is non-blocking for all of them (one open
/// file); a `notify` that finds no room polls for it, and for the
/// lifeline, until the bound has passed since its first try. The bound is
/// the child's own: it builds its sink with the same value as the master
/// (nothing in the standard environment carries it), as
/// [`Transport::sink`] on this type does.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use master_proto::{BackPressure, Transport};
/// use master_proto_unixsock::Dgram;
/// let t = Dgram.with_timeout(Duration::from_millis(250));
/// assert_eq!(t.caps().back_pressure, BackPressure::BlockFor(Duration::from_millis(250)));
/// assert_eq!(t.name(), "bounded_dgram");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BoundedDgram {
    bound: Duration,
}

impl BoundedDgram {
    /// How long a `notify` waits for room.
    #[must_use]
    pub const fn bound(&self) -> Duration {
        self.bound
    }
}

impl Default for BoundedDgram {
    /// A second: long enough that a master which reads is never taken for
    /// a stuck one, short enough that a child of a stuck master loses one
    /// update, not its client.
    fn default() -> Self {
        Dgram.with_timeout(Duration::from_secs(1))
    }
}

impl Transport for BoundedDgram {
    type Source = DgramSource;
    type Sink = PacketSink;

    fn name(&self) -> &'static str {
        "bounded_dgram"
    }

    /// As [`Dgram`], but a full channel makes `notify` wait at most the
    /// bound ([`BackPressure::BlockFor`]).
    fn caps(&self) -> Caps {
        PACKET_CAPS.with_back_pressure(BackPressure::BlockFor(self.bound))
    }

    fn open(&self) -> io::Result<DgramSource> {
        let (master, child) = open_pair(socket2::Type::DGRAM)?;
        // Every child's fd 5 is this one open file: non-blocking for all,
        // so that a send on a full channel returns and the child polls
        // with its bound.
        child.set_nonblocking(true)?;
        Ok(DgramSource::new(master, child, Lifeline::new()?))
    }

    fn end_fds(&self, source: &mut DgramSource, generation: u32) -> io::Result<EndFds> {
        Dgram.end_fds(source, generation)
    }

    fn open_sink(&self, env: &mut ChildEnv) -> Result<PacketSink, EnvError> {
        Ok(Dgram.open_sink(env)?.with_bound(self.bound))
    }
}
