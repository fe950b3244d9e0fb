//! The master's end: one ring and one doorbell per child, gathered behind
//! an epoll descriptor, a control area and a lifeline.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use master_proto::lifeline::Lifeline;
use master_proto::{EndFds, Malformed, Received, RecvError, Sender, StatusSource};
use nix::errno::Errno;
use nix::poll::PollTimeout;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use crate::ring::{self, ARMED, ASLEEP, Consumer, FENCE, GONE, Item, LIFE, Ordering, TAIL};
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

/// How the master makes its "asleep" store visible before it looks at the
/// rings again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Barrier {
    /// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`: registered children
    /// need only a compiler fence after publishing.
    Membarrier,
    /// A `SeqCst` fence here and in every child.
    Fence,
}

/// Where the master is in the sleep/wake handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wake {
    /// `ASLEEP` is set: every publish rings its child's doorbell.
    Asleep,
    /// `ASLEEP` is still set and one record has been returned since the
    /// master last found nothing; the next record clears it.
    Waking,
    /// `ASLEEP` is clear and the own bell is kept readable, so that a
    /// master that polls before draining does not wait for nothing.
    Awake,
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
    /// Whether the ring is in [`MemfdSource::dirty`].
    dirty: bool,
    /// When it was made, counted in rings: the oldest unbound ring of a
    /// generation is bound first.
    made: u64,
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
    /// the master: to stay readable while awake, to make a new edge, and
    /// for a ring registered or a reaped child's records kept.
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
    /// While children ring (the master asleep or waking), the rings to
    /// look at: each rang, or yielded records, since it was last found
    /// empty. Idle rings are not looked at.
    dirty: VecDeque<usize>,
    /// The master declared itself asleep after being awake, when children
    /// publish without ringing, and has not looked at every ring since:
    /// until it has, a look takes every ring.
    full: bool,
    cursor: usize,
    streak: u32,
    wake: Wake,
    /// Awake, and the last `try_recv` found nothing: the next empty one
    /// puts the master to sleep.
    idle: bool,
    /// The master rang its own bell during this call (`try_recv` or
    /// `drain`), and has not reset it since: an edge that came after the
    /// call began, which a waiter keeps.
    rang: bool,
    /// Items taken from rings of reaped children, delivered first.
    pending: VecDeque<Received>,
}

