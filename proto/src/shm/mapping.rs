//! Sealed memfds, and shared mappings of them seen as atomic words.
//!
//! A [`Mapping`] is laid out once, when it is made: its first bytes (up to
//! `split`) are 32-bit words, the rest 64-bit words, and it hands out only
//! those two views. So every byte of memory that another process writes at
//! any moment is read and written through atomics, at one size only, never
//! as `&[u8]` or `&mut`.
//!
//! # Safety
//!
//! This module maps and unmaps memory and forms the word slices over it.
//! A [`Mapping`] owns its range and unmaps it when dropped; the slices it
//! hands out borrow it. `base` is page-aligned and `split` a multiple of 8,
//! so both views are aligned; they are disjoint, and neither reaches past
//! the shared part. A read-only mapping's words must only be loaded (the
//! transports pass them only to load-only code; a store would fault, which
//! is not undefined behaviour but a crash of our own making).
//!
//! # Errors
//!
//! Every function returns the failing system call's error.

#![allow(unsafe_code)] // Safety: memfd_create, ftruncate, fstat, mmap/munmap, and atomic views of the mapping.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use nix::libc;

/// The kernel's `int` result of a call, or its errno.
fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// The system's page size (at least 4096).
#[must_use]
pub fn page_size() -> usize {
    // SAFETY: sysconf takes an integer and touches no memory.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).ok().filter(|&s| s >= 4096).unwrap_or(4096)
}

/// Creates a close-on-exec memfd that allows seals, of `len` bytes (which
/// read as zeros).
///
/// # Errors
///
/// The error of `memfd_create(2)` or `ftruncate(2)`.
pub fn memfd(name: &CStr, len: usize) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid C string for the duration of the call.
    let fd = check(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) })?;
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: ftruncate takes a descriptor and an integer.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })?;
    Ok(fd)
}

/// Seals a memfd: its size can never change again, and neither can its
/// seals. With `future_write`, no new writable mapping or `write(2)` is
/// possible either (mappings that exist keep working).
///
/// # Errors
///
/// The error of `fcntl(F_ADD_SEALS)`.
pub fn seal(fd: BorrowedFd<'_>, future_write: bool) -> io::Result<()> {
    let mut seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    if future_write {
        seals |= libc::F_SEAL_FUTURE_WRITE;
    }
    // SAFETY: fcntl(F_ADD_SEALS) takes an integer argument.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) }).map(drop)
}

/// The size of the file behind `fd`.
///
/// # Errors
///
/// The error of `fstat(2)`, or `InvalidData` for a negative size.
pub fn file_size(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a whole `struct stat` into the buffer, which is
    // large enough, and it is read only after success.
    let st = unsafe {
        check(libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()))?;
        st.assume_init()
    };
    usize::try_from(st.st_size).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// A shared mapping of a memfd, seen as 32-bit atomic words up to its
/// split and 64-bit ones after it. Unmapped when dropped.
#[derive(Debug)]
pub struct Mapping {
    /// The start of the whole mapped range.
    base: NonNull<libc::c_void>,
    /// The length of the whole mapped range (it may extend past the words).
    len: usize,
    /// How many bytes from `base` are shared memory.
    shared: usize,
    /// Where the 64-bit words begin (a multiple of 8, at most `shared`).
    split: usize,
}

