//! A lock biased towards one thread: the thread that first takes it takes
//! and releases it with plain loads and stores, no atomic read-modify-write
//! and no fence; any other thread takes it through a mutex, after revoking
//! the bias once with `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`.
//!
//! Why: a child's sink is shared by its threads (`Sync`), but nearly every
//! child notifies from one thread. An uncontended mutex costs two locked
//! instructions per notify, and on x86 each one waits for the store buffer
//! to drain, that is for the previous notify's stores to reach the lines the
//! master is reading: a cross-core round trip on every notify. The biased
//! path keeps those stores in flight.
//!
//! # The handshake (an asymmetric Dekker)
//!
//! The owner, to enter: store `busy = 1`, compiler fence, load `owner`; if
//! it still names this thread, it is in; else it clears `busy` and takes the
//! mutex like everyone else. To leave: store `busy = 0`; if the bias was
//! revoked meanwhile, wake a revoker sleeping on `busy`.
//!
//! A revoker, holding the mutex: store `owner = SHARED`, then `membarrier`,
//! which runs a full barrier on every running thread of this process. Each
//! of the owner's entries is then either before that barrier, and its
//! `busy = 1` is visible, so the revoker waits for `busy == 0`; or after
//! it, and it sees `SHARED` and takes the mutex. The bias is revoked once
//! and for good.
//!
//! Where `membarrier` is not available, nobody is ever biased: every thread
//! takes the mutex.
//!
//! # Safety
//!
//! The value sits in an `UnsafeCell`; it is reached only through a guard
//! that the owner gets while `busy` is set and the bias stands, or under
//! the mutex once the bias is revoked and the owner was seen out. Each
//! block says which.
//!
//! # Errors
//!
//! [`BiasedLock::with`] returns the errno of the `membarrier` that revokes
//! the bias, should it fail.

#![allow(unsafe_code)] // Safety: the `UnsafeCell` behind the lock, and `Sync` for it (see each block).

use std::cell::{Cell, UnsafeCell};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, compiler_fence};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nix::errno::Errno;

use super::{futex, membarrier};

/// `owner` before any thread took the lock.
const NOBODY: u64 = 0;
/// `owner` once the bias is revoked (or could never be granted).
const SHARED: u64 = u64::MAX;

/// How long a revoker sleeps on `busy` before it looks again (a wake-up is
/// sent; the bound only guards against a missed one).
const REVOKE_WAIT: Duration = Duration::from_millis(10);

thread_local! {
    /// This thread's token, [`NOBODY`] until first asked for.
    static TOKEN: Cell<u64> = const { Cell::new(NOBODY) };
}

/// A number naming the calling thread, never reused within the process.
#[inline]
fn thread_token() -> u64 {
    let token = TOKEN.get();
    if token == NOBODY { new_thread_token() } else { token }
}

#[cold]
fn new_thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let token = NEXT.fetch_add(1, Ordering::Relaxed);
    TOKEN.set(token);
    token
}

/// A value guarded by a lock biased towards the first thread that takes it.
#[derive(Debug)]
pub struct BiasedLock<T> {
    value: UnsafeCell<T>,
    /// The owner's thread token, [`NOBODY`] or [`SHARED`].
    owner: AtomicU64,
    /// 1 while the owner holds the lock without the mutex.
    busy: AtomicU32,
    /// Taken by every thread but the owner, and by the owner once revoked.
    mutex: Mutex<()>,
}

// SAFETY: the value is reached only through a `Biased` guard, which only
// the owner gets and only while `busy` is set and the bias stands, or in
// `with` by a thread holding the mutex after the bias was revoked and the
// owner seen out (`busy == 0`, acquire). `T: Send` because the value is used from
// whichever thread holds the lock.
unsafe impl<T: Send> Sync for BiasedLock<T> {}

/// Clears `busy` when the owner leaves, even by unwinding.
struct Leave<'a, T>(&'a BiasedLock<T>);

/// The value, held on the biased path ([`BiasedLock::try_biased`]) until
/// this drops.
pub struct Biased<'a, T>(Leave<'a, T>);

impl<T> Deref for Biased<'_, T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: the bias stands and `busy` is set while this lives: a
        // revoker waits for `busy == 0` before the value is touched again
        // (module docs), and only the owner enters.
        unsafe { &*self.0.0.value.get() }
    }
}

