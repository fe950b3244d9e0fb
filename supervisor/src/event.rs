//! What happened, as values: every spawn, status outcome, reap, throttle, reload and shutdown step is an [`Event`].
//!
//! The supervisor prints nothing and logs nothing. Each thing it does or
//! learns becomes an [`Event`], handed to the caller's closure by
//! [`Supervisor::poll_once`](crate::Supervisor::poll_once) (and so by
//! [`run`](crate::Supervisor::run) and the tokio driver), in the order it
//! happened. The caller logs, counts or ignores them. With the `tracing`
//! feature each event is also emitted as a `tracing` event.
//!
//! # Errors
//!
//! Failures that the supervisor survives are events too:
//! [`Event::SpawnFailed`] ([`StartError`]), [`Event::ChannelFailed`],
//! [`Event::ChildChannelFailed`], [`Event::ReloadFailed`],
//! [`Event::ReapFailed`], [`Event::SignalFailed`].
//!
//! # See also
//!
//! Postfix `src/master/master_spawn.c`, `master_status.c`: the `msg_warn`
//! and `msg_info` lines these events stand for.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use master_proto::master::{Exit, Outcome, ReapOutcome};
use master_proto::{InstallError, Malformed, RecvError, Sender, StatusUpdate};
use nix::errno::Errno;
use nix::sys::signal::Signal;

use crate::ServiceId;

/// Why a child was spawned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SpawnReason {
    /// A client is waiting on a listening socket and no child is available
    /// (Postfix's only reason).
    Demand,
    /// The spare pool had fewer idle children than its `min_idle`.
    Spare,
}

/// How the supervisor learns that a child exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExitWatch {
    /// Its pidfd became readable.
    Pidfd,
    /// Periodic `waitpid(pid, WNOHANG)` of that pid.
    Poll,
}

/// Why the supervisor sent a child a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopReason {
    /// It was idle beyond the spare pool's `max_idle`.
    Spare,
    /// It was still alive when the shutdown's grace period ended.
    Shutdown,
}

/// Which per-child call of the transport failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChannelOp {
    /// `Transport::register_child`, right after the spawn: the child's
    /// channel is closed, so it sees the master gone and exits.
    Register,
    /// `Transport::forget_child`, right after the reap.
    Forget,
}

