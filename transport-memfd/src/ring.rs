//! The single-producer status ring and the sleep/wake handshake, as safe
//! code over atomics (swapped for loom's under `cfg(loom)`).
//!
//! Everything here works on a slice of 32-bit atomic words: in the transport
//! that slice is a view of a shared mapping (see [`crate::sys`]), in the loom
//! models it is ordinary memory. No function here trusts what it reads from
//! a producer's words: every index is bounded before use, and every offset
//! is either a constant or an index masked by the consumer's own capacity,
//! so a hostile producer can change what is reported, never where the
//! consumer reads.
//!
//! # Ring words (indices into the ring's word slice)
//!
//! | word | written by | meaning |
//! |---|---|---|
//! | [`HEAD`] (byte 0) | producer | index of the next record to publish |
//! | [`WAITING`] (byte 4) | producer | non-zero while the producer sleeps on a full ring |
//! | [`TAIL`] (byte 64) | consumer | index of the next record to consume (a futex word) |
//! | [`CAPACITY`] (byte 68) | consumer, before the producer exists | number of slots, a power of two |
//! | [`SLOTS`] (byte 128) + 4 × slot | producer | slot: `seq`, `pid`, `gen`, `status` |
//!
//! Indices are free-running `u32`s; a record with index `i` lives in slot
//! `i & (capacity - 1)`. A slot's `seq` word is `2i + 1` while record `i` is
//! being written and `2i + 2` once it is whole ([`writing`], [`done`]), so a
//! consumer reading record `i` can tell a whole record from a half-written or
//! stale one.

// The loom build holds only this module and its models, which use part of it.
#![cfg_attr(loom, allow(dead_code, reason = "the transport that uses the rest is not built under loom"))]

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, Ordering, fence};

use master_proto::{Malformed, Status, StatusUpdate};

/// Word: the producer's index (next record to publish).
pub(crate) const HEAD: usize = 0;
/// Word: non-zero while the producer waits for room.
pub(crate) const WAITING: usize = 1;
/// Word: the consumer's index (next record to consume); producers sleep on it.
pub(crate) const TAIL: usize = 16;
/// Word: the ring's capacity in slots, written by the consumer before the
/// producer starts.
pub(crate) const CAPACITY: usize = 17;
/// Word: where the slots start.
pub(crate) const SLOTS: usize = 32;
/// Words per slot: `seq`, `pid`, `gen`, `status`.
pub(crate) const SLOT_WORDS: usize = 4;

/// Control word: non-zero while the master may be asleep (children ring).
pub(crate) const ASLEEP: usize = 0;
/// Control word: 1 if the master issues `membarrier` on its way to sleep, so
/// registered children need only a compiler fence after publishing.
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

/// The words a ring of `capacity` slots needs.
#[must_use]
pub(crate) const fn ring_words(capacity: u32) -> usize {
    SLOTS + SLOT_WORDS * capacity as usize
}

/// The `seq` value of slot `i & mask` while record `i` is being written.
#[must_use]
pub(crate) const fn writing(i: u32) -> u32 {
    i.wrapping_mul(2).wrapping_add(1)
}

/// The `seq` value of slot `i & mask` once record `i` is whole.
#[must_use]
pub(crate) const fn done(i: u32) -> u32 {
    i.wrapping_mul(2).wrapping_add(2)
}

/// Whether `capacity` is a capacity a ring can have.
#[must_use]
pub(crate) const fn valid_capacity(capacity: u32) -> bool {
    capacity.is_power_of_two() && capacity >= 2 && capacity <= 1 << 20
}

/// The first word of slot `i`.
fn slot(i: u32, mask: u32) -> usize {
    SLOTS + SLOT_WORDS * (i & mask) as usize
}

/// The producer's (child's) side of one ring: its own index and a cached
/// copy of the consumer's. The ring's words are passed to every call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Producer {
    mask: u32,
    head: u32,
    /// The consumer's index as last read: the producer re-reads the shared
    /// word only when this says the ring is full.
    tail: u32,
}

impl Producer {
    /// The producer of the ring in `words`, whose capacity the consumer
    /// wrote; `None` if the capacity is not one a ring can have or `words`
    /// is too short for it.
    pub(crate) fn new(words: &[AtomicU32]) -> Option<Producer> {
        let capacity = words.get(CAPACITY)?.load(Ordering::Acquire);
        if !valid_capacity(capacity) || words.len() < ring_words(capacity) {
            return None;
        }
        let head = words[HEAD].load(Ordering::Relaxed);
        let tail = words[TAIL].load(Ordering::Acquire);
        Some(Producer { mask: capacity - 1, head, tail })
    }