impl<T> DerefMut for Biased<'_, T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this borrow unique.
        unsafe { &mut *self.0.0.value.get() }
    }
}

impl<T> Drop for Leave<'_, T> {
    #[inline]
    fn drop(&mut self) {
        let lock = self.0;
        lock.busy.store(0, Ordering::Release);
        // A revoker may be sleeping on `busy`. A load after the store needs
        // no fence here: the revoker's membarrier orders them (see the
        // module's handshake).
        if lock.owner.load(Ordering::Relaxed) == SHARED {
            futex::futex_wake(&lock.busy, i32::MAX);
        }
    }
}

impl<T> BiasedLock<T> {
    /// A lock around `value`; biased only if this process can issue
    /// private expedited membarriers (it registers for them here).
    #[must_use]
    pub fn new(value: T) -> BiasedLock<T> {
        let owner = if membarrier::register_private() { NOBODY } else { SHARED };
        BiasedLock::with_owner(value, owner)
    }

    /// A lock around `value` that no thread is ever biased towards.
    #[cfg(test)]
    fn unbiased(value: T) -> BiasedLock<T> {
        BiasedLock::with_owner(value, SHARED)
    }

    fn with_owner(value: T, owner: u64) -> BiasedLock<T> {
        BiasedLock {
            value: UnsafeCell::new(value),
            owner: AtomicU64::new(owner),
            busy: AtomicU32::new(0),
            mutex: Mutex::new(()),
        }
    }

    /// Whether some thread holds the bias now.
    #[cfg(test)]
    fn is_biased(&self) -> bool {
        !matches!(self.owner.load(Ordering::Relaxed), NOBODY | SHARED)
    }

    /// Enters the biased section if this thread (`me`) holds the bias and
    /// it stands; it lasts until the returned guard drops.
    #[inline(always)]
    fn enter(&self, me: u64) -> Option<Leave<'_, T>> {
        if self.owner.load(Ordering::Relaxed) != me {
            return None;
        }
        // Only the owner sets `busy`: set already, the owner is inside, and
        // a second way in would alias the first.
        assert!(self.busy.load(Ordering::Relaxed) == 0, "a BiasedLock taken again by the thread holding it");
        self.busy.store(1, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        let leave = Leave(self);
        // Dropped at once (leaving) when the bias was revoked meanwhile.
        (self.owner.load(Ordering::Acquire) == me).then_some(leave)
    }

