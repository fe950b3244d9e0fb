//! The master's end: one slot per child, the children's doorbells in an
//! epoll of the master's, a control area and a lifeline.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use master_proto::lifeline::Lifeline;
use master_proto::shm::eventfd::{bell_count, eventfd, ring_bell};
use master_proto::shm::{ControlArea, GONE, LIFE, Mapping, membarrier, memfd, page_size, seal};
use master_proto::{EndFds, Received, RecvError, Sender, StatusSource};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::slot::{self, AtomicU64, Look, Ordering, Reader};
use crate::transport::{ARMED, CONTROL, DOORBELL, FENCE};

/// Passes over the watched slots that one `drain` makes at most, so that
/// children changing state as fast as the master reads cannot hold it
/// there. A pass reports at most one state per slot.
pub(crate) const PASSES: u32 = 64;

/// Looks in a row that find nothing new before the master stops watching a
/// slot and sleeps on it: the second, not the first, so that a child
/// notifying steadily, a little slower than the master looks, finds the
/// master watching instead of ringing for every update.
pub(crate) const IDLE: u8 = 2;

/// The epoll data of the master's own doorbell (children's slots are
/// numbered from 0, with a tag, well below).
const OWN_BELL: u64 = u64::MAX;

/// Events taken from the epoll per `epoll_wait`.
const EVENTS: usize = 64;

/// How the master makes its "asleep" stores visible before it looks at the
/// slots once more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Barrier {
    /// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`: registered children
    /// need only a compiler fence after publishing.
    Membarrier,
    /// A `SeqCst` fence here and in every child.
    Fence,
}

/// One child's slot, as the master holds it.
#[derive(Debug)]
struct Slot {
    /// The child's sealed memfd, all 64-bit words.
    mapping: Mapping,
    /// The child's doorbell, in the master's epoll.
    doorbell: OwnedFd,
    generation: u32,
    /// Set by `register_child`; until then the slot is not read.
    pid: Option<i32>,
    /// Tells this slot's epoll events from those of an earlier slot that
    /// had the same index.
    tag: u32,
    reader: Reader,
    /// The epoch last stored in the slot's `SLEEP` word: even while the
    /// master watches the slot, odd while it sleeps on it. The master
    /// never reads the word back (the child could have written it).
    epoch: u64,
    /// Looks in a row that found nothing new.
    idle: u8,
}

impl Slot {
    fn words(&self) -> &[AtomicU64] {
        self.mapping.words64()
    }

    fn watched(&self) -> bool {
        self.epoch & 1 == 0
    }
}

/// What the master counts, for diagnostics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Looks at a slot: the master's work, which grows with the changes,
    /// not with the number of slots.
    pub looks: u64,
    /// States published and overwritten before the master saw them,
    /// counted as the state that replaced them is handed out.
    pub overwritten: u64,
    /// Doorbell events taken from the children (each one ring of a child's
    /// own doorbell, or several rings seen as one).
    pub rings: u64,
    /// Of those, rings for a slot the master was watching already (a child
    /// that rang for an epoch the master had left, or a hostile child).
    pub spurious_rings: u64,
    /// Times the master went to sleep on some slots (one barrier each).
    pub sleeps: u64,
}

/// The master's end of a [`crate::Scoreboard`] channel.
///
/// Its descriptor is an epoll of the children's doorbells and the master's
/// own: readable whenever a state is pending. Dropping it closes the
/// channel: the death word says so at once (every child's next `notify`
/// returns `Disconnected` without a system call), and the lifeline fires.
#[derive(Debug)]
pub struct ScoreboardSource {
    epoll: Epoll,
    /// The master's own doorbell, in the epoll: how it leaves itself a
    /// readiness edge while it watches slots whose children do not ring.
    bell: OwnedFd,
    control: ControlArea,
    barrier: Barrier,
    lifeline: Lifeline,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    next_tag: u32,
    /// The registered slots the master watches (even epoch).
    watched: Vec<usize>,
    /// Slots that just went idle, to be put to sleep at the end of the pass.
    sleepy: Vec<usize>,
    /// Slots with an odd epoch, registered or not: their children ring, so
    /// the epoll is worth a look.
    asleep: usize,
    /// Items of a pass not yet handed out by `try_recv`, and what forgotten
    /// slots left, each with the states of its child that it overwrote
    /// (counted when it is handed out).
    pending: VecDeque<(Received, u64)>,
    /// The master rang its own doorbell since it last emptied the epoll:
    /// that event may still be on the epoll's ready list, keeping the
    /// descriptor readable for a level-triggered wait. (Its edge may be
    /// gone: an edge-triggered wait took it.)
    rang: bool,
    counters: Counters,
}

