//! The master's bookkeeping for one service: Postfix's process table and gossip rules as a sans-IO state machine.
//!
//! [`Master`] keeps what Postfix's master(8) keeps for one service (a
//! `MASTER_SERV` and its `MASTER_PROC`s): which children exist, which of them
//! are available, how often each has been used, the spawn generation, the
//! throttle and the channel epoch. It does no I/O and makes no syscalls: the
//! caller forks, reads the status channel, reaps, and passes the clock in as
//! an [`Instant`] (`now`). Every input returns a value saying what it did,
//! and the machine counts those values ([`Counters`]); nothing is logged, so
//! the caller decides what is worth a log line.
//!
//! # The life of a child
//!
//! 1. While [`Master::should_listen`] is true the caller watches the
//!    service's listen sockets (Postfix's `master_avail_listen()`); at other
//!    times an available child does it, or nobody may.
//! 2. A connection arrives: [`Master::begin_spawn`] hands out the next
//!    generation; the caller forks and execs the child with
//!    `GENERATION=<octal>`, then registers it with [`Master::spawned`], or
//!    reports the failure with [`Master::spawn_failed`].
//! 3. Every item the status channel delivers goes to [`Master::receive`],
//!    which answers with an [`Outcome`].
//! 4. Every child the caller reaps goes to [`Master::reaped`] with how it
//!    ended ([`Exit`]).
//! 5. On reload the caller opens a new channel, calls [`Master::reload`],
//!    which names the children that now belong to the old one, and closes the
//!    old channel so that they exit when idle.
//! 6. [`Master::throttled_until`] gives the instant at which a throttle ends,
//!    for the caller's timer: `should_listen` may change then.
//!
//! # The rules, as in Postfix
//!
//! - A new child counts as available from the moment it is spawned, with a
//!   use count of 0 (`master_spawn()`).
//! - Every spawn gets a new generation from a wrapping `u32` counter
//!   (`master_generation`), so that `(pid, generation)` names one spawn even
//!   when pids are reused.
//! - A status update is judged in this order: a pid not in the table is
//!   ignored (the child may already be reaped); a generation mismatch is
//!   ignored; a redundant update (the state already recorded) is ignored;
//!   then `AVAIL` makes the child available and raises its use count,
//!   `TAKEN` makes it unavailable, and any other value is ignored ("it's all
//!   gossip", `master_status_event()`).
//! - A reaped child leaves the table. A child that ends abnormally (non-zero
//!   exit code, or a signal) having served nobody throttles spawning for
//!   [`Config::throttle_delay`], unless spawning is already throttled; so
//!   does a failed fork (`master_reap_child()`, `master_spawn()`).
//! - The master listens when spawning is not throttled, no child is
//!   available and the process limit allows one more child
//!   (`master_avail_listen()`).
//!
//! # Where this differs from Postfix
//!
//! - Postfix panics when asked to spawn at the process limit or while
//!   throttled, and when a reaped pid is unknown. Those are bugs of the
//!   caller, not reasons to bring a library down: [`SpawnError`],
//!   [`RegisterError`] and [`ReapOutcome::UnknownPid`] report them.
//! - Identity: when the transport vouches for the sender
//!   ([`Sender`](crate::Sender)), an update whose pid disagrees is rejected
//!   as [`Outcome::ForgedPid`], before any other check. With
//!   [`Sender::Claimed`](crate::Sender::Claimed) the claimed pid is
//!   believed, as in Postfix.
//! - Reload: children of the old channel are *retired* at once (see
//!   [`Master::reload`]); Postfix keeps counting them until they exit. An
//!   update from a retired child with the right generation is
//!   [`Outcome::Retired`] (checked after the generation).
//! - Forking happens between two calls ([`Master::begin_spawn`], then
//!   [`Master::spawned`]), so a spawn can be *pending*. A pending spawn
//!   holds a slot under the process limit and stops
//!   [`Master::should_listen`], as the child it is about to become would.
//!   Postfix forks inside one function call and never has one pending.
//!
//! # Errors
//!
//! Nothing a child sends is an error: every status input is an [`Outcome`],
//! counted and returned, and none of them panics. Errors are for the
//! caller's requests that the rules forbid: [`SpawnError`] from
//! [`Master::begin_spawn`] (at the process limit, throttled) and
//! [`RegisterError`] from [`Master::spawned`] and [`Master::spawn_failed`]
//! (a generation that was not handed out, a pid already in the table). A
//! refused request leaves the machine as it was. As Postfix says, "be sure
//! to freak out when our own data structures are inconsistent": a broken
//! internal invariant panics.
//!
//! # See also
//!
//! Postfix `src/master/master_status.c` (status updates),
//! `master_avail.c` (available children, listening),
//! `master_spawn.c` (spawn, reap, throttle, generation),
//! `master_service.c` (`master_restart_service()`, reload).

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::source::Received;
use crate::wire::{Malformed, Status};

/// The policy of one service: its process limit and throttle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The most children the service may have at once (`maxproc` in
    /// master.cf); 0 means no limit.
    pub process_limit: usize,
    /// How long spawning stays throttled after a child failed before serving
    /// anyone, or a fork failed (Postfix `service_throttle_time`). Zero turns
    /// throttling off.
    pub throttle_delay: Duration,
}

impl Config {
    /// Postfix's `MASTER_LIMIT_OK`: whether a service with `count` children
    /// may have one more.
    const fn limit_ok(&self, count: usize) -> bool {
        self.process_limit == 0 || count < self.process_limit
    }
}

impl Default for Config {
    /// A limit of 100 children (Postfix `default_process_limit`) and a
    /// throttle of 60 seconds (Postfix `service_throttle_time`).
    fn default() -> Config {
        Config { process_limit: 100, throttle_delay: Duration::from_secs(60) }
    }
}

/// What the master knows about one child (Postfix's `MASTER_PROC`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChildInfo {
    /// The child's process id.
    pub pid: i32,
    /// The generation it was spawned with.
    pub generation: u32,
    /// Its recorded state: only ever [`Status::TAKEN`] or
    /// [`Status::AVAIL`].
    pub status: Status,
    /// How many times it became available again after being taken: the
    /// number of clients it has served, as far as the master knows.
    pub use_count: u64,
    /// Whether it belongs to a channel that a reload replaced (see
    /// [`Master::reload`]). A retired child never counts as available.
    pub retired: bool,
}

impl ChildInfo {
    /// Whether this child counts toward [`Master::available`].
    #[must_use]
    pub fn is_available(&self) -> bool {
        !self.retired && self.status == Status::AVAIL
    }
}

/// How a reaped child ended, as `waitpid()` tells the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exit {
    /// It exited with this code (`WIFEXITED`, `WEXITSTATUS`).
    Code(i32),
    /// A signal killed it (`WIFSIGNALED`, `WTERMSIG`).
    Signal(i32),
}

impl Exit {
    /// Postfix's `NORMAL_EXIT_STATUS`: exit code 0 and nothing else.
    #[must_use]
    pub const fn is_normal(self) -> bool {
        matches!(self, Exit::Code(0))
    }
}

impl fmt::Display for Exit {
    /// `exit status N` or `killed by signal N`, Postfix's wording.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Exit::Code(code) => write!(f, "exit status {code}"),
            Exit::Signal(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

/// What [`Master::receive`] did with one status input.
///
/// Only [`Taken`](Outcome::Taken) and [`Avail`](Outcome::Avail) change the
/// machine ([`is_applied`](Outcome::is_applied)); every other outcome leaves
/// it as it was and is only counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The child is busy now: one child fewer is available.
    Taken,
    /// The child is idle again: one more is available and its use count
    /// went up.
    Avail,
    /// The child said what was already recorded. Postfix allows this
    /// because events may be processed out of order; it does not count as a
    /// use.
    Redundant,
    /// No child has the claimed pid (it may already have been reaped).
    UnknownPid,
    /// The pid is known but the generation is not the one it was spawned
    /// with: a late update from an earlier process with the same pid, or a
    /// lie.
    WrongGeneration {
        /// The generation recorded for the pid.
        expected: u32,
        /// The generation the update carried.
        got: u32,
    },
    /// A status value other than `TAKEN` and `AVAIL`.
    UnknownStatus(i32),
    /// The transport vouches for a sender whose pid is not the one the
    /// update claims.
    ForgedPid {
        /// The pid written in the update.
        claimed: i32,
        /// The pid the transport vouches for.
        verified: i32,
    },
    /// The sender is a retired child (spawned before the last reload); it
    /// is on its way out and its state no longer matters.
    Retired,
    /// The input was not an update at all.
    Malformed(Malformed),
}

impl Outcome {
    /// Whether the input changed the machine (a `TAKEN` or `AVAIL` that
    /// was taken into account).
    #[must_use]
    pub const fn is_applied(self) -> bool {
        matches!(self, Outcome::Taken | Outcome::Avail)
    }

