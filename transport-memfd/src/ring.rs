//! The single-producer status ring and the per-ring sleep/wake handshake,
//! as safe code over atomics (swapped for loom's under `cfg(loom)`).
//!
//! Everything here works on a [`Ring`]: a header of 32-bit atomic words and
//! the slots, 64-bit atomic words. In the transport both are views of one
//! shared mapping (see [`crate::sys`]); in the loom models and unit tests
//! they are ordinary memory ([`RingMem`]). Nothing here trusts what it
//! reads from a producer's words: the consumer reads no index of the
//! producer at all, only the slot its own index names, masked by its own
//! capacity, so a hostile producer can change what is reported, never
//! where the consumer reads.
//!
//! # Header words (indices into the header)
//!
//! | word | written by | meaning |
//! |---|---|---|
//! | [`WAITING`] (byte 0) | producer | non-zero while the producer sleeps on a full ring |
//! | [`SLEEP`] (byte 32) | consumer | non-zero while the consumer sleeps on this ring (the producer rings) |
//! | [`TAIL`] (byte 64) | consumer | index of the next record to consume (a futex word) |
//! | [`CAPACITY`] (byte 68) | consumer, before the producer exists | number of slots, a power of two |
//!
//! `SLEEP` shares its cache line with `WAITING`, which the producer writes
//! only when the ring is full, and not with `TAIL`, which the consumer
//! writes back every quarter ring and whenever the ring runs empty: the
//! producer reads `SLEEP` after every publish, and on a line the consumer
//! keeps writing that read would miss each time the consumer has caught up.
//!
//! # Slots (from byte [`SLOTS_AT`], 16 bytes each)
//!
//! | word | bits 63–32 | bits 31–0 |
//! |---|---|---|
//! | `rec` | `seq` | `status` |
//! | `who` | `generation` | `pid` |
//!
//! Indices are free-running `u32`s; record `i` lives in slot
//! `i & (capacity - 1)`. The producer publishes it in three stores: `rec`
//! with `seq` = [`writing`]`(i)`, then `who`, then `rec` with `seq` =
//! [`done`]`(i)` and the status (release). The last store is the publish:
//! one 64-bit store makes the record visible whole, so a consumer never
//! sees half of one. A slot whose `seq` says "writing" when its producer is
//! dead is a record it died publishing ([`Consumer::unfinished`]).
//!
//! The consumer, at its index `i`, reads `rec` (acquire, pairing with the
//! publish's release: a consumer that sees `done(i)` sees the `who` stored
//! before it): `done(i)` is a record (then `who`); `writing(i)` or the
//! slot's previous value (`0` before the ring's first lap, else
//! `done(i - capacity)`) is nothing yet; anything else is a slot a hostile
//! producer wrote, reported as [`Malformed::Corrupt`] once: the consumer
//! puts the slot's previous value back and keeps its index, so the slot
//! reads as "nothing yet" until the producer writes it again.
//!
//! # The sleep/wake handshake, per ring
//!
//! The consumer (the master) either *watches* a ring, looking at it on
//! every pass, or *sleeps on* it, looking at it only once its producer has
//! rung the ring's doorbell (an eventfd of the ring's own, in the master's
//! epoll). `SLEEP` says which: the consumer stores it ([`declare_asleep`],
//! [`declare_awake`]) and never reads it back, so whatever a hostile
//! producer writes there changes only whether that producer rings.
//!
//! - **Publish** (the producer): publish the record (the release store
//!   of `rec` above), then a full fence `F` (a `SeqCst` fence, or only a
//!   compiler fence where the consumer issues a `membarrier` instead),
//!   then load `SLEEP` ([`must_ring`], relaxed); non-zero: ring the
//!   doorbell. While `SLEEP` is non-zero every publish rings.
//! - **Going to sleep** on some rings (the consumer, for the rings that
//!   just went idle, however many): store `SLEEP` = 1 in each (relaxed,
//!   [`declare_asleep`]), then *one* barrier `B` for all of them (a
//!   `SeqCst` fence, or `membarrier(GLOBAL_EXPEDITED)`, which runs a full
//!   barrier on every CPU that runs a registered producer), then a last
//!   look at each ring (the acquire load of the slot at its index).
//! - **Looking at a ring slept on**, once its doorbell rang: reset the
//!   doorbell (read the eventfd), then look. The ring stays slept on: the
//!   consumer can take a record from it and leave it so, with no barrier,
//!   which is all an update now and then costs.
//! - **Waking** (once a ring slept on yields a second record in a row):
//!   store `SLEEP` = 0 ([`declare_awake`]) and watch the ring. No barrier:
//!   a producer that still sees 1 rings for nothing.
//!
//! Why no wake-up is lost. `SLEEP` is relaxed on both sides; the fences
//! order it. Take a publish `P`, its fence `F`, and the barrier `B` of the
//! consumer's last way to sleep on the ring (a `membarrier` acts as a
//! `SeqCst` fence on the producer's CPU, between `P` and the load after it
//! or on either side of both, which orders them as `F` does; the loom
//! models take it as one). If `F` comes before `B` in the order of `SeqCst`
//! fences, every load of the consumer after `B` sees `P`'s store: the last
//! look, and any later one, finds the record (and, by the release store
//! and the acquire load of `rec`, its `who`). If `B` comes before `F`, the
//! producer's load of `SLEEP` sees the 1 stored before `B`, or a later
//! store: 1, and it rings; 0 only once the consumer watches the ring again
//! and looks at it on every pass. So a record the last look misses rings,
//! and so does every later one while the ring is slept on: the consumer
//! needs no new barrier to leave a ring slept on after taking records from
//! it. A ring means a look: the reset (a read(2) of the eventfd) and the
//! producer's write(2) are ordered by the eventfd's lock; if the write came
//! first, `P`, before it, happens before the look after the read, which
//! sees the record; if the read came first, the doorbell is readable again
//! and the consumer looks again.
//!
//! A producer rings for every publish while `SLEEP` is non-zero, not once
//! per sleep: once per sleep would need a new sleep, and so a barrier,
//! each time the consumer took a ring's record and left it slept on.
//!
//! The other pairs: the consumer writes `CAPACITY` (release) before the
//! producer exists, which reads it (acquire) when it starts; it writes
//! `TAIL` back (release) after the slots it consumed, and the producer
//! reads it (acquire) before reusing them. Back-pressure is a store-then-load
//! on each side with a `SeqCst` fence on each: the producer sets `WAITING`
//! and looks at `TAIL` again ([`Producer::prepare_to_wait`]); the consumer
//! writes `TAIL` and looks at `WAITING` ([`Consumer::publish`]).

