//! The few system facts the tasks need: a clock shared by processes,
//! bounded waits, CPU pinning, peak RSS and the machine's description.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CpuSet, sched_setaffinity};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::Pid;

/// CLOCK_MONOTONIC in nanoseconds: comparable between processes of one
/// machine, so a child's timestamp and the master's can be subtracted.
pub(crate) fn mono_ns() -> u64 {
    // CLOCK_MONOTONIC always exists on Linux: clock_gettime cannot fail.
    let Ok(ts) = clock_gettime(ClockId::CLOCK_MONOTONIC) else { return 0 };
    let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec()).unwrap_or(0);
    secs * 1_000_000_000 + nanos
}

/// A poll(2) timeout for `left`, rounded up to whole milliseconds.
fn poll_timeout(left: Duration) -> PollTimeout {
    PollTimeout::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(PollTimeout::MAX)
}

/// Waits until `fd` is readable or reports hang-up, at most `timeout`;
/// whether it is. `EINTR` is retried (the wait may then end a little
/// early, which callers treat as "maybe").
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match poll(&mut fds, poll_timeout(timeout)) {
        Ok(n) => Ok(n > 0),
        Err(Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Pins this process (and the children it spawns afterwards) to `cpu`.
pub(crate) fn pin(cpu: usize) -> io::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set)?;
    Ok(())
}

/// The number of CPUs this process may run on.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// This process's peak resident set size (VmHWM), in KiB.
pub(crate) fn peak_rss_kib() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other("no VmHWM in /proc/self/status"))
}

/// The machine a run happened on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Machine {
    /// The CPU model, from /proc/cpuinfo.
    pub(crate) cpu_model: String,
    /// CPUs this process may use.
    pub(crate) cores: usize,
    /// The kernel release.
    pub(crate) kernel: String,
}

impl Machine {
    /// Describes this machine.
    pub(crate) fn here() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim()))
            .unwrap_or("unknown")
            .to_owned();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_owned(), |k| format!("Linux {}", k.trim()));
        Machine { cpu_model, cores: cores(), kernel }
    }
}
