//! Beyond Postfix, each off by default: a spare pool of idle children, and a crash-loop guard with a documented back-off.
//!
//! Postfix spawns a child only when a client waits and none is available,
//! and lets idle children leave by themselves (`max_idle`). A [`Spare`]
//! pool keeps at least `min_idle` children ready before any client comes,
//! and stops idle children beyond `max_idle` (Apache's `MinSpareServers`
//! and `MaxSpareServers`), always within the service's process limit.
//!
//! Postfix throttles a service whose child dies before serving anyone. A
//! child that serves one client and then crashes, again and again, passes
//! that rule every time. A [`CrashGuard`] counts abnormal exits in a sliding
//! window and stops spawning for a while when there are too many; its
//! schedule is on [`CrashGuard`].
//!
//! Both are plain state machines here, driven by the service with the
//! clock passed in, and tested without processes.
//!
//! # Errors
//!
//! [`SpareError`] for a pool that cannot be kept ([`Spare::check`]).
//!
//! # See also
//!
//! Postfix `src/master/master_spawn.c` (the throttle), Apache httpd's
//! prefork MPM (`MinSpareServers`, `MaxSpareServers`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

/// A spare pool: how many idle children a service keeps ready.
///
/// Whenever fewer than `min_idle` children are available, the supervisor
/// spawns more (not beyond the process limit, and not while spawning is
/// throttled or suspended). Whenever more than `max_idle` are available,
/// it stops the youngest idle ones with [`stop_signal`](Spare::stop_signal)
/// (`SIGTERM` by default). A child stopped so is reported to the
/// bookkeeping as a normal exit, so that its death does not throttle the
/// service; its event carries its real status.
///
/// A child that exits at once, normally and unused, is replaced at once:
/// no Postfix rule throttles a normal exit, and the crash-loop guard counts
/// abnormal ones only. That is right for a daemon that leaves after an
/// idle timeout (it is replaced at the pace of that timeout); a command
/// that exits at once (a misconfiguration) makes the pool spawn it again
/// at every turn of the loop.
///
/// Stopping an idle child has a race that no signal avoids: a child that
/// has just accepted a client but not yet said `TAKEN` looks idle. A child
/// that must never drop a client that way handles the stop signal by
/// finishing the client in hand before it exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spare {
    /// At least this many idle children, as far as the process limit
    /// allows.
    pub min_idle: usize,
    /// At most this many idle children; more are stopped.
    pub max_idle: usize,
    /// The signal that stops an idle child beyond `max_idle`.
    pub stop_signal: Signal,
}

impl Spare {
    /// A pool of `min_idle` to `max_idle` idle children, stopped with
    /// `SIGTERM`.
    #[must_use]
    pub const fn new(min_idle: usize, max_idle: usize) -> Spare {
        Spare { min_idle, max_idle, stop_signal: Signal::SIGTERM }
    }

    /// The same pool, stopping idle children with `signal`.
    #[must_use]
    pub const fn stop_signal(self, signal: Signal) -> Spare {
        Spare { stop_signal: signal, ..self }
    }

    /// Checks that the pool can be kept under `process_limit` (0: none).
    ///
    /// # Errors
    ///
    /// [`SpareError::MinAboveMax`] when `min_idle > max_idle`,
    /// [`SpareError::NoIdle`] when `max_idle` is 0,
    /// [`SpareError::AboveLimit`] when `min_idle` exceeds the limit.
    pub const fn check(&self, process_limit: usize) -> Result<(), SpareError> {
        if self.max_idle == 0 {
            return Err(SpareError::NoIdle);
        }
        if self.min_idle > self.max_idle {
            return Err(SpareError::MinAboveMax { min_idle: self.min_idle, max_idle: self.max_idle });
        }
        if process_limit != 0 && self.min_idle > process_limit {
            return Err(SpareError::AboveLimit { min_idle: self.min_idle, process_limit });
        }
        Ok(())
    }
}

