//! mio adapters (cargo feature `mio`): [`mio::event::Source`] for a master's
//! [`StatusSource`] and for a child's disconnect fd.
//!
//! [`StatusSource`] is a trait, so mio's trait cannot be implemented for
//! every source directly; [`MioSource`] wraps one (and is a
//! `StatusSource` itself, delegating, batched `drain` included), and
//! [`MioDisconnect`] borrows a sink's
//! [`disconnect_fd`](StatusSink::disconnect_fd). Both register the
//! descriptor through [`mio::unix::SourceFd`], so any interest mio offers
//! may be asked for; a status channel only ever needs
//! [`Interest::READABLE`].
//!
//! # Edge-triggered readiness
//!
//! mio registers edge-triggered: after an event for the source, drain it
//! until [`try_recv`](StatusSource::try_recv) returns `None` (mio's
//! `WouldBlock`), or call [`drain`](StatusSource::drain) once, and only then
//! poll again. Contract item 7 (see the [crate documentation](crate))
//! guarantees the next event for whatever is pending then or sent later, a
//! fairness bound that ended a drain early included. For the disconnect fd,
//! an event means "look": [`MioDisconnect::fired`] says whether the master
//! has gone.
//!
//! # Errors
//!
//! Registering returns mio's `io::Error` (`EEXIST` when the descriptor is
//! already registered with that `Poll`). Receiving returns the source's
//! [`RecvError`].
//!
//! # See also
//!
//! `mio::unix::SourceFd`, `mio::Poll`; module `tokio` for tokio; Postfix
//! `src/master/master_status.c`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use ::mio::event::Source;
use ::mio::unix::SourceFd;
use ::mio::{Interest, Registry, Token};
use nix::errno::Errno;

use crate::sink::StatusSink;
use crate::source::{Received, RecvError, StatusSource};

/// A [`StatusSource`] that mio can register.
///
/// # Examples
///
/// ```no_run
/// # fn master<S: master_proto::StatusSource>(source: S) -> Result<(), Box<dyn std::error::Error>> {
/// use master_proto::StatusSource;
/// use master_proto::mio::MioSource;
/// use mio::{Events, Interest, Poll, Token};
///
/// let mut poll = Poll::new()?;
/// let mut source = MioSource::new(source);
/// poll.registry().register(&mut source, Token(0), Interest::READABLE)?;
/// let mut events = Events::with_capacity(16);
/// loop {
///     poll.poll(&mut events, None)?;
///     // Edge-triggered: drain until nothing is pending, then poll again.
///     source.drain(|item| println!("{item:?}"))?;
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct MioSource<S> {
    source: S,
}

impl<S: StatusSource> MioSource<S> {
    /// Wraps `source`; register it with a `mio::Registry`.
    pub fn new(source: S) -> MioSource<S> {
        MioSource { source }
    }

    /// The source.
    pub fn get_ref(&self) -> &S {
        &self.source
    }

    /// The source, for the transport's calls that change it
    /// (`child_end`, `register_child`, `forget_child`). Do not replace it
    /// while it is registered: mio's registration names the descriptor.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// The source back (deregister it first).
    pub fn into_inner(self) -> S {
        self.source
    }
}

impl<S: StatusSource> AsFd for MioSource<S> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.source.as_fd()
    }
}

impl<S: StatusSource> StatusSource for MioSource<S> {
    fn try_recv(&mut self) -> Result<Option<Received>, RecvError> {
        self.source.try_recv()
    }

    /// The wrapped source's own `drain` (memfd's is batched).
    fn drain(&mut self, f: impl FnMut(Received)) -> Result<usize, RecvError> {
        self.source.drain(f)
    }

    fn overwritten(&self) -> Option<u64> {
        self.source.overwritten()
    }
}

impl<S: StatusSource> Source for MioSource<S> {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        SourceFd(&self.source.as_fd().as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        SourceFd(&self.source.as_fd().as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.source.as_fd().as_raw_fd()).deregister(registry)
    }
}

/// A sink's disconnect fd, for mio: an event on it means the master may
/// have gone; [`fired`](Self::fired) says whether it has.
///
/// # Examples
///
/// ```no_run
/// # fn child(sink: impl master_proto::StatusSink) -> std::io::Result<()> {
/// use master_proto::mio::MioDisconnect;
/// use mio::{Events, Interest, Poll, Token};
///
/// let mut poll = Poll::new()?;
/// let mut gone = MioDisconnect::new(&sink);
/// poll.registry().register(&mut gone, Token(1), Interest::READABLE)?;
/// let mut events = Events::with_capacity(4);
/// while !gone.fired()? {
///     poll.poll(&mut events, None)?;
/// }
/// // The master closed the channel (a reload) or died: finish and exit.
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct MioDisconnect<'a> {
    fd: BorrowedFd<'a>,
}

impl<'a> MioDisconnect<'a> {
    /// `sink`'s disconnect fd, borrowed.
    pub fn new(sink: &'a impl StatusSink) -> MioDisconnect<'a> {
        MioDisconnect { fd: sink.disconnect_fd() }
    }

    /// Whether the master has gone (the descriptor is readable or hung up
    /// right now); never waits.
    ///
    /// # Errors
    ///
    /// `poll(2)`'s errno, other than `EINTR` (retried).
    pub fn fired(&self) -> Result<bool, Errno> {
        crate::lifeline::fired(self.fd)
    }
}

impl Source for MioDisconnect<'_> {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).deregister(registry)
    }
}