// The loom build holds only this module and its models, which use part of it.
#![cfg_attr(loom, allow(dead_code, reason = "the transport that uses the rest is not built under loom"))]

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use master_proto::{Malformed, Status, StatusUpdate};

/// Header word: non-zero while the producer waits for room.
pub(crate) const WAITING: usize = 0;
/// Header word: non-zero while the consumer sleeps on the ring (the
/// producer rings after publishing); written by the consumer only, on the
/// cache line of [`WAITING`].
pub(crate) const SLEEP: usize = 8;
/// Header word: the consumer's index (next record to consume); producers
/// sleep on it.
pub(crate) const TAIL: usize = 16;
/// Header word: the ring's capacity in slots, written by the consumer
/// before the producer starts.
pub(crate) const CAPACITY: usize = 17;
/// 32-bit words in the header.
pub(crate) const HEADER_WORDS: usize = 32;
/// The byte offset of the slots.
pub(crate) const SLOTS_AT: usize = HEADER_WORDS * 4;
/// 64-bit words per slot: `rec`, `who`.
pub(crate) const SLOT_WORDS: usize = 2;

/// Control word: 1 if the master issues `membarrier` on its way to sleep
/// on rings, so registered children need only a compiler fence after
/// publishing. (Word 0 is unused.)
pub(crate) const FENCE: usize = 1;
/// Control word: 1 if [`LIFE`] is a robust futex that the kernel marks when
/// the master dies; 0 if children must look at their lifeline instead.
pub(crate) const ARMED: usize = 2;
/// Control word: the death word. It holds the TID of the master's watch
/// thread; [`GONE`] is set in it by the kernel when that thread dies (the
/// master process died) or by the master when it closes the channel.
pub(crate) const LIFE: usize = 3;
/// Words in the control area that are used.
pub(crate) const CONTROL_WORDS: usize = 4;

/// The bit set in [`LIFE`] once the master has gone (`FUTEX_OWNER_DIED`).
pub(crate) const GONE: u32 = 0x4000_0000;

/// The bytes a ring of `capacity` slots needs.
#[must_use]
pub(crate) const fn ring_bytes(capacity: u32) -> usize {
    SLOTS_AT + SLOT_WORDS * 8 * capacity as usize
}