    /// A short kebab-case name for log lines and metric labels: `taken`,
    /// `avail`, `redundant`, `unknown-pid`, `wrong-generation`,
    /// `unknown-status`, `forged-pid`, `retired`, `malformed`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Taken => "taken",
            Outcome::Avail => "avail",
            Outcome::Redundant => "redundant",
            Outcome::UnknownPid => "unknown-pid",
            Outcome::WrongGeneration { .. } => "wrong-generation",
            Outcome::UnknownStatus(_) => "unknown-status",
            Outcome::ForgedPid { .. } => "forged-pid",
            Outcome::Retired => "retired",
            Outcome::Malformed(_) => "malformed",
        }
    }
}

impl fmt::Display for Outcome {
    /// The [`name`](Outcome::name); the details are in `Debug`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What [`Master::reaped`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReapOutcome {
    /// The child left the table.
    Reaped {
        /// What the master knew about it, as it was when it was reaped.
        child: ChildInfo,
        /// Whether its death began a throttle: it ended abnormally without
        /// having served anyone, and spawning was not throttled yet.
        throttle_began: bool,
    },
    /// No child has this pid. Postfix panics here; it means the caller
    /// reaped a process of another service, or reported one twice.
    UnknownPid,
}

impl ReapOutcome {
    /// A short kebab-case name for log lines: `reaped`, `reaped-throttle`
    /// (the death began a throttle), `unknown-pid`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            ReapOutcome::Reaped { throttle_began: false, .. } => "reaped",
            ReapOutcome::Reaped { throttle_began: true, .. } => "reaped-throttle",
            ReapOutcome::UnknownPid => "unknown-pid",
        }
    }
}

impl fmt::Display for ReapOutcome {
    /// The [`name`](ReapOutcome::name).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How many times each thing happened, since [`Master::new`].
///
/// The per-outcome counters of status inputs (`taken` through `malformed`)
/// add up to the number of [`Master::receive`] calls ([`Counters::received`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Inputs that were [`Outcome::Taken`].
    pub taken: u64,
    /// Inputs that were [`Outcome::Avail`].
    pub avail: u64,
    /// Inputs that were [`Outcome::Redundant`].
    pub redundant: u64,
    /// Inputs that were [`Outcome::UnknownPid`].
    pub unknown_pid: u64,
    /// Inputs that were [`Outcome::WrongGeneration`].
    pub wrong_generation: u64,
    /// Inputs that were [`Outcome::UnknownStatus`].
    pub unknown_status: u64,
    /// Inputs that were [`Outcome::ForgedPid`].
    pub forged_pid: u64,
    /// Inputs that were [`Outcome::Retired`].
    pub retired: u64,
    /// Inputs that were [`Outcome::Malformed`].
    pub malformed: u64,
    /// Children registered with [`Master::spawned`].
    pub spawned: u64,
    /// Spawns reported failed with [`Master::spawn_failed`].
    pub spawn_failed: u64,
    /// Children that left the table ([`ReapOutcome::Reaped`]).
    pub reaped: u64,
    /// Reaps of pids not in the table ([`ReapOutcome::UnknownPid`]).
    pub reap_unknown_pid: u64,
    /// How many times a throttle began (not how long it lasted).
    pub throttled: u64,
    /// Calls to [`Master::reload`].
    pub reloads: u64,
}

impl Counters {
    /// The number of status inputs: the sum of the per-outcome counters.
    #[must_use]
    pub const fn received(&self) -> u64 {
        self.taken
            + self.avail
            + self.redundant
            + self.unknown_pid
            + self.wrong_generation
            + self.unknown_status
            + self.forged_pid
            + self.retired
            + self.malformed
    }

    /// Bumps the counter of one outcome.
    fn count(&mut self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Taken => &mut self.taken,
            Outcome::Avail => &mut self.avail,
            Outcome::Redundant => &mut self.redundant,
            Outcome::UnknownPid => &mut self.unknown_pid,
            Outcome::WrongGeneration { .. } => &mut self.wrong_generation,
            Outcome::UnknownStatus(_) => &mut self.unknown_status,
            Outcome::ForgedPid { .. } => &mut self.forged_pid,
            Outcome::Retired => &mut self.retired,
            Outcome::Malformed(_) => &mut self.malformed,
        };
        *counter += 1;
    }
}

/// Why [`Master::begin_spawn`] refused to spawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The service has as many children (spawned or pending) as its process
    /// limit allows.
    #[error("at the process limit of {limit}")]
    AtLimit {
        /// The configured [`Config::process_limit`].
        limit: usize,
    },
    /// Spawning is throttled (see [`Master::throttled_until`]).
    #[error("spawning is throttled")]
    Throttled,
}

/// Why [`Master::spawned`] or [`Master::spawn_failed`] refused a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The generation is not one that [`Master::begin_spawn`] handed out
    /// and that is still pending.
    #[error("generation {0} is not a pending spawn")]
    UnknownGeneration(u32),
    /// A child with this pid is still in the table: the caller has not
    /// reported its death.
    #[error("pid {0} is already registered")]
    DuplicatePid(i32),
    /// Not a child's pid (zero or negative).
    #[error("invalid child pid {0}")]
    InvalidPid(i32),
}

/// One service's process table and policy, without I/O.
///
/// # Examples
///
/// ```
/// use std::time::Instant;
///
/// use master_proto::master::{Config, Exit, Master, Outcome, ReapOutcome};
/// use master_proto::{Received, Sender, Status, StatusUpdate};
///
/// let mut master = Master::new(Config::default());
/// let now = Instant::now();
/// assert!(master.should_listen(now));
///
/// // A connection arrives: spawn a child for it.
/// let generation = master.begin_spawn(now)?;
/// // ... fork and exec here, with GENERATION=<generation in octal> ...
/// master.spawned(4242, generation)?;
/// assert_eq!(master.available(), 1);
/// assert!(!master.should_listen(now)); // the child watches the sockets now
///
/// // The child took the connection.
/// let update = StatusUpdate { pid: 4242, generation, status: Status::TAKEN };
/// let outcome = master.receive(&Received::Update { update, sender: Sender::Claimed });
/// assert_eq!(outcome, Outcome::Taken);
/// assert!(master.should_listen(now));
///
/// // It died.
/// let reaped = master.reaped(4242, Exit::Code(0), now);
/// assert!(matches!(reaped, ReapOutcome::Reaped { throttle_began: false, .. }));
/// assert_eq!(master.total(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Master {
    config: Config,
    /// The process table, by pid.
    children: HashMap<i32, ChildInfo>,
    /// How many children are available: kept in step with the table rather
    /// than counted, as Postfix's `avail_proc`.
    available: usize,
    /// Spawns begun but not yet reported: generation → epoch at
    /// `begin_spawn`.
    pending: HashMap<u32, u64>,
    /// The last generation handed out (Postfix's `master_generation`).
    generation: u32,
    /// How many reloads there have been.
    epoch: u64,
    /// When the current (or last) throttle began. Stored as a start rather
    /// than an end so that no `Instant + Duration` can overflow.
    throttle_since: Option<Instant>,
    counters: Counters,
}

impl Master {
    /// A service with no children, not throttled, at epoch 0; the first
    /// spawn gets generation 1, as in Postfix.
    #[must_use]
    pub fn new(config: Config) -> Master {
        Master {
            config,
            children: HashMap::new(),
            available: 0,
            pending: HashMap::new(),
            generation: 0,
            epoch: 0,
            throttle_since: None,
            counters: Counters::default(),
        }
    }

    /// A machine whose generation counter stands at `last`: the next spawn
    /// gets `last + 1` (wrapping). A master that restarts can go on from
    /// where it left off, or from a random point, so that generations stay
    /// distinct from those of children it left behind.
    #[must_use]
    pub fn with_generation(config: Config, last: u32) -> Master {
        Master { generation: last, ..Master::new(config) }
    }

