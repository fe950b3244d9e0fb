//! The master's end: one ring and one doorbell per child, gathered behind
//! an epoll descriptor, a control area and a lifeline; which rings the
//! master watches and which it sleeps on.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use master_proto::lifeline::Lifeline;
use master_proto::{EndFds, Malformed, Received, RecvError, Sender, StatusSource};
use nix::errno::Errno;
use nix::poll::PollTimeout;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use crate::ring::{self, ARMED, Consumer, FENCE, GONE, Item, LIFE, Ordering, TAIL};
use crate::sys::{self, ControlArea, Mapping, RingView};
use crate::transport::{CONTROL, DOORBELL};

/// Slots in each child's ring (16 bytes each, 128 KiB a ring): enough for
/// a burst of updates while the master is busy elsewhere, and few futex
/// sleeps for a child that outruns the master (it sleeps once per quarter
/// ring at most). The slots' pages become resident only as records reach
/// them, so hundreds of children that send a few updates each cost the
/// master little memory.
pub const RING_SLOTS: u32 = 8192;

/// Records taken from one ring in a row before the scan moves on, so a busy
/// child cannot starve the others.
pub(crate) const STREAK: u32 = 64;

/// Passes over the rings that one `drain` makes at most.
pub(crate) const PASSES: u32 = 64;

/// The epoll key of the master's own bell (a ring's bell has its slot).
const OWN_BELL: u64 = u64::MAX;

/// How many ready bells one `epoll_wait` reports at most.
const EVENTS: usize = 64;

/// Empty looks in a row, the last of them in a pass that found nothing at
/// all, after which the master sleeps on a ring it watched: the second, not
/// the first, so that a child producing steadily, a little slower than the
/// master drains, finds its ring watched instead of ringing for every
/// update. (The first empty pass ends the call with an edge, and the master
/// comes straight back for the second.)
pub(crate) const IDLE: u32 = 2;

/// Empty looks in a row after which the master sleeps on a ring it watched
/// even while other rings keep it busy: so that a pass looks at the rings
/// that are busy now, not at every ring that ever was. Far above [`IDLE`]:
/// the barrier costs most while children run (a `membarrier` interrupts
/// every CPU running one, about 13 µs on a 2-vCPU VM against 0.1 µs when
/// none runs), and a child whose ring is slept on rings for every update
/// until the master watches the ring again.
pub(crate) const LONG_IDLE: u32 = 32;

/// How the master makes its "asleep" stores visible before it looks at the
/// rings once more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Barrier {
    /// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`: registered children
    /// need only a compiler fence after publishing.
    Membarrier,
    /// A `SeqCst` fence here and in every child.
    Fence,
}

/// One child's ring, as the master holds it.
#[derive(Debug)]
struct ChildRing {
    generation: u32,
    /// Set by `register_child`; until then the ring is not read.
    pid: Option<i32>,
    mapping: Mapping,
    consumer: Consumer,
    /// The ring's doorbell: an eventfd only this ring's child holds (aux
    /// `doorbell`), in the epoll set under the ring's slot.
    bell: OwnedFd,
    /// When it was made, counted in rings: the oldest unbound ring of a
    /// generation is bound first.
    made: u64,
    /// What the master last stored in the ring's `SLEEP` word: whether it
    /// sleeps on the ring (its child rings) or watches it. Never read back
    /// from the ring, where the child could have written anything.
    asleep: bool,
    /// Whether the ring is in [`MemfdSource::listed`].
    listed: bool,
    /// Records taken since the ring was last found empty, while the master
    /// sleeps on it (it wakes on the second).
    run: u32,
    /// Empty looks in a row, while the master watches it.
    idle: u32,
}

impl ChildRing {
    /// The next item of this ring, writing the index back and waking a
    /// producer waiting for room when due.
    fn next(&mut self) -> Option<Item> {
        let mut next = None;
        self.take(1, |item| next = Some(item));
        next
    }

    /// Up to `max` items of this ring in a row, each handed to `f`; how
    /// many. The index is written back when the ring runs empty (and every
    /// quarter ring), and a producer found waiting for room is woken, once
    /// per batch.
    fn take(&mut self, max: u32, mut f: impl FnMut(Item)) -> u32 {
        let ring = self.mapping.ring();
        let mut n = 0;
        while n < max {
            let Some(item) = self.consumer.next(ring) else {
                self.consumer.flush(ring);
                break;
            };
            f(item);
            n += 1;
        }
        if self.consumer.take_wake() {
            sys::futex_wake(&ring.header[TAIL], 1);
        }
        n
    }
}