/// The `seq` of slot `i & mask` while record `i` is being written.
#[must_use]
pub(crate) const fn writing(i: u32) -> u32 {
    i.wrapping_mul(2).wrapping_add(1)
}

/// The `seq` of slot `i & mask` once record `i` is published.
#[must_use]
pub(crate) const fn done(i: u32) -> u32 {
    i.wrapping_mul(2).wrapping_add(2)
}

/// The `rec` word: `seq` and status.
#[must_use]
pub(crate) const fn rec(seq: u32, status: u32) -> u64 {
    ((seq as u64) << 32) | status as u64
}

/// The `who` word: generation and pid.
#[must_use]
pub(crate) const fn who(generation: u32, pid: u32) -> u64 {
    ((generation as u64) << 32) | pid as u64
}

/// A word's high and low halves.
#[must_use]
#[allow(clippy::cast_possible_truncation, reason = "the low half is meant")]
pub(crate) const fn halves(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// Whether `capacity` is a capacity a ring can have.
#[must_use]
pub(crate) const fn valid_capacity(capacity: u32) -> bool {
    capacity.is_power_of_two() && capacity >= 2 && capacity <= 1 << 20
}

/// One ring's memory: its header and its slots.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ring<'a> {
    /// [`HEADER_WORDS`] words.
    pub(crate) header: &'a [AtomicU32],
    /// [`SLOT_WORDS`] words per slot.
    pub(crate) slots: &'a [AtomicU64],
}

impl Ring<'_> {
    /// How many slots fit.
    pub(crate) fn room(self) -> usize {
        self.slots.len() / SLOT_WORDS
    }
}

/// Ring memory of its own, for the loom models and unit tests.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct RingMem {
    header: Vec<AtomicU32>,
    slots: Vec<AtomicU64>,
}

#[cfg(test)]
impl RingMem {
    /// Zeroed memory for `capacity` slots.
    pub(crate) fn new(capacity: u32) -> RingMem {
        RingMem {
            header: (0..HEADER_WORDS).map(|_| AtomicU32::new(0)).collect(),
            slots: (0..SLOT_WORDS * capacity as usize).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The ring over this memory.
    pub(crate) fn ring(&self) -> Ring<'_> {
        Ring { header: &self.header, slots: &self.slots }
    }
}

/// The first word of slot `i`.
#[inline]
fn slot(i: u32, mask: u32) -> usize {
    SLOT_WORDS * (i & mask) as usize
}

/// The producer's (child's) side of one ring: its own index and a cached
/// copy of the consumer's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Producer {
    mask: u32,
    head: u32,
    /// The consumer's index as last read: the producer re-reads the shared
    /// word only when this says the ring is full.
    tail: u32,
}

impl Producer {
    /// The producer of `ring`, whose capacity the consumer wrote; `None` if
    /// the capacity is not one a ring can have or the slots are too few
    /// for it. It starts at the consumer's index (0 in a new ring).
    pub(crate) fn new(ring: Ring<'_>) -> Option<Producer> {
        let capacity = ring.header[CAPACITY].load(Ordering::Acquire);
        if !valid_capacity(capacity) || ring.room() < capacity as usize {
            return None;
        }
        let tail = ring.header[TAIL].load(Ordering::Acquire);
        Some(Producer { mask: capacity - 1, head: tail, tail })
    }

    /// Whether a record fits now (re-reading the consumer's index only if
    /// the cached one says the ring is full).
    #[inline]
    pub(crate) fn has_room(&mut self, ring: Ring<'_>) -> bool {
        if self.head.wrapping_sub(self.tail) <= self.mask {
            return true;
        }
        self.tail = ring.header[TAIL].load(Ordering::Acquire);
        self.head.wrapping_sub(self.tail) <= self.mask
    }

    /// Publishes `update`; the caller has checked [`has_room`](Self::has_room).
    #[inline]
    pub(crate) fn push(&mut self, ring: Ring<'_>, update: StatusUpdate) {
        self.write_steps(ring, update, usize::MAX);
    }