/// Why a spawn produced no child.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The transport could not make the child's end of the channel.
    #[error("making the child's end of the status channel: {0}")]
    ChildEnd(#[source] io::Error),
    /// The service's status channel is closed (it failed, or the service is
    /// shutting down).
    #[error("the status channel is closed")]
    ChannelClosed,
    /// A listening socket or a fixed descriptor could not be duplicated.
    #[error("duplicating a descriptor for the child: {0}")]
    Dup(#[source] io::Error),
    /// The standard environment could not be installed.
    #[error("installing the standard environment: {0}")]
    Install(#[source] InstallError),
    /// `fork` or `exec` failed (`Command::spawn`).
    #[error("running the command: {0}")]
    Exec(#[source] io::Error),
    /// The spawned child's pid does not fit a `pid_t` (it was killed).
    #[error("child pid {0} does not fit an i32")]
    Pid(u32),
}

/// One thing the supervisor did or learned.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A child was spawned with its standard environment.
    Spawned {
        /// Its service.
        service: ServiceId,
        /// Its pid.
        pid: i32,
        /// Its generation (`GENERATION`).
        generation: u32,
        /// The service's children now, this one included.
        children: usize,
        /// Why.
        reason: SpawnReason,
        /// How its exit will be learned.
        watch: ExitWatch,
    },
    /// A spawn produced no child; the bookkeeping throttles the service
    /// unless it is already throttled (a [`Throttled`](Event::Throttled)
    /// event follows then).
    SpawnFailed {
        /// The service.
        service: ServiceId,
        /// The generation the child would have had.
        generation: u32,
        /// Why.
        error: StartError,
    },
    /// A status update arrived and was judged.
    Status {
        /// The service.
        service: ServiceId,
        /// The update, as the child sent it.
        update: StatusUpdate,
        /// What the transport vouches for about its sender.
        sender: Sender,
        /// What the bookkeeping made of it.
        outcome: Outcome,
        /// The service's available children after it.
        available: usize,
        /// The service's busy (`TAKEN`, not retired) children after it.
        busy: usize,
    },
    /// Input on the status channel that is not an update.
    Malformed {
        /// The service.
        service: ServiceId,
        /// What was wrong with it.
        malformed: Malformed,
    },
    /// A child exited and was reaped.
    Reaped {
        /// The service.
        service: ServiceId,
        /// Its pid.
        pid: i32,
        /// How it ended, as `waitpid` said.
        exit: Exit,
        /// What the bookkeeping did ([`ReapOutcome::Reaped`] holds its
        /// generation and use count). A child the supervisor stopped itself
        /// is reported to the bookkeeping as a normal exit.
        outcome: ReapOutcome,
        /// Whether the supervisor had signalled it, and why.
        stopped: Option<StopReason>,
    },
    /// Reaping a child failed: `waitpid` said `ECHILD`, so something else
    /// in this process reaped it (a `waitpid(-1)` elsewhere). Its exit
    /// status is lost; it left the table as if it had exited normally.
    ReapFailed {
        /// The service.
        service: ServiceId,
        /// The child's pid.
        pid: i32,
        /// The `errno` of `waitpid`.
        errno: Errno,
    },
    /// Spawning is throttled (Postfix's rule: a child died before serving
    /// anyone, or a spawn failed).
    Throttled {
        /// The service.
        service: ServiceId,
        /// For how long.
        delay: Duration,
        /// Until when.
        until: Instant,
    },
    /// The throttle is over.
    ThrottleEnded {
        /// The service.
        service: ServiceId,
    },
    /// Every child is busy and the service has as many as its process
    /// limit allows: new clients wait (Postfix's "service has reached its
    /// process limit"). Reported once each time the service gets there.
    LimitReached {
        /// The service.
        service: ServiceId,
        /// The process limit.
        limit: usize,
    },
    /// The crash-loop guard tripped: no child is spawned until `until`.
    CrashLoop {
        /// The service.
        service: ServiceId,
        /// The abnormal exits within the window that tripped it.
        failures: u32,
        /// Trips in a row, this one included.
        level: u32,
        /// How long spawning stops.
        backoff: Duration,
        /// Until when.
        until: Instant,
    },
    /// The crash-loop guard's back-off is over.
    CrashLoopEnded {
        /// The service.
        service: ServiceId,
    },
    /// An idle child beyond the spare pool's `max_idle` was sent its stop
    /// signal.
    SpareStopped {
        /// The service.
        service: ServiceId,
        /// The child.
        pid: i32,
        /// The signal sent.
        signal: Signal,
    },
    /// A reload: a new status channel, new generations; the children of
    /// the old channel are retired and exit after their client.
    Reloaded {
        /// The service.
        service: ServiceId,
        /// The bookkeeping's new epoch.
        epoch: u64,
        /// The children retired, in ascending pid order.
        retired: Vec<i32>,
    },
    /// A reload could not open a new channel; the old one stays.
    ReloadFailed {
        /// The service.
        service: ServiceId,
        /// Why.
        error: io::Error,
    },
    /// The status channel failed; it is not read again until a reload
    /// opens a new one.
    ChannelFailed {
        /// The service.
        service: ServiceId,
        /// Why.
        error: RecvError,
    },
    /// A per-child call of the transport failed.
    ChildChannelFailed {
        /// The service.
        service: ServiceId,
        /// The child.
        pid: i32,
        /// Which call.
        op: ChannelOp,
        /// Why.
        error: io::Error,
    },
    /// Sending a child a signal failed.
    SignalFailed {
        /// The service.
        service: ServiceId,
        /// The child.
        pid: i32,
        /// The signal.
        signal: Signal,
        /// The `errno` of `kill`.
        errno: Errno,
    },
    /// The shutdown began: every channel is closed, so children exit after
    /// their client; those left after `grace` are killed.
    ShutdownBegan {
        /// The grace period.
        grace: Duration,
        /// Children alive, in every service.
        children: usize,
    },
    /// The grace period is over: these children were sent `SIGKILL`.
    Killed {
        /// The service.
        service: ServiceId,
        /// The children.
        pids: Vec<i32>,
    },
    /// Every child of every service has been reaped after the shutdown.
    ShutdownComplete,
}

impl Event {
    /// The service the event is about, if it is about one.
    #[must_use]
    pub fn service(&self) -> Option<ServiceId> {
        match *self {
            Event::Spawned { service, .. }
            | Event::SpawnFailed { service, .. }
            | Event::Status { service, .. }
            | Event::Malformed { service, .. }
            | Event::Reaped { service, .. }
            | Event::ReapFailed { service, .. }
            | Event::Throttled { service, .. }
            | Event::ThrottleEnded { service }
            | Event::LimitReached { service, .. }
            | Event::CrashLoop { service, .. }
            | Event::CrashLoopEnded { service }
            | Event::SpareStopped { service, .. }
            | Event::Reloaded { service, .. }
            | Event::ReloadFailed { service, .. }
            | Event::ChannelFailed { service, .. }
            | Event::ChildChannelFailed { service, .. }
            | Event::SignalFailed { service, .. }
            | Event::Killed { service, .. } => Some(service),
            Event::ShutdownBegan { .. } | Event::ShutdownComplete => None,
        }
    }

    /// A short kebab-case name, for log lines and metric labels.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Event::Spawned { .. } => "spawned",
            Event::SpawnFailed { .. } => "spawn-failed",
            Event::Status { .. } => "status",
            Event::Malformed { .. } => "malformed",
            Event::Reaped { .. } => "reaped",
            Event::ReapFailed { .. } => "reap-failed",
            Event::Throttled { .. } => "throttled",
            Event::ThrottleEnded { .. } => "throttle-ended",
            Event::LimitReached { .. } => "limit-reached",
            Event::CrashLoop { .. } => "crash-loop",
            Event::CrashLoopEnded { .. } => "crash-loop-ended",
            Event::SpareStopped { .. } => "spare-stopped",
            Event::Reloaded { .. } => "reloaded",
            Event::ReloadFailed { .. } => "reload-failed",
            Event::ChannelFailed { .. } => "channel-failed",
            Event::ChildChannelFailed { .. } => "child-channel-failed",
            Event::SignalFailed { .. } => "signal-failed",
            Event::ShutdownBegan { .. } => "shutdown-began",
            Event::Killed { .. } => "killed",
            Event::ShutdownComplete => "shutdown-complete",
        }
    }
}