    /// Starts a spawn: checks that the process limit and the throttle allow
    /// one more child, reserves a slot for it and returns its generation.
    ///
    /// The caller passes the generation to the child (`GENERATION` in
    /// octal), forks, then reports the pid with [`spawned`](Self::spawned)
    /// or the failure with [`spawn_failed`](Self::spawn_failed). Until then
    /// the spawn is pending: it holds its slot under the limit and keeps
    /// [`should_listen`](Self::should_listen) false.
    ///
    /// Unlike Postfix's `master_spawn()`, this does not insist that no child
    /// is available: a prefork policy may want spare children. Postfix's
    /// own policy is to spawn only when `should_listen` was true.
    ///
    /// # Errors
    ///
    /// [`SpawnError::AtLimit`] when the children plus the pending spawns
    /// reach the process limit, [`SpawnError::Throttled`] while throttled;
    /// nothing changes then, and no generation is used up.
    pub fn begin_spawn(&mut self, now: Instant) -> Result<u32, SpawnError> {
        // Postfix checks the limit first, then the throttle.
        if !self.config.limit_ok(self.occupied()) {
            return Err(SpawnError::AtLimit { limit: self.config.process_limit });
        }
        if self.is_throttled(now) {
            return Err(SpawnError::Throttled);
        }
        // Bumped before the fork, as `master_generation += 1` is, so that a
        // failed fork uses its generation up too.
        self.generation = self.generation.wrapping_add(1);
        self.pending.insert(self.generation, self.epoch);
        Ok(self.generation)
    }

    /// Registers the child forked for a pending spawn: it enters the table as
    /// available, with a use count of 0.
    ///
    /// A spawn begun before a [`reload`](Self::reload) is registered
    /// retired: its child was given the old channel.
    ///
    /// # Errors
    ///
    /// [`RegisterError::InvalidPid`] for a pid that is not positive,
    /// [`RegisterError::UnknownGeneration`] when `generation` is not a
    /// pending spawn, [`RegisterError::DuplicatePid`] when the pid is still
    /// in the table (its death was not reported). Nothing changes then: the
    /// spawn stays pending.
    pub fn spawned(&mut self, pid: i32, generation: u32) -> Result<(), RegisterError> {
        if pid <= 0 {
            return Err(RegisterError::InvalidPid(pid));
        }
        let Some(&epoch) = self.pending.get(&generation) else {
            return Err(RegisterError::UnknownGeneration(generation));
        };
        if self.children.contains_key(&pid) {
            return Err(RegisterError::DuplicatePid(pid));
        }
        self.pending.remove(&generation);
        let child = ChildInfo {
            pid,
            generation,
            // "Say this process has become available" (master_spawn.c).
            status: Status::AVAIL,
            use_count: 0,
            retired: epoch != self.epoch,
        };
        if child.is_available() {
            self.available += 1;
        }
        self.children.insert(pid, child);
        self.counters.spawned += 1;
        Ok(())
    }

    /// Reports that a pending spawn produced no child (fork or exec failed):
    /// its slot is released and spawning is throttled, unless it already
    /// is.
    ///
    /// Postfix throttles when `fork()` fails ("fork: ... -- throttling"). A
    /// failed `exec()` there happens in the child, which exits abnormally
    /// having served nobody and so throttles at reap time; a caller using
    /// `std::process::Command` learns of both here, and both throttle. The
    /// generation stays used up, as in Postfix.
    ///
    /// # Errors
    ///
    /// [`RegisterError::UnknownGeneration`] when `generation` is not a
    /// pending spawn; nothing changes then.
    pub fn spawn_failed(&mut self, generation: u32, now: Instant) -> Result<(), RegisterError> {
        if self.pending.remove(&generation).is_none() {
            return Err(RegisterError::UnknownGeneration(generation));
        }
        self.counters.spawn_failed += 1;
        self.throttle(now);
        Ok(())
    }

    /// Judges one item from the status channel, applies it if it passes,
    /// counts it, and says what happened.
    ///
    /// The checks run in this order, and the first that fails decides: the
    /// sender's identity (when the transport vouches for one), the pid, the
    /// generation, retirement, redundancy, the status value. Only
    /// [`Outcome::Taken`] and [`Outcome::Avail`] change anything.
    pub fn receive(&mut self, item: &Received) -> Outcome {
        let outcome = self.judge(item);
        self.counters.count(outcome);
        outcome
    }

    /// The body of [`receive`](Self::receive), without the counting.
    fn judge(&mut self, item: &Received) -> Outcome {
        let (update, sender) = match *item {
            Received::Update { update, sender } => (update, sender),
            Received::Malformed(malformed) => return Outcome::Malformed(malformed),
        };
        // Identity first: a forgery is a forgery whoever it names, and saying
        // so is more useful than "unknown pid" for a made-up one.
        if let Some(verified) = sender.verified_pid()
            && verified != update.pid
        {
            return Outcome::ForgedPid { claimed: update.pid, verified };
        }
        // "A process not found condition can happen when we reap a process
        // before receiving its status update, so this is not an error."
        let Some(child) = self.children.get_mut(&update.pid) else {
            return Outcome::UnknownPid;
        };
        // Before retirement: an update with another generation is not from
        // this child at all (a reused pid, or a lie), retired or not.
        if child.generation != update.generation {
            return Outcome::WrongGeneration { expected: child.generation, got: update.generation };
        }
        if child.retired {
            return Outcome::Retired;
        }
        // Postfix checks redundancy before looking at the value, so a
        // repeated AVAIL is not a use. An unknown value can never equal the
        // recorded one, which is always TAKEN or AVAIL.
        if child.status == update.status {
            return Outcome::Redundant;
        }
        match update.status {
            Status::AVAIL => {
                child.status = Status::AVAIL;
                child.use_count = child.use_count.saturating_add(1);
                self.available += 1;
                Outcome::Avail
            }
            Status::TAKEN => {
                child.status = Status::TAKEN;
                self.available = one_less(self.available);
                Outcome::Taken
            }
            Status(other) => Outcome::UnknownStatus(other),
        }
    }

    /// Records that the caller reaped `pid`, which ended as `exit`: the
    /// child leaves the table, and if it ended abnormally having served
    /// nobody, spawning is throttled from `now` for
    /// [`Config::throttle_delay`] (unless it already is; Postfix does not
    /// extend a throttle).
    ///
    /// A child stopped by a signal (`WIFSTOPPED`) has not ended: do not
    /// report it (Postfix skips it too).
    pub fn reaped(&mut self, pid: i32, exit: Exit, now: Instant) -> ReapOutcome {
        let Some(child) = self.children.remove(&pid) else {
            self.counters.reap_unknown_pid += 1;
            return ReapOutcome::UnknownPid;
        };
        if child.is_available() {
            self.available = one_less(self.available);
        }
        // "When a process failed on its first job, assume we see the
        // symptom of a structural problem (configuration problem, system
        // running out of resources) and back off."
        let throttle_began = !exit.is_normal() && child.use_count == 0 && self.throttle(now);
        self.counters.reaped += 1;
        ReapOutcome::Reaped { child, throttle_began }
    }

    /// Starts a new channel epoch after the caller replaced the service's
    /// status channel: every child of the old channel is retired. Returns
    /// the pids it retired, in ascending order.
    ///
    /// How Postfix does it: on reload `master_restart_service()` calls
    /// `master_status_cleanup()`, which closes both ends of the service's
    /// status pipe, and `master_status_init()`, which opens a new one for
    /// children spawned from then on. The process table is left alone: old
    /// children stay in it and in `total_proc` until they are reaped. Each
    /// old child watches fd 5 and, once idle, sees end-of-file there and
    /// exits (the pipe closed "to force children to commit suicide"); what
    /// it sends meanwhile is lost with the closed pipe, so its recorded
    /// state is frozen.
    ///
    /// Here a retired child likewise stays in the table and counts toward
    /// [`total`](Self::total) and the process limit until it is reaped
    /// (it is a real process), and its use count is frozen: whatever it
    /// still manages to send is [`Outcome::Retired`] (a transport may still
    /// deliver what the old channel held). One difference: Postfix keeps
    /// counting an old child that was `AVAIL` in `avail_proc` until it is
    /// reaped, which keeps the master from listening for that moment; here
    /// it stops counting as available at once, because it is about to exit
    /// and will not serve the next client. Children spawned after the
    /// reload count normally. The throttle is untouched, as in Postfix.
    pub fn reload(&mut self) -> Vec<i32> {
        self.epoch += 1;
        let mut retired = Vec::new();
        for child in self.children.values_mut().filter(|child| !child.retired) {
            if child.is_available() {
                self.available = one_less(self.available);
            }
            child.retired = true;
            retired.push(child.pid);
        }
        // The table is a hash map; sorted output is easier to log and test.
        retired.sort_unstable();
        self.counters.reloads += 1;
        retired
    }