/// The master's end of a [`crate::Memfd`] channel.
///
/// It is pollable through an epoll descriptor holding every child's
/// doorbell and its own: readable whenever an update is pending. Dropping
/// it closes the channel: the death word says so at once (every child's
/// next `notify` returns `Disconnected` without a system call), blocked
/// children are woken, and the lifeline fires.
#[derive(Debug)]
pub struct MemfdSource {
    epoll: Epoll,
    /// The master's own bell (an eventfd in the epoll set), rung only by
    /// the master: to stay readable while it watches rings, to make a new
    /// edge, and for a ring registered or a reaped child's records kept.
    own_bell: OwnedFd,
    control: ControlArea,
    barrier: Barrier,
    /// The lifeline: cut by `Drop` right after setting the death word.
    lifeline: Lifeline,
    /// The rings by slot (a slot is the epoll key of the ring's bell);
    /// `None` where a reaped child's ring was.
    rings: Vec<Option<ChildRing>>,
    /// Slots free for new rings.
    free: Vec<usize>,
    /// Rings made so far.
    made: u64,
    /// The rings a pass looks at: every ring the master watches, and the
    /// rings it sleeps on that rang, or yielded records, since they were
    /// last found empty. The others are not looked at.
    listed: Vec<usize>,
    /// Rings the master watches (registered ones only).
    watched: usize,
    /// Rings the master sleeps on, registered or not: their children ring,
    /// so the epoll is worth asking.
    asleep: usize,
    /// Watched rings to put to sleep at the end of this pass.
    sleepy: Vec<usize>,
    /// The own bell's counter is not zero (only the master rings or resets
    /// it).
    own_set: bool,
    /// The master rang its own bell during this call (`try_recv` or
    /// `drain`), and has not reset it since: an edge that came after the
    /// call began, which a waiter keeps.
    rang: bool,
    /// Items taken and not handed out yet: a pass's, for `try_recv`, and
    /// what the rings of reaped children held.
    pending: VecDeque<Received>,
    /// Looks at a ring so far (each a read of the slot at its index, at
    /// least): the master's work, which follows the rings that are busy,
    /// not the number of rings.
    looks: u64,
}

impl MemfdSource {
    /// Opens a channel: epoll instance, own bell, control area and lifeline.
    pub(crate) fn open() -> io::Result<MemfdSource> {
        let barrier = if sys::membarrier_global_expedited_available() { Barrier::Membarrier } else { Barrier::Fence };
        let control = ControlArea::new(|words, watch_tid| {
            words[FENCE].store(u32::from(barrier == Barrier::Membarrier), Ordering::Relaxed);
            words[ARMED].store(u32::from(watch_tid.is_some()), Ordering::Relaxed);
            words[LIFE].store(watch_tid.unwrap_or(0), Ordering::Release);
        })?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let own_bell = sys::eventfd()?;
        epoll.add(&own_bell, EpollEvent::new(EpollFlags::EPOLLIN, OWN_BELL))?;
        Ok(MemfdSource {
            epoll,
            own_bell,
            control,
            barrier,
            lifeline: Lifeline::new()?,
            rings: Vec::new(),
            free: Vec::new(),
            made: 0,
            listed: Vec::new(),
            watched: 0,
            asleep: 0,
            sleepy: Vec::new(),
            own_set: false,
            rang: false,
            pending: VecDeque::new(),
            looks: 0,
        })
    }

    /// Whether a child's `notify` can learn that this master died without a
    /// system call (the kernel marks the death word through a robust futex
    /// list); when not, children look at their lifeline on every notify.
    #[must_use]
    pub fn death_word_armed(&self) -> bool {
        self.control.words()[ARMED].load(Ordering::Relaxed) != 0
    }

    /// How many registered children say they are blocked on a full ring
    /// right now (their own `waiting` flag: a claim, for diagnostics).
    #[must_use]
    pub fn blocked_children(&self) -> usize {
        self.rings
            .iter()
            .flatten()
            .filter(|r| r.pid.is_some() && r.mapping.ring().header[ring::WAITING].load(Ordering::Relaxed) != 0)
            .count()
    }

    /// How many children's rings are open.
    #[must_use]
    pub fn rings(&self) -> usize {
        self.rings.iter().flatten().count()
    }

