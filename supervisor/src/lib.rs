//! The prefork master as a library: services of child processes, spawned on demand and kept by the Postfix master(8) status protocol.
//!
//! A [`Service`] is one master.cf line: listening sockets, a status
//! channel of any [`Transport`](master_proto::Transport), a command, and a
//! policy ([`Config`](master_proto::master::Config): process limit and
//! throttle). A [`Supervisor`] runs any number of them in one loop, as
//! master(8) does:
//!
//! - it watches a service's listening sockets only while no child is
//!   available, the service is not throttled and the process limit allows
//!   one more child ([`Master::should_listen`](master_proto::master::Master::should_listen));
//!   a connection then makes it spawn a child with the standard environment
//!   (status channel at fd 5, listening sockets from fd 6, `GENERATION`);
//! - it reads every update from each channel and judges it with the sans-IO
//!   bookkeeping ([`master_proto::master::Master`]): `TAKEN`, `AVAIL`, and
//!   the gossip it ignores;
//! - it reaps each child when its pidfd says it exited, throttles a
//!   service whose child died before serving anyone, reloads (a new channel
//!   and new generations; the old children finish their client and exit,
//!   and are reaped), and shuts down (channels closed, a grace period, then
//!   `SIGKILL`, everything reaped).
//!
//! ```no_run
//! use master_proto_supervisor::{Service, Supervisor};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut supervisor = Supervisor::new()?;
//! let echo = supervisor.add(
//!     Service::builder("echo")
//!         .listen_tcp(([127, 0, 0, 1], 0))
//!         .process_limit(8)
//!         .command(|_| std::process::Command::new("/usr/libexec/echo-child"))
//!         .build()?,
//! )?;
//! println!("listening on {:?}", supervisor.listen_addrs(echo));
//! let handle = supervisor.handle(); // reload() and shutdown() from any thread
//! # let _ = handle;
//! supervisor.run(|event| eprintln!("{event}"))?;
//! # Ok(()) }
//! ```
//!
//! # Manners
//!
//! The supervisor is a library in a process that is the application's:
//!
//! - it installs no signal handler and blocks no signal: child exits come
//!   through pidfds ([`ChildExits::Pidfd`]), requests through [`Handle`];
//! - it reaps only what it spawned, by pid (`waitpid(pid, WNOHANG)` once the
//!   pidfd is readable; never `waitpid(-1)`), so the application's own
//!   children, and tokio's, keep their exit statuses. Where pidfds are not
//!   to be had it polls its own pids ([`ChildExits::Poll`]);
//! - it prints nothing: every spawn, status outcome, reap, throttle, limit,
//!   reload and shutdown step is an [`Event`], handed to the caller; with
//!   the `tracing` feature each is also a `tracing` event;
//! - it blocks only in [`Supervisor::poll_once`] (and [`Supervisor::run`]),
//!   and only as long as it is told to.
//!
//! # Event loops
//!
//! [`Supervisor::as_fd`](std::os::fd::AsFd::as_fd) is one descriptor,
//! readable when anything is ready; [`Supervisor::next_deadline`] says when
//! time alone changes something; [`Supervisor::poll_once`] handles both.
//! [`Supervisor::run`] is the loop for programs without one; the `tokio`
//! feature adds `tokio::drive`.
//!
//! # Beyond Postfix
//!
//! Off by default: a spare pool ([`Spare`]: at least N idle children ready,
//! at most M), a crash-loop guard ([`CrashGuard`]: a sliding window of
//! abnormal exits, with a back-off schedule), and a snapshot per service
//! for metrics ([`Supervisor::snapshot`]). [`PostfixDaemon`] runs real
//! Postfix daemons as master(8) does.
//!
//! # Errors
//!
//! One error type per operation: [`BuildError`] (building a service),
//! [`NewError`], [`AddError`], [`PollError`], [`ReloadError`]. Nothing a
//! child does is an error: it is an [`Event`].
//!
//! # See also
//!
//! Postfix `src/master/master.c`, `master_ent.c`, `master_spawn.c`,
//! `master_status.c`, `master_avail.c`, `master_service.c`, `master_flow.c`;
//! `master_proto::master` for the rules.

#[cfg(not(any(target_os = "linux", target_os = "android")))]
compile_error!("master-proto-supervisor needs Linux or Android (epoll, pidfds, eventfd)");

pub mod event;
mod listen;
pub mod policy;
pub mod postfix;
mod service;
pub mod snapshot;
mod supervisor;
mod sys;
#[cfg(feature = "tokio")]
pub mod tokio;
#[cfg(feature = "tracing")]
mod trace;

pub use event::{ChannelOp, Event, ExitWatch, SpawnReason, StartError, StopReason};
pub use listen::ListenAddr;
pub use policy::{CrashGuard, Spare, SpareError};
pub use postfix::{FlowPipe, PostfixDaemon, ServiceType};
pub use service::{BuildError, Service, ServiceBuilder, Spawning};
pub use snapshot::{ChildSnapshot, ChildState, ServiceCounters, Snapshot};
pub use supervisor::{
    AddError, ChildExits, DEFAULT_GRACE, FALLBACK_INTERVAL, Handle, NewError, PollError, ReloadError, ServiceId,
    Supervisor, SupervisorBuilder,
};