impl ScoreboardSource {
    /// Opens a channel: epoll, own doorbell, control area and lifeline.
    pub(crate) fn open() -> io::Result<ScoreboardSource> {
        let barrier = if membarrier::global_expedited_available() { Barrier::Membarrier } else { Barrier::Fence };
        let control = ControlArea::new(|words, watch_tid| {
            words[FENCE].store(u32::from(barrier == Barrier::Membarrier), std::sync::atomic::Ordering::Relaxed);
            words[ARMED].store(u32::from(watch_tid.is_some()), std::sync::atomic::Ordering::Relaxed);
            words[LIFE].store(watch_tid.unwrap_or(0), std::sync::atomic::Ordering::Release);
        })?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let bell = eventfd()?;
        epoll.add(&bell, EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, OWN_BELL))?;
        Ok(ScoreboardSource {
            epoll,
            bell,
            control,
            barrier,
            lifeline: Lifeline::new()?,
            slots: Vec::new(),
            free: Vec::new(),
            next_tag: 0,
            watched: Vec::new(),
            sleepy: Vec::new(),
            asleep: 0,
            pending: VecDeque::new(),
            rang: false,
            counters: Counters::default(),
        })
    }

    /// Whether a child's `notify` can learn that this master died without a
    /// system call (the kernel marks the death word through a robust futex
    /// list); when not, children look at their lifeline on every notify.
    #[must_use]
    pub fn death_word_armed(&self) -> bool {
        self.control.words()[ARMED].load(std::sync::atomic::Ordering::Relaxed) != 0
    }

    /// How many children's slots are open.
    #[must_use]
    pub fn slots(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// How many slots the master watches now (looks at on every pass); the
    /// others it sleeps on, and their children ring.
    #[must_use]
    pub fn watched(&self) -> usize {
        self.watched.len()
    }

    /// What the master counted so far.
    #[must_use]
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// How often the child registered as `pid` has rung its doorbell (its
    /// eventfd's counter, which nobody resets); `None` for an unknown pid or
    /// where `/proc` cannot say. A child rings at most once per time the
    /// master sleeps on its slot.
    #[must_use]
    pub fn doorbell_rings(&self, pid: i32) -> Option<u64> {
        let slot = self.slots.iter().flatten().find(|s| s.pid == Some(pid))?;
        bell_count(slot.doorbell.as_fd())
    }

    /// Makes a new slot for the child about to be spawned with
    /// `generation`: the slot memfd, its doorbell (in the master's epoll),
    /// and the control memfd and lifeline by name, each a new close-on-exec
    /// descriptor.
    pub(crate) fn new_child(&mut self, generation: u32) -> io::Result<EndFds> {
        let len = page_size().max(slot::SLOT_BYTES);
        let fd = memfd(c"master-proto-scoreboard-slot", len)?;
        seal(fd.as_fd(), false)?;
        let mapping = Mapping::shared(fd.as_fd(), len, true, 0)?;
        // A new memfd reads as zeros: no state yet (sequence 0). The master
        // sleeps on the slot from the start, so the child's first state
        // rings.
        let epoch = 1;
        slot::declare_asleep(mapping.words64(), epoch);
        let doorbell = eventfd()?;
        let index = self.free.last().copied().unwrap_or(self.slots.len());
        let tag = self.next_tag;
        let data = (u64::try_from(index).map_err(io::Error::other)? << 32) | u64::from(tag);
        let fds = EndFds {
            status: fd,
            aux: vec![
                (CONTROL, self.control.fd().try_clone_to_owned()?),
                (DOORBELL, doorbell.try_clone()?),
                self.lifeline.aux()?,
            ],
        };
        self.epoll.add(&doorbell, EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, data))?;
        // Only once nothing can fail any more: no slot without a child end.
        let slot = Slot { mapping, doorbell, generation, pid: None, tag, reader: Reader::new(), epoch, idle: 0 };
        self.next_tag = self.next_tag.wrapping_add(1);
        if index == self.slots.len() {
            self.slots.push(Some(slot));
        } else {
            self.free.pop();
            self.slots[index] = Some(slot);
        }
        self.asleep += 1;
        Ok(fds)
    }

    /// Binds the slot made for `generation` to the child's pid and starts
    /// watching it (so that a state it published already is read), and
    /// leaves an edge on the master's descriptor. Should several slots wait
    /// under one generation, the oldest is bound first.
    ///
    /// # Errors
    ///
    /// `NotFound` when no unbound slot was made for `generation`.
    pub(crate) fn register(&mut self, generation: u32, pid: i32) -> io::Result<()> {
        let at = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(k, s)| s.as_ref().map(|s| (k, s)))
            .filter(|(_, s)| s.generation == generation && s.pid.is_none())
            .min_by_key(|(_, s)| s.tag.wrapping_sub(self.next_tag))
            .map(|(k, _)| k)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no scoreboard slot is waiting for generation {generation}"),
                )
            })?;
        if let Some(slot) = self.slots[at].as_mut() {
            slot.pid = Some(pid);
        }
        self.wake(at);
        // A failed write (impossible for a valid eventfd) only delays the
        // slot's first look until the next wake-up.
        let _ = ring_bell(self.bell.as_fd());
        self.rang = true;
        Ok(())
    }

    /// Unmaps the slot of the reaped child `pid`, after a last look: its
    /// final state is delivered before anything else. (A child killed in
    /// the middle of a `notify` left its previous state or its new one:
    /// nothing is ever torn.)
    pub(crate) fn forget(&mut self, pid: i32) {
        while let Some(at) = self.slots.iter().position(|s| s.as_ref().is_some_and(|s| s.pid == Some(pid))) {
            let Some(mut slot) = self.slots[at].take() else { break };
            self.free.push(at);
            if slot.watched() {
                self.watched.retain(|&k| k != at);
                self.sleepy.retain(|&k| k != at);
            } else {
                self.asleep -= 1;
            }
            match slot.reader.look(slot.mapping.words64()) {
                Look::Changed(update, skipped) => {
                    self.pending.push_back((Received::Update { update, sender: Sender::Channel(pid) }, skipped));
                }
                Look::Corrupt(m) => self.pending.push_back((Received::Malformed(m), 0)),
                Look::Unchanged => {}
            }
            // Closing the master's copy below takes it out of the epoll too,
            // unless the child's copy lives on elsewhere; then events keep
            // the old tag, which no slot has any more.
            let _ = self.epoll.delete(&slot.doorbell);
        }
        if !self.pending.is_empty() {
            let _ = ring_bell(self.bell.as_fd());
            self.rang = true;
        }
    }

    /// The master watches slot `at` again: a new even epoch, and it is
    /// looked at on every pass.
    fn wake(&mut self, at: usize) {
        let Some(slot) = self.slots[at].as_mut() else { return };
        // An unregistered slot stays slept on: its child rings, and
        // registering it starts the watch.
        if slot.watched() || slot.pid.is_none() {
            return;
        }
        slot.epoch += 1;
        slot::declare_awake(slot.words(), slot.epoch);
        slot.idle = 0;
        self.asleep -= 1;
        self.watched.push(at);
    }

    /// Takes every pending event from the epoll: each child that rang has
    /// its slot watched again. Empties the epoll, which takes away the edge
    /// of the master's own doorbell too.
    fn harvest(&mut self) -> Result<(), RecvError> {
        let mut events = [EpollEvent::empty(); EVENTS];
        loop {
            let n = loop {
                match self.epoll.wait(&mut events, EpollTimeout::ZERO) {
                    Ok(n) => break n,
                    Err(Errno::EINTR) => {}
                    Err(e) => return Err(RecvError::Io(e)),
                }
            };
            for event in &events[..n] {
                let data = event.data();
                if data == OWN_BELL {
                    continue;
                }
                let (index, tag) = slot::halves(data);
                let Some(Some(slot)) = self.slots.get(index as usize) else { continue };
                if slot.tag != tag {
                    continue;
                }
                self.counters.rings += 1;
                if slot.watched() {
                    self.counters.spurious_rings += 1;
                } else {
                    self.wake(index as usize);
                }
            }
            if n < EVENTS {
                break;
            }
        }
        self.rang = false;
        Ok(())
    }

    /// One pass: takes the epoll's events (when some slot is slept on, or
    /// when the master's own ring is all there is, so that it does not keep
    /// the descriptor readable for nothing), looks once at every watched
    /// slot, handing each new state to `f`, and puts the slots that went
    /// idle to sleep. How many items. `f` gets each with the states of its
    /// child it overwrote.
    fn pass(&mut self, f: &mut impl FnMut(Received, u64)) -> Result<u32, RecvError> {
        if self.asleep > 0 || (self.rang && self.watched.is_empty()) {
            self.harvest()?;
        }
        let mut n = 0;
        let mut i = 0;
        while let Some(&at) = self.watched.get(i) {
            let Some(slot) = self.slots[at].as_mut() else {
                self.watched.swap_remove(i);
                continue;
            };
            let pid = slot.pid.unwrap_or(0);
            self.counters.looks += 1;
            match slot.reader.look(slot.mapping.words64()) {
                Look::Unchanged => slot.idle = slot.idle.saturating_add(1),
                Look::Changed(update, skipped) => {
                    slot.idle = 0;
                    f(Received::Update { update, sender: Sender::Channel(pid) }, skipped);
                    n += 1;
                }
                Look::Corrupt(m) => {
                    slot.idle = 0;
                    f(Received::Malformed(m), 0);
                    n += 1;
                }
            }
            if slot.idle >= IDLE {
                self.watched.swap_remove(i);
                self.sleepy.push(at);
            } else {
                i += 1;
            }
        }
        Ok(n + self.settle(f)?)
    }

    /// Puts the slots that went idle to sleep: a new odd epoch in each, one
    /// barrier for all, and one more look at each (no lost wake-up: a child
    /// that published before the barrier is seen now, one that publishes
    /// after it sees the odd epoch and rings). A slot found changed is
    /// watched again. How many items.
    fn settle(&mut self, f: &mut impl FnMut(Received, u64)) -> Result<u32, RecvError> {
        if self.sleepy.is_empty() {
            return Ok(0);
        }
        for &at in &self.sleepy {
            if let Some(slot) = self.slots[at].as_mut() {
                slot.epoch += 1;
                slot::declare_asleep(slot.words(), slot.epoch);
                self.asleep += 1;
            }
        }
        self.counters.sleeps += 1;
        let barrier = match self.barrier {
            Barrier::Membarrier => membarrier::global(),
            Barrier::Fence => {
                slot::fence(Ordering::SeqCst);
                Ok(())
            }
        };
        let sleepy = std::mem::take(&mut self.sleepy);
        if let Err(errno) = barrier {
            // Without the barrier the last look proves nothing: watch them
            // all again, and say why.
            for at in sleepy {
                self.wake(at);
            }
            return Err(RecvError::Io(errno));
        }
        let mut n = 0;
        for &at in &sleepy {
            let Some(slot) = self.slots[at].as_mut() else { continue };
            let pid = slot.pid.unwrap_or(0);
            self.counters.looks += 1;
            let (item, skipped) = match slot.reader.look(slot.mapping.words64()) {
                Look::Unchanged => continue,
                Look::Changed(update, skipped) => (Received::Update { update, sender: Sender::Channel(pid) }, skipped),
                Look::Corrupt(m) => (Received::Malformed(m), 0),
            };
            f(item, skipped);
            n += 1;
            self.wake(at);
        }
        self.sleepy = sleepy;
        self.sleepy.clear();
        Ok(n)
    }

    /// A call returns: if something may be pending that no child will ring
    /// for (items in hand, slots the master watches, a drain cut short),
    /// makes sure the master's next wait, edge-triggered or not, returns at
    /// once. A call that ends what the master reads before it waits (`None`
    /// from `try_recv`, the end of a `drain`) rings the master's own
    /// doorbell: a new edge, made after whatever wait took the edge of an
    /// earlier ring. A `try_recv` that returns an item rings only when no
    /// ring is on the epoll's ready list already: the descriptor stays
    /// readable for a level-triggered master, and an edge-triggered one
    /// reads on until `None`.
    fn leave_edge(&mut self, ends: bool, cut_short: bool) -> Result<(), RecvError> {
        if (cut_short || !self.pending.is_empty() || !self.watched.is_empty()) && (ends || !self.rang) {
            ring_bell(self.bell.as_fd()).map_err(RecvError::Io)?;
            self.rang = true;
        }
        Ok(())
    }
}

