//! The [`Transport`] trait: how a backend opens a service's channel and
//! hands each child its end.
//!
//! A transport is Postfix's `master_status_init()` plus the channel half of
//! `master_spawn()`, for one mechanism. The master calls
//! [`open`](Transport::open) once per service (and again on every reload),
//! [`child_end`](Transport::child_end) once per spawn, installs the result
//! with [`crate::env::ChildFds`], and names the spawned child with
//! [`register_child`](Transport::register_child) (and, once reaped, with
//! [`forget_child`](Transport::forget_child)). The child, after `exec`,
//! calls [`sink`](Transport::sink) on its [`crate::env::ChildEnv`].
//!
//! The trait stamps the transport's name on every child end it makes and
//! checks it in every sink it builds ([`child_end`](Transport::child_end)
//! and [`sink`](Transport::sink) are provided around the two methods a
//! backend writes, [`end_fds`](Transport::end_fds) and
//! [`open_sink`](Transport::open_sink)), so a backend cannot forget the
//! check and accept another transport's environment.
//!
//! # See also
//!
//! Postfix `src/master/master_status.c` (`master_status_init`,
//! `master_status_cleanup`), `src/master/master_spawn.c`.

use std::io;
use std::os::fd::OwnedFd;

use crate::caps::Caps;
use crate::env::{ChildEnd, ChildEnv, EnvError};
use crate::sink::StatusSink;
use crate::source::StatusSource;

/// The descriptors of one child's end, as a backend makes them: what goes
/// to fd 5, and the named auxiliary descriptors.
#[derive(Debug)]
pub struct EndFds {
    /// What the child gets at fd 5.
    pub status: OwnedFd,
    /// Auxiliary descriptors by name, placed after the listening sockets.
    pub aux: Vec<(&'static str, OwnedFd)>,
}

/// One status-channel mechanism.
///
/// Values are cheap to copy and carry no state of their own: every channel
/// lives in a [`Source`](Self::Source). A choice made at run time is a
/// value too (the `master-proto-transports` crate's `AnyTransport`), so
/// code generic over `T: Transport` serves both.
pub trait Transport {
    /// The master's end of an open channel.
    type Source: StatusSource;
    /// The child's sink, built in the child after `exec`.
    type Sink: StatusSink;

    /// The short name (`pipe`, `duplex`, …), passed to children in
    /// `MASTER_STATUS_TRANSPORT` and used to pick a transport by name.
    fn name(&self) -> &'static str;

    /// What this transport promises (contract item 10).
    fn caps(&self) -> Caps;

    /// Opens a new channel for one service (at start and at each reload).
    /// Every descriptor it creates is close-on-exec.
    ///
    /// # Errors
    ///
    /// The system call that failed.
    fn open(&self) -> io::Result<Self::Source>;

    /// Makes the descriptors of the child's end for one spawn of the child
    /// with `generation`. Transports with a shared channel duplicate it;
    /// transports with a private channel per child make a new one and
    /// remember which child it belongs to once
    /// [`register_child`](Self::register_child) names its pid. Callers use
    /// [`child_end`](Self::child_end).
    ///
    /// # Errors
    ///
    /// The system call that failed (out of descriptors, say).
    fn end_fds(&self, source: &mut Self::Source, generation: u32) -> io::Result<EndFds>;

    /// Makes the child's end for one spawn: [`end_fds`](Self::end_fds),
    /// stamped with this transport's name.
    ///
    /// # Errors
    ///
    /// As [`end_fds`](Self::end_fds).
    fn child_end(&self, source: &mut Self::Source, generation: u32) -> io::Result<ChildEnd> {
        let EndFds { status, aux } = self.end_fds(source, generation)?;
        Ok(ChildEnd { transport: self.name(), status, aux })
    }

    /// Tells the source the pid of the child just spawned with `generation`.
    /// Transports with a shared channel have nothing to do.
    ///
    /// # Errors
    ///
    /// The source could not take the child in (no end is pending for
    /// `generation`, or a system call failed). The child's channel is then
    /// closed: it sees the master gone, as after a reload, and exits.
    fn register_child(&self, source: &mut Self::Source, generation: u32, pid: i32) -> io::Result<()> {
        let _ = (source, generation, pid);
        Ok(())
    }

    /// Tells the source that a child was reaped, so per-child resources can
    /// go; what the child sent before it died is still delivered.
    /// Transports with a shared channel have nothing to do.
    ///
    /// # Errors
    ///
    /// A system call that failed while letting the channel go; the channel
    /// is gone either way.
    fn forget_child(&self, source: &mut Self::Source, pid: i32) -> io::Result<()> {
        let _ = (source, pid);
        Ok(())
    }

    /// Builds the child's sink from its standard environment, once
    /// [`sink`](Self::sink) has checked that the environment is this
    /// transport's. Callers use [`sink`](Self::sink).
    ///
    /// # Errors
    ///
    /// As [`sink`](Self::sink).
    fn open_sink(&self, env: &mut ChildEnv) -> Result<Self::Sink, EnvError>;

    /// Builds the child's sink from its standard environment, binding the
    /// child's own pid and its `GENERATION`. An environment that names no
    /// transport is accepted only by the transport that speaks Postfix's
    /// wire ([`Caps::postfix_wire`]), since a real Postfix master sets no
    /// `MASTER_STATUS_TRANSPORT`.
    ///
    /// # Errors
    ///
    /// [`EnvError::WrongTransport`] when the environment names another
    /// transport, [`EnvError::MissingAux`] when a descriptor the transport
    /// needs is absent, [`EnvError::Unusable`] when a descriptor is not what
    /// the transport expects, [`EnvError::Io`] when setting it up fails.
    fn sink(&self, env: &mut ChildEnv) -> Result<Self::Sink, EnvError> {
        check_transport(env, self.name(), self.caps().postfix_wire)?;
        self.open_sink(env)
    }
}

/// Checks that `env` was made for transport `name`. A missing
/// `MASTER_STATUS_TRANSPORT` is accepted only when `accept_unnamed` (the
/// Postfix-compatible transport), since a real Postfix master sets none.
///
/// # Errors
///
/// [`EnvError::WrongTransport`] naming both.
pub fn check_transport(env: &ChildEnv, name: &'static str, accept_unnamed: bool) -> Result<(), EnvError> {
    match env.transport.as_deref() {
        Some(found) if found == name => Ok(()),
        None if accept_unnamed => Ok(()),
        found => Err(EnvError::WrongTransport { expected: name, found: found.unwrap_or("").to_owned() }),
    }
}