    /// Whether the caller should watch the service's listen sockets now
    /// (Postfix's `master_avail_listen()`): spawning is not throttled, no
    /// child is available, and the process limit allows one more child.
    ///
    /// A pending spawn counts as the available child it is about to be, and
    /// toward the limit, so that one connection does not start two spawns.
    #[must_use]
    pub fn should_listen(&self, now: Instant) -> bool {
        !self.is_throttled(now)
            && self.available == 0
            && self.pending.is_empty()
            && self.config.limit_ok(self.occupied())
    }

    /// When the current throttle ends, or `None` if spawning is not
    /// throttled at `now`. Throttled means `now` is before that instant.
    ///
    /// Also `None` in the corner case of a [`Config::throttle_delay`] so long
    /// that the end cannot be represented as an `Instant`; spawning is
    /// throttled all the same (see [`should_listen`](Self::should_listen)).
    #[must_use]
    pub fn throttled_until(&self, now: Instant) -> Option<Instant> {
        if self.is_throttled(now) { self.throttle_since?.checked_add(self.config.throttle_delay) } else { None }
    }

    /// How many children are available (Postfix's `avail_proc`): not
    /// retired, and `AVAIL` as last recorded.
    #[must_use]
    pub fn available(&self) -> usize {
        self.available
    }

    /// How many children are in the table (Postfix's `total_proc`), retired
    /// ones included. Pending spawns are not children yet.
    #[must_use]
    pub fn total(&self) -> usize {
        self.children.len()
    }

    /// How many spawns have begun but are not yet reported (normally 0 or 1).
    #[must_use]
    pub fn pending_spawns(&self) -> usize {
        self.pending.len()
    }

    /// The child with this pid, if it is in the table.
    #[must_use]
    pub fn child(&self, pid: i32) -> Option<&ChildInfo> {
        self.children.get(&pid)
    }

    /// Every child in the table, in no particular order.
    pub fn children(&self) -> impl Iterator<Item = &ChildInfo> {
        self.children.values()
    }

    /// What has happened so far.
    #[must_use]
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The service's policy.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How many reloads there have been: the number of the current channel
    /// epoch, starting at 0.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Children plus pending spawns: what the process limit applies to.
    fn occupied(&self) -> usize {
        self.children.len() + self.pending.len()
    }

    /// Whether spawning is throttled at `now`. A `now` earlier than the
    /// start of the throttle (a caller's clock out of order) counts as
    /// throttled.
    fn is_throttled(&self, now: Instant) -> bool {
        self.throttle_since.is_some_and(|since| now.saturating_duration_since(since) < self.config.throttle_delay)
    }

    /// Postfix's `master_throttle()`: begins a throttle unless one is on.
    /// Returns whether one began. A zero delay would end as it began, so it
    /// begins nothing.
    fn throttle(&mut self, now: Instant) -> bool {
        if self.config.throttle_delay.is_zero() || self.is_throttled(now) {
            return false;
        }
        self.throttle_since = Some(now);
        self.counters.throttled += 1;
        true
    }
}

