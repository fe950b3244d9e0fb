//! One child's slot and the per-slot sleep/wake handshake, as safe code
//! over atomics (swapped for loom's under `cfg(loom)`).
//!
//! A slot is a few 64-bit words (in the transport, the child's own sealed
//! memfd, see the crate docs; in the loom models and unit tests, ordinary
//! memory, [`SlotMem`]). The child's [`Writer`] publishes each new state
//! there, a seqlock of three plain stores; the master's [`Reader`] looks at
//! it and reports a state only when its sequence number moved forward.
//! Nothing here trusts a word the child can write: whatever it holds, a
//! look returns, and at worst reports [`Look::Corrupt`].
//!
//! # Words (indices into the slot)
//!
//! | word | bits 63–32 | bits 31–0 | written by |
//! |---|---|---|---|
//! | [`SEQ`] (byte 0) | `seq` | | child |
//! | [`STATE`] (byte 8) | `pid` | `status` | child |
//! | [`GENERATION`] (byte 16) | — | `generation` | child |
//! | [`SLEEP`] (byte 64) | `epoch` | | master |
//!
//! `seq` is `2n` once the child's `n`-th state is published and odd while
//! one is being written: [`Writer::publish`] stores `seq + 1`, then `STATE`
//! (and `GENERATION` when it changed), then `seq + 2` with release. A
//! reader that sees the same even `seq` before and after reading the other
//! words (with an acquire fence between) has read one state whole; a child
//! killed between any two stores leaves an odd `seq`, which reads as "no new
//! state": the master keeps the previous one, never a mix.
//!
//! # The handshake, per slot
//!
//! `SLEEP` holds the master's epoch for this slot: even while the master is
//! watching the slot (it looks at it on every pass), odd while it sleeps on
//! it. Each change of mind is a new epoch, never reused (64 bits). After
//! publishing, the child fences and reads `SLEEP`: odd and not yet rung for
//! (the child remembers the last epoch it rang for, in its own memory),
//! it rings its doorbell, once per epoch. The master going to sleep on a
//! slot stores a new odd epoch, passes a full barrier (a `membarrier`, or a
//! `SeqCst` fence here and in the child), and looks at the slot once more:
//! either that look sees the state, or the child sees the odd epoch and
//! rings. The master wakes on a ring by storing the next (even) epoch.

// The loom build holds only this module and its models, which use part of it.
#![cfg_attr(loom, allow(dead_code, reason = "the transport that uses the rest is not built under loom"))]

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering, fence};

use master_proto::{Malformed, Status, StatusUpdate};

/// Word: the state's sequence number (`2n` published, odd while writing).
pub(crate) const SEQ: usize = 0;
/// Word: `pid` (high half) and `status` (low half).
pub(crate) const STATE: usize = 1;
/// Word: `generation` (low half).
pub(crate) const GENERATION: usize = 2;
/// Word: the master's sleep epoch for this slot (odd: asleep), on a cache
/// line of its own (the master writes it, the child only reads it).
pub(crate) const SLEEP: usize = 8;
/// 64-bit words a slot needs.
pub(crate) const SLOT_WORDS: usize = SLEEP + 1;
/// The bytes a slot needs.
pub(crate) const SLOT_BYTES: usize = SLOT_WORDS * 8;

/// The `STATE` word: pid and status.
#[must_use]
pub(crate) const fn state(pid: i32, status: Status) -> u64 {
    ((pid.cast_unsigned() as u64) << 32) | status.0.cast_unsigned() as u64
}

/// A word's high and low halves.
#[must_use]
#[allow(clippy::cast_possible_truncation, reason = "the low half is meant")]
pub(crate) const fn halves(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// The update a slot's `STATE` and `GENERATION` words say.
#[must_use]
pub(crate) const fn update_of(state: u64, generation: u64) -> StatusUpdate {
    let (pid, status) = halves(state);
    StatusUpdate { pid: pid.cast_signed(), generation: halves(generation).1, status: Status(status.cast_signed()) }
}

/// Slot memory of its own, for the loom models and unit tests.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct SlotMem(Vec<AtomicU64>);

#[cfg(test)]
impl SlotMem {
    /// Zeroed memory for one slot.
    pub(crate) fn new() -> SlotMem {
        SlotMem((0..SLOT_WORDS).map(|_| AtomicU64::new(0)).collect())
    }

    /// The slot's words.
    pub(crate) fn words(&self) -> &[AtomicU64] {
        &self.0
    }
}

/// The child's side of its slot: its sequence number, the pid and
/// generation it last wrote, and the epoch it last rang for.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Writer {
    seq: u64,
    generation: Option<u32>,
    rang: u64,
}

impl Writer {
    /// A writer for a fresh slot (whose words read as zeros).
    pub(crate) fn new() -> Writer {
        Writer::default()
    }