    /// Whether a record fits now (re-reading the consumer's index only if
    /// the cached one says the ring is full).
    #[inline]
    pub(crate) fn has_room(&mut self, words: &[AtomicU32]) -> bool {
        if self.head.wrapping_sub(self.tail) <= self.mask {
            return true;
        }
        self.tail = words[TAIL].load(Ordering::Acquire);
        self.head.wrapping_sub(self.tail) <= self.mask
    }

    /// Publishes `update`; the caller has checked [`has_room`](Self::has_room).
    #[inline]
    pub(crate) fn push(&mut self, words: &[AtomicU32], update: StatusUpdate) {
        self.write_steps(words, update, usize::MAX);
    }

    /// Performs the first `steps` stores of publishing `update` (six for a
    /// whole publish): `seq` = writing, `pid`, `gen`, `status`, `seq` =
    /// done, then the head. A producer that dies after any of them leaves
    /// exactly what stopping here leaves.
    #[inline]
    pub(crate) fn write_steps(&mut self, w: &[AtomicU32], update: StatusUpdate, steps: usize) {
        let i = self.head;
        let s = slot(i, self.mask);
        if steps == 0 {
            return;
        }
        w[s].store(writing(i), Ordering::Relaxed);
        // Orders the writing mark before the payload for a consumer that
        // reads the payload (the seqlock's write side).
        fence(Ordering::Release);
        if steps == 1 {
            return;
        }
        w[s + 1].store(update.pid.cast_unsigned(), Ordering::Relaxed);
        if steps == 2 {
            return;
        }
        w[s + 2].store(update.generation, Ordering::Relaxed);
        if steps == 3 {
            return;
        }
        w[s + 3].store(update.status.0.cast_unsigned(), Ordering::Relaxed);
        if steps == 4 {
            return;
        }
        w[s].store(done(i), Ordering::Release);
        if steps == 5 {
            return;
        }
        w[HEAD].store(i.wrapping_add(1), Ordering::Release);
        self.head = i.wrapping_add(1);
    }

    /// Before sleeping on a full ring: sets the `waiting` flag, fences, and
    /// looks at the consumer's index again. Returns whether there is room
    /// now; if not, sleep on [`TAIL`] expecting
    /// [`seen_tail`](Self::seen_tail) (the consumer, after writing the
    /// index back, fences and looks at the flag, so either this finds room
    /// or the consumer wakes the sleeper). Clear the flag with
    /// [`set_waiting`](Self::set_waiting) once done waiting.
    pub(crate) fn prepare_to_wait(&mut self, words: &[AtomicU32]) -> bool {
        Self::set_waiting(words, true);
        fence(Ordering::SeqCst);
        self.has_room(words)
    }

    /// Sets or clears the `waiting` flag.
    pub(crate) fn set_waiting(words: &[AtomicU32], waiting: bool) {
        words[WAITING].store(u32::from(waiting), Ordering::Relaxed);
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
    /// A record or index that was not a whole record; it was skipped.
    Malformed(Malformed),
}

/// The consumer's (master's) side of one ring. Its capacity and index are
/// its own: nothing the producer writes can move where it reads.
#[derive(Debug)]
pub(crate) struct Consumer {
    mask: u32,
    tail: u32,
    /// The producer's index as last read and found plausible.
    head: u32,
    /// Records consumed since the index was last written back.
    unpublished: u32,
    /// Set when writing the index back found the producer waiting.
    wake_due: bool,
}

impl Consumer {
    /// A consumer for a fresh ring of `capacity` slots (a power of two).
    pub(crate) fn new(capacity: u32) -> Consumer {
        debug_assert!(valid_capacity(capacity));
        Consumer { mask: capacity - 1, tail: 0, head: 0, unpublished: 0, wake_due: false }
    }

    /// Prepares ring memory holding anything for this consumer: zeroes it
    /// all and writes the capacity. Call before the producer can see the
    /// memory. (The master's new memfds read as zeros already and take
    /// [`init_zeroed`](Self::init_zeroed).)
    #[cfg(test)]
    pub(crate) fn init(&self, words: &[AtomicU32]) {
        for w in words {
            w.store(0, Ordering::Relaxed);
        }
        words[CAPACITY].store(self.mask + 1, Ordering::Release);
    }

