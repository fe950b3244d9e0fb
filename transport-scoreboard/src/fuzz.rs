//! A hook for the fuzz targets (feature `fuzzing`, hidden from the docs):
//! a slot's reader and writer, and the master's sleep declarations, over
//! plain memory. Not part of the API; nothing outside `fuzz/` should use it.
//!
//! The slot protocol (the private module `slot`) is safe code over atomics,
//! and in the transport a slot is the child's sealed memfd, mapped shared.
//! Here it is a vector of atomics the caller fills as it likes, standing for
//! a hostile child's slot or an honest one; [`Reader`], [`Writer`],
//! [`declare_asleep`] and [`declare_awake`] are thin wrappers over the
//! transport's own, so that what is fuzzed is the code the master runs.

use master_proto::{Malformed, StatusUpdate};

use crate::slot::{self, AtomicU64, Ordering};

/// Word: the state, `seq` (high half, odd) and `status` (low half).
pub const STATE: usize = slot::STATE;
/// Word: `generation` (high half) and `pid` (low half).
pub const WHO: usize = slot::WHO;
/// Word: the master's sleep epoch for the slot (odd: asleep).
pub const SLEEP: usize = slot::SLEEP;
/// 64-bit words a slot needs.
pub const SLOT_WORDS: usize = slot::SLOT_WORDS;

/// A word made of two halves.
#[must_use]
pub const fn word(high: u32, low: u32) -> u64 {
    slot::word(high, low)
}

/// A word's high and low halves.
#[must_use]
pub const fn halves(word: u64) -> (u32, u32) {
    slot::halves(word)
}

/// Slot memory: any number of 64-bit words, all zero at first.
/// [`SLOT_WORDS`] for a slot as the transport makes it (whose memfd is a
/// page, more than that), or fewer (a slot the transport never makes, but
/// the reader must survive).
#[derive(Debug)]
pub struct Mem(Vec<AtomicU64>);

impl Mem {
    /// Zeroed memory of `words` words.
    #[must_use]
    pub fn new(words: usize) -> Mem {
        Mem((0..words).map(|_| AtomicU64::new(0)).collect())
    }

    /// The number of words.
    #[must_use]
    pub fn word_count(&self) -> usize {
        self.0.len()
    }

    /// Word `word`, if there is one.
    #[must_use]
    pub fn load(&self, word: usize) -> Option<u64> {
        self.0.get(word).map(|w| w.load(Ordering::Acquire))
    }

    /// Every word, in order.
    #[must_use]
    pub fn snapshot(&self) -> Vec<u64> {
        self.0.iter().map(|w| w.load(Ordering::Acquire)).collect()
    }

    /// Stores `value` into word `word` (a hostile child's store); out of
    /// range is ignored.
    pub fn store(&self, word: usize, value: u64) {
        if let Some(w) = self.0.get(word) {
            w.store(value, Ordering::Release);
        }
    }
}

/// What one look at a slot found (`slot::Look`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Look {
    /// The state word is the one last looked at: nothing new.
    Unchanged,
    /// A new state, with the pid and generation of `WHO`, and how many
    /// states its `seq` says were published, and overwritten, since the
    /// one reported before it.
    Changed {
        /// The state.
        update: StatusUpdate,
        /// States overwritten before it.
        skipped: u64,
    },
    /// A state word with an even `seq`: reported once, until the word
    /// changes again.
    Corrupt(Malformed),
}

/// The master's side of one slot (`slot::Reader`).
#[derive(Clone, Copy, Debug)]
pub struct Reader(slot::Reader);

impl Reader {
    /// A reader for a fresh slot, as the transport makes one.
    #[must_use]
    pub fn new() -> Reader {
        Reader(slot::Reader::new())
    }

    /// A reader for a fresh slot that has reported the state with `seq`
    /// already (see [`Writer::resumed`]).
    #[must_use]
    pub fn resumed(seq: u32) -> Reader {
        Reader(slot::Reader::resumed(seq))
    }

    /// Looks at the slot once.
    pub fn look(&mut self, mem: &Mem) -> Look {
        match self.0.look(&mem.0) {
            slot::Look::Unchanged => Look::Unchanged,
            slot::Look::Changed(update, skipped) => Look::Changed { update, skipped },
            slot::Look::Corrupt(malformed) => Look::Corrupt(malformed),
        }
    }
}

impl Default for Reader {
    fn default() -> Reader {
        Reader::new()
    }
}

/// A child's side of its slot (`slot::Writer`), which an honest child
/// uses and a hostile one may.
#[derive(Clone, Copy, Debug)]
pub struct Writer(slot::Writer);

impl Writer {
    /// A writer for a fresh slot: its first state has `seq` 1.
    #[must_use]
    pub fn new() -> Writer {
        Writer(slot::Writer::new())
    }

    /// A writer for a fresh slot that counts its states on from `seq`, as
    /// if it had published them already: its first state has `seq + 2`.
    /// With [`Reader::resumed`] at the same `seq`, a slot near the wrap of
    /// its sequence numbers.
    #[must_use]
    pub fn resumed(seq: u32) -> Writer {
        Writer(slot::Writer::resumed(seq))
    }

    /// Publishes `update` as the slot's next state: `WHO` if it changed,
    /// then `STATE`.
    pub fn publish(&mut self, mem: &Mem, update: StatusUpdate) {
        self.0.publish(&mem.0, update);
    }

    /// The first `steps` stores of publishing `update`: what a child killed
    /// after them leaves.
    pub fn publish_steps(&mut self, mem: &Mem, update: StatusUpdate, steps: usize) {
        self.0.publish_steps(&mem.0, update, steps);
    }

    /// After publishing: whether to ring the doorbell now.
    pub fn must_ring(&mut self, mem: &Mem) -> bool {
        self.0.must_ring(&mem.0)
    }
}

impl Default for Writer {
    fn default() -> Writer {
        Writer::new()
    }
}

/// The master goes to sleep on the slot: stores its new `epoch`, which must
/// be odd (the master's own count, never read back from the slot).
pub fn declare_asleep(mem: &Mem, epoch: u64) {
    slot::declare_asleep(&mem.0, epoch);
}

/// The master watches the slot again: stores its new `epoch`, which must be
/// even.
pub fn declare_awake(mem: &Mem, epoch: u64) {
    slot::declare_awake(&mem.0, epoch);
}
