//! A hook for the fuzz targets (feature `fuzzing`, hidden from the docs):
//! the ring's consumer and producer over plain memory. Not part of the API;
//! nothing outside `fuzz/` should use it.
//!
//! The ring (the private module `ring`) is safe code over atomics, and in
//! the transport its memory is a shared mapping. Here the memory is two
//! vectors of atomics the caller fills as it likes, standing for a hostile
//! child's ring, or for an honest one; [`Consumer`] and [`Producer`] are
//! thin wrappers over the transport's own, so that what is fuzzed is the
//! code the master runs.

use master_proto::{Malformed, StatusUpdate};

use crate::ring::{self, AtomicU32, AtomicU64, Item, Ordering, Ring};

/// 32-bit words in a ring's header.
pub const HEADER_WORDS: usize = ring::HEADER_WORDS;
/// 64-bit words per slot: `rec`, then `who`.
pub const SLOT_WORDS: usize = ring::SLOT_WORDS;
/// Header word: non-zero while the producer waits for room.
pub const WAITING: usize = ring::WAITING;
/// Header word: the consumer's index, as it writes it back.
pub const TAIL: usize = ring::TAIL;
/// Header word: the capacity, written by the consumer before the producer
/// starts (and never read by it).
pub const CAPACITY: usize = ring::CAPACITY;

/// The `seq` of record `i`'s slot while it is being written.
#[must_use]
pub const fn writing(i: u32) -> u32 {
    ring::writing(i)
}

/// The `seq` of record `i`'s slot once it is published.
#[must_use]
pub const fn done(i: u32) -> u32 {
    ring::done(i)
}

/// A slot's `rec` word: `seq` (high half) and status (low half).
#[must_use]
pub const fn rec(seq: u32, status: u32) -> u64 {
    ring::rec(seq, status)
}

/// A slot's `who` word: generation (high half) and pid (low half).
#[must_use]
pub const fn who(generation: u32, pid: u32) -> u64 {
    ring::who(generation, pid)
}

/// A word's high and low halves.
#[must_use]
pub const fn halves(word: u64) -> (u32, u32) {
    ring::halves(word)
}

/// Ring memory: [`HEADER_WORDS`] 32-bit header words, then any number of
/// 64-bit slot words ([`SLOT_WORDS`] per slot), all zero at first.
#[derive(Debug)]
pub struct Mem {
    header: Vec<AtomicU32>,
    slots: Vec<AtomicU64>,
}

impl Mem {
    /// Zeroed memory with `slot_words` slot words: `SLOT_WORDS * capacity`
    /// for a ring of `capacity` slots as the transport makes it, or fewer
    /// (a ring shorter than its capacity, which the transport never makes
    /// but the consumer must survive).
    #[must_use]
    pub fn new(slot_words: usize) -> Mem {
        Mem {
            header: (0..HEADER_WORDS).map(|_| AtomicU32::new(0)).collect(),
            slots: (0..slot_words).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The number of slot words.
    #[must_use]
    pub fn slot_words(&self) -> usize {
        self.slots.len()
    }

    /// Header word `word`, if there is one.
    #[must_use]
    pub fn header(&self, word: usize) -> Option<u32> {
        self.header.get(word).map(|w| w.load(Ordering::Acquire))
    }

    /// Slot word `word`, if there is one.
    #[must_use]
    pub fn slot(&self, word: usize) -> Option<u64> {
        self.slots.get(word).map(|w| w.load(Ordering::Acquire))
    }

    /// Stores `value` into header word `word` (a producer's store, or a
    /// hostile one); out of range is ignored.
    pub fn store_header(&self, word: usize, value: u32) {
        if let Some(w) = self.header.get(word) {
            w.store(value, Ordering::Release);
        }
    }

    /// Stores `value` into slot word `word`; out of range is ignored.
    pub fn store_slot(&self, word: usize, value: u64) {
        if let Some(w) = self.slots.get(word) {
            w.store(value, Ordering::Release);
        }
    }

    fn ring(&self) -> Ring<'_> {
        Ring { header: &self.header, slots: &self.slots }
    }
}

/// Whether a ring can have `capacity` slots (a power of two, 2 to 2^20).
#[must_use]
pub fn valid_capacity(capacity: u32) -> bool {
    ring::valid_capacity(capacity)
}

/// The master's side of one ring (the crate's own `ring::Consumer`).
#[derive(Debug)]
pub struct Consumer(ring::Consumer);

impl Consumer {
    /// A consumer of a fresh ring of `capacity` slots; `None` unless
    /// [`valid_capacity`].
    #[must_use]
    pub fn new(capacity: u32) -> Option<Consumer> {
        valid_capacity(capacity).then(|| Consumer(ring::Consumer::new(capacity)))
    }

    /// Writes the capacity into zeroed memory, before any producer sees it.
    pub fn init_zeroed(&self, mem: &Mem) {
        self.0.init_zeroed(mem.ring());
    }

    /// The next item: `Some(Ok(update))`, `Some(Err(malformed))` for a slot
    /// not written for its index, `None` when there is nothing (yet).
    pub fn next(&mut self, mem: &Mem) -> Option<Result<StatusUpdate, Malformed>> {
        self.0.next(mem.ring()).map(|item| match item {
            Item::Update(update) => Ok(update),
            Item::Malformed(malformed) => Err(malformed),
        })
    }

    /// Writes the index back if anything was consumed since it last was.
    pub fn flush(&mut self, mem: &Mem) {
        self.0.flush(mem.ring());
    }

    /// Whether a write back found the producer waiting since the last call.
    pub fn take_wake(&mut self) -> bool {
        self.0.take_wake()
    }

    /// Whether the slot at the consumer's index holds a record being
    /// written.
    #[must_use]
    pub fn unfinished(&self, mem: &Mem) -> bool {
        self.0.unfinished(mem.ring())
    }

    /// The ring's capacity.
    #[must_use]
    pub fn capacity(&self) -> u32 {
        self.0.capacity()
    }
}

/// An honest child's side of one ring (the crate's own `ring::Producer`).
#[derive(Clone, Copy, Debug)]
pub struct Producer(ring::Producer);

impl Producer {
    /// The producer of a ring whose consumer wrote a valid capacity; `None`
    /// otherwise.
    #[must_use]
    pub fn new(mem: &Mem) -> Option<Producer> {
        ring::Producer::new(mem.ring()).map(Producer)
    }

    /// Whether a record fits now.
    pub fn has_room(&mut self, mem: &Mem) -> bool {
        self.0.has_room(mem.ring())
    }

    /// Publishes `update`; the caller checked [`has_room`](Self::has_room).
    pub fn push(&mut self, mem: &Mem, update: StatusUpdate) {
        self.0.push(mem.ring(), update);
    }
}