    /// Publishes `update` as the slot's next state: `SEQ` odd, `STATE` (and
    /// `GENERATION` if it changed), `SEQ` even. Plain stores only. The
    /// caller then fences and asks [`must_ring`](Self::must_ring).
    #[inline]
    pub(crate) fn publish(&mut self, slot: &[AtomicU64], update: StatusUpdate) {
        self.publish_steps(slot, update, usize::MAX);
    }

    /// Performs the first `steps` stores of publishing `update` (three, or
    /// four when the generation changes, for a whole publish). A child that
    /// dies after any of them leaves exactly what stopping here leaves.
    #[inline]
    pub(crate) fn publish_steps(&mut self, slot: &[AtomicU64], update: StatusUpdate, steps: usize) {
        let (Some(seq), Some(word), Some(generation)) = (slot.get(SEQ), slot.get(STATE), slot.get(GENERATION)) else {
            return;
        };
        if steps == 0 {
            return;
        }
        // Odd: a state is being written. The release fence orders this
        // store before the words below; it pairs with the reader's acquire
        // fence between its reads of those words and its second read of
        // `SEQ`, so a reader that saw any word below sees this odd value
        // (or a later one) after them, and drops the read.
        seq.store(self.seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        let mut left = steps - 1;
        if self.generation != Some(update.generation) {
            if left == 0 {
                return;
            }
            generation.store(u64::from(update.generation), Ordering::Relaxed);
            self.generation = Some(update.generation);
            left -= 1;
        }
        if left == 0 {
            return;
        }
        word.store(state(update.pid, update.status), Ordering::Relaxed);
        if left == 1 {
            return;
        }
        // Even: published. Release pairs with the reader's acquire load of
        // `SEQ`: a reader that sees this value sees the words above.
        self.seq += 2;
        seq.store(self.seq, Ordering::Release);
    }

    /// After publishing and a full fence (or the compiler fence that a
    /// master's `membarrier` makes enough): whether to ring the doorbell
    /// now. True once per odd epoch of the master's: the first publish that
    /// sees it.
    #[inline]
    pub(crate) fn must_ring(&mut self, slot: &[AtomicU64]) -> bool {
        let Some(sleep) = slot.get(SLEEP) else { return false };
        let epoch = sleep.load(Ordering::Relaxed);
        if epoch & 1 == 1 && epoch != self.rang {
            self.rang = epoch;
            return true;
        }
        false
    }
}

/// What one look at a slot found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Look {
    /// No new state since the last one reported.
    Unchanged,
    /// A state is being written (odd `SEQ`), or was being written while
    /// the look read it: no new state yet, but the child is at it.
    Writing,
    /// A new state, and how many states the child published since the
    /// previous one reported (overwritten, never seen).
    Changed(StatusUpdate, u64),
    /// `SEQ` went backwards, which no honest child does: reported once (the
    /// slot's value is taken as the new reference), nothing delivered.
    Corrupt(Malformed),
}

/// The master's side of one slot: the sequence number of the last state it
/// reported. Nothing the child writes is trusted: every word is read as a
/// value, and any value leads to one of the [`Look`]s.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Reader {
    seq: u64,
}

impl Reader {
    /// A reader for a fresh slot.
    pub(crate) fn new() -> Reader {
        Reader::default()
    }

    /// Looks at the slot once. Never blocks, never panics, whatever the
    /// child wrote.
    #[inline]
    pub(crate) fn look(&mut self, slot: &[AtomicU64]) -> Look {
        let (Some(seq), Some(word), Some(generation)) = (slot.get(SEQ), slot.get(STATE), slot.get(GENERATION)) else {
            return Look::Unchanged;
        };
        // Acquire pairs with the writer's release store of an even `SEQ`.
        let first = seq.load(Ordering::Acquire);
        if first == self.seq {
            return Look::Unchanged;
        }
        if first & 1 == 1 {
            return Look::Writing;
        }
        let (state, gen_word) = (word.load(Ordering::Relaxed), generation.load(Ordering::Relaxed));
        // Pairs with the writer's release fence after its odd store: if the
        // words read above came from a publish after `first`, `SEQ` reads
        // that publish's odd value (or later) now.
        fence(Ordering::Acquire);
        if seq.load(Ordering::Relaxed) != first {
            return Look::Writing;
        }
        if first < self.seq {
            self.seq = first;
            return Look::Corrupt(Malformed::Corrupt("slot sequence went backwards"));
        }
        let skipped = (first - self.seq) / 2 - 1;
        self.seq = first;
        Look::Changed(update_of(state, gen_word), skipped)
    }

    /// Whether the slot is left half written (an odd `SEQ`): after the child
    /// died, a state it never finished, reported as torn.
    pub(crate) fn unfinished(slot: &[AtomicU64]) -> bool {
        slot.get(SEQ).is_some_and(|w| w.load(Ordering::Acquire) & 1 == 1)
    }
}

