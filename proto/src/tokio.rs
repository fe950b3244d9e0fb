//! tokio adapters (cargo feature `tokio`): a master's [`StatusSource`]
//! awaited on tokio's reactor, and a child's wait for its master's
//! disconnect.
//!
//! - [`AsyncSource`] wraps any source: [`recv`](AsyncSource::recv) the next
//!   item, [`drain`](AsyncSource::drain) every pending item in one batch
//!   (memfd's batched drain included), or
//!   [`poll_recv`](AsyncSource::poll_recv) for a hand-written future or
//!   `Stream`. The master keeps using the transport's own calls
//!   (`child_end`, `register_child`, `forget_child`) on
//!   [`get_mut`](AsyncSource::get_mut).
//! - [`Disconnect`] (and [`disconnected`]) resolves once the child's master
//!   has gone, by orderly close or death, from the sink's
//!   [`disconnect_fd`](StatusSink::disconnect_fd).
//!
//! [`StatusSink::notify`] stays synchronous: it costs from a few
//! nanoseconds (memfd, master awake) to one system call that blocks only on
//! a full channel, as the transport declares. An async wrapper would add a
//! future per update and change nothing a child can observe.
//!
//! No `Stream` here: it would cost a dependency (`futures-core`) for what
//! [`poll_recv`](AsyncSource::poll_recv) gives in three lines of the
//! caller's.
//!
//! # Edge-triggered readiness
//!
//! tokio's reactor waits edge-triggered: once it has reported a descriptor
//! readable, it reports it again only after a new edge. Its rule is to
//! clear readiness only after the resource said it would block. Here that
//! is the source's `None` from `try_recv`, or the end of a `drain`: readiness
//! is cleared after one of those and never otherwise, and contract item 7
//! (see the [crate documentation](crate)) makes that safe, since whatever
//! is pending then or sent later makes a new edge, a fairness bound that
//! ended a drain early included. Clearing goes through the ready guard,
//! which clears only the readiness tokio had seen when the guard was made:
//! an edge that arrives meanwhile is kept.
//!
//! Both sides register a duplicate of the descriptor (close-on-exec, so
//! children never inherit it), owned here, for reading only. That keeps
//! tokio's registration valid even if the source or sink it came from goes
//! first, and lets a [`Disconnect`] outlive the borrow of its sink (move it
//! into a spawned task).
//!
//! # Errors
//!
//! [`RecvError`] as the source reports it. tokio's own failure to wait (its
//! runtime shutting down) is [`RecvError::Io`] with the error's errno, or
//! `ECANCELED` when it has none. Registering fails with [`RegisterError`],
//! which gives the source back (dropping it would close the channel).
//!
//! # Safety
//!
//! tokio's `AsyncFd::register_with_interest` is `unsafe`: the descriptor
//! must stay open, name the same open file, and be the number `as_raw_fd`
//! returns, for the whole life of the registration. Each block registers an
//! [`OwnedFd`] this module just made by duplicating, moved into the
//! `AsyncFd` and never handed out mutably, so all three hold until the
//! `AsyncFd` is dropped.
//!
//! # See also
//!
//! `tokio::io::unix::AsyncFd`; module `mio` for mio; Postfix
//! `src/master/master_status.c` (`master_status_event`, the handler these
//! replace), `src/master/single_server.c` (watching fd 5 for EOF).

#![allow(unsafe_code)] // Safety: registering descriptors with tokio's reactor (see the module docs).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::task::{Context, Poll, ready};

use ::tokio::io::Interest;
use ::tokio::io::unix::AsyncFd;
use nix::errno::Errno;

use crate::sink::StatusSink;
use crate::source::{Received, RecvError, StatusSource};

/// A [`StatusSource`] on tokio's reactor.
///
/// # Examples
///
/// ```no_run
/// # async fn master<S: master_proto::StatusSource>(source: S) -> Result<(), Box<dyn std::error::Error>> {
/// use master_proto::master::{Config, Master};
/// use master_proto::tokio::AsyncSource;
///
/// let mut master = Master::new(Config::default());
/// let mut source = AsyncSource::new(source).map_err(|e| e.into_parts().1)?;
/// loop {
///     // Waits for readiness, then hands over everything pending.
///     source.drain(|item| {
///         let _outcome = master.receive(&item);
///     }).await?;
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncSource<S> {
    source: S,
    /// A duplicate of the source's descriptor, registered for reading.
    fd: AsyncFd<OwnedFd>,
}

impl<S: StatusSource> AsyncSource<S> {
    /// Registers `source` with the current tokio runtime's reactor.
    ///
    /// # Errors
    ///
    /// [`RegisterError`], with the source given back, when its descriptor
    /// cannot be duplicated or registered.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with I/O enabled (as tokio's `AsyncFd`).
    pub fn new(source: S) -> Result<AsyncSource<S>, RegisterError<S>> {
        match register(source.as_fd().try_clone_to_owned(), Interest::READABLE) {
            Ok(fd) => Ok(AsyncSource { source, fd }),
            Err(error) => Err(RegisterError { error, status_source: source }),
        }
    }

    /// The next item, waiting for one if none is pending.
    ///
    /// Cancel-safe: an item is taken only in the step that returns it.
    ///
    /// # Errors
    ///
    /// As [`StatusSource::try_recv`]; see the module docs for tokio's own
    /// failures.
    pub async fn recv(&mut self) -> Result<Received, RecvError> {
        loop {
            let mut guard = self.fd.readable().await.map_err(reactor_error)?;
            match self.source.try_recv()? {
                Some(item) => return Ok(item),
                // The source's "would block": only now may readiness go.
                None => guard.clear_ready(),
            }
        }
    }