    /// How many rings the master watches now (looks at on every pass); it
    /// sleeps on the others, and their children ring.
    #[must_use]
    pub fn watched(&self) -> usize {
        self.watched
    }

    /// Makes a new ring for the child about to be spawned with
    /// `generation`: the ring memfd, and the control memfd, the ring's own
    /// doorbell and the lifeline by name, each a new close-on-exec
    /// descriptor.
    pub(crate) fn new_child(&mut self, generation: u32) -> io::Result<EndFds> {
        let consumer = Consumer::new(RING_SLOTS);
        let len = ring::ring_bytes(RING_SLOTS);
        let fd = sys::memfd(c"master-proto-memfd-ring", len)?;
        sys::seal(fd.as_fd(), false)?;
        let mapping = sys::map_ring(fd.as_fd(), len)?;
        // A new memfd reads as zeros: only the header needs writing. The
        // master sleeps on the ring from the start, so the child's first
        // update rings.
        consumer.init_zeroed(mapping.ring());
        ring::declare_asleep(mapping.ring());
        let slot = self.free.last().copied().unwrap_or(self.rings.len());
        let bell = sys::eventfd()?;
        let key = u64::try_from(slot).map_err(io::Error::other)?;
        // Level-triggered: a bell stays reported until the master resets it.
        self.epoll.add(&bell, EpollEvent::new(EpollFlags::EPOLLIN, key))?;
        let fds = (|| {
            Ok::<_, io::Error>(EndFds {
                status: fd,
                aux: vec![
                    (CONTROL, self.control.fd().try_clone_to_owned()?),
                    (DOORBELL, bell.try_clone()?),
                    self.lifeline.aux()?,
                ],
            })
        })();
        let fds = match fds {
            Ok(fds) => fds,
            Err(e) => {
                let _ = self.epoll.delete(&bell);
                return Err(e);
            }
        };
        // Only once nothing can fail any more: no ring without a child end.
        let ring = ChildRing {
            generation,
            pid: None,
            mapping,
            consumer,
            bell,
            made: self.made,
            asleep: true,
            listed: false,
            run: 0,
            idle: 0,
        };
        self.made += 1;
        self.asleep += 1;
        if slot == self.rings.len() {
            self.rings.push(Some(ring));
        } else {
            self.free.pop();
            self.rings[slot] = Some(ring);
        }
        Ok(fds)
    }