    /// Prepares ring memory known to read as zeros (a new memfd): writes
    /// the header only, so that the slots' pages stay untouched, and not
    /// resident, until records reach them.
    pub(crate) fn init_zeroed(&self, words: &[AtomicU32]) {
        for w in &words[..SLOTS] {
            w.store(0, Ordering::Relaxed);
        }
        words[CAPACITY].store(self.mask + 1, Ordering::Release);
    }

    /// The ring's capacity.
    pub(crate) fn capacity(&self) -> u32 {
        self.mask + 1
    }

    /// The next item, or `None` when the ring is empty. Never blocks, never
    /// panics, whatever the producer wrote.
    pub(crate) fn next(&mut self, words: &[AtomicU32]) -> Option<Item> {
        if self.tail == self.head {
            let head = words[HEAD].load(Ordering::Acquire);
            if head == self.tail {
                return None;
            }
            if head.wrapping_sub(self.tail) > self.mask + 1 {
                // More than a ring's worth ahead, or behind: impossible for
                // an honest producer. Resynchronise to its index.
                self.tail = head;
                self.head = head;
                self.publish(words);
                return Some(Item::Malformed(Malformed::Corrupt("producer index out of range")));
            }
            self.head = head;
        }
        let i = self.tail;
        let s = slot(i, self.mask);
        let seq1 = words[s].load(Ordering::Acquire);
        let pid = words[s + 1].load(Ordering::Acquire);
        let generation = words[s + 2].load(Ordering::Acquire);
        let status = words[s + 3].load(Ordering::Acquire);
        let seq2 = words[s].load(Ordering::Acquire);
        self.tail = i.wrapping_add(1);
        self.unpublished += 1;
        if self.unpublished > self.mask / 4 {
            self.publish(words);
        }
        let item = if seq1 == done(i) && seq2 == done(i) {
            Item::Update(StatusUpdate { pid: pid.cast_signed(), generation, status: Status(status.cast_signed()) })
        } else if seq1 == writing(i) || seq2 == writing(i) || seq1 == done(i) {
            // Being written, or rewritten while read: a record that was not
            // whole when the master looked.
            Item::Malformed(Malformed::Torn)
        } else {
            Item::Malformed(Malformed::Corrupt("slot not written for its index"))
        };
        Some(item)
    }

    /// Writes the consumer's index back for the producer (when it has
    /// consumed since the last time), and notes whether the producer waits
    /// for room ([`take_wake`](Self::take_wake)).
    pub(crate) fn publish(&mut self, words: &[AtomicU32]) {
        words[TAIL].store(self.tail, Ordering::Release);
        self.unpublished = 0;
        // Store the index, then look at the producer's flag; the producer
        // sets its flag, then looks at the index (store-load on both sides).
        fence(Ordering::SeqCst);
        if words[WAITING].load(Ordering::Relaxed) != 0 {
            self.wake_due = true;
        }
    }

    /// Writes the index back if anything was consumed since it was last
    /// written.
    pub(crate) fn flush(&mut self, words: &[AtomicU32]) {
        if self.unpublished > 0 {
            self.publish(words);
        }
    }

    /// Whether the producer was found waiting for room since the last call
    /// (wake it on [`TAIL`]).
    pub(crate) fn take_wake(&mut self) -> bool {
        std::mem::take(&mut self.wake_due)
    }

