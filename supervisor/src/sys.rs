//! The system calls the standard library and nix do not wrap: `pidfd_open(2)`.
//!
//! A pidfd is a descriptor for one process: it becomes readable when that
//! process exits, it raises no signal, and it cannot come to name another
//! process when the pid is reused. The supervisor opens one for each child
//! right after spawning it (the child is not reaped yet, so its pid still
//! names it), waits for it in its epoll set, and reaps that pid alone.
//!
//! # Safety
//!
//! `pidfd_open` is called through `libc::syscall` with two integers and no
//! pointer; what it returns is either -1 (with `errno`) or a new descriptor
//! that nothing else owns, which becomes an [`OwnedFd`] at once.
//!
//! # Errors
//!
//! [`pidfd_open`] returns the `errno`: `ENOSYS` before Linux 5.3, `EPERM`
//! or `ENOSYS` under a seccomp policy that forbids it (the supervisor then
//! watches its children by polling, see [`crate::ChildExits`]), `ESRCH`
//! for a pid that is not running, `EMFILE`/`ENFILE` when out of
//! descriptors.
//!
//! # See also
//!
//! pidfd_open(2), waitpid(2).

#![allow(unsafe_code)] // Safety: one raw system call that returns a new descriptor, see above.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::libc;

/// `PIDFD_NONBLOCK`'s absence: a blocking pidfd is what `poll` and epoll
/// want (readiness only; nothing is read from it).
const FLAGS: libc::c_uint = 0;

/// Opens a pidfd for `pid` (close-on-exec, as every pidfd is).
///
/// # Errors
///
/// The `errno` of the call (see the module docs).
pub(crate) fn pidfd_open(pid: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes a pid and a flags word, touches no memory of
    // ours, and returns -1 or a new descriptor.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, FLAGS) };
    if ret < 0 {
        return Err(Errno::last());
    }
    let fd = RawFd::try_from(ret).map_err(|_| Errno::EOVERFLOW)?;
    // SAFETY: the kernel just returned `fd` as a new descriptor, owned by
    // nobody else in this process.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether a `pidfd_open` failure means pidfds are not to be had here at
/// all (an old kernel, a seccomp filter), rather than a failure for this
/// one pid.
pub(crate) const fn pidfd_unsupported(errno: Errno) -> bool {
    matches!(errno, Errno::ENOSYS | Errno::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_of_this_process_opens_and_a_bogus_pid_does_not() {
        let me = i32::try_from(std::process::id()).unwrap();
        match pidfd_open(me) {
            Ok(_) => {}
            Err(e) => assert!(pidfd_unsupported(e), "pidfd_open(self): {e}"),
        }
        assert!(pidfd_open(-5).is_err());
    }
}
