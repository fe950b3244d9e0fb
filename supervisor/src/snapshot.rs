//! A service at one instant, for metrics: its children by state, and its counters.
//!
//! [`Supervisor::snapshot`](crate::Supervisor::snapshot) copies out what a
//! metrics endpoint or a status page wants, so that nothing borrows the
//! supervisor while it is shown. For the full process table, see
//! [`Supervisor::master`](crate::Supervisor::master).
//!
//! # See also
//!
//! Postfix `src/master/master.h` (`MASTER_SERV`, `MASTER_PROC`).

use std::time::Instant;

use master_proto::master::Counters;

use crate::event::ExitWatch;
use crate::listen::ListenAddr;

/// What a child is doing, as far as the master knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChildState {
    /// Available: waiting for a client (`AVAIL`).
    Idle,
    /// Serving a client (`TAKEN`).
    Busy,
    /// Of a channel a reload replaced: it exits after its client.
    Retired,
    /// Signalled by the supervisor (spare pool, shutdown), not reaped yet.
    Stopping,
}

/// One child in a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChildSnapshot {
    /// Its pid.
    pub pid: i32,
    /// Its generation.
    pub generation: u32,
    /// Its state.
    pub state: ChildState,
    /// How many clients it has served.
    pub use_count: u64,
    /// How its exit will be learned.
    pub watch: ExitWatch,
}

/// What the supervisor itself counted for a service, beside the
/// bookkeeping's [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceCounters {
    /// Children spawned for waiting clients.
    pub spawned_on_demand: u64,
    /// Children spawned to fill the spare pool.
    pub spawned_spare: u64,
    /// Idle children stopped beyond the spare pool's `max_idle`.
    pub spare_stopped: u64,
    /// Children killed at the end of a shutdown's grace period.
    pub killed: u64,
    /// Times the service reached its process limit with every child busy.
    pub limit_reached: u64,
    /// Times the crash-loop guard tripped.
    pub crash_loops: u64,
    /// Status channel failures, and failed per-child channel calls.
    pub channel_errors: u64,
    /// Reloads that could not open a new channel.
    pub reload_failures: u64,
    /// Children whose exit status something else in the process took.
    pub reap_failures: u64,
}

/// One service at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The service's name.
    pub name: String,
    /// Its transport's short name.
    pub transport: &'static str,
    /// Where it listens.
    pub listen: Vec<ListenAddr>,
    /// Its process limit (0: none).
    pub process_limit: usize,
    /// The bookkeeping's epoch: how many reloads so far.
    pub epoch: u64,
    /// Idle children (available).
    pub idle: usize,
    /// Busy children.
    pub busy: usize,
    /// Retired children, not reaped yet.
    pub retired: usize,
    /// Children the supervisor signalled, not reaped yet.
    pub stopping: usize,
    /// Every child, in ascending pid order.
    pub children: Vec<ChildSnapshot>,
    /// Whether the master watches the listening sockets now.
    pub listening: bool,
    /// The end of the current throttle, if any.
    pub throttled_until: Option<Instant>,
    /// The end of the crash-loop guard's current back-off, if any.
    pub suspended_until: Option<Instant>,
    /// The bookkeeping's counters.
    pub counters: Counters,
    /// The supervisor's own counters.
    pub service_counters: ServiceCounters,
}

impl Snapshot {
    /// Every child, whatever its state.
    #[must_use]
    pub fn total(&self) -> usize {
        self.children.len()
    }
}
