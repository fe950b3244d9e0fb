//! Linux system calls: sealed memfds, shared mappings viewed as atomic
//! words, eventfd, futex, membarrier, and the robust-futex death watch.
//!
//! # Safety
//!
//! This is the only module that maps memory or forms references to it.
//! Shared memory is only ever seen as `&[AtomicU32]`, a ring's slots as
//! `&[AtomicU64]` (and the robust-list links as `AtomicUsize`), each byte
//! at one size only, never as `&[u8]` or `&mut`, so memory that
//! another process writes at any moment is only read and written through
//! atomics. A [`Mapping`] owns its range and unmaps it when dropped; the
//! word slices it hands out borrow it. The memfds behind the mappings are
//! size-sealed before any other process can see them, so no mapping can lose
//! its pages (no `SIGBUS`).

#![allow(unsafe_code)] // Safety: mmap/munmap, atomic views of shared memory, raw system calls.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicIsize, AtomicUsize};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;

use crate::ring::{AtomicU32, AtomicU64, HEADER_WORDS, LIFE, Ring, SLOTS_AT};

/// The kernel's `int` result of a call, or its errno.
fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// The system's page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf takes an integer and touches no memory.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).ok().filter(|&s| s >= 4096).unwrap_or(4096)
}

/// Creates a close-on-exec memfd that allows seals, of `len` bytes.
pub(crate) fn memfd(name: &CStr, len: usize) -> io::Result<OwnedFd> {
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
pub(crate) fn seal(fd: BorrowedFd<'_>, future_write: bool) -> io::Result<()> {
    let mut seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    if future_write {
        seals |= libc::F_SEAL_FUTURE_WRITE;
    }
    // SAFETY: fcntl(F_ADD_SEALS) takes an integer argument.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) }).map(drop)
}

/// The size of the file behind `fd`.
pub(crate) fn file_size(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a whole `struct stat` into the buffer, which is
    // large enough, and it is read only after success.
    let st = unsafe {
        check(libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()))?;
        st.assume_init()
    };
    usize::try_from(st.st_size).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// A shared mapping of a memfd, seen as 32-bit atomic words. Unmapped when
/// dropped.
#[derive(Debug)]
pub(crate) struct Mapping {
    /// The start of the whole mapped range.
    base: NonNull<libc::c_void>,
    /// The length of the whole mapped range (it may extend past the words).
    len: usize,
    /// How many words from `base` are shared memory.
    words: usize,
}

// SAFETY: a Mapping is an address range owned by this value; every access
// to the memory goes through atomics, so using it from several threads is
// sound.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only hands out `&[AtomicU32]`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `fd`, shared, readable, and writable
    /// when `writable`.
    pub(crate) fn shared(fd: BorrowedFd<'_>, len: usize, writable: bool) -> io::Result<Mapping> {
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: a new mapping at an address the kernel chooses; it aliases
        // nothing in this process.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd.as_raw_fd(), 0) };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base).ok_or_else(|| io::Error::from(io::ErrorKind::AddrNotAvailable))?;
        Ok(Mapping { base, len, words: len / 4 })
    }

    /// Maps the one-page memfd `fd` shared and writable, followed by one
    /// private anonymous page (where the robust-list entry of the control
    /// area lives, out of the children's sight).
    fn shared_then_private(fd: BorrowedFd<'_>, page: usize) -> io::Result<Mapping> {
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
        let mapping = Mapping { base, len, words: page / 4 };
        // SAFETY: replaces the first page of the range just mapped, which
        // this function owns and nothing references yet.
        let first =
            unsafe { libc::mmap(base.as_ptr(), page, rw, libc::MAP_SHARED | libc::MAP_FIXED, fd.as_raw_fd(), 0) };
        if first == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(mapping)
    }

    /// The shared memory as atomic words.
    pub(crate) fn words(&self) -> &[AtomicU32] {
        // SAFETY: `base` is page-aligned and the first `words * 4` bytes are
        // mapped for as long as `self` lives (it unmaps on drop, and the
        // slice borrows it). AtomicU32 has the size and alignment of u32 and
        // allows mutation through shared references, which is what memory
        // that other processes write is. Read-only mappings are only read
        // (the child's control area goes only to load-only functions).
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().cast::<AtomicU32>(), self.words) }
    }

    /// The shared memory as a ring: its first [`HEADER_WORDS`] words as
    /// 32-bit atomics, the rest as 64-bit atomics. For a ring's mapping
    /// only, which is then never seen through [`words`](Self::words).
    pub(crate) fn ring(&self) -> Ring<'_> {
        let len = self.shared_len();
        let header = HEADER_WORDS.min(len / 4);
        let slots = len.saturating_sub(SLOTS_AT) / 8;
        // SAFETY: `base` is page-aligned, so `base + SLOTS_AT` is 8-aligned;
        // the two ranges are disjoint and inside the shared part, mapped for
        // as long as `self` lives (the slices borrow it). The atomics have
        // the size and alignment of u32 and u64 and allow mutation through
        // shared references, which is what memory that another process
        // writes is. Nothing in this process views these bytes at another
        // size.
        let (header, slots) = unsafe {
            (
                std::slice::from_raw_parts(self.base.as_ptr().cast::<AtomicU32>(), header),
                std::slice::from_raw_parts(self.base.as_ptr().cast::<u8>().add(SLOTS_AT).cast::<AtomicU64>(), slots),
            )
        };
        Ring { header, slots }
    }

    /// The byte length of the shared part.
    pub(crate) fn shared_len(&self) -> usize {
        self.words * 4
    }

    /// The address `offset` bytes into the range.
    fn addr(&self, offset: usize) -> usize {
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

/// A close-on-exec, non-blocking eventfd.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes integers.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter (rings the doorbell). A counter at its
/// maximum is readable already, so `EAGAIN` is success.
pub(crate) fn ring_bell(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    let one = 1u64.to_ne_bytes();
    loop {
        match nix::unistd::write(fd, &one) {
            Ok(_) | Err(Errno::EAGAIN) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Resets a non-blocking eventfd's counter to zero.
pub(crate) fn drain_bell(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    let mut buf = [0u8; 8];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(_) | Err(Errno::EAGAIN) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Sleeps on a shared futex word while it holds `expected`, at most
/// `timeout`. Returns when woken, when the word differs, on a signal or at
/// the timeout; the caller re-checks its condition in every case.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos().cast_signed()),
    };
    // SAFETY: the word is a live, aligned u32 in a shared mapping (FUTEX_WAIT
    // without PRIVATE, so the kernel keys it by the page, which other
    // processes map too); `ts` outlives the call. The result only says why
    // it returned, and every reason leads the caller to re-check.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, &raw const ts, 0usize, 0u32);
    }
}

/// Wakes up to `n` processes sleeping on a shared futex word.
pub(crate) fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: the word is a live, aligned u32; FUTEX_WAKE reads no memory
    // but the key. A failure (none is possible for a valid address) only
    // means nobody is woken, which bounded waits tolerate.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n, 0usize, 0usize, 0u32);
    }
}

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
pub(crate) fn membarrier_global_expedited_available() -> bool {
    let want = libc::c_long::from(MEMBARRIER_CMD_GLOBAL_EXPEDITED | MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED);
    membarrier(MEMBARRIER_CMD_QUERY).is_ok_and(|mask| mask & want == want)
}