impl AsFd for ScoreboardSource {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

impl StatusSource for ScoreboardSource {
    fn try_recv(&mut self) -> Result<Option<Received>, RecvError> {
        if self.pending.is_empty() {
            let mut pending = std::mem::take(&mut self.pending);
            let passed = self.pass(&mut |item, skipped| pending.push_back((item, skipped)));
            self.pending = pending;
            passed?;
        }
        let next = self.pending.pop_front().map(|(item, skipped)| {
            self.counters.overwritten = self.counters.overwritten.saturating_add(skipped);
            item
        });
        self.leave_edge(next.is_none(), false)?;
        Ok(next)
    }

    /// As the provided method, in passes: each looks once at every slot the
    /// master watches (and takes the children's doorbells first when it
    /// sleeps on some), so it reports at most one state per slot. It ends
    /// after 64 passes that found something even if children keep changing
    /// state, so children cannot hold the master here; the master's
    /// descriptor then fires again at once for what is left.
    fn drain(&mut self, mut f: impl FnMut(Received)) -> Result<usize, RecvError> {
        let mut n = self.pending.len();
        for (item, skipped) in self.pending.drain(..) {
            self.counters.overwritten = self.counters.overwritten.saturating_add(skipped);
            f(item);
        }
        let mut cut_short = true;
        for _ in 0..PASSES {
            let mut overwritten = 0u64;
            let passed = self.pass(&mut |item, skipped| {
                overwritten = overwritten.saturating_add(skipped);
                f(item);
            });
            self.counters.overwritten = self.counters.overwritten.saturating_add(overwritten);
            let got = passed?;
            n += got as usize;
            if got == 0 {
                cut_short = false;
                break;
            }
        }
        self.leave_edge(true, cut_short)?;
        Ok(n)
    }

    /// [`Counters::overwritten`]: the states of each child skipped before
    /// an item are counted as that item is handed out.
    fn overwritten(&self) -> Option<u64> {
        Some(self.counters.overwritten)
    }
}

impl Drop for ScoreboardSource {
    fn drop(&mut self) {
        // Off the death watch's list first, then say "gone" ourselves.
        self.control.unlink();
        let life = &self.control.words()[LIFE];
        life.store(life.load(std::sync::atomic::Ordering::Relaxed) | GONE, std::sync::atomic::Ordering::Release);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        // Then the lifeline fires: children waiting in poll wake now.
        self.lifeline.cut();
    }
}
