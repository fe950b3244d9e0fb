//! Shared futexes on words of a mapping: a bounded `FUTEX_WAIT` and a
//! `FUTEX_WAKE`.
//!
//! Shared, not private: the kernel keys the word by its page, which other
//! processes map too, so a master's wake reaches a child's wait.
//!
//! # Safety
//!
//! Both are raw `futex(2)` calls on the address of a live, aligned
//! [`AtomicU32`]; the kernel reads the word (and, for a wait, the timeout
//! on this stack) and writes nothing.
//!
//! # Errors
//!
//! None reported: a wait returns when woken, when the word differs, on a
//! signal or at its timeout, and the caller re-checks its condition in
//! every case; a failed wake (impossible for a valid address) only means
//! nobody is woken, which bounded waits tolerate.

#![allow(unsafe_code)] // Safety: raw futex(2) calls on a live atomic word.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use nix::libc;

/// Sleeps on a shared futex word while it holds `expected`, at most
/// `timeout`. Returns when woken, when the word differs, on a signal or at
/// the timeout; the caller re-checks its condition in every case.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos().cast_signed()),
    };
    // SAFETY: the word is a live, aligned u32 (FUTEX_WAIT without PRIVATE,
    // so the kernel keys it by the page, which other processes map too);
    // `ts` outlives the call. The result only says why it returned, and
    // every reason leads the caller to re-check.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, &raw const ts, 0usize, 0u32);
    }
}

/// Wakes up to `n` processes sleeping on a shared futex word.
pub fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: the word is a live, aligned u32; FUTEX_WAKE reads no memory
    // but the key. A failure (none is possible for a valid address) only
    // means nobody is woken, which bounded waits tolerate.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n, 0usize, 0usize, 0u32);
    }
}
