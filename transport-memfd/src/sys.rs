//! The shared-memory machinery this transport uses, from `master-proto`'s
//! `shm` module (sealed memfds seen as atomic words, eventfd, futex,
//! membarrier, the death watch, the biased lock), and the view of a ring's
//! mapping as a [`Ring`].
//!
//! A ring's memfd is mapped with its header ([`SLOTS_AT`] bytes) as 32-bit
//! words and its slots as 64-bit words, so [`RingView::ring`] is safe code
//! over the mapping's two views.

pub(crate) use master_proto::shm::eventfd::{drain_bell, eventfd, ring_bell};
pub(crate) use master_proto::shm::futex::{futex_wait, futex_wake};
pub(crate) use master_proto::shm::membarrier::{
    global as membarrier_global, global_expedited_available as membarrier_global_expedited_available,
    register_global as membarrier_register,
};
pub(crate) use master_proto::shm::{BiasedLock, ControlArea, Mapping, file_size, memfd, seal};

use crate::ring::{HEADER_WORDS, Ring, SLOTS_AT};

/// Maps a ring's memfd (`len` bytes): header words, then slot words.
pub(crate) fn map_ring(fd: std::os::fd::BorrowedFd<'_>, len: usize) -> std::io::Result<Mapping> {
    Mapping::shared(fd, len, true, SLOTS_AT)
}

/// Maps a control area read-only, all 32-bit words.
pub(crate) fn map_control(fd: std::os::fd::BorrowedFd<'_>, len: usize) -> std::io::Result<Mapping> {
    Mapping::shared(fd, len, false, len)
}

/// A ring's mapping seen as a [`Ring`].
pub(crate) trait RingView {
    /// The header (at most [`HEADER_WORDS`] words) and the slots.
    fn ring(&self) -> Ring<'_>;
}

impl RingView for Mapping {
    #[inline]
    fn ring(&self) -> Ring<'_> {
        let header = self.words32();
        Ring { header: header.get(..HEADER_WORDS).unwrap_or(header), slots: self.words64() }
    }
}

// The ring module (safe code, built under loom too) names the death word
// itself; it is the one the shared death watch arms.
const _: () = assert!(crate::ring::LIFE == master_proto::shm::LIFE && crate::ring::GONE == master_proto::shm::GONE);
