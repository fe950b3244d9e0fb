//! `membarrier(2)`: a full memory barrier run on other threads, so that the
//! side that pays it rarely (a master going to sleep, a thread revoking a
//! lock's bias) lets the side that runs often (a child's `notify`) get by
//! with a compiler fence.
//!
//! # Safety
//!
//! One raw system call that takes integers and touches no memory.
//!
//! # Errors
//!
//! The barriers return the kernel's errno; registration says only whether
//! it worked.

#![allow(unsafe_code)] // Safety: the raw membarrier(2) call takes integers only.

use nix::errno::Errno;
use nix::libc;

/// `membarrier(2)` commands (linux/membarrier.h).
const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

fn membarrier(cmd: libc::c_int) -> Result<libc::c_long, Errno> {
    // SAFETY: membarrier takes integers and touches no memory.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0u32, 0i32) };
    if rc < 0 { Err(Errno::last()) } else { Ok(rc) }
}

/// Whether this kernel offers `MEMBARRIER_CMD_GLOBAL_EXPEDITED` (and its
/// registration).
#[must_use]
pub fn global_expedited_available() -> bool {
    let want = libc::c_long::from(MEMBARRIER_CMD_GLOBAL_EXPEDITED | MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED);
    membarrier(MEMBARRIER_CMD_QUERY).is_ok_and(|mask| mask & want == want)
}

/// Registers this process for global expedited membarriers: after this,
/// every [`global`] anywhere runs a full barrier on this process's running
/// threads. Whether it could.
#[must_use]
pub fn register_global() -> bool {
    membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED).is_ok()
}

/// A full memory barrier on every running thread of every registered
/// process.
///
/// # Errors
///
/// The kernel's errno.
pub fn global() -> Result<(), Errno> {
    membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED).map(drop)
}

/// Registers this process for private expedited membarriers; whether it
/// could.
#[must_use]
pub fn register_private() -> bool {
    membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED).is_ok()
}

/// A full memory barrier on every running thread of this process (which
/// registered with [`register_private`]).
///
/// # Errors
///
/// The kernel's errno.
pub fn private() -> Result<(), Errno> {
    membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED).map(drop)
}