    /// Performs the first `steps` stores of publishing `update` (three for
    /// a whole publish): `rec` = writing, `who`, `rec` = done and status. A
    /// producer that dies after any of them leaves exactly what stopping
    /// here leaves.
    #[inline]
    pub(crate) fn write_steps(&mut self, ring: Ring<'_>, update: StatusUpdate, steps: usize) {
        let i = self.head;
        let s = slot(i, self.mask);
        if steps == 0 {
            return;
        }
        ring.slots[s].store(rec(writing(i), 0), Ordering::Relaxed);
        if steps == 1 {
            return;
        }
        ring.slots[s + 1].store(who(update.generation, update.pid.cast_unsigned()), Ordering::Relaxed);
        if steps == 2 {
            return;
        }
        ring.slots[s].store(rec(done(i), update.status.0.cast_unsigned()), Ordering::Release);
        self.head = i.wrapping_add(1);
    }

    /// Before sleeping on a full ring: sets the `waiting` flag, fences, and
    /// looks at the consumer's index again. Returns whether there is room
    /// now; if not, sleep on [`TAIL`] expecting
    /// [`seen_tail`](Self::seen_tail) (the consumer, after writing the
    /// index back, fences and looks at the flag, so either this finds room
    /// or the consumer wakes the sleeper). Clear the flag with
    /// [`set_waiting`](Self::set_waiting) once done waiting.
    pub(crate) fn prepare_to_wait(&mut self, ring: Ring<'_>) -> bool {
        Self::set_waiting(ring, true);
        fence(Ordering::SeqCst);
        self.has_room(ring)
    }

    /// Sets or clears the `waiting` flag.
    pub(crate) fn set_waiting(ring: Ring<'_>, waiting: bool) {
        ring.header[WAITING].store(u32::from(waiting), Ordering::Relaxed);
    }

    /// The consumer's index as last read.
    pub(crate) fn seen_tail(&self) -> u32 {
        self.tail
    }
}

/// What a consumer took out of a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Item {
    /// A whole record.
    Update(StatusUpdate),
    /// A slot that held no record for its index; it was skipped.
    Malformed(Malformed),
}

/// The consumer's (master's) side of one ring. Its capacity and index are
/// its own: nothing the producer writes can move where it reads.
#[derive(Debug)]
pub(crate) struct Consumer {
    mask: u32,
    tail: u32,
    /// Whether the index has been through the whole ring once (from then
    /// on an empty slot holds the previous lap's record, not zero).
    lapped: bool,
    /// Records consumed since the index was last written back.
    unpublished: u32,
    /// Set when writing the index back found the producer waiting.
    wake_due: bool,
}

impl Consumer {
    /// A consumer for a fresh ring of `capacity` slots (a power of two).
    pub(crate) fn new(capacity: u32) -> Consumer {
        debug_assert!(valid_capacity(capacity));
        Consumer { mask: capacity - 1, tail: 0, lapped: false, unpublished: 0, wake_due: false }
    }

    /// Prepares memory known to read as zeros (a new memfd, or
    /// [`RingMem::new`]): writes the capacity only, so that the slots' pages
    /// stay untouched, and not resident, until records reach them. Call
    /// before the producer can see the memory.
    pub(crate) fn init_zeroed(&self, ring: Ring<'_>) {
        ring.header[CAPACITY].store(self.mask + 1, Ordering::Release);
    }

    /// The ring's capacity.
    pub(crate) fn capacity(&self) -> u32 {
        self.mask + 1
    }

    /// The `seq` slot `tail` holds while record `tail` is not published.
    fn previous(&self) -> u32 {
        if self.lapped { done(self.tail.wrapping_sub(self.mask + 1)) } else { 0 }
    }

    /// The next item, or `None` when the ring is empty. Never blocks, never
    /// panics, whatever the producer wrote.
    #[inline]
    pub(crate) fn next(&mut self, ring: Ring<'_>) -> Option<Item> {
        let i = self.tail;
        let s = slot(i, self.mask);
        // Slot words past the end (a ring shorter than its capacity, which
        // the master never makes) read as nothing.
        let record = ring.slots.get(s)?.load(Ordering::Acquire);
        let (seq, status) = halves(record);
        let item = if seq == done(i) {
            let (generation, pid) = halves(ring.slots.get(s + 1)?.load(Ordering::Relaxed));
            Item::Update(StatusUpdate { pid: pid.cast_signed(), generation, status: Status(status.cast_signed()) })
        } else if seq == writing(i) || seq == self.previous() {
            return None;
        } else {
            // Written by a hostile producer: reported once, and the slot
            // gets back what it held before the record was due, so that it
            // reads as "nothing yet" until the producer writes it again (a
            // store of the producer's since the read is kept). The index
            // stays: whatever the producer writes, the consumer never gets
            // ahead of where it publishes.
            let previous = rec(self.previous(), 0);
            let _ = ring.slots[s].compare_exchange(record, previous, Ordering::Relaxed, Ordering::Relaxed);
            return Some(Item::Malformed(Malformed::Corrupt("slot not written for its index")));
        };
        self.tail = i.wrapping_add(1);
        if self.tail == self.mask + 1 {
            self.lapped = true;
        }
        self.unpublished += 1;
        if self.unpublished > self.mask / 4 {
            self.publish(ring);
        }
        Some(item)
    }

