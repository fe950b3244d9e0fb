//! Helpers shared by this crate's integration tests: bounded waiting, child processes, fresh temporary paths.
//!
//! Each test file includes this module with `mod common;` (Cargo's layout
//! for code shared by integration tests: a file in a subdirectory of
//! `tests/` is not a test target of its own). Every wait here ends at a
//! deadline the caller gives and pauses only inside poll(2), never in a bare
//! sleep, so a test that fails says what it awaited instead of hanging.

// Each test binary compiles its own copy of this module and uses only some
// of it; the rest would otherwise warn in every binary that does not.
#![allow(dead_code, reason = "each test binary uses only some of the shared helpers")]

use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// The bound on every single wait: generous, for a loaded 2-core CI
/// machine.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// The pause between two checks of a condition that no descriptor reports
/// (a child's exit, a state in `/proc`).
const PAUSE: Duration = Duration::from_millis(5);

// ---------------------------------------------------------------------------
// Waiting, bounded.

/// A poll(2) timeout for `left`, rounded up to whole milliseconds, so that a
/// wait never ends before its deadline.
pub(crate) fn poll_timeout(left: Duration) -> PollTimeout {
    PollTimeout::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(PollTimeout::MAX)
}

/// Waits until `fd` is readable (or reports hang-up), at most until
/// `deadline`; returns whether it is. `EINTR` is retried; any other poll
/// error fails the test.
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

/// Pauses for [`PAUSE`]: poll(2) on no descriptor. Only for conditions that
/// nothing can be polled for, between checks bounded by a deadline.
fn pause() {
    let _ = poll(&mut [], poll_timeout(PAUSE));
}

/// Checks `done` until it holds or `deadline` passes, pausing briefly
/// between checks; returns whether it held. It is checked at least once.
pub(crate) fn poll_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        pause();
    }
}

// ---------------------------------------------------------------------------
// Child processes.

/// A child's pid as the status protocol carries it.
pub(crate) fn pid_of(child: &Child) -> i32 {
    i32::try_from(child.id()).expect("a pid fits an i32")
}

/// Reaps `child` once it has exited, at most until `deadline`; `None` if it
/// is still running then. std offers nothing to poll for a child's exit, so
/// this checks between short pauses.
pub(crate) fn try_wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let mut status = None;
    poll_until(deadline, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status
}

/// Kills `child` and reaps it, unless it has been reaped already: for the
/// `Drop` of a guard, so that a failing test leaves no process behind.
pub(crate) fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

// ---------------------------------------------------------------------------
// Files.

/// A path in the temp dir, unique to this process and call, for a file or
/// directory to create: `<prefix>-<pid>-<n><suffix>`. A leftover of an
/// earlier process that had the same pid is removed first.
pub(crate) fn fresh_temp_path(prefix: &str, suffix: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("{prefix}-{}-{n}{suffix}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    let _ = std::fs::remove_file(&path);
    path
}