impl fmt::Display for Event {
    /// One line, `NAME key=value …`, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        if let Some(service) = self.service() {
            write!(f, " service={}", service.index())?;
        }
        match self {
            Event::Spawned { pid, generation, children, reason, watch, .. } => {
                write!(f, " pid={pid} gen={generation} children={children} reason={reason:?} watch={watch:?}")
            }
            Event::SpawnFailed { generation, error, .. } => write!(f, " gen={generation} error=\"{error}\""),
            Event::Status { update, outcome, available, busy, .. } => write!(
                f,
                " pid={} gen={} status={} outcome={outcome} available={available} busy={busy}",
                update.pid, update.generation, update.status
            ),
            Event::Malformed { malformed, .. } => write!(f, " what=\"{malformed}\""),
            Event::Reaped { pid, exit, outcome, stopped, .. } => {
                write!(f, " pid={pid} exit=\"{exit}\" outcome={outcome}")?;
                if let ReapOutcome::Reaped { child, .. } = outcome {
                    write!(f, " gen={} uses={}", child.generation, child.use_count)?;
                }
                match stopped {
                    Some(why) => write!(f, " stopped={why:?}"),
                    None => Ok(()),
                }
            }
            Event::ReapFailed { pid, errno, .. } => write!(f, " pid={pid} error={errno}"),
            Event::Throttled { delay, .. } => write!(f, " seconds={}", delay.as_secs_f64()),
            Event::LimitReached { limit, .. } => write!(f, " limit={limit}"),
            Event::CrashLoop { failures, level, backoff, .. } => {
                write!(f, " failures={failures} level={level} seconds={}", backoff.as_secs_f64())
            }
            Event::SpareStopped { pid, signal, .. } => write!(f, " pid={pid} signal={signal}"),
            Event::Reloaded { epoch, retired, .. } => {
                let retired: Vec<String> = retired.iter().map(i32::to_string).collect();
                write!(f, " epoch={epoch} retired={}", retired.join(","))
            }
            Event::ReloadFailed { error, .. } => write!(f, " error=\"{error}\""),
            Event::ChannelFailed { error, .. } => write!(f, " error=\"{error}\""),
            Event::ChildChannelFailed { pid, op, error, .. } => write!(f, " pid={pid} op={op:?} error=\"{error}\""),
            Event::SignalFailed { pid, signal, errno, .. } => write!(f, " pid={pid} signal={signal} error={errno}"),
            Event::ShutdownBegan { grace, children } => {
                write!(f, " grace={} children={children}", grace.as_secs_f64())
            }
            Event::Killed { pids, .. } => {
                let pids: Vec<String> = pids.iter().map(i32::to_string).collect();
                write!(f, " pids={}", pids.join(","))
            }
            Event::ThrottleEnded { .. } | Event::CrashLoopEnded { .. } | Event::ShutdownComplete => Ok(()),
        }
    }
}
