//! What the skeletons report: events for a caller's hook (or `tracing`), and why a daemon exits.
//!
//! A skeleton prints nothing itself. Each thing worth a log line in a
//! Postfix server (`master disconnect -- exiting`, `idle timeout --
//! exiting`, a failed `accept`, a client whose handler failed) is an
//! [`Event`], handed to the hook the application set with
//! [`Daemon::on_event`](crate::Daemon::on_event) and, with the `tracing`
//! feature, emitted as a `tracing` event as well. [`stderr_logger`] is a
//! ready-made hook that writes them as Postfix does with `-V`:
//! `program[pid]: text`, warnings always, the rest as `-v` asks.
//!
//! # Errors
//!
//! Nothing here fails: a log line that cannot be written is dropped.
//!
//! # See also
//!
//! Postfix `src/util/msg.c` (`msg_info`, `msg_warn`, `msg_verbose`),
//! `src/master/single_server.c` (`single_server_abort`,
//! `single_server_timeout`).

use std::fmt;
use std::io::{self, Write};

use master_proto::{NotifyError, Status};
use nix::errno::Errno;

/// Why a skeleton returned: each is a normal exit (status 0) for a Postfix
/// server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExitReason {
    /// The master closed the status channel or died: seen as the sink's
    /// disconnect descriptor becoming readable, or an `AVAIL` that failed
    /// with [`NotifyError::Disconnected`].
    MasterDisconnect,
    /// `max_idle` passed without a client.
    IdleTimeout,
    /// `max_use` clients were served.
    UseLimit,
    /// The stand-alone (`-S`) client on stdin/stdout is done.
    StandAloneDone,
}

impl ExitReason {
    /// Postfix's words for it.
    #[must_use]
    pub const fn text(self) -> &'static str {
        match self {
            ExitReason::MasterDisconnect => "master disconnect",
            ExitReason::IdleTimeout => "idle timeout",
            ExitReason::UseLimit => "use limit reached",
            ExitReason::StandAloneDone => "stand-alone client done",
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

/// How much an [`Event`] matters, as Postfix would log it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Level {
    /// Only with `-v -v`.
    Debug,
    /// Only with `-v` (Postfix's `if (msg_verbose) msg_info(...)`).
    Info,
    /// Always (`msg_warn`).
    Warning,
}

/// One thing a skeleton did or saw.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A client connected (`connection established`); `client` counts
    /// from 1 in this process.
    Connected {
        /// The client's number.
        client: u64,
        /// Who it is: an address for TCP, `local` for a UNIX-domain socket.
        peer: &'a str,
    },
    /// A client is gone (`connection closed`), after its handler failed
    /// when `error` is set.
    Closed {
        /// The client's number.
        client: u64,
        /// Who it was.
        peer: &'a str,
        /// The handler's error, if any.
        error: Option<&'a io::Error>,
    },
    /// Another process took the connection first (`accept` said `EAGAIN`
    /// or the like): normal on a socket shared by a service's children.
    LostRace {
        /// What `accept` said.
        errno: Errno,
    },
    /// `accept` failed for another reason; `count` such failures so far.
    AcceptFailed {
        /// What `accept` said.
        errno: Errno,
        /// How many accept errors this process has seen.
        count: u32,
    },
    /// A `TAKEN` notification failed. As Postfix, the client in hand is
    /// served anyway; the `AVAIL` after it decides.
    NotifyFailed {
        /// The status that could not be sent.
        status: Status,
        /// Why.
        error: NotifyError,
    },
    /// The skeleton returns, for `reason`.
    Exiting(ExitReason),
}

impl Event<'_> {
    /// How much it matters.
    #[must_use]
    pub fn level(&self) -> Level {
        match self {
            Event::Connected { .. } | Event::LostRace { .. } => Level::Debug,
            Event::Closed { error: None, .. } => Level::Debug,
            Event::Closed { error: Some(_), .. } | Event::AcceptFailed { .. } => Level::Warning,
            Event::NotifyFailed { .. } | Event::Exiting(_) => Level::Info,
        }
    }
}

