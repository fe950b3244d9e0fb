//! Helpers shared by this crate's integration tests: bounded waiting and child processes.
//!
//! Every wait here ends at a deadline the caller gives and pauses only
//! inside poll(2), never in a bare sleep, so a test that fails says what it
//! awaited instead of hanging.

#![allow(dead_code, reason = "each test binary uses only some of the shared helpers")]

use std::os::fd::BorrowedFd;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// The bound on every single wait: generous, for a loaded 2-core CI machine.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// The pause between two checks of a condition that no descriptor reports.
const PAUSE: Duration = Duration::from_millis(5);

/// A poll(2) timeout for `left`, rounded up to whole milliseconds.
pub(crate) fn poll_timeout(left: Duration) -> PollTimeout {
    PollTimeout::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(PollTimeout::MAX)
}

/// Waits until `fd` is readable (or reports hang-up), at most until
/// `deadline`; returns whether it is.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, poll_timeout(left)) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(Errno::EINTR) => {}
            Err(e) => panic!("poll: {e}"),
        }
    }
}

/// Checks `done` until it holds or `deadline` passes, pausing briefly
/// between checks; returns whether it held.
pub(crate) fn poll_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        let _ = poll(&mut [], poll_timeout(PAUSE));
    }
}

/// A child's pid as the status protocol carries it.
pub(crate) fn pid_of(child: &Child) -> i32 {
    i32::try_from(child.id()).expect("a pid fits an i32")
}

/// Reaps `child` once it has exited, at most until `deadline`.
pub(crate) fn try_wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let mut status = None;
    poll_until(deadline, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status
}