    /// Binds the ring made for `generation` to the child's pid, and rings
    /// the own bell so that anything it published already is read. Should
    /// several rings wait under one generation, the oldest is bound first
    /// (rings are bound in the order they were made).
    ///
    /// # Errors
    ///
    /// `NotFound` when no unbound ring was made for `generation`.
    pub(crate) fn register(&mut self, generation: u32, pid: i32) -> io::Result<()> {
        let slot = (0..self.rings.len())
            .filter(|&at| self.rings[at].as_ref().is_some_and(|r| r.generation == generation && r.pid.is_none()))
            .min_by_key(|&at| self.rings[at].as_ref().map_or(u64::MAX, |r| r.made))
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no memfd ring is waiting for generation {generation}"))
            })?;
        if let Some(ring) = self.rings[slot].as_mut() {
            ring.pid = Some(pid);
        }
        self.list(slot);
        // A failed ring (impossible for a valid eventfd) only delays the
        // ring's first read until the next wake-up.
        if sys::ring_bell(self.own_bell.as_fd()).is_ok() {
            self.own_set = true;
        }
        Ok(())
    }

    /// Puts the registered ring in `slot` among those a pass looks at.
    fn list(&mut self, slot: usize) {
        if let Some(Some(ring)) = self.rings.get_mut(slot)
            && ring.pid.is_some()
            && !ring.listed
        {
            ring.listed = true;
            self.listed.push(slot);
        }
    }

    /// Resets every child's bell that rang, and lists its ring. A ring looked at after this sees
    /// what its child published before its bell was reset; what the child
    /// publishes later rings again (while the master sleeps on the ring).
    /// Takes a bounded number of `epoll_wait` rounds; should bells still
    /// be ringing after them (children ringing on and on), the own bell is
    /// rung, so that the master's next wait, edge-triggered or not, returns
    /// at once for them.
    fn collect(&mut self) -> Result<(), RecvError> {
        let mut events = [EpollEvent::empty(); EVENTS];
        for _ in 0..self.rings.len() / EVENTS + 2 {
            let n = loop {
                match self.epoll.wait(&mut events, PollTimeout::ZERO) {
                    Ok(n) => break n,
                    Err(Errno::EINTR) => {}
                    Err(errno) => return Err(RecvError::Io(errno)),
                }
            };
            let mut rung = 0;
            for event in events.iter().take(n) {
                let key = event.data();
                if key == OWN_BELL {
                    continue;
                }
                let Some(slot) = usize::try_from(key).ok() else { continue };
                let Some(Some(ring)) = self.rings.get(slot) else { continue };
                sys::drain_bell(ring.bell.as_fd()).map_err(RecvError::Io)?;
                self.list(slot);
                rung += 1;
            }
            // The own bell, when it is kept, is reported every time.
            if n < EVENTS || rung == 0 {
                return Ok(());
            }
        }
        self.ring_own_bell()
    }

    /// Rings the own bell: readable, and a new edge in this call.
    ///
    /// # Errors
    ///
    /// The eventfd write's, which cannot fail for a valid eventfd.
    fn ring_own_bell(&mut self) -> Result<(), RecvError> {
        sys::ring_bell(self.own_bell.as_fd()).map_err(RecvError::Io)?;
        self.own_set = true;
        self.rang = true;
        Ok(())
    }

    /// Resets the own bell (an edge it made is gone with it: epoll finds
    /// the eventfd unreadable, and reports nothing).
    fn reset_own_bell(&mut self) -> Result<(), RecvError> {
        sys::drain_bell(self.own_bell.as_fd()).map_err(RecvError::Io)?;
        self.own_set = false;
        self.rang = false;
        Ok(())
    }

    /// Drains and unmaps the ring of the reaped child `pid`; what it held
    /// is delivered before anything else not taken yet, and a record it
    /// died writing is reported as [`Malformed::Torn`].
    pub(crate) fn forget(&mut self, pid: i32) {
        while let Some(at) = self.rings.iter().position(|r| r.as_ref().is_some_and(|r| r.pid == Some(pid))) {
            let Some(mut ring) = self.rings[at].take() else { break };
            // Out of the epoll set even should another copy of the bell
            // live on (a grandchild of the reaped child's).
            let _ = self.epoll.delete(&ring.bell);
            self.free.push(at);
            if ring.listed {
                self.listed.retain(|&slot| slot != at);
            }
            self.sleepy.retain(|&slot| slot != at);
            if ring.asleep {
                self.asleep -= 1;
            } else {
                self.watched -= 1;
            }
            for _ in 0..ring.consumer.capacity() + 1 {
                match ring.next() {
                    Some(item) => self.pending.push_back(received(item, pid)),
                    None => break,
                }
            }
            if ring.consumer.unfinished(ring.mapping.ring()) {
                self.pending.push_back(Received::Malformed(Malformed::Torn));
            }
        }
        if !self.pending.is_empty() && sys::ring_bell(self.own_bell.as_fd()).is_ok() {
            self.own_set = true;
        }
    }

    /// The master watches the ring in `slot` from now on: its child stops
    /// ringing. The own bell is made readable first, so that a master that
    /// polls before draining does not wait on the ring's records; should
    /// that fail (it cannot for a valid eventfd), the ring stays slept on,
    /// its child ringing, and nothing is lost.
    fn wake(&mut self, slot: usize) {
        if !self.own_set && self.ring_own_bell().is_err() {
            return;
        }
        let Some(Some(ring)) = self.rings.get_mut(slot) else { return };
        if !ring.asleep {
            return;
        }
        ring::declare_awake(ring.mapping.ring());
        ring.asleep = false;
        ring.run = 0;
        ring.idle = 0;
        self.asleep -= 1;
        self.watched += 1;
        self.list(slot);
    }

    /// One pass: up to [`STREAK`] items from each listed ring, handed to
    /// `f`; then the watched rings that went idle are put to sleep (see
    /// [`settle`](Self::settle)), those idle for [`LONG_IDLE`] looks, and,
    /// when the pass found nothing, those idle for [`IDLE`]. How many
    /// items, the last looks' included. A ring slept on that was found
    /// empty leaves the list; one that yielded a second record in a row is
    /// woken.
    fn pass(&mut self, f: &mut impl FnMut(Received)) -> Result<u32, RecvError> {
        let mut n = 0;
        let mut i = 0;
        while let Some(&slot) = self.listed.get(i) {
            let Some(Some(ring)) = self.rings.get_mut(slot) else {
                self.listed.swap_remove(i);
                continue;
            };
            let Some(pid) = ring.pid else {
                ring.listed = false;
                self.listed.swap_remove(i);
                continue;
            };
            self.looks += 1;
            let got = ring.take(STREAK, |item| f(received(item, pid)));
            n += got;
            i += 1;
            if got > 0 {
                ring.idle = 0;
                if ring.asleep {
                    ring.run += got;
                    if ring.run >= 2 {
                        self.wake(slot);
                    }
                }
            } else if ring.asleep {
                // Slept on and empty: its child rings for what comes next.
                ring.run = 0;
                ring.listed = false;
                i -= 1;
                self.listed.swap_remove(i);
            } else {
                ring.idle = ring.idle.saturating_add(1);
                if ring.idle == LONG_IDLE {
                    self.sleepy.push(slot);
                }
            }
        }
        if n == 0 {
            for &slot in &self.listed {
                if let Some(Some(ring)) = self.rings.get(slot)
                    && !ring.asleep
                    && (IDLE..LONG_IDLE).contains(&ring.idle)
                {
                    self.sleepy.push(slot);
                }
            }
        }
        Ok(n + self.settle(f)?)
    }

    /// Puts the watched rings that went idle to sleep: `SLEEP` = 1 in each,
    /// one barrier for all, and a last look at each (no lost wake-up: a
    /// child that published before the barrier is seen now, one that
    /// publishes after it sees the word set and rings). A ring found empty
    /// leaves the list; what a last look finds is handed to `f`, and the
    /// ring stays listed, slept on, as if its bell had rung. How many
    /// items.
    fn settle(&mut self, f: &mut impl FnMut(Received)) -> Result<u32, RecvError> {
        if self.sleepy.is_empty() {
            return Ok(0);
        }
        for &slot in &self.sleepy {
            let Some(Some(ring)) = self.rings.get_mut(slot) else { continue };
            ring::declare_asleep(ring.mapping.ring());
            ring.asleep = true;
            ring.run = 0;
            self.watched -= 1;
            self.asleep += 1;
        }
        let barrier = match self.barrier {
            Barrier::Membarrier => sys::membarrier_global(),
            Barrier::Fence => {
                ring::fence(Ordering::SeqCst);
                Ok(())
            }
        };
        let sleepy = std::mem::take(&mut self.sleepy);
        if let Err(errno) = barrier {
            // Without the barrier the last look proves nothing: watch them
            // all again, and say why.
            for &slot in &sleepy {
                self.wake(slot);
            }
            self.sleepy = sleepy;
            self.sleepy.clear();
            return Err(RecvError::Io(errno));
        }
        let mut n = 0;
        let mut emptied = false;
        for &slot in &sleepy {
            let Some(Some(ring)) = self.rings.get_mut(slot) else { continue };
            let pid = ring.pid.unwrap_or(0);
            self.looks += 1;
            let got = ring.take(STREAK, |item| f(received(item, pid)));
            n += got;
            if got == 0 {
                ring.listed = false;
                emptied = true;
            } else {
                ring.run = got;
                if got >= 2 {
                    self.wake(slot);
                }
            }
        }
        if emptied {
            let rings = &self.rings;
            self.listed.retain(|&slot| rings.get(slot).is_some_and(|r| r.as_ref().is_some_and(|r| r.listed)));
        }
        self.sleepy = sleepy;
        self.sleepy.clear();
        Ok(n)
    }

    /// A call ends a read: `None` from `try_recv`, or the end of a `drain`
    /// (`cut_short` when by its bound). While the master watches rings
    /// (their children do not ring), or records may be left, the master's
    /// next wait, edge-triggered or not, must return at once: the own bell
    /// is readable then, which is enough for a level-triggered wait; an
    /// edge-triggered one (tokio, mio, `EPOLLET`) needs a write after this
    /// call began, so the own bell is rung unless this very call rang it
    /// already (and did not reset it since). A ring in an earlier call does
    /// not count: a reactor on another thread (tokio's multi-thread
    /// runtime) may have taken it already, and clears the readiness it saw
    /// when this call's `None` comes. Otherwise every ring is slept on, and
    /// the own bell is reset, should it be set.
    ///
    /// # Errors
    ///
    /// The eventfd's, which cannot fail for a valid one.
    fn end_read(&mut self, cut_short: bool) -> Result<(), RecvError> {
        if cut_short || self.watched > 0 || !self.pending.is_empty() {
            if !self.rang {
                self.ring_own_bell()?;
            }
        } else if self.own_set {
            self.reset_own_bell()?;
        }
        Ok(())
    }

    /// A pass, its items into `pending`; the epoll asked first when the
    /// master sleeps on some ring. How many items.
    fn pass_into_pending(&mut self) -> Result<u32, RecvError> {
        if self.asleep > 0 {
            self.collect()?;
        }
        let mut pending = std::mem::take(&mut self.pending);
        let got = self.pass(&mut |item| pending.push_back(item));
        self.pending = pending;
        got
    }
}