impl MemfdSource {
    /// Opens a channel: epoll instance, own bell, control area and lifeline.
    pub(crate) fn open() -> io::Result<MemfdSource> {
        let barrier = if sys::membarrier_global_expedited_available() { Barrier::Membarrier } else { Barrier::Fence };
        let control = ControlArea::new(|words, watch_tid| {
            // Asleep from the start: children ring until the master first
            // finds something, so updates sent before it ever polls wake it.
            words[ASLEEP].store(1, Ordering::Relaxed);
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
            dirty: VecDeque::new(),
            full: false,
            cursor: 0,
            streak: 0,
            wake: Wake::Asleep,
            idle: false,
            rang: false,
            pending: VecDeque::new(),
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
        // A new memfd reads as zeros: only the header needs writing.
        consumer.init_zeroed(mapping.ring());
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
        let ring = ChildRing { generation, pid: None, mapping, consumer, bell, dirty: false, made: self.made };
        self.made += 1;
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
        self.mark_dirty(slot);
        // A failed ring (impossible for a valid eventfd) only delays the
        // ring's first read until the next wake-up.
        let _ = sys::ring_bell(self.own_bell.as_fd());
        Ok(())
    }

    /// Puts the ring in `slot` among those to look at while children ring.
    fn mark_dirty(&mut self, slot: usize) {
        if let Some(Some(ring)) = self.rings.get_mut(slot)
            && !ring.dirty
        {
            ring.dirty = true;
            self.dirty.push_back(slot);
        }
    }

    /// Resets every child's bell that rang, and puts its ring among those
    /// to look at; with `own`, resets the master's own bell too. A ring
    /// looked at after this sees what its child published before its bell
    /// was reset; what the child publishes later rings again (while the
    /// master says it is asleep). Takes a bounded number of `epoll_wait`
    /// rounds; should bells still be ringing after them (children ringing
    /// on and on), the own bell is rung, so that the master's next wait,
    /// edge-triggered or not, returns at once for them.
    fn collect(&mut self, own: bool) -> Result<(), RecvError> {
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
                    if own {
                        sys::drain_bell(self.own_bell.as_fd()).map_err(RecvError::Io)?;
                    }
                    continue;
                }
                let Some(slot) = usize::try_from(key).ok() else { continue };
                let Some(Some(ring)) = self.rings.get(slot) else { continue };
                sys::drain_bell(ring.bell.as_fd()).map_err(RecvError::Io)?;
                self.mark_dirty(slot);
                rung += 1;
            }
            // The own bell, when it is kept, is reported every time.
            if n < EVENTS || rung == 0 {
                return Ok(());
            }
        }
        sys::ring_bell(self.own_bell.as_fd()).map_err(RecvError::Io)?;
        self.rang = true;
        Ok(())
    }

    /// Drains and unmaps the ring of the reaped child `pid`; what it held
    /// is delivered before anything else, and a record it died writing is
    /// reported as [`Malformed::Torn`].
    pub(crate) fn forget(&mut self, pid: i32) {
        while let Some(at) = self.rings.iter().position(|r| r.as_ref().is_some_and(|r| r.pid == Some(pid))) {
            let Some(mut ring) = self.rings[at].take() else { break };
            // Out of the epoll set even should another copy of the bell
            // live on (a grandchild of the reaped child's).
            let _ = self.epoll.delete(&ring.bell);
            self.free.push(at);
            self.dirty.retain(|&slot| slot != at);
            for _ in 0..ring.consumer.capacity() + 1 {
                match ring.next() {
                    Some(item) => self.pending.push_back(received(item, pid)),
                    None => break,
                }
            }
            if ring.consumer.unfinished(ring.mapping.ring()) {
                self.pending.push_back(Received::Malformed(Malformed::Torn));
            }
            self.cursor = 0;
            self.streak = 0;
        }
        if !self.pending.is_empty() {
            let _ = sys::ring_bell(self.own_bell.as_fd());
        }
    }

    /// Whether a look takes every ring rather than the dirty ones: while
    /// the master is awake children do not ring, and after it declared
    /// itself asleep every ring must be looked at once.
    fn every_ring(&self) -> bool {
        self.wake == Wake::Awake || self.full
    }

    /// One item from the rings, round robin, or `None` if all are empty:
    /// every ring or the dirty ones (see [`every_ring`](Self::every_ring)).
    fn scan(&mut self) -> Option<Received> {
        if !self.every_ring() {
            return self.scan_dirty();
        }
        let n = self.rings.len();
        for k in 0..n {
            let at = (self.cursor + k) % n;
            let Some(ring) = self.rings[at].as_mut() else { continue };
            let Some(pid) = ring.pid else { continue };
            if let Some(item) = ring.next() {
                if at == self.cursor {
                    self.streak += 1;
                } else {
                    self.cursor = at;
                    self.streak = 1;
                }
                if self.streak >= STREAK {
                    self.cursor = (at + 1) % n;
                    self.streak = 0;
                }
                // It may hold more, which its child will not ring for.
                self.mark_dirty(at);
                return Some(received(item, pid));
            }
        }
        self.looked_at_every_ring();
        None
    }

    /// One item from the dirty rings, taking them in turn; a ring found
    /// empty leaves them.
    fn scan_dirty(&mut self) -> Option<Received> {
        for _ in 0..self.dirty.len() {
            let slot = self.dirty.pop_front()?;
            let Some(Some(ring)) = self.rings.get_mut(slot) else { continue };
            if let Some(pid) = ring.pid
                && let Some(item) = ring.next()
            {
                self.dirty.push_back(slot);
                return Some(received(item, pid));
            }
            // Empty, or not registered yet (registering marks it again).
            ring.dirty = false;
        }
        None
    }

    /// A look at every ring ended: while children ring, the dirty rings
    /// are enough from now on.
    fn looked_at_every_ring(&mut self) {
        if self.wake != Wake::Awake {
            self.full = false;
        }
    }

    /// One pass, up to [`STREAK`] items from each ring, handed to `f`; how
    /// many. Over every ring or the dirty ones (see
    /// [`every_ring`](Self::every_ring)); a ring that yielded records is
    /// dirty until it is found empty.
    fn sweep(&mut self, f: &mut impl FnMut(Received)) -> u32 {
        let mut n = 0;
        if self.every_ring() {
            for slot in 0..self.rings.len() {
                let Some(ring) = self.rings[slot].as_mut() else { continue };
                let Some(pid) = ring.pid else { continue };
                let got = ring.take(STREAK, |item| f(received(item, pid)));
                if got > 0 {
                    self.mark_dirty(slot);
                }
                n += got;
            }
            self.looked_at_every_ring();
            return n;
        }
        for _ in 0..self.dirty.len() {
            let Some(slot) = self.dirty.pop_front() else { break };
            let Some(Some(ring)) = self.rings.get_mut(slot) else { continue };
            let Some(pid) = ring.pid else {
                ring.dirty = false;
                continue;
            };
            let got = ring.take(STREAK, |item| f(received(item, pid)));
            if got > 0 {
                self.dirty.push_back(slot);
            } else {
                ring.dirty = false;
            }
            n += got;
        }
        n
    }

    /// `found` records were just returned: moves the handshake on as
    /// [`try_recv`](StatusSource::try_recv) does, one record at a time
    /// (the first record after sleeping is returned with the children still
    /// ringing; the second makes the master awake).
    fn found(&mut self, found: u32) {
        self.idle = false;
        for _ in 0..found {
            match self.wake {
                Wake::Awake => return,
                Wake::Asleep => self.wake = Wake::Waking,
                // Keep the own bell readable, then stop the children
                // ringing. Should the eventfd write fail (it cannot for a
                // valid eventfd), stay as is: children keep ringing, and
                // the record in hand is not lost.
                Wake::Waking => {
                    if sys::ring_bell(self.own_bell.as_fd()).is_ok() {
                        ring::declare_awake(self.control.words());
                        self.wake = Wake::Awake;
                        self.rang = true;
                    }
                    return;
                }
            }
        }
    }

    /// A call (`try_recv` or `drain`) begins: nothing rung in it yet.
    /// An edge rung in an earlier call does not count, even if the master
    /// has not waited since: a reactor on another thread (tokio's
    /// multi-thread runtime) may have taken it already, and the master then
    /// clears the readiness it saw when this call's `None` comes.
    fn begin(&mut self) {
        self.rang = false;
    }

    /// A call ends a drain while children may not ring (the master is
    /// awake) or records may be left (the drain's bound): makes sure the
    /// master's next wait, edge-triggered or not, returns at once. The
    /// own bell is readable while awake, which is enough for a
    /// level-triggered wait; an edge-triggered one (tokio, mio, `EPOLLET`)
    /// needs a write after this call began, so the own bell is rung unless
    /// this very call rang it already (and did not reset it since).
    ///
    /// # Errors
    ///
    /// The eventfd write's, which cannot fail for a valid eventfd.
    fn end_with_edge(&mut self) -> Result<(), RecvError> {
        if !self.rang {
            sys::ring_bell(self.own_bell.as_fd()).map_err(RecvError::Io)?;
            self.rang = true;
        }
        Ok(())
    }

    /// Every ring was found empty: whether to stop here while staying
    /// awake. Awake and finding nothing for the first time, the master
    /// stays awake, so that a child producing steadily a little slower than
    /// the master does not ring for every update. The caller then ends the
    /// drain with [`end_with_edge`](Self::end_with_edge), so a master that
    /// waits now comes straight back, and its next empty look puts it to
    /// sleep.
    fn stay_awake(&mut self) -> bool {
        if self.wake == Wake::Awake && !self.idle {
            self.idle = true;
            return true;
        }
        self.idle = false;
        false
    }

    /// Nothing was pending: reset the bells, declare the master asleep,
    /// and look once more (no lost wake-up: a child that published before
    /// the barrier, or before its bell was reset, is seen now; one that
    /// publishes after it rings). A master that was awake looks at every
    /// ring, since children did not ring meanwhile; one that was not looks
    /// at the rings that rang.
    fn go_to_sleep(&mut self) -> Result<Option<Received>, RecvError> {
        // Reset: an edge this drain made is gone with it (epoll finds the
        // eventfd unreadable, and reports nothing).
        self.rang = false;
        self.collect(true)?;
        if self.wake == Wake::Awake {
            let barrier = self.barrier;
            let mut failed = None;
            ring::declare_asleep(self.control.words(), || match barrier {
                Barrier::Membarrier => failed = sys::membarrier_global().err(),
                Barrier::Fence => ring::fence(Ordering::SeqCst),
            });
            if let Some(errno) = failed {
                return Err(RecvError::Io(errno));
            }
            self.full = true;
        }
        self.wake = Wake::Asleep;
        let found = self.scan();
        if found.is_some() {
            // More may be pending that nobody rang for: stay readable. (A
            // valid eventfd's write cannot fail; were it to, the record in
            // hand is still returned, never dropped for an error.)
            self.rang = sys::ring_bell(self.own_bell.as_fd()).is_ok() || self.rang;
        }
        Ok(found)
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
    fn try_recv(&mut self) -> Result<Option<Received>, RecvError> {
        self.begin();
        if let Some(item) = self.pending.pop_front() {
            return Ok(Some(item));
        }
        if !self.every_ring() {
            self.collect(false)?;
        }
        if let Some(item) = self.scan() {
            self.found(1);
            return Ok(Some(item));
        }
        if self.stay_awake() {
            self.end_with_edge()?;
            return Ok(None);
        }
        self.go_to_sleep()
    }

    /// As the provided method, in batches: each pass takes what every ring
    /// it looks at holds (see the crate docs; up to 64 items a ring), writing each ring's index back
    /// once per batch, and the handshake moves on once per pass. It ends
    /// after 64 passes that found something even if children keep
    /// sending (so children that outrun the master cannot hold it here):
    /// besides what reaped children left, it hands over at most
    /// 4096 records a ring. The own bell is then rung (unless this drain
    /// rang it already), so the master's next wait, edge-triggered or not,
    /// returns at once for what is left.
    fn drain(&mut self, mut f: impl FnMut(Received)) -> Result<usize, RecvError> {
        self.begin();
        let mut n = 0;
        while let Some(item) = self.pending.pop_front() {
            f(item);
            n += 1;
        }
        if !self.every_ring() {
            self.collect(false)?;
        }
        // Passes that found something; the look on the way to sleep counts
        // as one when it finds its one record.
        for _ in 0..PASSES {
            let got = self.sweep(&mut f);
            if got > 0 {
                n += got as usize;
                self.found(got);
                continue;
            }
            if self.stay_awake() {
                self.end_with_edge()?;
                return Ok(n);
            }
            match self.go_to_sleep()? {
                Some(item) => {
                    f(item);
                    n += 1;
                }
                None => return Ok(n),
            }
        }
        self.end_with_edge()?;
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