/// `available - 1`, for a child that was counted as available. Zero here
/// means our own books are wrong, which is worth stopping for.
fn one_less(available: usize) -> usize {
    available.checked_sub(1).expect("master: an available child was not counted in `available`")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::source::Sender;
    use crate::wire::StatusUpdate;

    const SECOND: Duration = Duration::from_secs(1);

    fn config(process_limit: usize) -> Config {
        Config { process_limit, throttle_delay: Duration::from_secs(60) }
    }

    fn update(pid: i32, generation: u32, status: Status) -> Received {
        update_from(pid, generation, status, Sender::Claimed)
    }

    fn update_from(pid: i32, generation: u32, status: Status, sender: Sender) -> Received {
        Received::Update { update: StatusUpdate { pid, generation, status }, sender }
    }

    /// Begins and completes a spawn of `pid`; returns its generation.
    fn spawn(master: &mut Master, now: Instant, pid: i32) -> u32 {
        let generation = master.begin_spawn(now).expect("spawn allowed");
        master.spawned(pid, generation).expect("registered");
        generation
    }

    /// Spawns `pid` and has it take a client, so that it is TAKEN with a use
    /// count of 0.
    fn spawn_taken(master: &mut Master, now: Instant, pid: i32) -> u32 {
        let generation = spawn(master, now, pid);
        assert_eq!(master.receive(&update(pid, generation, Status::TAKEN)), Outcome::Taken);
        generation
    }

    fn use_count(master: &Master, pid: i32) -> u64 {
        master.child(pid).expect("child in table").use_count
    }

    // Rule 1.
    #[test]
    fn a_new_child_is_available_from_the_moment_it_is_spawned() {
        let now = Instant::now();
        let mut master = Master::new(Config::default());
        let generation = master.begin_spawn(now).unwrap();
        // Pending is not yet a child.
        assert_eq!((master.available(), master.total(), master.pending_spawns()), (0, 0, 1));
        master.spawned(100, generation).unwrap();
        assert_eq!((master.available(), master.total(), master.pending_spawns()), (1, 1, 0));
        let child = *master.child(100).unwrap();
        assert_eq!(child.status, Status::AVAIL);
        assert_eq!(child.use_count, 0);
        assert_eq!(child.generation, generation);
        assert!(!child.retired && child.is_available());
        assert_eq!(master.counters().spawned, 1);
    }

    // Rule 2.
    #[test]
    fn every_spawn_bumps_the_generation_which_wraps() {
        let now = Instant::now();
        let mut master = Master::new(config(0));
        assert_eq!(spawn(&mut master, now, 10), 1, "the first generation is 1, as in Postfix");
        assert_eq!(spawn(&mut master, now, 11), 2);
        // A failed spawn uses its generation up (zero delay: no throttle in the way).
        let mut master = Master::new(Config { throttle_delay: Duration::ZERO, ..config(0) });
        let failed = master.begin_spawn(now).unwrap();
        master.spawn_failed(failed, now).unwrap();
        assert_eq!(master.begin_spawn(now).unwrap(), failed + 1);
        // Wrapping.
        master.generation = u32::MAX - 1;
        assert_eq!(spawn(&mut master, now, 20), u32::MAX);
        assert_eq!(spawn(&mut master, now, 21), 0);
        assert_eq!(master.child(21).unwrap().generation, 0);
        assert_eq!(spawn(&mut master, now, 22), 1);
    }

    // Rule 3.
    #[test]
    fn an_update_for_an_unknown_pid_is_ignored() {
        let now = Instant::now();
        let mut master = Master::new(Config::default());
        let generation = spawn(&mut master, now, 100);
        assert_eq!(master.receive(&update(999, generation, Status::TAKEN)), Outcome::UnknownPid);
        assert_eq!(master.available(), 1, "no child was marked taken");
        // A late update from a child already reaped.
        master.reaped(100, Exit::Code(0), now);
        assert_eq!(master.receive(&update(100, generation, Status::TAKEN)), Outcome::UnknownPid);
        assert_eq!((master.available(), master.total()), (0, 0));
        assert_eq!(master.counters().unknown_pid, 2);
        assert_eq!(master.counters().received(), 2);
    }

    // Rule 4.
    #[test]
    fn an_update_with_the_wrong_generation_is_ignored() {
        let now = Instant::now();
        let mut master = Master::new(Config::default());
        // A pid reused: the old process's late TAKEN must not touch the new one.
        let old = spawn(&mut master, now, 100);
        master.reaped(100, Exit::Code(0), now);
        let new = spawn(&mut master, now, 100);
        assert_ne!(old, new);
        let outcome = master.receive(&update(100, old, Status::TAKEN));
        assert_eq!(outcome, Outcome::WrongGeneration { expected: new, got: old });
        assert_eq!(master.child(100).unwrap().status, Status::AVAIL);
        assert_eq!(master.available(), 1);
        // Nor an AVAIL raise the use count of a taken child.
        master.receive(&update(100, new, Status::TAKEN));
        master.receive(&update(100, old, Status::AVAIL));
        assert_eq!((master.available(), use_count(&master, 100)), (0, 0));
        assert_eq!(master.counters().wrong_generation, 2);
    }

    // Rule 5.
    #[test]
    fn a_redundant_update_is_ignored_and_is_not_a_use() {
        let now = Instant::now();
        let mut master = Master::new(Config::default());
        let generation = spawn(&mut master, now, 100);
        // A new child is already AVAIL: saying so again is no use.
        assert_eq!(master.receive(&update(100, generation, Status::AVAIL)), Outcome::Redundant);
        assert_eq!((master.available(), use_count(&master, 100)), (1, 0));
        assert_eq!(master.receive(&update(100, generation, Status::TAKEN)), Outcome::Taken);
        assert_eq!(master.receive(&update(100, generation, Status::TAKEN)), Outcome::Redundant);
        assert_eq!(master.available(), 0, "available not lowered twice");
        assert_eq!(master.counters().redundant, 2);
        // So a child that only ever repeated AVAIL still counts as unused.
        let mut master = Master::new(Config::default());
        let generation = spawn(&mut master, now, 7);
        master.receive(&update(7, generation, Status::AVAIL));
        let reaped = master.reaped(7, Exit::Code(1), now);
        assert!(matches!(reaped, ReapOutcome::Reaped { throttle_began: true, .. }));
    }

    // Rule 6.
    #[test]
    fn avail_and_taken_move_the_available_count_and_avail_is_a_use() {
        let now = Instant::now();
        let mut master = Master::new(Config::default());
        let a = spawn(&mut master, now, 100);
        let b = spawn(&mut master, now, 101);
        assert_eq!(master.available(), 2);
        assert_eq!(master.receive(&update(100, a, Status::TAKEN)), Outcome::Taken);
        assert_eq!(master.available(), 1);
        assert_eq!(master.child(100).unwrap().status, Status::TAKEN);
        assert_eq!(master.receive(&update(101, b, Status::TAKEN)), Outcome::Taken);
        assert_eq!(master.available(), 0);
        assert_eq!(master.receive(&update(100, a, Status::AVAIL)), Outcome::Avail);
        assert_eq!((master.available(), use_count(&master, 100), use_count(&master, 101)), (1, 1, 0));
        master.receive(&update(100, a, Status::TAKEN));
        master.receive(&update(100, a, Status::AVAIL));
        assert_eq!(use_count(&master, 100), 2);
        assert_eq!(master.total(), 2, "updates never change the table size");
        let counters = master.counters();
        assert_eq!((counters.taken, counters.avail), (3, 2));
    }

    // Rule 7.
    #[test]
    fn an_unknown_status_value_is_ignored() {
        let now = Instant::now();
        let mut master = Master::new(Config::default());
        let avail = spawn(&mut master, now, 100);
        let taken = spawn_taken(&mut master, now, 101);
        for value in [2, -1, i32::MIN, i32::MAX] {
            assert_eq!(master.receive(&update(100, avail, Status(value))), Outcome::UnknownStatus(value));
            assert_eq!(master.receive(&update(101, taken, Status(value))), Outcome::UnknownStatus(value));
        }
        assert_eq!(master.child(100).unwrap().status, Status::AVAIL);
        assert_eq!(master.child(101).unwrap().status, Status::TAKEN);
        assert_eq!((master.available(), use_count(&master, 100)), (1, 0));
        assert_eq!(master.counters().unknown_status, 8);
    }

    // Rule 8.
    #[test]
    fn malformed_input_is_counted_and_reported() {
        let now = Instant::now();
        let mut master = Master::new(Config::default());
        spawn(&mut master, now, 100);
        let inputs = [Malformed::Short(5), Malformed::Oversized(13), Malformed::Torn, Malformed::Corrupt("index")];
        for malformed in inputs {
            assert_eq!(master.receive(&Received::Malformed(malformed)), Outcome::Malformed(malformed));
        }
        assert_eq!(master.counters().malformed, 4);
        assert_eq!(master.counters().received(), 4);
        assert_eq!((master.available(), master.total()), (1, 1));
    }

    // Rule 9.
    #[test]
    fn a_vouched_sender_must_match_the_claimed_pid() {
        let now = Instant::now();
        let mut master = Master::new(Config::default());
        let victim = spawn(&mut master, now, 100);
        spawn(&mut master, now, 101);
        // Child 101 claims to be 100; the kernel says otherwise.
        let forged = update_from(100, victim, Status::TAKEN, Sender::KernelPid(101));
        assert_eq!(master.receive(&forged), Outcome::ForgedPid { claimed: 100, verified: 101 });
        let forged = update_from(100, victim, Status::TAKEN, Sender::Channel(101));
        assert_eq!(master.receive(&forged), Outcome::ForgedPid { claimed: 100, verified: 101 });
        // Even for a pid nobody has.
        let forged = update_from(555, 1, Status::TAKEN, Sender::KernelPid(101));
        assert_eq!(master.receive(&forged), Outcome::ForgedPid { claimed: 555, verified: 101 });
        assert_eq!(master.child(100).unwrap().status, Status::AVAIL);
        assert_eq!(master.available(), 2);
        assert_eq!(master.counters().forged_pid, 3);
        // A vouched sender that matches is applied.
        let honest = update_from(100, victim, Status::TAKEN, Sender::KernelPid(100));
        assert_eq!(master.receive(&honest), Outcome::Taken);
        let honest = update_from(100, victim, Status::AVAIL, Sender::Channel(100));
        assert_eq!(master.receive(&honest), Outcome::Avail);
        // With a claimed identity the pid is believed, as in Postfix: any
        // child that knows the generation can speak for another.
        let spoofed = update_from(100, victim, Status::TAKEN, Sender::Claimed);
        assert_eq!(master.receive(&spoofed), Outcome::Taken);
        assert_eq!(master.available(), 1);
    }

    // Rule 10.
    #[test]
    fn a_reaped_child_leaves_the_table() {
        let now = Instant::now();
        let mut master = Master::new(Config::default());
        spawn(&mut master, now, 100);
        spawn_taken(&mut master, now, 101);
        assert_eq!((master.available(), master.total()), (1, 2));
        // An available child: one fewer available.
        let reaped = master.reaped(100, Exit::Code(0), now);
        let ReapOutcome::Reaped { child, throttle_began } = reaped else {
            panic!("expected a reap, got {reaped:?}");
        };
        assert_eq!((child.pid, child.status, throttle_began), (100, Status::AVAIL, false));
        assert_eq!((master.available(), master.total()), (0, 1));
        assert!(master.child(100).is_none());
        // A taken child: available unchanged.
        assert_eq!(master.reaped(101, Exit::Code(0), now).name(), "reaped");
        assert_eq!((master.available(), master.total()), (0, 0));
        // Twice, or a stranger: reported, not a panic.
        assert_eq!(master.reaped(101, Exit::Code(0), now), ReapOutcome::UnknownPid);
        assert_eq!(master.reaped(-5, Exit::Signal(9), now), ReapOutcome::UnknownPid);
        assert_eq!((master.counters().reaped, master.counters().reap_unknown_pid), (2, 2));
        assert_eq!(master.throttled_until(now), None, "an unknown pid throttles nothing");
    }

    // Rule 11.
    #[test]
    fn an_abnormal_death_before_any_use_throttles_spawning() {
        let t0 = Instant::now();
        let delay = Duration::from_secs(60);
        let mut master = Master::new(config(0));
        spawn_taken(&mut master, t0, 100);
        spawn_taken(&mut master, t0, 101);
        spawn_taken(&mut master, t0, 102);
        assert!(master.should_listen(t0));
        let reaped = master.reaped(100, Exit::Signal(11), t0);
        assert!(matches!(reaped, ReapOutcome::Reaped { throttle_began: true, .. }));
        assert_eq!(reaped.name(), "reaped-throttle");
        assert_eq!(master.throttled_until(t0), Some(t0 + delay));
        assert!(!master.should_listen(t0));
        assert_eq!(master.begin_spawn(t0 + SECOND), Err(SpawnError::Throttled));
        assert_eq!(master.counters().throttled, 1);
        // Not extended by another failure while throttled.
        let reaped = master.reaped(101, Exit::Code(1), t0 + 30 * SECOND);
        assert!(matches!(reaped, ReapOutcome::Reaped { throttle_began: false, .. }));
        assert_eq!(master.throttled_until(t0 + 30 * SECOND), Some(t0 + delay));
        assert_eq!(master.counters().throttled, 1);
        // Throttled means now < until.
        assert!(master.throttled_until(t0 + delay - Duration::from_nanos(1)).is_some());
        assert_eq!(master.throttled_until(t0 + delay), None);
        assert!(master.should_listen(t0 + delay));
        assert!(master.begin_spawn(t0 + delay).is_ok());
        // After it ends, a new failure throttles again, from its own now.
        let t1 = t0 + 2 * delay;
        master.reaped(102, Exit::Code(2), t1);
        assert_eq!(master.throttled_until(t1), Some(t1 + delay));
        assert_eq!(master.counters().throttled, 2);
    }

    // Rule 11, the other side.
    #[test]
    fn a_normal_exit_or_a_used_child_does_not_throttle() {
        let now = Instant::now();
        let mut master = Master::new(config(0));
        // Normal exit, never used.
        spawn(&mut master, now, 100);
        assert!(matches!(master.reaped(100, Exit::Code(0), now), ReapOutcome::Reaped { throttle_began: false, .. }));
        // Abnormal exit after serving one client.
        let generation = spawn_taken(&mut master, now, 101);
        master.receive(&update(101, generation, Status::AVAIL));
        master.receive(&update(101, generation, Status::TAKEN));
        assert_eq!(use_count(&master, 101), 1);
        master.reaped(101, Exit::Signal(9), now);
        assert_eq!(master.throttled_until(now), None);
        assert_eq!(master.counters().throttled, 0);
        // A zero delay turns throttling off.
        let mut master = Master::new(Config { throttle_delay: Duration::ZERO, ..config(0) });
        spawn(&mut master, now, 100);
        master.reaped(100, Exit::Code(1), now);
        assert_eq!((master.throttled_until(now), master.counters().throttled), (None, 0));
        assert!(master.should_listen(now));
    }

    // Rule 12.
    #[test]
    fn the_master_listens_only_when_unthrottled_with_none_available_and_room_for_one_more() {
        let now = Instant::now();
        let mut master = Master::new(config(2));
        assert!(master.should_listen(now), "no children, room, not throttled");
        let a = spawn(&mut master, now, 100);
        assert!(!master.should_listen(now), "a child is available");
        master.receive(&update(100, a, Status::TAKEN));
        assert!(master.should_listen(now), "none available, room for one more");
        spawn_taken(&mut master, now, 101);
        assert!(!master.should_listen(now), "at the limit");
        master.reaped(101, Exit::Code(0), now);
        assert!(master.should_listen(now));
        // A pending spawn is the available child it is about to be.
        let pending = master.begin_spawn(now).unwrap();
        assert!(!master.should_listen(now));
        master.spawn_failed(pending, now).unwrap();
        assert!(!master.should_listen(now), "throttled by the failed spawn");
        assert!(master.should_listen(now + 60 * SECOND));
        // Limit 0: unlimited.
        let mut master = Master::new(config(0));
        for pid in 1..=500 {
            assert!(master.should_listen(now));
            spawn_taken(&mut master, now, pid);
        }
        assert!(master.should_listen(now));
        assert_eq!(master.total(), 500);
    }

    // Rule 13.
    #[test]
    fn spawns_the_rules_forbid_are_refused_without_changing_anything() {
        let now = Instant::now();
        let mut master = Master::new(config(2));
        spawn(&mut master, now, 100);
        let pending = master.begin_spawn(now).unwrap();
        // One child plus one pending spawn: at the limit.
        assert_eq!(master.begin_spawn(now), Err(SpawnError::AtLimit { limit: 2 }));
        // A pid still in the table.
        assert_eq!(master.spawned(100, pending), Err(RegisterError::DuplicatePid(100)));
        // A generation never handed out, or already used.
        assert_eq!(master.spawned(101, pending + 7), Err(RegisterError::UnknownGeneration(pending + 7)));
        assert_eq!(master.spawned(0, pending), Err(RegisterError::InvalidPid(0)));
        assert_eq!(master.spawned(-1, pending), Err(RegisterError::InvalidPid(-1)));
        assert_eq!((master.total(), master.available(), master.pending_spawns()), (1, 1, 1));
        // The refused spawn is still pending and can be completed.
        master.spawned(101, pending).unwrap();
        assert_eq!(master.spawned(102, pending), Err(RegisterError::UnknownGeneration(pending)));
        assert_eq!(master.spawn_failed(pending, now), Err(RegisterError::UnknownGeneration(pending)));
        assert_eq!((master.total(), master.available(), master.counters().spawned), (2, 2, 2));
        assert_eq!(master.begin_spawn(now), Err(SpawnError::AtLimit { limit: 2 }));
        assert_eq!(master.generation, pending, "a refused spawn uses no generation");
        // Throttled.
        master.reaped(101, Exit::Code(1), now);
        assert_eq!(master.begin_spawn(now), Err(SpawnError::Throttled));
        assert_eq!(master.pending_spawns(), 0);
        assert_eq!(SpawnError::AtLimit { limit: 2 }.to_string(), "at the process limit of 2");
    }

    // Rule 13, fork failure.
    #[test]
    fn a_failed_fork_releases_its_slot_and_throttles() {
        let now = Instant::now();
        let mut master = Master::new(config(1));
        let generation = master.begin_spawn(now).unwrap();
        assert_eq!(master.begin_spawn(now), Err(SpawnError::AtLimit { limit: 1 }));
        master.spawn_failed(generation, now).unwrap();
        assert_eq!((master.pending_spawns(), master.total(), master.available()), (0, 0, 0));
        assert_eq!(master.throttled_until(now), Some(now + 60 * SECOND));
        assert_eq!(master.begin_spawn(now), Err(SpawnError::Throttled), "the slot is free, the throttle is on");
        let counters = master.counters();
        assert_eq!((counters.spawn_failed, counters.throttled, counters.spawned), (1, 1, 0));
    }

    // Rule 14.
    #[test]
    fn reload_retires_every_existing_child() {
        let now = Instant::now();
        let mut master = Master::new(config(3));
        let a = spawn(&mut master, now, 300);
        let b = spawn_taken(&mut master, now, 100);
        let pending = master.begin_spawn(now).unwrap();
        assert_eq!((master.available(), master.total(), master.epoch()), (1, 2, 0));
        assert_eq!(master.reload(), vec![100, 300]);
        assert_eq!(master.epoch(), 1);
        // Retired: not available, still real processes under the limit.
        assert_eq!((master.available(), master.total()), (0, 2));
        assert!(master.child(300).unwrap().retired && master.child(100).unwrap().retired);
        // Their updates are ignored, whatever they say.
        assert_eq!(master.receive(&update(100, b, Status::AVAIL)), Outcome::Retired);
        assert_eq!(master.receive(&update(300, a, Status::TAKEN)), Outcome::Retired);
        assert_eq!(master.receive(&update(300, a, Status(9))), Outcome::Retired);
        assert_eq!(master.available(), 0);
        assert_eq!(use_count(&master, 100), 0, "use count frozen");
        assert_eq!(master.counters().retired, 3);
        // But a wrong generation is still that, not retirement.
        let outcome = master.receive(&update(300, b, Status::TAKEN));
        assert_eq!(outcome, Outcome::WrongGeneration { expected: a, got: b });
        // A spawn begun before the reload got the old channel: retired too.
        master.spawned(200, pending).unwrap();
        assert!(master.child(200).unwrap().retired);
        assert_eq!((master.available(), master.total()), (0, 3));
        assert!(!master.should_listen(now), "retired children hold their slots");
        // Reaping a retired AVAIL child does not touch `available`.
        master.reaped(300, Exit::Code(0), now);
        assert_eq!((master.available(), master.total()), (0, 2));
        assert!(master.should_listen(now));
        // New children count normally.
        let c = spawn(&mut master, now, 400);
        assert_eq!((master.available(), master.total()), (1, 3));
        assert_eq!(master.receive(&update(400, c, Status::TAKEN)), Outcome::Taken);
        assert_eq!(master.available(), 0);
        // A second reload retires only what the first did not.
        assert_eq!(master.reload(), vec![400]);
        assert_eq!(master.counters().reloads, 2);
        // The throttle survives a reload.
        master.reaped(400, Exit::Signal(6), now);
        master.reload();
        assert!(master.throttled_until(now).is_some());
    }

    // Rule 15.
    #[test]
    fn counters_add_up_to_the_inputs() {
        let now = Instant::now();
        let mut master = Master::new(config(0));
        let a = spawn(&mut master, now, 100);
        let b = spawn(&mut master, now, 101);
        let inputs = [
            update(100, a, Status::TAKEN),
            update(100, a, Status::AVAIL),
            update(100, a, Status::AVAIL),
            update(555, a, Status::TAKEN),
            update(100, a + 9, Status::TAKEN),
            update(100, a, Status(3)),
            update_from(100, a, Status::TAKEN, Sender::KernelPid(101)),
            Received::Malformed(Malformed::Short(1)),
        ];
        for input in &inputs {
            master.receive(input);
        }
        master.reload();
        master.receive(&update(101, b, Status::TAKEN));
        master.reaped(100, Exit::Signal(9), now);
        master.reaped(100, Exit::Signal(9), now);
        spawn(&mut master, now + 60 * SECOND, 102);
        let expected = Counters {
            taken: 1,
            avail: 1,
            redundant: 1,
            unknown_pid: 1,
            wrong_generation: 1,
            unknown_status: 1,
            forged_pid: 1,
            retired: 1,
            malformed: 1,
            spawned: 3,
            spawn_failed: 0,
            reaped: 1,
            reap_unknown_pid: 1,
            throttled: 0, // child 100 had been used once
            reloads: 1,
        };
        assert_eq!(*master.counters(), expected);
        assert_eq!(master.counters().received(), 9);
    }

    #[test]
    fn outcomes_have_short_names_for_log_lines() {
        let all = [
            (Outcome::Taken, "taken"),
            (Outcome::Avail, "avail"),
            (Outcome::Redundant, "redundant"),
            (Outcome::UnknownPid, "unknown-pid"),
            (Outcome::WrongGeneration { expected: 1, got: 2 }, "wrong-generation"),
            (Outcome::UnknownStatus(7), "unknown-status"),
            (Outcome::ForgedPid { claimed: 1, verified: 2 }, "forged-pid"),
            (Outcome::Retired, "retired"),
            (Outcome::Malformed(Malformed::Torn), "malformed"),
        ];
        for (outcome, name) in all {
            assert_eq!(outcome.to_string(), name);
            assert_eq!(outcome.is_applied(), matches!(outcome, Outcome::Taken | Outcome::Avail));
        }
        assert_eq!(ReapOutcome::UnknownPid.to_string(), "unknown-pid");
        assert_eq!(Exit::Code(3).to_string(), "exit status 3");
        assert_eq!(Exit::Signal(9).to_string(), "killed by signal 9");
        assert!(Exit::Code(0).is_normal() && !Exit::Code(1).is_normal() && !Exit::Signal(0).is_normal());
    }

    #[test]
    fn config_defaults_are_postfix_defaults() {
        let config = Config::default();
        assert_eq!(config.process_limit, 100);
        assert_eq!(config.throttle_delay, Duration::from_secs(60));
    }

    /// Which pid an event is about: mostly one in the table, sometimes any.
    #[derive(Clone, Copy, Debug)]
    enum Target {
        Live(usize),
        Foreign(i32),
    }

    /// The pid a new spawn gets.
    #[derive(Clone, Copy, Debug)]
    enum NewPid {
        Fresh,
        /// A pid reaped earlier: the kernel reuses pids.
        Reused(usize),
        /// A pid still in the table: a caller's bug.
        Duplicate(usize),
    }

    #[derive(Clone, Copy, Debug)]
    enum Who {
        Claimed,
        Kernel,
        Channel,
        /// The kernel vouches for another pid than the one claimed.
        Forged(i32),
    }

    #[derive(Clone, Copy, Debug)]
    enum Op {
        /// Begins a spawn and leaves it pending for a later `Spawn`.
        Begin,
        /// Completes the oldest pending spawn, or begins and completes one.
        Spawn {
            pid: NewPid,
            fork_fails: bool,
        },
        Receive {
            target: Target,
            generation: Option<u32>,
            status: i32,
            who: Who,
        },
        Malformed(usize),
        Reap {
            target: Target,
            exit: Exit,
        },
        Advance(u64),
        Reload,
    }

    fn target() -> impl Strategy<Value = Target> {
        prop_oneof![
            9 => any::<usize>().prop_map(Target::Live),
            1 => prop_oneof![1..5000i32, any::<i32>()].prop_map(Target::Foreign),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let new_pid = prop_oneof![
            8 => Just(NewPid::Fresh),
            2 => any::<usize>().prop_map(NewPid::Reused),
            1 => any::<usize>().prop_map(NewPid::Duplicate),
        ];
        let status = prop_oneof![4 => Just(0), 4 => Just(1), 1 => any::<i32>()];
        let who = prop_oneof![
            4 => Just(Who::Claimed),
            2 => Just(Who::Kernel),
            2 => Just(Who::Channel),
            1 => any::<i32>().prop_map(Who::Forged),
        ];
        let generation = prop_oneof![9 => Just(None), 1 => any::<u32>().prop_map(Some)];
        let exit = prop_oneof![
            6 => Just(Exit::Code(0)),
            2 => (1..256i32).prop_map(Exit::Code),
            2 => (1..65i32).prop_map(Exit::Signal),
        ];
        prop_oneof![
            4 => (new_pid, prop::bool::weighted(0.1))
                .prop_map(|(pid, fork_fails)| Op::Spawn { pid, fork_fails }),
            1 => Just(Op::Begin),
            8 => (target(), generation, status, who)
                .prop_map(|(target, generation, status, who)| Op::Receive { target, generation, status, who }),
            1 => (0..40usize).prop_map(Op::Malformed),
            3 => (target(), exit).prop_map(|(target, exit)| Op::Reap { target, exit }),
            2 => (0..90u64).prop_map(Op::Advance),
            1 => Just(Op::Reload),
        ]
    }

    /// The driver's own record of the run, to resolve targets and to check
    /// the machine against.
    struct Run {
        master: Master,
        now: Instant,
        next_pid: i32,
        dead: Vec<i32>,
        receives: u64,
        /// Spawns begun and not yet reported: generation and epoch at begin.
        pending: Vec<(u32, u64)>,
    }

    impl Run {
        fn live(&self) -> Vec<i32> {
            let mut pids: Vec<i32> = self.master.children().map(|child| child.pid).collect();
            pids.sort_unstable();
            pids
        }

        fn resolve(&self, target: Target) -> i32 {
            let live = self.live();
            match target {
                Target::Live(i) if !live.is_empty() => live[i % live.len()],
                Target::Live(_) => 1,
                Target::Foreign(pid) => pid,
            }
        }

        fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
            let before: Vec<ChildInfo> = self.sorted_children();
            let available_before = self.master.available();
            match op {
                Op::Begin => {
                    if let Some(generation) = self.begin()? {
                        self.pending.push((generation, self.master.epoch()));
                    }
                }
                Op::Spawn { pid, fork_fails } => {
                    let (generation, begun_in) = if self.pending.is_empty() {
                        match self.begin()? {
                            Some(generation) => (generation, self.master.epoch()),
                            None => return self.check_invariants(),
                        }
                    } else {
                        self.pending.remove(0)
                    };
                    if fork_fails {
                        prop_assert_eq!(self.master.spawn_failed(generation, self.now), Ok(()));
                        prop_assert!(
                            self.master.throttled_until(self.now).is_some()
                                || self.master.config().throttle_delay.is_zero()
                        );
                        return self.check_invariants();
                    }
                    let live = self.live();
                    let pid = match pid {
                        NewPid::Reused(i) if !self.dead.is_empty() => self.dead.swap_remove(i % self.dead.len()),
                        NewPid::Duplicate(i) if !live.is_empty() => {
                            let duplicate = live[i % live.len()];
                            let result = self.master.spawned(duplicate, generation);
                            prop_assert_eq!(result, Err(RegisterError::DuplicatePid(duplicate)));
                            prop_assert_eq!(self.sorted_children(), before);
                            // Now the caller's bug is fixed: a fresh pid.
                            self.fresh_pid()
                        }
                        _ => self.fresh_pid(),
                    };
                    prop_assert_eq!(self.master.spawned(pid, generation), Ok(()));
                    let child = *self.master.child(pid).unwrap();
                    prop_assert_eq!((child.generation, child.status, child.use_count), (generation, Status::AVAIL, 0));
                    // Begun before a reload: the child has the old channel.
                    let retired = begun_in != self.master.epoch();
                    prop_assert_eq!(child.retired, retired);
                    prop_assert_eq!(self.master.available(), available_before + usize::from(!retired));
                }
                Op::Receive { target, generation, status, who } => {
                    let pid = self.resolve(target);
                    let recorded = self.master.child(pid).copied();
                    let generation = generation.unwrap_or_else(|| recorded.map_or(0, |child| child.generation));
                    let sender = match who {
                        Who::Claimed => Sender::Claimed,
                        Who::Kernel => Sender::KernelPid(pid),
                        Who::Channel => Sender::Channel(pid),
                        Who::Forged(other) => Sender::KernelPid(other),
                    };
                    let outcome = self.master.receive(&update_from(pid, generation, Status(status), sender));
                    self.receives += 1;
                    let after = self.sorted_children();
                    if outcome.is_applied() {
                        // Exactly the one child changed, to the status it sent.
                        let child = self.master.child(pid).unwrap();
                        prop_assert_eq!(child.status, Status(status));
                        prop_assert_eq!(before.len(), after.len());
                        let changed = before.iter().zip(&after).filter(|(b, a)| b != a).count();
                        prop_assert_eq!(changed, 1);
                    } else {
                        prop_assert_eq!(&after, &before, "{} changed the table", outcome);
                        prop_assert_eq!(self.master.available(), available_before);
                    }
                    // The outcome agrees with what the driver knows.
                    let forged = sender.verified_pid().is_some_and(|verified| verified != pid);
                    let rejected = matches!(outcome, Outcome::ForgedPid { .. });
                    prop_assert_eq!(forged, rejected);
                    if !forged {
                        match recorded {
                            None => prop_assert_eq!(outcome, Outcome::UnknownPid),
                            Some(child) if child.generation != generation => {
                                let wrong_generation = matches!(outcome, Outcome::WrongGeneration { .. });
                                prop_assert!(wrong_generation, "{:?}", outcome);
                            }
                            Some(child) if child.retired => prop_assert_eq!(outcome, Outcome::Retired),
                            Some(child) if child.status == Status(status) => {
                                prop_assert_eq!(outcome, Outcome::Redundant);
                            }
                            Some(_) if !Status(status).is_known() => {
                                prop_assert_eq!(outcome, Outcome::UnknownStatus(status));
                            }
                            Some(_) => prop_assert!(outcome.is_applied()),
                        }
                    }
                }
                Op::Malformed(n) => {
                    let outcome = self.master.receive(&Received::Malformed(Malformed::Short(n)));
                    self.receives += 1;
                    prop_assert_eq!(outcome, Outcome::Malformed(Malformed::Short(n)));
                    prop_assert_eq!(self.sorted_children(), before);
                }
                Op::Reap { target, exit } => {
                    let pid = self.resolve(target);
                    let recorded = self.master.child(pid).copied();
                    let was_throttled = self.master.throttled_until(self.now).is_some();
                    match (self.master.reaped(pid, exit, self.now), recorded) {
                        (ReapOutcome::Reaped { child, throttle_began }, Some(recorded)) => {
                            prop_assert_eq!(child, recorded);
                            prop_assert_eq!(self.master.total(), before.len() - 1);
                            let should_begin = !exit.is_normal()
                                && child.use_count == 0
                                && !was_throttled
                                && !self.master.config().throttle_delay.is_zero();
                            prop_assert_eq!(throttle_began, should_begin);
                            self.dead.push(pid);
                        }
                        (ReapOutcome::UnknownPid, None) => prop_assert_eq!(self.sorted_children(), before),
                        (outcome, recorded) => {
                            return Err(TestCaseError::fail(format!("reap gave {outcome:?} for {recorded:?}")));
                        }
                    }
                }
                Op::Advance(secs) => self.now += Duration::from_secs(secs),
                Op::Reload => {
                    let epoch = self.master.epoch();
                    let expected: Vec<i32> = before.iter().filter(|c| !c.retired).map(|c| c.pid).collect();
                    prop_assert_eq!(self.master.reload(), expected);
                    prop_assert_eq!(self.master.epoch(), epoch + 1);
                    prop_assert!(self.master.children().all(|child| child.retired));
                    prop_assert_eq!(self.master.available(), 0);
                }
            }
            self.check_invariants()
        }

        /// `begin_spawn`, checking a refusal against its reason.
        fn begin(&mut self) -> Result<Option<u32>, TestCaseError> {
            let occupied = self.master.total() + self.master.pending_spawns();
            let limit = self.master.config().process_limit;
            let throttled = self.master.throttled_until(self.now).is_some();
            let generation = self.master.generation;
            match self.master.begin_spawn(self.now) {
                Ok(next) => {
                    prop_assert!(!throttled && (limit == 0 || occupied < limit));
                    prop_assert_eq!(next, generation.wrapping_add(1));
                    Ok(Some(next))
                }
                Err(SpawnError::AtLimit { limit: reported }) => {
                    prop_assert!(limit != 0 && occupied >= limit && reported == limit);
                    Ok(None)
                }
                Err(SpawnError::Throttled) => {
                    prop_assert!(throttled);
                    Ok(None)
                }
            }
        }

        fn fresh_pid(&mut self) -> i32 {
            self.next_pid += 1;
            self.next_pid
        }

        fn sorted_children(&self) -> Vec<ChildInfo> {
            let mut children: Vec<ChildInfo> = self.master.children().copied().collect();
            children.sort_unstable_by_key(|child| child.pid);
            children
        }

        fn check_invariants(&self) -> Result<(), TestCaseError> {
            let m = &self.master;
            let limit = m.config().process_limit;
            let counters = m.counters();
            prop_assert!(m.available() <= m.total());
            if limit != 0 {
                prop_assert!(m.total() + m.pending_spawns() <= limit);
            }
            let available = m.children().filter(|c| !c.retired && c.status == Status::AVAIL).count();
            prop_assert_eq!(m.available(), available);
            prop_assert_eq!(m.total(), m.children().count());
            prop_assert!(m.children().all(|c| c.status == Status::TAKEN || c.status == Status::AVAIL));
            prop_assert!(m.children().all(|c| m.child(c.pid) == Some(c)));
            prop_assert_eq!(counters.received(), self.receives);
            prop_assert_eq!(m.pending_spawns(), self.pending.len());
            prop_assert_eq!(counters.spawned - counters.reaped, u64::try_from(m.total()).unwrap());
            let throttled = m.throttled_until(self.now).is_some();
            let room = limit == 0 || m.total() + m.pending_spawns() < limit;
            let listen = !throttled && m.available() == 0 && m.pending_spawns() == 0 && room;
            prop_assert_eq!(m.should_listen(self.now), listen);
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 300,
            // Only master.rs is ours to write: no regression files beside it.
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn random_event_sequences_keep_the_books_straight(
            process_limit in prop_oneof![Just(0usize), 1..6usize],
            throttle_secs in prop_oneof![Just(0u64), 1..120u64],
            ops in prop::collection::vec(op(), 1..120),
        ) {
            let mut run = Run {
                master: Master::new(Config { process_limit, throttle_delay: Duration::from_secs(throttle_secs) }),
                now: Instant::now(),
                next_pid: 1000,
                dead: Vec::new(),
                receives: 0,
                pending: Vec::new(),
            };
            run.check_invariants()?;
            for op in ops {
                run.step(op)?;
            }
        }
    }

    #[test]
    fn generations_go_on_from_a_given_point_and_wrap() {
        let now = Instant::now();
        let mut master = Master::with_generation(Config::default(), u32::MAX - 1);
        assert_eq!(master.begin_spawn(now), Ok(u32::MAX));
        assert_eq!(master.begin_spawn(now), Ok(0));
        assert_eq!(master.begin_spawn(now), Ok(1));
        assert_eq!(master.pending_spawns(), 3);
    }
}