/// What the in-process tests look at.
#[cfg(test)]
impl MemfdSource {
    /// Looks at a ring so far.
    pub(crate) fn looks(&self) -> u64 {
        self.looks
    }

    /// The ring of the child registered as `pid`.
    fn ring_of(&self, pid: i32) -> Option<&ChildRing> {
        self.rings.iter().flatten().find(|r| r.pid == Some(pid))
    }

    /// The `SLEEP` word of `pid`'s ring, as its child reads it.
    pub(crate) fn sleep_word(&self, pid: i32) -> Option<u32> {
        self.ring_of(pid).map(|r| r.mapping.ring().header[ring::SLEEP].load(Ordering::Relaxed))
    }

    /// How often `pid`'s doorbell rang since the master last reset it.
    pub(crate) fn bell_count(&self, pid: i32) -> Option<u64> {
        master_proto::shm::eventfd::bell_count(self.ring_of(pid)?.bell.as_fd())
    }
}

fn received(item: Item, pid: i32) -> Received {
    match item {
        Item::Update(update) => Received::Update { update, sender: Sender::Channel(pid) },
        Item::Malformed(m) => Received::Malformed(m),
    }
}

impl AsFd for MemfdSource {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

impl StatusSource for MemfdSource {
    /// One item: what a pass took and was not handed out yet, else a new
    /// pass. While items are left in hand or rings are watched, the
    /// master's descriptor stays readable.
    fn try_recv(&mut self) -> Result<Option<Received>, RecvError> {
        self.rang = false;
        if self.pending.is_empty() {
            self.pass_into_pending()?;
        }
        let Some(item) = self.pending.pop_front() else {
            self.end_read(false)?;
            return Ok(None);
        };
        if (self.watched > 0 || !self.pending.is_empty()) && !self.own_set {
            // A valid eventfd's write cannot fail; were it to, the item in
            // hand is still returned, never dropped for an error.
            let _ = self.ring_own_bell();
        }
        Ok(Some(item))
    }