    /// Writes the consumer's index back for the producer, and notes whether
    /// the producer waits for room ([`take_wake`](Self::take_wake)).
    pub(crate) fn publish(&mut self, ring: Ring<'_>) {
        ring.header[TAIL].store(self.tail, Ordering::Release);
        self.unpublished = 0;
        // Store the index, then look at the producer's flag; the producer
        // sets its flag, then looks at the index (store-load on both sides).
        fence(Ordering::SeqCst);
        if ring.header[WAITING].load(Ordering::Relaxed) != 0 {
            self.wake_due = true;
        }
    }

    /// Writes the index back if anything was consumed since it was last
    /// written.
    pub(crate) fn flush(&mut self, ring: Ring<'_>) {
        if self.unpublished > 0 {
            self.publish(ring);
        }
    }

    /// Whether the producer was found waiting for room since the last call
    /// (wake it on [`TAIL`]).
    pub(crate) fn take_wake(&mut self) -> bool {
        std::mem::take(&mut self.wake_due)
    }

    /// After the ring is drained: whether the producer left a record half
    /// published (it stopped between its first and last store), which a
    /// dead producer will never finish.
    pub(crate) fn unfinished(&self, ring: Ring<'_>) -> bool {
        let s = slot(self.tail, self.mask);
        ring.slots.get(s).is_some_and(|w| halves(w.load(Ordering::Acquire)).0 == writing(self.tail))
    }
}

/// The consumer goes to sleep on `ring`, step one: `SLEEP` = 1. Then one
/// full barrier (a `membarrier`, or a `SeqCst` fence here and in the
/// producer) for every ring going to sleep together, then a last look at
/// each; see the module docs.
pub(crate) fn declare_asleep(ring: Ring<'_>) {
    ring.header[SLEEP].store(1, Ordering::Relaxed);
}

/// The consumer watches `ring` again: `SLEEP` = 0; its producer stops
/// ringing.
pub(crate) fn declare_awake(ring: Ring<'_>) {
    ring.header[SLEEP].store(0, Ordering::Relaxed);
}

/// The producer's half: after publishing and its fence, whether it must
/// ring the doorbell (the consumer sleeps on its ring).
#[inline]
pub(crate) fn must_ring(ring: Ring<'_>) -> bool {
    ring.header[SLEEP].load(Ordering::Relaxed) != 0
}