    /// After the ring is drained: whether the producer left a record half
    /// published (it stopped between marking the slot and publishing the
    /// head), which a dead producer will never finish.
    pub(crate) fn unfinished(&self, words: &[AtomicU32]) -> bool {
        if words[HEAD].load(Ordering::Acquire) != self.tail {
            return false;
        }
        let seq = words[slot(self.tail, self.mask)].load(Ordering::Acquire);
        seq == writing(self.tail) || seq == done(self.tail)
    }
}

/// The master's half of the sleep/wake handshake, step one: declare itself
/// asleep. Then `barrier()` (a `membarrier` or a `SeqCst` fence), then look
/// at every ring again before waiting on the doorbell.
pub(crate) fn declare_asleep(control: &[AtomicU32], barrier: impl FnOnce()) {
    control[ASLEEP].store(1, Ordering::Relaxed);
    barrier();
}

/// The master is awake: children stop ringing.
pub(crate) fn declare_awake(control: &[AtomicU32]) {
    control[ASLEEP].store(0, Ordering::Relaxed);
}

/// The child's half: after publishing and its fence, whether it must ring
/// the doorbell.
pub(crate) fn must_ring(control: &[AtomicU32]) -> bool {
    control[ASLEEP].load(Ordering::Relaxed) != 0
}

/// Whether the death word says the master has gone.
pub(crate) fn master_gone(control: &[AtomicU32]) -> bool {
    control[LIFE].load(Ordering::Acquire) & GONE != 0
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn mem(capacity: u32) -> Vec<AtomicU32> {
        (0..ring_words(capacity)).map(|_| AtomicU32::new(0)).collect()
    }

    fn update(n: i32) -> StatusUpdate {
        StatusUpdate { pid: 100, generation: 7, status: Status(n) }
    }

    #[test]
    fn round_trip_wraps_many_laps() {
        let words = mem(8);
        let mut c = Consumer::new(8);
        c.init(&words);
        let mut p = Producer::new(&words).expect("a valid ring");
        for n in 0..1000 {
            for k in 0..3 {
                assert!(p.has_room(&words));
                p.push(&words, update(n * 3 + k));
            }
            for k in 0..3 {
                assert_eq!(c.next(&words), Some(Item::Update(update(n * 3 + k))));
            }
            assert_eq!(c.next(&words), None);
            c.flush(&words);
        }
    }

    #[test]
    fn full_ring_has_no_room_until_consumed() {
        let words = mem(16);
        let mut c = Consumer::new(16);
        c.init(&words);
        let mut p = Producer::new(&words).expect("a valid ring");
        for n in 0..16 {
            assert!(p.has_room(&words));
            p.push(&words, update(n));
        }
        assert!(!p.has_room(&words));
        assert_eq!(c.next(&words), Some(Item::Update(update(0))));
        assert!(!p.has_room(&words), "the index is written back every quarter ring, not after each record");
        c.flush(&words);
        assert!(p.has_room(&words));
        for n in 1..5 {
            assert_eq!(c.next(&words), Some(Item::Update(update(n))));
        }
        assert_eq!(words[TAIL].load(Ordering::Relaxed), 5, "written back after a quarter ring");
    }

    #[test]
    fn waiting_producer_is_noticed() {
        let words = mem(4);
        let mut c = Consumer::new(4);
        c.init(&words);
        Producer::set_waiting(&words, true);
        c.publish(&words);
        assert!(c.take_wake());
        assert!(!c.take_wake());
    }

    #[test]
    fn half_written_records_are_torn_or_unfinished() {
        for steps in 0..6 {
            let words = mem(4);
            let mut c = Consumer::new(4);
            c.init(&words);
            let mut p = Producer::new(&words).expect("a valid ring");
            p.write_steps(&words, update(1), steps);
            assert_eq!(c.next(&words), None, "nothing published after {steps} steps");
            assert_eq!(c.unfinished(&words), steps >= 1, "after {steps} steps");
            // A hostile producer publishes the head anyway.
            words[HEAD].store(1, Ordering::Release);
            let want = if steps >= 1 {
                if steps >= 5 { Item::Update(update(1)) } else { Item::Malformed(Malformed::Torn) }
            } else {
                Item::Malformed(Malformed::Corrupt("slot not written for its index"))
            };
            assert_eq!(c.next(&words), Some(want), "after {steps} steps");
        }
    }

    #[test]
    fn impossible_head_resynchronises() {
        let words = mem(4);
        let mut c = Consumer::new(4);
        c.init(&words);
        words[HEAD].store(5, Ordering::Release);
        assert_eq!(c.next(&words), Some(Item::Malformed(Malformed::Corrupt("producer index out of range"))));
        assert_eq!(c.next(&words), None);
        assert_eq!(words[TAIL].load(Ordering::Relaxed), 5, "the index is written back at the producer's");
        let mut p = Producer::new(&words).expect("a valid ring");
        p.push(&words, update(9));
        assert_eq!(c.next(&words), Some(Item::Update(update(9))));
    }

    #[test]
    fn producer_refuses_bad_capacity() {
        let words = mem(4);
        words[CAPACITY].store(3, Ordering::Relaxed);
        assert!(Producer::new(&words).is_none());
        words[CAPACITY].store(8, Ordering::Relaxed);
        assert!(Producer::new(&words).is_none(), "too short for 8 slots");
    }
}