    /// Waits until something is pending, then hands every pending item to
    /// `f` with the source's own [`drain`](StatusSource::drain) (one batch);
    /// returns how many, never 0.
    ///
    /// Cancel-safe: items are taken only in the step that returns.
    ///
    /// # Errors
    ///
    /// As [`StatusSource::drain`] (items handed to `f` before the error are
    /// not lost); see the module docs for tokio's own failures.
    pub async fn drain(&mut self, mut f: impl FnMut(Received)) -> Result<usize, RecvError> {
        loop {
            let mut guard = self.fd.readable().await.map_err(reactor_error)?;
            let n = self.source.drain(&mut f)?;
            // The drain ended: what is left, and what comes, makes a new
            // edge (contract item 7), so readiness may go.
            guard.clear_ready();
            if n > 0 {
                return Ok(n);
            }
        }
    }

    /// The poll form of [`recv`](Self::recv), for a hand-written future or
    /// `Stream`: `Ready` with the next item, or `Pending` with `cx`'s
    /// waker registered for the next readiness edge.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Received, RecvError>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx)).map_err(reactor_error)?;
            match self.source.try_recv()? {
                Some(item) => return Poll::Ready(Ok(item)),
                None => guard.clear_ready(),
            }
        }
    }

    /// The source.
    pub fn get_ref(&self) -> &S {
        &self.source
    }

    /// The source, for the transport's calls that change it
    /// (`child_end`, `register_child`, `forget_child`). Reading it directly
    /// is harmless (readiness may then report a wake-up with nothing
    /// pending); replacing it is not supported: the registration follows
    /// the descriptor the source had when it was wrapped.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// Deregisters the source and gives it back.
    pub fn into_inner(self) -> S {
        self.source
    }
}

/// Why [`AsyncSource::new`] failed, holding the source it was given
/// (dropping a source closes its channel, which tells every child to go).
#[derive(thiserror::Error)]
#[error("registering the status channel with tokio's reactor failed: {error}")]
pub struct RegisterError<S> {
    #[source]
    error: io::Error,
    status_source: S,
}

impl<S> RegisterError<S> {
    /// The source back, and the error.
    pub fn into_parts(self) -> (S, io::Error) {
        (self.status_source, self.error)
    }

    /// The error.
    pub fn error(&self) -> &io::Error {
        &self.error
    }
}

impl<S> fmt::Debug for RegisterError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterError").field("error", &self.error).finish_non_exhaustive()
    }
}

/// A child's wait, on tokio's reactor, for its master to go: the sink's
/// disconnect fd, duplicated and registered.
///
/// # Examples
///
/// ```no_run
/// # async fn child(sink: impl master_proto::StatusSink) -> std::io::Result<()> {
/// use master_proto::tokio::Disconnect;
///
/// let gone = Disconnect::new(&sink)?;
/// // ... serve; in a select! beside accept():
/// gone.wait().await?;
/// // The master closed the channel (a reload) or died: finish and exit.
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Disconnect {
    fd: AsyncFd<OwnedFd>,
}

impl Disconnect {
    /// Registers a duplicate of `sink`'s disconnect fd with the current
    /// tokio runtime's reactor.
    ///
    /// # Errors
    ///
    /// When the descriptor cannot be duplicated or registered.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with I/O enabled (as tokio's `AsyncFd`).
    pub fn new(sink: &impl StatusSink) -> io::Result<Disconnect> {
        Ok(Disconnect { fd: register(sink.disconnect_fd().try_clone_to_owned(), DISCONNECT)? })
    }

    /// Resolves once the master has gone, and not before: a readiness that
    /// the descriptor does not confirm (a zero-timeout `poll`) is cleared
    /// and waited out. Cancel-safe; may be awaited again, and resolves at
    /// once after the master has gone.
    ///
    /// # Errors
    ///
    /// tokio's failure to wait (its runtime shutting down), or `poll(2)`'s.
    pub async fn wait(&self) -> io::Result<()> {
        loop {
            // Readable, hung up, or in error: a pipe's write end reports
            // only POLLERR once its reader has gone, which tokio does not
            // count as readable.
            let mut guard = self.fd.ready(DISCONNECT).await?;
            if crate::lifeline::fired(self.fd.get_ref().as_fd()).map_err(io::Error::from)? {
                return Ok(());
            }
            guard.clear_ready();
        }
    }
}

/// Waits, on tokio's reactor, until `sink`'s master has gone: a
/// [`Disconnect`] made and awaited at once.
///
/// # Errors
///
/// As [`Disconnect::new`] and [`Disconnect::wait`].
pub async fn disconnected(sink: &impl StatusSink) -> io::Result<()> {
    Disconnect::new(sink)?.wait().await
}

/// What a disconnect fd may report once the master has gone.
const DISCONNECT: Interest = Interest::READABLE.add(Interest::ERROR);

/// Registers `fd` (a duplicate just made) for `interest`.
fn register(fd: io::Result<OwnedFd>, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    let fd = fd?;
    // SAFETY: `fd` is an OwnedFd made by the caller (a duplicate), moved
    // into the AsyncFd, which never hands it out mutably: it stays open,
    // names the same open file, and its number is what `as_raw_fd` returns,
    // until the AsyncFd is dropped.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into_parts().1)
}

/// tokio's failure to wait, as the source's error.
fn reactor_error(e: io::Error) -> RecvError {
    RecvError::Io(e.raw_os_error().map_or(Errno::ECANCELED, Errno::from_raw))
}