/// Why a [`Spare`] pool cannot be kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpareError {
    /// `min_idle` is larger than `max_idle`.
    #[error("spare pool: min_idle {min_idle} is above max_idle {max_idle}")]
    MinAboveMax {
        /// The pool's `min_idle`.
        min_idle: usize,
        /// The pool's `max_idle`.
        max_idle: usize,
    },
    /// `max_idle` is 0: every idle child would be stopped.
    #[error("spare pool: max_idle is 0")]
    NoIdle,
    /// More idle children asked for than the service may have.
    #[error("spare pool: min_idle {min_idle} is above the process limit {process_limit}")]
    AboveLimit {
        /// The pool's `min_idle`.
        min_idle: usize,
        /// The service's process limit.
        process_limit: usize,
    },
}

/// A crash-loop guard: a sliding window of abnormal exits, and a back-off.
///
/// An abnormal exit is a non-zero exit code or death by a signal, of a
/// child the supervisor did not stop itself (spare pool, shutdown). The
/// schedule:
///
/// - when `max_failures` abnormal exits fall within `window`, the guard
///   *trips*: no child is spawned for the back-off, and the failures
///   counted so far are forgotten;
/// - the first trip backs off for `initial_backoff`; a trip within `window`
///   of the end of the previous back-off backs off twice as long as that
///   one, up to `max_backoff` (with the defaults: 1 s, 2 s, 4 s, … 64 s);
///   a trip later than that starts again from `initial_backoff`;
/// - exits while backing off are not counted (they are the old children of
///   a service already known to be failing).
///
/// Children alive during a back-off keep serving, and a client that
/// arrives finds them; only new children wait. This is on top of
/// Postfix's own throttle ([`master_proto::master::Config::throttle_delay`]),
/// which applies as before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashGuard {
    /// How far back abnormal exits are counted.
    pub window: Duration,
    /// How many abnormal exits within `window` trip the guard (at least 1).
    pub max_failures: u32,
    /// The first back-off.
    pub initial_backoff: Duration,
    /// The longest back-off.
    pub max_backoff: Duration,
}

impl Default for CrashGuard {
    /// 5 abnormal exits within 10 seconds; backing off 1 s, doubling up to
    /// 64 s.
    fn default() -> CrashGuard {
        CrashGuard {
            window: Duration::from_secs(10),
            max_failures: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(64),
        }
    }
}

impl CrashGuard {
    /// The back-off of the `level`th trip in a row (1 for the first).
    #[must_use]
    pub fn backoff(&self, level: u32) -> Duration {
        let doublings = level.saturating_sub(1).min(31);
        self.initial_backoff.saturating_mul(1u32 << doublings).min(self.max_backoff.max(self.initial_backoff))
    }
}

/// What a [`GuardState`] said about one abnormal exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Trip {
    /// The failures that tripped it (those within the window).
    pub(crate) failures: u32,
    /// Trips in a row, this one included.
    pub(crate) level: u32,
    /// How long spawning stops.
    pub(crate) backoff: Duration,
    /// When it resumes.
    pub(crate) until: Instant,
}

/// A [`CrashGuard`] at work for one service.
#[derive(Debug)]
pub(crate) struct GuardState {
    config: CrashGuard,
    failures: VecDeque<Instant>,
    level: u32,
    /// The end of the current or last back-off.
    backoff_end: Option<Instant>,
    /// The current back-off has been reported over.
    ended_reported: bool,
}

impl GuardState {
    pub(crate) fn new(config: CrashGuard) -> GuardState {
        GuardState { config, failures: VecDeque::new(), level: 0, backoff_end: None, ended_reported: true }
    }

    /// Whether spawning is suspended at `now`.
    pub(crate) fn suspended(&self, now: Instant) -> bool {
        self.backoff_end.is_some_and(|end| now < end)
    }

    /// The end of the current back-off, if one is running.
    pub(crate) fn suspended_until(&self, now: Instant) -> Option<Instant> {
        self.backoff_end.filter(|&end| now < end)
    }

    /// Counts one abnormal exit at `now`; says whether it tripped the guard.
    pub(crate) fn failure(&mut self, now: Instant) -> Option<Trip> {
        if self.suspended(now) {
            return None;
        }
        self.failures.push_back(now);
        while self.failures.front().is_some_and(|&at| now.saturating_duration_since(at) > self.config.window) {
            self.failures.pop_front();
        }
        let failures = u32::try_from(self.failures.len()).unwrap_or(u32::MAX);
        if failures < self.config.max_failures.max(1) {
            return None;
        }
        let again = self.backoff_end.is_some_and(|end| now.saturating_duration_since(end) <= self.config.window);
        self.level = if again { self.level.saturating_add(1) } else { 1 };
        let backoff = self.config.backoff(self.level);
        let until = now + backoff;
        self.failures.clear();
        self.backoff_end = Some(until);
        self.ended_reported = false;
        Some(Trip { failures, level: self.level, backoff, until })
    }