/// Whether the death word says the master has gone.
#[inline]
pub(crate) fn master_gone(control: &[AtomicU32]) -> bool {
    control[LIFE].load(Ordering::Acquire) & GONE != 0
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn mem(capacity: u32) -> (RingMem, Consumer) {
        let mem = RingMem::new(capacity);
        let consumer = Consumer::new(capacity);
        consumer.init_zeroed(mem.ring());
        (mem, consumer)
    }

    fn update(n: i32) -> StatusUpdate {
        StatusUpdate { pid: 100, generation: 7, status: Status(n) }
    }

    #[test]
    fn round_trip_wraps_many_laps() {
        let (mem, mut c) = mem(8);
        let ring = mem.ring();
        let mut p = Producer::new(ring).expect("a valid ring");
        for n in 0..1000 {
            for k in 0..3 {
                assert!(p.has_room(ring));
                p.push(ring, update(n * 3 + k));
            }
            for k in 0..3 {
                assert_eq!(c.next(ring), Some(Item::Update(update(n * 3 + k))));
            }
            assert_eq!(c.next(ring), None);
            c.flush(ring);
        }
    }

    #[test]
    fn indices_wrap_around_u32() {
        // Both sides start near the end of the index space, as after 2^32
        // records: the slots hold the previous lap's records.
        let (mem, mut c) = mem(4);
        let ring = mem.ring();
        let start = u32::MAX - 5;
        for k in 0..4u32 {
            let i = start.wrapping_sub(4).wrapping_add(k);
            ring.slots[slot(i, 3)].store(rec(done(i), 0), Ordering::Relaxed);
        }
        c.tail = start;
        c.lapped = true;
        ring.header[TAIL].store(start, Ordering::Relaxed);
        let mut p = Producer::new(ring).expect("a valid ring");
        assert_eq!(c.next(ring), None, "the previous lap's records are not records");
        for n in 0..12 {
            assert!(p.has_room(ring));
            p.push(ring, update(n));
            assert_eq!(c.next(ring), Some(Item::Update(update(n))), "record {n} across the wrap");
            assert_eq!(c.next(ring), None);
            c.flush(ring);
        }
    }

    #[test]
    fn full_ring_has_no_room_until_consumed() {
        let (mem, mut c) = mem(16);
        let ring = mem.ring();
        let mut p = Producer::new(ring).expect("a valid ring");
        for n in 0..16 {
            assert!(p.has_room(ring));
            p.push(ring, update(n));
        }
        assert!(!p.has_room(ring));
        assert_eq!(c.next(ring), Some(Item::Update(update(0))));
        assert!(!p.has_room(ring), "the index is written back every quarter ring, not after each record");
        c.flush(ring);
        assert!(p.has_room(ring));
        for n in 1..5 {
            assert_eq!(c.next(ring), Some(Item::Update(update(n))));
        }
        assert_eq!(ring.header[TAIL].load(Ordering::Relaxed), 5, "written back after a quarter ring");
    }

    #[test]
    fn waiting_producer_is_noticed() {
        let (mem, mut c) = mem(4);
        Producer::set_waiting(mem.ring(), true);
        c.publish(mem.ring());
        assert!(c.take_wake());
        assert!(!c.take_wake());
    }

    #[test]
    fn half_written_records_are_never_delivered() {
        for steps in 0..3 {
            let (mem, mut c) = mem(4);
            let ring = mem.ring();
            let mut p = Producer::new(ring).expect("a valid ring");
            p.write_steps(ring, update(1), steps);
            assert_eq!(c.next(ring), None, "nothing published after {steps} steps");
            assert_eq!(c.unfinished(ring), steps >= 1, "after {steps} steps");
        }
        let (mem, mut c) = mem(4);
        let mut p = Producer::new(mem.ring()).expect("a valid ring");
        p.write_steps(mem.ring(), update(1), 3);
        assert_eq!(c.next(mem.ring()), Some(Item::Update(update(1))), "three stores publish");
    }

    #[test]
    fn foreign_slot_values_are_reported_once() {
        let (mem, mut c) = mem(4);
        let ring = mem.ring();
        let mut p = Producer::new(ring).expect("a valid ring");
        let corrupt = Some(Item::Malformed(Malformed::Corrupt("slot not written for its index")));
        // Record 0's slot claims record 4 (a lap ahead): reported once,
        // then the slot reads as empty again.
        ring.slots[0].store(rec(done(4), 1), Ordering::Relaxed);
        assert_eq!(c.next(ring), corrupt);
        assert_eq!(c.next(ring), None);
        assert_eq!(ring.slots[0].load(Ordering::Relaxed), 0, "never written, as before");
        p.push(ring, update(1));
        assert_eq!(c.next(ring), Some(Item::Update(update(1))));
        // After a lap: the slot gets the previous lap's record back.
        for n in 2..6 {
            p.push(ring, update(n));
            assert_eq!(c.next(ring), Some(Item::Update(update(n))));
        }
        ring.slots[2].store(u64::MAX, Ordering::Relaxed);
        assert_eq!(c.next(ring), corrupt);
        assert_eq!(c.next(ring), None);
        assert_eq!(ring.slots[2].load(Ordering::Relaxed) >> 32, u64::from(done(1)));
        p.push(ring, update(6));
        assert_eq!(c.next(ring), Some(Item::Update(update(6))));
        assert_eq!(c.next(ring), None);
    }

    #[test]
    fn producer_refuses_bad_capacity() {
        let mem = RingMem::new(4);
        mem.ring().header[CAPACITY].store(3, Ordering::Relaxed);
        assert!(Producer::new(mem.ring()).is_none());
        mem.ring().header[CAPACITY].store(8, Ordering::Relaxed);
        assert!(Producer::new(mem.ring()).is_none(), "too short for 8 slots");
    }
}
