//! The death word: how a child learns, without a system call, that its
//! master died, whatever killed it.
//!
//! A [`ControlArea`] is one shared page per open channel that children map
//! read-only (it is sealed against writable mappings and writes once the
//! master has mapped it), followed in the master by one private page.
//! Word [`LIFE`] of the shared page is the death word: it holds the TID of
//! the master's death watch, a thread of the master (one per process) that
//! sleeps for ever. The watch's robust futex list (`set_robust_list(2)`)
//! names the death word of every open control area; when that thread dies,
//! which is when its process dies, the kernel sets `FUTEX_OWNER_DIED`
//! ([`GONE`]) in each, and every child sees it in its read-only mapping. An
//! orderly close unlinks the entry, and the transport sets the same bit
//! itself. The list entries live in the private page, out of the
//! children's sight. Where the kernel refuses the robust list, the area is
//! not armed and children look at their lifeline instead.
//!
//! The other words of the page are the transport's own (memfd and
//! scoreboard keep their barrier mode there).
//!
//! # Safety
//!
//! The watch thread registers a leaked list head with the kernel; entries
//! are the first word of each area's private page, linked and unlinked
//! under a mutex, and every area unlinks itself before its memory is
//! unmapped. The entry is reached as an `AtomicUsize` inside memory this
//! module owns.
//!
//! # Errors
//!
//! [`ControlArea::new`] returns the error of creating, mapping or sealing
//! the memfd.

#![allow(unsafe_code)] // Safety: set_robust_list(2), gettid(2), and the robust list's entries in private memory.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicIsize, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use nix::libc;

use super::mapping::{Mapping, memfd, page_size, seal};

/// The word of a control area that is the death word.
pub const LIFE: usize = 3;

/// The bit set in the death word once the master has gone
/// (`FUTEX_OWNER_DIED`).
pub const GONE: u32 = 0x4000_0000;

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
    head.next.store(head_addr, Ordering::Release);
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
pub struct ControlArea {
    fd: OwnedFd,
    mapping: Mapping,
    /// Whether the entry is on the death watch's list.
    linked: bool,
}

impl ControlArea {
    /// Creates the control area: maps it writable here, lets `init` write
    /// its words (given the watch thread's TID when the death watch runs,
    /// which `init` stores in [`LIFE`]), seals it against any further
    /// writable mapping, and (when the death watch runs) puts its death
    /// word on the watch's list.
    ///
    /// # Errors
    ///
    /// The error of creating, mapping or sealing the memfd.
    pub fn new(init: impl FnOnce(&[AtomicU32], Option<u32>)) -> io::Result<ControlArea> {
        let page = page_size();
        let fd = memfd(c"master-proto-control", page)?;
        let mapping = Mapping::shared_then_private(fd.as_fd(), page)?;
        let watch = watch();
        init(mapping.words32(), watch.map(|w| w.tid));
        seal(fd.as_fd(), true)?;
        let mut area = ControlArea { fd, mapping, linked: false };
        if let Some(w) = watch {
            let entry = area.entry();
            let _guard = w.edits.lock().unwrap_or_else(PoisonError::into_inner);
            entry.store(w.head.next.load(Ordering::Acquire), Ordering::Release);
            w.head.next.store(area.entry_addr(), Ordering::Release);
            area.linked = true;
        }
        Ok(area)
    }

    /// The control words (the whole shared page).
    #[inline]
    #[must_use]
    pub fn words(&self) -> &[AtomicU32] {
        self.mapping.words32()
    }

    /// The memfd, for children (they can map it read-only only).
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
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

    /// Takes the death word off the watch's list (it is done before the
    /// area is unmapped, and may be done earlier: a master that closes the
    /// channel unlinks it, then sets [`GONE`] itself).
    pub fn unlink(&mut self) {
        if !std::mem::take(&mut self.linked) {
            return;
        }
        let Some(w) = watch() else { return };
        let me = self.entry_addr();
        let head_addr = std::ptr::from_ref(w.head) as usize;
        let _guard = w.edits.lock().unwrap_or_else(PoisonError::into_inner);
        let after = self.entry().load(Ordering::Acquire);
        let mut link: &AtomicUsize = &w.head.next;
        // Bounded: the list holds one entry per open channel of this
        // process, each linked once.
        for _ in 0..1 << 20 {
            let next = link.load(Ordering::Acquire);
            if next == me {
                link.store(after, Ordering::Release);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn areas_link_and_unlink_in_any_order() {
        let areas: Vec<ControlArea> = (0..4)
            .map(|_| {
                ControlArea::new(|words, tid| words[LIFE].store(tid.unwrap_or(0), Ordering::Relaxed))
                    .expect("control area")
            })
            .collect();
        let read_only = Mapping::shared(areas[0].fd(), page_size(), false, page_size()).expect("map read-only");
        assert_eq!(read_only.words32()[LIFE].load(Ordering::Relaxed) & GONE, 0);
        assert!(Mapping::shared(areas[0].fd(), page_size(), true, 0).is_err(), "sealed against writing");
        let mut areas = areas;
        // Out of the middle, then the rest.
        drop(areas.remove(2));
        drop(areas.remove(0));
        drop(areas);
    }
}