impl fmt::Display for Event<'_> {
    /// The log line's text, in Postfix's words where Postfix has some.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Connected { client, peer } => write!(f, "connection established: client {client} from {peer}"),
            Event::Closed { client, peer, error: None } => write!(f, "connection closed: client {client} from {peer}"),
            Event::Closed { client, peer, error: Some(e) } => write!(f, "client {client} from {peer}: {e}"),
            Event::LostRace { errno } => write!(f, "accept connection: {errno} (another process took it)"),
            Event::AcceptFailed { errno, count } => write!(f, "accept connection: {errno} (error {count})"),
            Event::NotifyFailed { status, error } => write!(f, "notify {status}: {error}"),
            Event::Exiting(reason) => write!(f, "{reason} -- exiting"),
        }
    }
}

/// Writes one line to standard error as a Postfix daemon does with `-V`:
/// `program[pid]: line`, in one `write(2)` so that lines of a service's
/// children, which share the master's stderr, do not interleave.
pub fn log(program: &str, line: fmt::Arguments<'_>) {
    let line = format!("{program}[{}]: {line}\n", std::process::id());
    let _ = io::stderr().lock().write_all(line.as_bytes());
}

/// A hook that logs events to standard error with [`log`]: warnings always
/// (as `warning: ...`), [`Level::Info`] with `verbose >= 1`,
/// [`Level::Debug`] with `verbose >= 2`.
pub fn stderr_logger(program: &str, verbose: u32) -> impl FnMut(&Event<'_>) + 'static {
    let program = program.to_owned();
    move |event| match event.level() {
        Level::Warning => log(&program, format_args!("warning: {event}")),
        Level::Info if verbose >= 1 => log(&program, format_args!("{event}")),
        Level::Debug if verbose >= 2 => log(&program, format_args!("{event}")),
        _ => {}
    }
}

/// An application's event hook.
pub(crate) type Hook = Box<dyn FnMut(&Event<'_>)>;

/// Where a skeleton sends its events: the application's hook, and
/// `tracing` when that feature is on.
pub(crate) struct Reporter {
    hook: Option<Hook>,
}

impl Reporter {
    pub(crate) fn new(hook: Option<Hook>) -> Reporter {
        Reporter { hook }
    }

    pub(crate) fn report(&mut self, event: &Event<'_>) {
        #[cfg(feature = "tracing")]
        match event.level() {
            Level::Warning => tracing::warn!(target: "master_proto_daemon", "{event}"),
            Level::Info => tracing::info!(target: "master_proto_daemon", "{event}"),
            Level::Debug => tracing::debug!(target: "master_proto_daemon", "{event}"),
        }
        if let Some(hook) = &mut self.hook {
            hook(event);
        }
    }
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reporter").field("hook", &self.hook.is_some()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_worded_as_postfix_words_them() {
        assert_eq!(Event::Exiting(ExitReason::MasterDisconnect).to_string(), "master disconnect -- exiting");
        assert_eq!(Event::Exiting(ExitReason::IdleTimeout).to_string(), "idle timeout -- exiting");
        assert_eq!(Event::Exiting(ExitReason::UseLimit).level(), Level::Info);
        assert_eq!(Event::AcceptFailed { errno: Errno::EMFILE, count: 1 }.level(), Level::Warning);
        assert_eq!(Event::LostRace { errno: Errno::EAGAIN }.level(), Level::Debug);
    }

    #[test]
    fn the_hook_sees_every_event() {
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let log = std::rc::Rc::clone(&seen);
        let mut r = Reporter::new(Some(Box::new(move |e: &Event<'_>| log.borrow_mut().push(e.to_string()))));
        r.report(&Event::Exiting(ExitReason::UseLimit));
        assert_eq!(*seen.borrow(), ["use limit reached -- exiting"]);
    }
}
