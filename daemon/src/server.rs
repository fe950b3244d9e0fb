//! [`Daemon`]: the parsed arguments, the event hook, and what both skeletons share (setting up, waiting, serving one request).
//!
//! A skeleton starts by reading the standard environment
//! ([`ChildEnv::from_process`], with `-s N` listening sockets when given),
//! building the sink of whichever transport the master chose
//! ([`master_proto_transports::sink_from_env`]: Postfix's duplex pipe when
//! the master names none, as a real master(8) does) and checking each
//! listening socket against `-t`. It then waits in `poll(2)` on the sink's
//! disconnect descriptor, the listening sockets and (multi_server) its
//! clients, with the idle deadline as timeout.
//!
//! # Errors
//!
//! [`ServerError`]: the fatal errors, after which a Postfix server exits
//! with status 1. Everything else (a lost accept race, a client whose
//! handler failed, a failed `TAKEN`) is an [`Event`] and the skeleton
//! goes on.
//!
//! # See also
//!
//! Postfix `src/master/single_server.c`, `src/master/multi_server.c`,
//! `src/master/master_proto.c`.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use master_proto::env::ChildEnv;
use master_proto::{EnvError, NotifyError, Status, StatusSink};
use master_proto_transports::AnySink;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::args::{ArgsError, DaemonArgs, usage};
use crate::client::Client;
use crate::event::{Event, ExitReason, Reporter, log, stderr_logger};
use crate::listen::{ListenProblem, Listener};

/// After this many failed `accept` calls other than lost races, a server
/// gives up (Postfix's `msg_error_limit` default).
pub const ACCEPT_ERROR_LIMIT: u32 = 13;

/// Why a skeleton could not go on: a Postfix server's fatal errors.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The command line is bad after all, as the application judges it
    /// (say, [`DaemonArgs::no_operands`]): a usage error, exit status 2.
    #[error("{0}")]
    Args(#[from] ArgsError),
    /// The standard environment is incomplete or names a transport not
    /// built here.
    #[error("{0}")]
    Env(#[from] EnvError),
    /// A listening socket (`number` counts from 0, at fd 6 + `number`)
    /// is not what `-t` says.
    #[error("listening socket #{number} (fd {}): {problem}", number + 6)]
    ListenSocket {
        /// Which one.
        number: usize,
        /// What is wrong with it.
        problem: ListenProblem,
    },
    /// `accept` failed [`ACCEPT_ERROR_LIMIT`] times for other reasons than
    /// a lost race.
    #[error("too many accept errors, the last: {last}")]
    TooManyAcceptErrors {
        /// The last error.
        last: Errno,
    },
    /// An `AVAIL` failed for another reason than the master's leaving.
    #[error("notify AVAIL: {0}")]
    Notify(NotifyError),
    /// `poll(2)` failed.
    #[error("poll: {0}")]
    Poll(Errno),
    /// The stand-alone client on stdin/stdout failed.
    #[error("standard input/output: {0}")]
    StandAlone(io::ErrorKind),
    /// The async runtime could not be set up.
    #[error("async runtime: {0}")]
    Runtime(io::ErrorKind),
}

/// A Postfix-style server process: its arguments and where its events go.
/// [`single_server`](Daemon::single_server) and
/// [`multi_server`](Daemon::multi_server) (and, with the `tokio` feature,
/// their async twins in module `aio`, feature `tokio`) run it.
pub struct Daemon {
    pub(crate) args: DaemonArgs,
    pub(crate) reporter: Reporter,
}

impl fmt::Debug for Daemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Daemon").field("args", &self.args).field("reporter", &self.reporter).finish()
    }
}

impl Daemon {
    /// A daemon with these arguments, reporting its events nowhere.
    #[must_use]
    pub fn new(args: DaemonArgs) -> Daemon {
        Daemon { args, reporter: Reporter::new(None) }
    }