// SAFETY: a Mapping is an address range owned by this value; every access
// to the memory goes through atomics, so using it from several threads is
// sound.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only hands out slices of atomics.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `fd`, shared, readable, and writable
    /// when `writable`; bytes before `split` (rounded down to a multiple of
    /// 8, at most `len`) are 32-bit words, the rest 64-bit words.
    ///
    /// # Errors
    ///
    /// The error of `mmap(2)`.
    pub fn shared(fd: BorrowedFd<'_>, len: usize, writable: bool, split: usize) -> io::Result<Mapping> {
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: a new mapping at an address the kernel chooses; it aliases
        // nothing in this process.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd.as_raw_fd(), 0) };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base).ok_or_else(|| io::Error::from(io::ErrorKind::AddrNotAvailable))?;
        Ok(Mapping { base, len, shared: len, split: split.min(len) & !7 })
    }

    /// Maps the one-page memfd `fd` shared and writable, all 32-bit words,
    /// followed by one private anonymous page (for what must live next to
    /// the shared page, out of the children's sight: see [`crate::shm::death`]).
    pub(crate) fn shared_then_private(fd: BorrowedFd<'_>, page: usize) -> io::Result<Mapping> {
        let len = 2 * page;
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: a new private anonymous mapping at an address the kernel
        // chooses; it aliases nothing.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), len, rw, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base).ok_or_else(|| io::Error::from(io::ErrorKind::AddrNotAvailable))?;
        // Owned from here on, so an error below unmaps it.
        let mapping = Mapping { base, len, shared: page, split: page };
        // SAFETY: replaces the first page of the range just mapped, which
        // this function owns and nothing references yet.
        let first =
            unsafe { libc::mmap(base.as_ptr(), page, rw, libc::MAP_SHARED | libc::MAP_FIXED, fd.as_raw_fd(), 0) };
        if first == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(mapping)
    }

    /// The 32-bit words: the shared bytes before the split.
    #[inline]
    #[must_use]
    pub fn words32(&self) -> &[AtomicU32] {
        // SAFETY: `base` is page-aligned and the first `split` bytes are
        // mapped for as long as `self` lives (it unmaps on drop, and the
        // slice borrows it); nothing in this process views them at another
        // size (`words64` starts at `split`). AtomicU32 has the size and
        // alignment of u32 and allows mutation through shared references,
        // which is what memory that other processes write is.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().cast::<AtomicU32>(), self.split / 4) }
    }

    /// The 64-bit words: the shared bytes from the split on (whole words).
    #[inline]
    #[must_use]
    pub fn words64(&self) -> &[AtomicU64] {
        // SAFETY: `split` is a multiple of 8 and `base` page-aligned, so the
        // start is 8-aligned; the range is inside the shared part, disjoint
        // from `words32`'s, mapped for as long as `self` lives (the slice
        // borrows it), and seen at no other size.
        unsafe {
            std::slice::from_raw_parts(
                self.base.as_ptr().cast::<u8>().add(self.split).cast::<AtomicU64>(),
                (self.shared - self.split) / 8,
            )
        }
    }

    /// The byte length of the shared part.
    #[inline]
    #[must_use]
    pub fn shared_len(&self) -> usize {
        self.shared
    }

    /// The address `offset` bytes into the range.
    pub(crate) fn addr(&self, offset: usize) -> usize {
        (self.base.as_ptr() as usize).wrapping_add(offset)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by this value and nothing borrows it
        // any more (the slices it handed out borrowed `self`).
        unsafe {
            libc::munmap(self.base.as_ptr(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::sync::atomic::Ordering;

    use super::*;

    #[test]
    fn views_are_disjoint_and_shared_between_mappings() {
        let fd = memfd(c"master-proto-shm-test", 4096).expect("memfd");
        seal(fd.as_fd(), false).expect("seal");
        assert_eq!(file_size(fd.as_fd()).expect("fstat"), 4096);
        let a = Mapping::shared(fd.as_fd(), 4096, true, 68).expect("map");
        let b = Mapping::shared(fd.as_fd(), 4096, false, 64).expect("map read-only");
        assert_eq!((a.words32().len(), a.words64().len()), (16, (4096 - 64) / 8), "the split rounds down to 8");
        a.words32()[3].store(7, Ordering::Relaxed);
        a.words64()[0].store(u64::MAX, Ordering::Relaxed);
        assert_eq!(b.words32()[3].load(Ordering::Relaxed), 7);
        assert_eq!(b.words64()[0].load(Ordering::Relaxed), u64::MAX);
        assert_eq!(b.words32()[15].load(Ordering::Relaxed), 0, "the 32-bit view ends before the 64-bit one");
    }

    #[test]
    fn sealed_memfds_keep_their_size() {
        let fd = memfd(c"master-proto-shm-test", 4096).expect("memfd");
        seal(fd.as_fd(), true).expect("seal");
        // SAFETY: ftruncate takes a descriptor and an integer.
        let rc = unsafe { libc::ftruncate(fd.as_raw_fd(), 0) };
        assert_eq!((rc, io::Error::last_os_error().raw_os_error()), (-1, Some(libc::EPERM)));
        assert!(Mapping::shared(fd.as_fd(), 4096, true, 0).is_err(), "no writable mapping after FUTURE_WRITE");
        assert!(Mapping::shared(fd.as_fd(), 4096, false, 0).is_ok());
    }
}