/// Registers this process for global expedited membarriers: after this,
/// every `membarrier_global` anywhere runs a full barrier on this process's
/// running threads.
pub(crate) fn membarrier_register() -> bool {
    membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED).is_ok()
}

/// A full memory barrier on every running thread of every registered
/// process.
pub(crate) fn membarrier_global() -> Result<(), Errno> {
    membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED).map(drop)
}

/// Registers this process for private expedited membarriers; whether it
/// could.
pub(crate) fn membarrier_private_register() -> bool {
    membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED).is_ok()
}

/// A full memory barrier on every running thread of this process (which
/// registered with [`membarrier_private_register`]).
pub(crate) fn membarrier_private() -> Result<(), Errno> {
    membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED).map(drop)
}

// ---------------------------------------------------------------------------
// The death watch: a thread whose robust futex list names every open control
// area's death word.

/// The kernel's `struct robust_list_head` (robust-futex-ABI.rst).
#[repr(C)]
struct RobustListHead {
    /// `list.next`: the first entry, or the head itself when empty.
    next: AtomicUsize,
    /// Offset from an entry to its futex word (the same for every entry).
    futex_offset: AtomicIsize,
    /// `list_op_pending` (unused: every list edit is one pointer store).
    pending: AtomicUsize,
}

/// The process-wide death watch.
struct Watch {
    /// The watch thread's TID, which each death word holds.
    tid: u32,
    /// The list's head, registered by the watch thread; lives forever.
    head: &'static RobustListHead,
    /// Serialises edits of the list (between this process's threads only).
    edits: Mutex<()>,
}

static WATCH: OnceLock<Option<Watch>> = OnceLock::new();

/// The death watch, started on first use; `None` when the kernel refused
/// `set_robust_list` (or the thread could not start).
fn watch() -> Option<&'static Watch> {
    WATCH.get_or_init(start_watch).as_ref()
}

