//! The [`Transport`] trait: how a backend opens a service's channel and
//! hands each child its end.
//!
//! A transport is Postfix's `master_status_init()` plus the channel half of
//! `master_spawn()`, for one mechanism. The master calls
//! [`open`](Transport::open) once per service (and again on every reload),
//! [`child_end`](Transport::child_end) once per spawn, and installs the
//! result with [`crate::env::ChildFds`]. The child, after `exec`, calls
//! [`sink`](Transport::sink) on its [`crate::env::ChildEnv`].
//!
//! # See also
//!
//! Postfix `src/master/master_status.c` (`master_status_init`,
//! `master_status_cleanup`), `src/master/master_spawn.c`.

use std::io;

use crate::caps::Caps;
use crate::env::{ChildEnd, ChildEnv, EnvError};
use crate::sink::StatusSink;
use crate::source::StatusSource;

/// One status-channel mechanism.
pub trait Transport {
    /// The master's end of an open channel.
    type Source: StatusSource;
    /// The child's sink, built in the child after `exec`.
    type Sink: StatusSink;

    /// The short name used by tests, the bench and the demo (`pipe`,
    /// `duplex`, …), passed to children in `MASTER_STATUS_TRANSPORT`.
    const NAME: &'static str;

    /// What this transport promises (contract item 10).
    fn caps(&self) -> Caps;

    /// Opens a new channel for one service (at start and at each reload).
    /// Every descriptor it creates is close-on-exec.
    ///
    /// # Errors
    ///
    /// The system call that failed.
    fn open(&self) -> io::Result<Self::Source>;

    /// Makes the child's end for one spawn of the child with `generation`.
    /// Transports with a shared channel duplicate it; transports with a
    /// private channel per child make a new one and remember which child it
    /// belongs to once [`register_child`](Self::register_child) names its
    /// pid.
    ///
    /// # Errors
    ///
    /// The system call that failed (out of descriptors, say).
    fn child_end(&self, source: &mut Self::Source, generation: u32) -> io::Result<ChildEnd>;

    /// Tells the source the pid of the child just spawned with `generation`.
    /// Transports with a shared channel ignore it.
    fn register_child(&self, source: &mut Self::Source, generation: u32, pid: i32) {
        let _ = (source, generation, pid);
    }

    /// Tells the source that a child was reaped, so per-child resources can
    /// go. Transports with a shared channel ignore it.
    fn forget_child(&self, source: &mut Self::Source, pid: i32) {
        let _ = (source, pid);
    }

    /// Builds the child's sink from its standard environment, binding the
    /// child's own pid and its `GENERATION`.
    ///
    /// # Errors
    ///
    /// [`EnvError::WrongTransport`] when the environment names another
    /// transport, [`EnvError::MissingAux`] when a descriptor the transport
    /// needs is absent, [`EnvError::Io`] when setting it up fails.
    fn sink(&self, env: &mut ChildEnv) -> Result<Self::Sink, EnvError>;
}

/// Checks that `env` was made for transport `name`. A missing
/// `MASTER_STATUS_TRANSPORT` is accepted only by the Postfix-compatible
/// transport (`accept_unnamed`), since a real Postfix master sets none.
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