    /// True once, when the back-off that was running is over at `now`.
    pub(crate) fn take_ended(&mut self, now: Instant) -> bool {
        if self.ended_reported || self.suspended(now) {
            return false;
        }
        self.ended_reported = true;
        true
    }

    /// How many trips in a row so far.
    #[cfg(test)]
    pub(crate) fn level(&self) -> u32 {
        self.level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> GuardState {
        GuardState::new(CrashGuard {
            window: Duration::from_secs(10),
            max_failures: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
        })
    }

    #[test]
    fn the_schedule_doubles_up_to_the_cap() {
        let g = CrashGuard::default();
        let secs: Vec<u64> = (1..=9).map(|level| g.backoff(level).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 64, 64]);
        assert_eq!(g.backoff(u32::MAX), Duration::from_secs(64));
    }

    #[test]
    fn failures_within_the_window_trip_and_doubles_follow_closely() {
        let t0 = Instant::now();
        let mut g = guard();
        assert_eq!(g.failure(t0), None);
        assert_eq!(g.failure(t0 + Duration::from_secs(1)), None);
        let trip = g.failure(t0 + Duration::from_secs(2)).expect("the third failure trips");
        assert_eq!((trip.failures, trip.level, trip.backoff), (3, 1, Duration::from_secs(1)));
        assert!(g.suspended(t0 + Duration::from_millis(2500)));
        // Exits while backing off are not counted.
        assert_eq!(g.failure(t0 + Duration::from_millis(2500)), None);
        assert!(!g.suspended(trip.until));
        assert!(g.take_ended(trip.until) && !g.take_ended(trip.until));
        // Three more soon after the back-off: twice as long.
        let t1 = trip.until;
        g.failure(t1);
        g.failure(t1);
        let trip = g.failure(t1).expect("trips again");
        assert_eq!((trip.level, trip.backoff), (2, Duration::from_secs(2)));
        let t2 = trip.until;
        for _ in 0..2 {
            g.failure(t2);
        }
        assert_eq!(g.failure(t2).map(|t| t.backoff), Some(Duration::from_secs(4)));
        let t3 = t2 + Duration::from_secs(4);
        for _ in 0..2 {
            g.failure(t3);
        }
        assert_eq!(g.failure(t3).map(|t| t.backoff), Some(Duration::from_secs(5)), "capped");
    }

    #[test]
    fn failures_spread_out_never_trip_and_a_late_trip_starts_over() {
        let t0 = Instant::now();
        let mut g = guard();
        for i in 0..20 {
            assert_eq!(g.failure(t0 + Duration::from_secs(6 * i)), None, "one failure every 6 s, window 10 s");
        }
        let mut g = guard();
        let trip = (0..3).find_map(|_| g.failure(t0)).expect("trip");
        let late = trip.until + Duration::from_secs(11);
        let again = (0..3).find_map(|_| g.failure(late)).expect("trip");
        assert_eq!((again.level, again.backoff), (1, Duration::from_secs(1)));
        assert_eq!(g.level(), 1);
    }

    #[test]
    fn a_spare_pool_is_checked_against_the_limit() {
        assert_eq!(Spare::new(1, 2).check(4), Ok(()));
        assert_eq!(Spare::new(2, 2).check(0), Ok(()));
        assert_eq!(Spare::new(3, 2).check(4), Err(SpareError::MinAboveMax { min_idle: 3, max_idle: 2 }));
        assert_eq!(Spare::new(0, 0).check(4), Err(SpareError::NoIdle));
        assert_eq!(Spare::new(5, 6).check(4), Err(SpareError::AboveLimit { min_idle: 5, process_limit: 4 }));
        assert_eq!(Spare::new(1, 2).stop_signal(Signal::SIGUSR1).stop_signal, Signal::SIGUSR1);
    }
}