    /// A daemon with this process's arguments and environment
    /// ([`DaemonArgs::from_process`]).
    ///
    /// # Errors
    ///
    /// [`ArgsError`] for a bad command line.
    pub fn from_process() -> Result<Daemon, ArgsError> {
        DaemonArgs::from_process().map(Daemon::new)
    }

    /// Sends every [`Event`] to `hook` (replacing any hook set before).
    #[must_use]
    pub fn on_event(mut self, hook: impl FnMut(&Event<'_>) + 'static) -> Daemon {
        self.reporter = Reporter::new(Some(Box::new(hook)));
        self
    }

    /// Logs events to standard error as a Postfix daemon would
    /// ([`stderr_logger`] with the program's name and `-v` count).
    #[must_use]
    pub fn log_to_stderr(self) -> Daemon {
        let hook = stderr_logger(&self.args.program, self.args.verbose);
        self.on_event(hook)
    }

    /// The arguments it runs with.
    #[must_use]
    pub fn args(&self) -> &DaemonArgs {
        &self.args
    }

    /// A `main` for a server program: parses this process's arguments
    /// (printing the error and a usage line, and returning exit status 2,
    /// if they are bad), logs events to standard error
    /// ([`log_to_stderr`](Daemon::log_to_stderr)), runs `serve`, and
    /// returns 0 for a normal exit, 2 after a usage message for
    /// [`ServerError::Args`], or 1 after logging `fatal: ...` for any other
    /// [`ServerError`]. This is the only part of the crate that prints by
    /// itself.
    ///
    /// ```no_run
    /// use std::io::{BufRead, Write};
    /// fn main() -> std::process::ExitCode {
    ///     master_proto_daemon::Daemon::main(|daemon| {
    ///         daemon.single_server(|client| {
    ///             let mut line = String::new();
    ///             while client.read_line(&mut line)? > 0 {
    ///                 client.write_all(line.as_bytes())?;
    ///                 line.clear();
    ///             }
    ///             Ok(())
    ///         })
    ///     })
    /// }
    /// ```
    pub fn main(serve: impl FnOnce(Daemon) -> Result<ExitReason, ServerError>) -> ExitCode {
        let usage_error = |program: &str, why: &ArgsError| {
            log(program, format_args!("{why}"));
            log(program, format_args!("{}", usage(program)));
            ExitCode::from(2)
        };
        let daemon = match Daemon::from_process() {
            Ok(daemon) => daemon.log_to_stderr(),
            Err(why) => {
                let program = std::env::args().next().unwrap_or_default();
                return usage_error(program.rsplit('/').next().unwrap_or("daemon"), &why);
            }
        };
        let program = daemon.args.program.clone();
        match serve(daemon) {
            Ok(_) => ExitCode::SUCCESS,
            Err(ServerError::Args(why)) => usage_error(&program, &why),
            Err(why) => {
                log(&program, format_args!("fatal: {why}"));
                ExitCode::FAILURE
            }
        }
    }

    /// Reports `event`.
    pub(crate) fn report(&mut self, event: &Event<'_>) {
        self.reporter.report(event);
    }

    /// Reports the exit and returns its reason.
    pub(crate) fn exit(&mut self, reason: ExitReason) -> Result<ExitReason, ServerError> {
        self.report(&Event::Exiting(reason));
        Ok(reason)
    }

    /// The standard environment: the sink of the master's transport and
    /// the checked listening sockets.
    pub(crate) fn setup(&self) -> Result<(AnySink, Vec<Listener>), ServerError> {
        let mut env = match self.args.sockets {
            Some(n) => ChildEnv::from_process_with_listen(n)?,
            None => ChildEnv::from_process()?,
        };
        let sink = master_proto_transports::sink_from_env(&mut env)?;
        // Parsing makes sure there is a type; a program that builds its
        // arguments itself may clear it to take each socket as it is.
        let service_type = self.args.service_type;
        let listeners = env
            .take_listen()
            .into_iter()
            .enumerate()
            .map(|(number, fd)| {
                Listener::new(fd, service_type).map_err(|problem| ServerError::ListenSocket { number, problem })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((sink, listeners))
    }

    /// Tells the master `TAKEN` before serving a request, as Postfix's
    /// `single_server_wakeup` and `multi_server_execute` do: a failure is
    /// reported and ignored, since dropping a client already in hand
    /// "would be rude"; the `AVAIL` after it decides.
    pub(crate) fn taken(&mut self, sink: &AnySink) {
        if let Err(error) = sink.notify(Status::TAKEN) {
            self.report(&Event::NotifyFailed { status: Status::TAKEN, error });
        }
    }

    /// Tells the master `AVAIL` after a request; `false` when the master
    /// has gone, which ends the process.
    pub(crate) fn avail(&mut self, sink: &AnySink) -> Result<bool, ServerError> {
        match sink.notify(Status::AVAIL) {
            Ok(()) => Ok(true),
            Err(NotifyError::Disconnected) => Ok(false),
            Err(e) => Err(ServerError::Notify(e)),
        }
    }

    /// Counts one failed `accept`: reported, and fatal past the limit.
    pub(crate) fn accept_failed(&mut self, errno: Errno, count: &mut u32) -> Result<(), ServerError> {
        *count = count.saturating_add(1);
        self.report(&Event::AcceptFailed { errno, count: *count });
        if *count >= ACCEPT_ERROR_LIMIT { Err(ServerError::TooManyAcceptErrors { last: errno }) } else { Ok(()) }
    }
}

/// What [`wait`] saw.
#[derive(Debug, Default)]
pub(crate) struct Ready {
    /// The disconnect descriptor fired: the master has gone.
    pub(crate) master_gone: bool,
    /// The listening sockets with a connection to accept, by index.
    pub(crate) listeners: Vec<usize>,
    /// The clients with data (or EOF), by index.
    pub(crate) clients: Vec<usize>,
}

/// Waits in `poll(2)` until the master goes, a listening socket or a
/// client is readable, or `deadline` (none: for ever). A signal ends the
/// wait early with nothing ready.
pub(crate) fn wait(
    disconnect: BorrowedFd<'_>,
    listeners: &[Listener],
    clients: &[Client],
    deadline: Option<Instant>,
) -> Result<Ready, ServerError> {
    let timeout = match deadline {
        None => PollTimeout::NONE,
        Some(at) => {
            let left = at.saturating_duration_since(Instant::now());
            // Round up, so that the wait never ends before the deadline.
            PollTimeout::try_from(left.as_millis().saturating_add(u128::from(!left.is_zero())))
                .unwrap_or(PollTimeout::MAX)
        }
    };
    let mut fds: Vec<PollFd<'_>> = std::iter::once(disconnect)
        .chain(listeners.iter().map(AsFd::as_fd))
        .chain(clients.iter().map(AsFd::as_fd))
        .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
        .collect();
    match poll(&mut fds, timeout) {
        Ok(_) => {}
        Err(Errno::EINTR) => return Ok(Ready::default()),
        Err(e) => return Err(ServerError::Poll(e)),
    }
    // Any event on the disconnect descriptor (readable at EOF, hang-up,
    // error) means the master has gone: nobody ever writes to it.
    let fired = |fd: &PollFd<'_>| fd.any().unwrap_or(true);
    let master_gone = fired(&fds[0]);
    let (listen_fds, client_fds) = fds[1..].split_at(listeners.len());
    Ok(Ready {
        master_gone,
        listeners: listen_fds.iter().enumerate().filter(|(_, fd)| fired(fd)).map(|(i, _)| i).collect(),
        clients: client_fds.iter().enumerate().filter(|(_, fd)| fired(fd)).map(|(i, _)| i).collect(),
    })
}

/// The moment `limit` from now, or `None` for no limit (zero).
pub(crate) fn deadline(limit: Duration) -> Option<Instant> {
    if limit.is_zero() { None } else { Instant::now().checked_add(limit) }
}

/// Whether `deadline` has passed.
pub(crate) fn passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|at| Instant::now() >= at)
}
