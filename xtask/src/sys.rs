//! The few system facts the tasks need: a clock shared by processes,
//! bounded waits, CPU pinning and priority, memory and descriptors from
//! /proc, a process's children, this process's CPU time, a pidfd, and the
//! machine's description.
//!
//! # Safety
//!
//! Three unsafe calls: `setpriority(2)` (see [`nice`]), which takes
//! integers, `pidfd_open(2)` (see [`pidfd_open`], which nix does not
//! wrap), which takes integers and returns -1 or a new descriptor that
//! nothing else owns, and `pwritev2(2)` with a flag nix does not know (see
//! [`pwrite_nosignal`]), which only reads the one buffer it is given.
#![allow(unsafe_code)] // Safety: see above; each call has its own SAFETY comment.

use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
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

/// Sets this process's nice value to `nice` (higher is a lower priority;
/// an unprivileged process may only raise it).
pub(crate) fn nice(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority takes integers and touches no memory; `which`
    // and `who` name this very process.
    let rc = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, nice) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Opens a pidfd for `pid`, a child not reaped yet (close-on-exec, as
/// every pidfd is): it becomes readable when the child exits.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and a flags word, touches no memory of
    // ours, and returns -1 or a new descriptor.
    let ret = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(ret).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just returned `fd` as a new descriptor, owned by
    // nobody else in this process.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One `pwritev2(fd, [bytes], -1, RWF_NOSIGNAL)`: `EPIPE` instead of
/// `SIGPIPE` when the pipe has no reader (Linux 6.18 and later).
pub(crate) fn pwrite_nosignal(fd: BorrowedFd<'_>, bytes: &[u8]) -> nix::Result<usize> {
    /// `RWF_NOSIGNAL` from linux/fs.h (not in every libc crate yet).
    const RWF_NOSIGNAL: nix::libc::c_int = 0x100;
    let iov = nix::libc::iovec { iov_base: bytes.as_ptr().cast_mut().cast(), iov_len: bytes.len() };
    // SAFETY: `iov` names `bytes`, alive and only read during the call;
    // `fd` is open for the call's duration; offset -1 is the current
    // position, which a pipe ignores.
    let n = unsafe { nix::libc::pwritev2(std::os::fd::AsRawFd::as_raw_fd(&fd), &raw const iov, 1, -1, RWF_NOSIGNAL) };
    usize::try_from(n).map_err(|_| Errno::last())
}

/// The CPU time this process has used so far, user and system, in
/// nanoseconds (`getrusage(RUSAGE_SELF)`: every thread of it, no child).
pub(crate) fn cpu_ns() -> io::Result<u64> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)?;
    let ns = |t: nix::sys::time::TimeVal| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_usec()).unwrap_or(0) * 1_000
    };
    Ok(ns(usage.user_time()) + ns(usage.system_time()))
}

/// The number of CPUs this process may run on.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Waits until one of `fds` is readable or reports hang-up, at most
/// `timeout`; which are. `EINTR` ends the wait early with none.
pub(crate) fn wait_any(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<Vec<bool>> {
    let mut polled: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(*fd, PollFlags::POLLIN)).collect();
    match poll(&mut polled, poll_timeout(timeout)) {
        Ok(_) => Ok(polled.iter().map(|p| p.revents().is_some_and(|r| !r.is_empty())).collect()),
        Err(Errno::EINTR) => Ok(vec![false; fds.len()]),
        Err(e) => Err(e.into()),
    }
}

/// A `kB` field of /proc/self/status (`VmRSS`, `VmHWM`, ...), in KiB.
fn status_kib(field: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no {field} in /proc/self/status")))
}

/// This process's peak resident set size (VmHWM), in KiB.
pub(crate) fn peak_rss_kib() -> io::Result<u64> {
    status_kib("VmHWM")
}

/// This process's resident set size now (VmRSS), in KiB.
pub(crate) fn rss_kib() -> io::Result<u64> {
    status_kib("VmRSS")
}

/// How this process has been scheduled so far: nanoseconds on a CPU,
/// nanoseconds runnable but waiting for one (/proc/self/schedstat), and
/// its voluntary and involuntary context switches (/proc/self/status).
pub(crate) fn sched() -> io::Result<Sched> {
    let stat = std::fs::read_to_string("/proc/self/schedstat")?;
    let mut f = stat.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
    let (on_cpu_ns, waiting_ns) = (f.next().unwrap_or(0), f.next().unwrap_or(0));
    let status = std::fs::read_to_string("/proc/self/status")?;
    let count = |field: &str| {
        status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.trim_start_matches(':').trim().parse().ok())
    };
    Ok(Sched {
        on_cpu_ns,
        waiting_ns,
        voluntary: count("voluntary_ctxt_switches").unwrap_or(0),
        involuntary: count("nonvoluntary_ctxt_switches").unwrap_or(0),
    })
}

/// See [`sched`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sched {
    /// Time on a CPU.
    pub(crate) on_cpu_ns: u64,
    /// Time runnable, waiting for a CPU.
    pub(crate) waiting_ns: u64,
    /// Times it gave its CPU up (slept).
    pub(crate) voluntary: u64,
    /// Times it was preempted.
    pub(crate) involuntary: u64,
}

/// This process's open descriptors: each one's number and what it is
/// (the /proc/self/fd link: a path, `pipe:[...]`, `socket:[...]`,
/// `anon_inode:[eventfd]`, ...). The descriptor that reads the folder is
/// left out.
pub(crate) fn open_fds() -> io::Result<std::collections::BTreeMap<i32, String>> {
    let mut fds = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        // The folder's own descriptor is gone by the time its link is
        // read, or names the folder.
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        let target = target.to_string_lossy().into_owned();
        if target.starts_with("/proc/") && target.ends_with("/fd") {
            continue;
        }
        fds.insert(fd, target);
    }
    Ok(fds)
}

/// This process's shared memory mappings (the `s` ones of
/// /proc/self/maps): what a transport maps to share with children, never
/// the allocator's.
pub(crate) fn shared_mappings() -> io::Result<Vec<String>> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    Ok(maps
        .lines()
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|perms| perms.ends_with('s')))
        .map(|l| l.split_whitespace().skip(5).collect::<Vec<_>>().join(" "))
        .collect())
}

/// The processes whose parent is `parent` (zombies included), from
/// /proc/*/stat, with their state letter (`Z` for a zombie).
pub(crate) fn children_of(parent: i32) -> io::Result<Vec<(i32, char)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        // A process may exit between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses,
        // so the fields start after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if fields.next().and_then(|p| p.parse::<i32>().ok()) == Some(parent) {
            out.push((pid, state));
        }
    }
    out.sort_unstable();
    Ok(out)
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
