//! Shared-memory machinery for the transports that keep status in memory
//! both sides map (feature `shm`, Linux): sealed memfds seen as atomic
//! words, the eventfd doorbell, futexes, `membarrier`, the death watch that
//! tells children their master died, and a lock biased towards one thread.
//!
//! Two transports use it, `master-proto-memfd` (per-child rings) and
//! `master-proto-scoreboard` (per-child latest-state slots); transports
//! depend on this crate and never on each other, so what both need lives
//! here, once. Nothing here knows a record's layout: each transport lays
//! out its own words and keeps its algorithm as safe code over atomics.
//!
//! | module | what |
//! |---|---|
//! | [`mapping`] | `memfd_create`, seals, file size, [`Mapping`]: a shared mapping seen only as atomic words |
//! | [`eventfd`] | the doorbell: a close-on-exec, non-blocking eventfd, rung and reset |
//! | [`futex`] | shared (not private) `FUTEX_WAIT` and `FUTEX_WAKE` on a word of a mapping |
//! | [`membarrier`] | the global and private expedited barriers, and their registration |
//! | [`death`] | [`ControlArea`]: a read-only page for children whose death word the kernel marks when the master dies (a robust futex list) |
//! | [`biased`] | [`BiasedLock`]: a lock its first thread takes with plain stores |
//!
//! # Safety
//!
//! Each module that makes system calls or forms references to shared
//! memory opts into `unsafe` itself and says why in its own `# Safety`
//! section. Shared memory is only ever seen through atomics, each byte at
//! one size only, and every memfd is size-sealed before another process
//! can see it, so no mapping can lose its pages (no `SIGBUS`).
//!
//! # Errors
//!
//! Creating and mapping return the system call's `io::Error`; the barriers
//! and the doorbell return its [`Errno`](nix::errno::Errno). Waits never
//! fail: they return, and the caller looks again.
//!
//! # See also
//!
//! `memfd_create(2)`, `fcntl(2)` (`F_ADD_SEALS`), `eventfd(2)`, `futex(2)`,
//! `membarrier(2)`, `set_robust_list(2)` and the kernel's
//! `robust-futex-ABI.rst`.

pub mod biased;
pub mod death;
pub mod eventfd;
pub mod futex;
pub mod mapping;
pub mod membarrier;

pub use biased::{Biased, BiasedLock};
pub use death::{ControlArea, GONE, LIFE};
pub use mapping::{Mapping, file_size, memfd, page_size, seal};