    /// The value, exclusively, if this thread holds the bias and it
    /// stands: the fast path, plain loads and stores only. `None`
    /// otherwise; then call [`with`](Self::with).
    ///
    /// # Panics
    ///
    /// If this thread holds the lock already (a second way in would alias
    /// the first); [`with`](Self::with) too.
    #[inline(always)]
    pub fn try_biased(&self) -> Option<Biased<'_, T>> {
        self.enter(thread_token()).map(|leave| Biased(leave))
    }

    /// Runs `f` with the value, exclusively, whichever thread calls: the
    /// first thread ever to take the lock becomes its owner and takes the
    /// fast path; any other takes the mutex, revoking the bias first if
    /// another thread holds it.
    ///
    /// # Errors
    ///
    /// The errno of `membarrier` if this call had to revoke the bias and
    /// the barrier failed (`f` is then not run).
    #[cold]
    #[inline(never)]
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R, Errno> {
        let me = thread_token();
        if self.owner.load(Ordering::Relaxed) == NOBODY {
            let _ = self.owner.compare_exchange(NOBODY, me, Ordering::Acquire, Ordering::Relaxed);
        }
        if let Some(leave) = self.enter(me) {
            return Ok(f(&mut Biased(leave)));
        }
        let _guard = self.mutex.lock().unwrap_or_else(PoisonError::into_inner);
        // The owner itself needs no revocation: the only biased section
        // there could be is its own (and it is not inside it: `enter`
        // refuses that, and this is reached only after `enter` failed).
        let owner = self.owner.load(Ordering::Relaxed);
        if owner != SHARED && owner != me {
            self.revoke()?;
        }
        // SAFETY: the bias is revoked (or is this thread's own) and the
        // owner was seen out after the barrier, so the value is reached
        // only under this mutex, which this thread holds.
        Ok(f(unsafe { &mut *self.value.get() }))
    }

    /// Revokes the bias for good; the caller holds the mutex.
    fn revoke(&self) -> Result<(), Errno> {
        let previous = self.owner.swap(SHARED, Ordering::Relaxed);
        if let Err(errno) = membarrier::private() {
            // Undo: the owner keeps its fast path (or takes the mutex as
            // the owner, which needs no barrier), and nobody reaches the
            // value unordered.
            self.owner.store(previous, Ordering::Relaxed);
            return Err(errno);
        }
        while self.busy.load(Ordering::Acquire) != 0 {
            futex::futex_wait(&self.busy, 1, REVOKE_WAIT);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;

    /// One step under the lock: a read-modify-write of the counter with a
    /// pause in between (a second thread inside at the same time loses an
    /// increment), and a note of who stepped. The pause (microseconds) is
    /// longer than a `membarrier`, so that a revoker that did not wait for
    /// the owner to leave would be caught inside with it.
    fn step(value: &mut (u64, Vec<u32>), who: u32) {
        let seen = value.0;
        for _ in 0..10_000 {
            std::hint::spin_loop();
        }
        value.0 = seen + 1;
        value.1.push(who);
    }

    /// The owner's way in: the biased path, else the general one.
    fn owner_step(lock: &BiasedLock<(u64, Vec<u32>)>) {
        match lock.try_biased() {
            Some(mut value) => step(&mut value, 0),
            None => lock.with(|value| step(value, 0)).expect("owner take"),
        }
    }

    #[test]
    fn first_thread_is_biased_and_others_revoke() {
        if BiasedLock::new(()).owner.load(Ordering::Relaxed) == SHARED {
            // No private expedited membarrier here: never biased (the
            // mutex path is tested below).
            return;
        }
        // Many revocations, each while the owner keeps taking the lock: the
        // moment of revocation is the only one two threads could both be
        // inside, so it is made to happen often.
        const ROUNDS: u32 = 100;
        const OWNER_STEPS: u64 = 100;
        for round in 0..ROUNDS {
            let lock = Arc::new(BiasedLock::new((0u64, Vec::new())));
            assert!(lock.try_biased().is_none(), "nobody owns a new lock");
            owner_step(&lock);
            assert!(lock.is_biased(), "the first thread holds the bias");
            let start = Arc::new(Barrier::new(2));
            let other = {
                let (lock, start) = (Arc::clone(&lock), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    for _ in 0..3 {
                        lock.with(|value| step(value, 1)).expect("take");
                    }
                })
            };
            start.wait();
            for _ in 1..OWNER_STEPS {
                owner_step(&lock);
            }
            other.join().expect("the other thread");
            assert!(!lock.is_biased(), "round {round}: revoked for good");
            assert!(lock.try_biased().is_none(), "round {round}: the owner's fast path is closed");
            let (count, who) = lock.with(std::mem::take).expect("take");
            assert_eq!(count, OWNER_STEPS + 3, "round {round}: a step was lost: two threads were inside at once");
            assert_eq!(who.iter().filter(|&&w| w == 1).count(), 3);
        }
    }

    #[test]
    fn the_owner_cannot_take_it_twice() {
        let lock = BiasedLock::new(0u32);
        if lock.owner.load(Ordering::Relaxed) == SHARED {
            return;
        }
        lock.with(|n| *n += 1).expect("first take");
        let held = lock.try_biased().expect("the owner's fast path");
        let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lock.try_biased().is_some()));
        assert!(again.is_err(), "a second guard while the first lives");
        drop(held);
        assert_eq!(lock.try_biased().map(|n| *n), Some(1), "usable again once the first guard dropped");
    }

    #[test]
    fn unbiased_lock_serialises_threads() {
        let lock = Arc::new(BiasedLock::unbiased(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = Arc::clone(&lock);
                std::thread::spawn(move || {
                    for _ in 0..100_000 {
                        lock.with(|n| *n += 1).expect("take");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(lock.with(|n| *n).expect("take"), 400_000);
        assert!(!lock.is_biased());
    }
}