    /// As the provided method, in batches: each pass takes what every ring
    /// it looks at holds (see the crate docs; up to 64 items a ring),
    /// writing each ring's index back once per batch. It ends after 64
    /// passes that found something even if children keep sending (so
    /// children that outrun the master cannot hold it here): besides what
    /// reaped children left, it hands over at most 4096 records a ring.
    /// The own bell is then rung (unless this drain rang it already), so
    /// the master's next wait, edge-triggered or not, returns at once for
    /// what is left.
    fn drain(&mut self, mut f: impl FnMut(Received)) -> Result<usize, RecvError> {
        self.rang = false;
        let mut n = 0;
        while let Some(item) = self.pending.pop_front() {
            f(item);
            n += 1;
        }
        if self.asleep > 0 {
            self.collect()?;
        }
        for _ in 0..PASSES {
            let got = self.pass(&mut f)?;
            if got == 0 {
                self.end_read(false)?;
                return Ok(n);
            }
            n += got as usize;
        }
        self.end_read(true)?;
        Ok(n)
    }
}

impl Drop for MemfdSource {
    fn drop(&mut self) {
        // Off the death watch's list first, then say "gone" ourselves.
        self.control.unlink();
        let life = &self.control.words()[LIFE];
        life.store(life.load(Ordering::Relaxed) | GONE, Ordering::Release);
        ring::fence(Ordering::SeqCst);
        // Then the lifeline fires (children waiting in poll wake now),
        // then children blocked on a full ring are woken.
        self.lifeline.cut();
        for ring in self.rings.iter().flatten() {
            sys::futex_wake(&ring.mapping.ring().header[TAIL], i32::MAX);
        }
    }
}