fn start_watch() -> Option<Watch> {
    let page = page_size();
    let head: &'static RobustListHead = Box::leak(Box::new(RobustListHead {
        next: AtomicUsize::new(0),
        // From the entry (first word of the private page after the control
        // page) back to the death word in the control page.
        futex_offset: AtomicIsize::new(isize::try_from(LIFE * 4).ok()? - isize::try_from(page).ok()?),
        pending: AtomicUsize::new(0),
    }));
    let head_addr = std::ptr::from_ref(head) as usize;
    head.next.store(head_addr, std::sync::atomic::Ordering::Release);
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new().name("memfd-death-watch".into()).stack_size(64 * 1024).spawn(move || {
        // SAFETY: gettid takes nothing.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        let len = std::mem::size_of::<RobustListHead>();
        // SAFETY: the head is leaked, so it outlives this thread (which
        // never returns); the kernel reads it only when this thread exits.
        // This thread takes no pthread robust mutex, so replacing its robust
        // list loses nothing.
        let rc = unsafe { libc::syscall(libc::SYS_set_robust_list, head_addr, len) };
        let tid = u32::try_from(tid).ok().filter(|_| rc == 0);
        let _ = tx.send(tid);
        if tid.is_none() {
            return;
        }
        // Sleep for the life of the process: the kernel processes the
        // robust list when this thread dies, which is when the process dies.
        loop {
            std::thread::park();
        }
    });
    spawned.ok()?;
    let tid = rx.recv().ok().flatten()?;
    Some(Watch { tid, head, edits: Mutex::new(()) })
}

/// The control area of one open channel: one shared page that children map
/// read-only, followed by a private page holding its robust-list entry.
#[derive(Debug)]
pub(crate) struct ControlArea {
    fd: OwnedFd,
    mapping: Mapping,
    /// Whether the entry is on the death watch's list.
    linked: bool,
}

impl ControlArea {
    /// Creates the control area: maps it writable here, lets `init` write
    /// its words, seals it against any further writable mapping, and (when
    /// the death watch runs) puts its death word on the watch's list. The
    /// death word is armed when this returns `armed() == true`.
    pub(crate) fn new(init: impl FnOnce(&[AtomicU32], Option<u32>)) -> io::Result<ControlArea> {
        let page = page_size();
        let fd = memfd(c"master-proto-memfd-control", page)?;
        let mapping = Mapping::shared_then_private(fd.as_fd(), page)?;
        let watch = watch();
        init(mapping.words(), watch.map(|w| w.tid));
        seal(fd.as_fd(), true)?;
        let mut area = ControlArea { fd, mapping, linked: false };
        if let Some(w) = watch {
            let entry = area.entry();
            let _guard = w.edits.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            entry.store(w.head.next.load(std::sync::atomic::Ordering::Acquire), std::sync::atomic::Ordering::Release);
            w.head.next.store(area.entry_addr(), std::sync::atomic::Ordering::Release);
            area.linked = true;
        }
        Ok(area)
    }

    /// The control words.
    pub(crate) fn words(&self) -> &[AtomicU32] {
        self.mapping.words()
    }

    /// The memfd, for children (they can map it read-only only).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn entry_addr(&self) -> usize {
        self.mapping.addr(self.mapping.shared_len())
    }

    /// This area's robust-list entry (`struct robust_list`: one pointer), at
    /// the start of the private page.
    fn entry(&self) -> &AtomicUsize {
        // SAFETY: the private page after the shared one is mapped, writable
        // and page-aligned for as long as `self.mapping` lives, and only
        // this value and the kernel (at the watch thread's exit) use it.
        unsafe { &*(self.entry_addr() as *const AtomicUsize) }
    }

    /// Takes the death word off the watch's list (before it is unmapped).
    pub(crate) fn unlink(&mut self) {
        if !std::mem::take(&mut self.linked) {
            return;
        }
        let Some(w) = watch() else { return };
        let me = self.entry_addr();
        let head_addr = std::ptr::from_ref(w.head) as usize;
        let _guard = w.edits.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let after = self.entry().load(std::sync::atomic::Ordering::Acquire);
        let mut link: &AtomicUsize = &w.head.next;
        // Bounded: the list holds one entry per open channel of this
        // process, each linked once.
        for _ in 0..1 << 20 {
            let next = link.load(std::sync::atomic::Ordering::Acquire);
            if next == me {
                link.store(after, std::sync::atomic::Ordering::Release);
                return;
            }
            if next == head_addr {
                return;
            }
            // SAFETY: every entry on the list is the first word of a live
            // control area's private page: areas link themselves under
            // `edits` and unlink (here, under `edits`) before unmapping.
            link = unsafe { &*(next as *const AtomicUsize) };
        }
    }
}

impl Drop for ControlArea {
    fn drop(&mut self) {
        self.unlink();
    }
}