/// The master's half of the handshake for one slot, step one: store the
/// new odd `epoch` (asleep). Then a barrier (once for every slot going to
/// sleep together), then a last [`Reader::look`] at each.
pub(crate) fn declare_asleep(slot: &[AtomicU64], epoch: u64) {
    debug_assert!(epoch & 1 == 1);
    if let Some(sleep) = slot.get(SLEEP) {
        sleep.store(epoch, Ordering::Relaxed);
    }
}

/// The master watches the slot again: store the new even `epoch`; the
/// child stops ringing.
pub(crate) fn declare_awake(slot: &[AtomicU64], epoch: u64) {
    debug_assert!(epoch & 1 == 0);
    if let Some(sleep) = slot.get(SLEEP) {
        sleep.store(epoch, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn up(status: i32) -> StatusUpdate {
        StatusUpdate { pid: 100, generation: 7, status: Status(status) }
    }

    #[test]
    fn latest_state_with_gaps_never_stale() {
        let mem = SlotMem::new();
        let (mut w, mut r) = (Writer::new(), Reader::new());
        assert_eq!(r.look(mem.words()), Look::Unchanged, "a fresh slot holds no state");
        w.publish(mem.words(), up(1));
        assert_eq!(r.look(mem.words()), Look::Changed(up(1), 0));
        assert_eq!(r.look(mem.words()), Look::Unchanged, "reported once");
        for n in 2..10 {
            w.publish(mem.words(), up(n));
        }
        assert_eq!(r.look(mem.words()), Look::Changed(up(9), 7), "the latest, seven overwritten");
        assert_eq!(r.look(mem.words()), Look::Unchanged);
    }

    #[test]
    fn a_new_generation_is_written_inside_the_bracket() {
        let mem = SlotMem::new();
        let (mut w, mut r) = (Writer::new(), Reader::new());
        w.publish(mem.words(), up(1));
        let other = StatusUpdate { generation: 8, ..up(2) };
        w.publish(mem.words(), other);
        assert_eq!(r.look(mem.words()), Look::Changed(other, 1));
        assert_eq!(mem.words()[SEQ].load(Ordering::Relaxed), 4);
    }

    #[test]
    fn half_written_states_are_never_delivered() {
        // Steps: odd seq, generation (first publish), state, even seq.
        for steps in 0..4 {
            let mem = SlotMem::new();
            let (mut w, mut r) = (Writer::new(), Reader::new());
            w.publish_steps(mem.words(), up(1), steps);
            let look = r.look(mem.words());
            assert!(matches!(look, Look::Unchanged | Look::Writing), "{steps} steps: {look:?}");
            assert_eq!(Reader::unfinished(mem.words()), steps >= 1, "after {steps} steps");
        }
        let mem = SlotMem::new();
        let (mut w, mut r) = (Writer::new(), Reader::new());
        w.publish_steps(mem.words(), up(1), 4);
        assert_eq!(r.look(mem.words()), Look::Changed(up(1), 0), "four stores publish the first state");
        w.publish_steps(mem.words(), up(2), 2);
        assert_eq!(r.look(mem.words()), Look::Writing, "the generation is unchanged: two stores leave it odd");
        assert!(Reader::unfinished(mem.words()));
    }

    #[test]
    fn a_sequence_that_goes_backwards_is_reported_once() {
        let mem = SlotMem::new();
        let (mut w, mut r) = (Writer::new(), Reader::new());
        for n in 0..3 {
            w.publish(mem.words(), up(n));
        }
        assert!(matches!(r.look(mem.words()), Look::Changed(..)));
        mem.words()[SEQ].store(2, Ordering::Relaxed);
        assert_eq!(r.look(mem.words()), Look::Corrupt(Malformed::Corrupt("slot sequence went backwards")));
        assert_eq!(r.look(mem.words()), Look::Unchanged, "once");
        // The writer goes on from its own count: ahead again, delivered.
        w.publish(mem.words(), up(9));
        assert_eq!(r.look(mem.words()), Look::Changed(up(9), 2), "skipped counts from the value taken");
    }

    #[test]
    fn rings_once_per_odd_epoch() {
        let mem = SlotMem::new();
        let mut w = Writer::new();
        w.publish(mem.words(), up(1));
        assert!(!w.must_ring(mem.words()), "epoch 0: the master watches");
        declare_asleep(mem.words(), 1);
        assert!(w.must_ring(mem.words()));
        assert!(!w.must_ring(mem.words()), "once per epoch");
        declare_awake(mem.words(), 2);
        assert!(!w.must_ring(mem.words()));
        declare_asleep(mem.words(), 3);
        assert!(w.must_ring(mem.words()), "a new epoch rings again");
    }

    #[test]
    fn short_slots_read_as_nothing() {
        let words: Vec<AtomicU64> = (0..2).map(|_| AtomicU64::new(u64::MAX)).collect();
        assert_eq!(Reader::new().look(&words), Look::Unchanged);
        let mut w = Writer::new();
        w.publish(&words, up(1));
        assert!(!w.must_ring(&words));
        declare_asleep(&words, 1);
    }
}
