//! The child's side of a Postfix-style service as a library: master(8)'s daemon arguments, and Postfix's single_server and multi_server skeletons.
//!
//! A program that is to run as a service under a master (a real Postfix
//! master(8), or one built from this project) writes only what it does
//! with a client; this crate does the rest, as Postfix's skeletons do:
//!
//! - [`args`]: the command line and environment master(8) passes
//!   (`-n NAME -t TYPE`, `-o name=value`, `-s N`, `-S`, `-v`, …,
//!   `GENERATION`, `MAIL_CONFIG`), parsed into [`DaemonArgs`];
//! - [`Daemon::single_server`] (module [`single`]): one client at a time,
//!   `TAKEN` while serving it, `AVAIL` after; exits after `max_use`
//!   clients, after `max_idle` without one, or as soon as the master goes;
//! - [`Daemon::multi_server`] (module [`multi`]): many clients per process,
//!   the handler called for each request, `TAKEN`/`AVAIL` around it;
//! - with the `tokio` feature, module `aio`: both again with `async fn`
//!   handlers on tokio's reactor.
//!
//! The status sink comes from the transports facade
//! ([`master_proto_transports::sink_from_env`]), so one binary runs under
//! every transport of this project's master and, on the duplex pipe, under
//! a real Postfix master(8). Listening sockets (fd 6 on, `-s N` of them,
//! TCP or UNIX-domain as `-t` says) are shared with the service's other
//! children: they are non-blocking and a lost `accept` race is normal.
//! Every client's reads and writes are bounded by `ipc_timeout`.
//!
//! ```no_run
//! use std::io::{BufRead, Write};
//! use master_proto_daemon::{Daemon, Session};
//!
//! // A multi_server that answers each line with its length.
//! fn main() -> std::process::ExitCode {
//!     Daemon::main(|daemon| {
//!         daemon.multi_server(|client| {
//!             let mut line = String::new();
//!             if client.read_line(&mut line)? == 0 {
//!                 return Ok(Session::Close);
//!             }
//!             writeln!(client, "{}", line.trim_end().len())?;
//!             Ok(Session::Keep)
//!         })
//!     })
//! }
//! ```
//!
//! A library prints nothing: every event goes to a hook the application
//! sets ([`Daemon::on_event`], or [`Daemon::log_to_stderr`] for Postfix's
//! `program[pid]: ...` lines) and, with the `tracing` feature, to
//! `tracing`. [`Daemon::main`] is the one helper that prints (a usage
//! error, a fatal error), for programs that want a Postfix server's `main`.
//!
//! What is not done: chroot (`-c`) and dropping privileges (`-u`) are
//! recorded in [`DaemonArgs`] but left to the application; `main.cf` is
//! not read (only `-o` overrides are); there is no select lock file (the
//! sockets are non-blocking instead) and no in-flow control (fds 3, 4).
//!
//! # Errors
//!
//! [`ArgsError`] for a bad command line, [`ServerError`] for what is
//! fatal to a running server; the rest are [`Event`]s.
//!
//! # See also
//!
//! Postfix `src/master/single_server.c`, `src/master/multi_server.c`,
//! `src/global/mail_server.h`; crate `master-proto` for the protocol,
//! `master-proto-transports` for the transports.

pub mod args;
mod client;
pub mod event;
pub mod listen;
pub mod multi;
mod server;
pub mod single;

#[cfg(feature = "tokio")]
pub mod aio;

pub use args::{ArgsError, DaemonArgs, Limits, ServiceType};
pub use client::Client;
pub use event::{Event, ExitReason, Level, log, stderr_logger};
pub use listen::ListenProblem;
pub use multi::Session;
pub use server::{ACCEPT_ERROR_LIMIT, Daemon, ServerError};

/// The README's examples (the supervisor, the facade's master and child,
/// this crate's ten-line service), compiled as doctests so they stay true:
/// this crate depends (the supervisor as a dev-dependency) on every crate
/// they use.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
