//! The few system calls the suite makes that need `unsafe`: signal
//! dispositions, thread-directed signals, descriptor probes and `kcmp(2)`.

#![allow(unsafe_code)] // Safety: sigaction with handlers that only touch atomics, and raw syscalls on integers.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::errno::Errno;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// How many times this process's no-op `SIGUSR1` handler ran.
static CAUGHT: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_signal(_: nix::libc::c_int) {
    CAUGHT.fetch_add(1, Ordering::Relaxed);
}

/// Installs a handler for `SIGUSR1` that only counts, *without*
/// `SA_RESTART`: a blocking system call it interrupts fails with `EINTR`.
///
/// # Errors
///
/// The errno of `sigaction(2)`.
pub(crate) fn install_storm_handler() -> nix::Result<()> {
    let action = SigAction::new(SigHandler::Handler(count_signal), SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler only bumps an atomic counter, which is
    // async-signal-safe, and replaces no handler anyone else relies on.
    unsafe { sigaction(Signal::SIGUSR1, &action) }.map(drop)
}

/// How many `SIGUSR1` this process caught so far.
pub(crate) fn storm_caught() -> usize {
    CAUGHT.load(Ordering::Relaxed)
}

/// Sets `SIGPIPE` to `SIG_DFL` (`default == true`) or `SIG_IGN`.
///
/// # Errors
///
/// The errno of `sigaction(2)`.
pub(crate) fn set_sigpipe(default: bool) -> nix::Result<()> {
    let handler = if default { SigHandler::SigDfl } else { SigHandler::SigIgn };
    let action = SigAction::new(handler, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_DFL and SIG_IGN install no handler, so no code runs in
    // signal context.
    unsafe { sigaction(Signal::SIGPIPE, &action) }.map(drop)
}

/// Sends `signal` to thread `tid` of process `pid` (`tgkill(2)`).
///
/// # Errors
///
/// The errno of `tgkill(2)`.
pub(crate) fn tgkill(pid: i32, tid: i32, signal: Signal) -> nix::Result<()> {
    // SAFETY: tgkill takes plain integers and touches no memory.
    let rc = unsafe { nix::libc::syscall(nix::libc::SYS_tgkill, pid, tid, signal as nix::libc::c_int) };
    Errno::result(rc).map(drop)
}

/// Whether descriptor number `fd` is open in this process.
pub(crate) fn is_open(fd: RawFd) -> bool {
    // SAFETY: fcntl(F_GETFD) takes no pointer and changes nothing; on a
    // number that is not open it fails with EBADF. Asked with the raw
    // number: a BorrowedFd may only name an open descriptor.
    unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) >= 0 }
}

/// Whether descriptor `fd_a` of process `pid_a` and `fd_b` of `pid_b` are
/// the same open file description (`kcmp(2)` with `KCMP_FILE`).
///
/// # Errors
///
/// The errno of `kcmp(2)` (`EPERM` where the kernel or a sandbox forbids
/// it, `ENOSYS` where it is not built).
pub(crate) fn same_open_file(pid_a: i32, fd_a: RawFd, pid_b: i32, fd_b: RawFd) -> nix::Result<bool> {
    const KCMP_FILE: nix::libc::c_int = 0;
    // SAFETY: kcmp with KCMP_FILE takes plain integers and touches no
    // memory.
    let rc = unsafe { nix::libc::syscall(nix::libc::SYS_kcmp, pid_a, pid_b, KCMP_FILE, fd_a, fd_b) };
    Errno::result(rc).map(|order| order == 0)
}
