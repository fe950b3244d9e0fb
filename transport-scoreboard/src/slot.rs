//! One child's slot and the per-slot sleep/wake handshake, as safe code
//! over atomics (swapped for loom's under `cfg(loom)`).
//!
//! A slot is a few 64-bit words (in the transport, the child's own sealed
//! memfd, see the crate docs; in the loom models and unit tests, ordinary
//! memory, [`SlotMem`]). The child's [`Writer`] publishes each new state
//! there with one plain 64-bit store; the master's [`Reader`] looks at it
//! with one load and reports the state when the word changed. Nothing here
//! trusts a word the child can write: whatever it holds, a look returns,
//! and at worst reports [`Look::Corrupt`].
//!
//! # Words (indices into the slot)
//!
//! | word | bits 63–32 | bits 31–0 | written by |
//! |---|---|---|---|
//! | [`STATE`] (byte 0) | `seq` | `status` | child |
//! | [`WHO`] (byte 8) | `generation` | `pid` | child |
//! | [`SLEEP`] (byte 64) | `epoch` | | master |
//!
//! A state is one word: the child's `n`-th state has `seq = 2n - 1` (odd,
//! wrapping), and [`Writer::publish`] stores it with release, after `WHO`
//! when that changed (an honest child's pid and generation never do after
//! its first state). So a child killed at any instruction leaves the slot
//! holding its previous state or its new one, whole, never a mix, and a
//! look never waits for a writer, however fast it writes. A state word
//! with an even `seq` is none the child's `Writer` makes: a scribble.
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

/// Word: the state, `seq` (high half, odd) and `status` (low half).
pub(crate) const STATE: usize = 0;
/// Word: `generation` (high half) and `pid` (low half).
pub(crate) const WHO: usize = 1;
/// Word: the master's sleep epoch for this slot (odd: asleep), on a cache
/// line of its own (the master writes it, the child only reads it).
pub(crate) const SLEEP: usize = 8;
/// 64-bit words a slot needs.
pub(crate) const SLOT_WORDS: usize = SLEEP + 1;
/// The bytes a slot needs.
pub(crate) const SLOT_BYTES: usize = SLOT_WORDS * 8;

/// A word made of two halves.
#[must_use]
pub(crate) const fn word(high: u32, low: u32) -> u64 {
    ((high as u64) << 32) | low as u64
}

/// A word's high and low halves.
#[must_use]
#[allow(clippy::cast_possible_truncation, reason = "the low half is meant")]
pub(crate) const fn halves(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
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

/// The child's side of its slot: the `seq` of its last state, the `WHO`
/// it last wrote, and the epoch it last rang for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Writer {
    seq: u32,
    who: Option<u64>,
    rang: u64,
}

impl Writer {
    /// A writer for a fresh slot (whose words read as zeros): its first
    /// state has `seq` 1.
    pub(crate) fn new() -> Writer {
        Writer { seq: u32::MAX, who: None, rang: 0 }
    }

    /// A writer for a fresh slot that counts its states on from `seq`, the
    /// last one's (which the zeroed slot does not hold): its first state
    /// has `seq + 2`. How the fuzz target reaches the wrap of `seq` without
    /// 2^31 publishes.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn resumed(seq: u32) -> Writer {
        Writer { seq, who: None, rang: 0 }
    }

    /// Publishes `update` as the slot's next state: `WHO` if it changed,
    /// then `STATE`, one plain store each. The caller then fences and asks
    /// [`must_ring`](Self::must_ring).
    #[inline]
    pub(crate) fn publish(&mut self, slot: &[AtomicU64], update: StatusUpdate) {
        self.publish_steps(slot, update, usize::MAX);
    }

    /// Performs the first `steps` stores of publishing `update` (one, or
    /// two when `WHO` changes, for a whole publish). A child that dies
    /// after any of them leaves exactly what stopping here leaves.
    #[inline]
    pub(crate) fn publish_steps(&mut self, slot: &[AtomicU64], update: StatusUpdate, steps: usize) {
        let (Some(state), Some(who)) = (slot.get(STATE), slot.get(WHO)) else { return };
        let mut left = steps;
        let next_who = word(update.generation, update.pid.cast_unsigned());
        if self.who != Some(next_who) {
            if left == 0 {
                return;
            }
            // Before the state, which publishes it: the release store below
            // orders it for a reader that acquires the state.
            who.store(next_who, Ordering::Relaxed);
            self.who = Some(next_who);
            left -= 1;
        }
        if left == 0 {
            return;
        }
        self.seq = self.seq.wrapping_add(2);
        // The publish. Release pairs with the reader's acquire load of the
        // state: a reader that sees this state sees the `WHO` above.
        state.store(word(self.seq, update.status.0.cast_unsigned()), Ordering::Release);
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
    /// The state word is the one last looked at: nothing new.
    Unchanged,
    /// A new state, and how many states the child published since the
    /// previous one reported (overwritten, never seen; as far as the
    /// child's `seq` says: a `seq` less than half the range ahead of the
    /// last one counts the states between, one behind it, which no honest
    /// child writes, counts none).
    Changed(StatusUpdate, u64),
    /// A state word with an even `seq`, which no honest child writes:
    /// reported once (until the word changes again), nothing delivered.
    Corrupt(Malformed),
}

/// The master's side of one slot: the state word it looked at last, and
/// the `seq` of the last state it reported. Nothing the child writes is
/// trusted: every word is read as a value, and any value leads to one of
/// the [`Look`]s.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader {
    last: u64,
    seq: u32,
}

impl Reader {
    /// A reader for a fresh slot (a state word of zero is "no state yet").
    pub(crate) fn new() -> Reader {
        Reader { last: 0, seq: u32::MAX }
    }

    /// A reader for a fresh slot that has reported the state with `seq`
    /// already: the match of [`Writer::resumed`].
    #[cfg(feature = "fuzzing")]
    pub(crate) fn resumed(seq: u32) -> Reader {
        Reader { last: 0, seq }
    }

    /// Looks at the slot once: one load, and one more when it changed.
    /// Never waits, never panics, whatever the child wrote.
    #[inline]
    pub(crate) fn look(&mut self, slot: &[AtomicU64]) -> Look {
        let (Some(state), Some(who)) = (slot.get(STATE), slot.get(WHO)) else { return Look::Unchanged };
        // Acquire pairs with the writer's release store of the state.
        let now = state.load(Ordering::Acquire);
        if now == self.last {
            return Look::Unchanged;
        }
        self.last = now;
        let (seq, status) = halves(now);
        if seq & 1 == 0 {
            return Look::Corrupt(Malformed::Corrupt("slot state with an even sequence number"));
        }
        let (generation, pid) = halves(who.load(Ordering::Relaxed));
        let step = seq.wrapping_sub(self.seq);
        // A step back (more than half the range ahead, read as unsigned)
        // is a scribble, not 2^31 states nobody saw.
        let skipped = if step >= 1 << 31 { 0 } else { u64::from((step / 2).saturating_sub(1)) };
        self.seq = seq;
        Look::Changed(
            StatusUpdate { pid: pid.cast_signed(), generation, status: Status(status.cast_signed()) },
            skipped,
        )
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
        assert_eq!(halves(mem.words()[STATE].load(Ordering::Relaxed)).0, 1, "the first state has seq 1");
        assert_eq!(r.look(mem.words()), Look::Changed(up(1), 0));
        assert_eq!(r.look(mem.words()), Look::Unchanged, "reported once");
        for n in 2..10 {
            w.publish(mem.words(), up(n));
        }
        assert_eq!(r.look(mem.words()), Look::Changed(up(9), 7), "the latest, seven overwritten");
        // A state word one behind the last (a scribble: an honest seq only
        // moves on) is delivered, but overwrote nothing.
        let (seq, status) = halves(mem.words()[STATE].load(Ordering::Relaxed));
        mem.words()[STATE].store(word(seq - 2, status), Ordering::Relaxed);
        assert!(matches!(r.look(mem.words()), Look::Changed(_, 0)), "a step back counts no overwritten state");
        mem.words()[STATE].store(word(seq, status), Ordering::Relaxed);
        assert!(matches!(r.look(mem.words()), Look::Changed(_, 0)), "and the step forward again none either");
        assert_eq!(r.look(mem.words()), Look::Unchanged);
        // The same status again is a new state: a new seq.
        w.publish(mem.words(), up(9));
        assert_eq!(r.look(mem.words()), Look::Changed(up(9), 0));
    }

    #[test]
    fn sequence_numbers_wrap_and_stay_odd() {
        let mem = SlotMem::new();
        let (mut w, mut r) = (Writer::new(), Reader::new());
        w.seq = u32::MAX - 4;
        r.seq = w.seq;
        for n in 0..6 {
            w.publish(mem.words(), up(n));
            assert_eq!(halves(mem.words()[STATE].load(Ordering::Relaxed)).0 & 1, 1);
            assert_eq!(r.look(mem.words()), Look::Changed(up(n), 0), "state {n} across the wrap");
        }
    }

    #[test]
    fn a_new_sender_is_written_before_the_state() {
        let mem = SlotMem::new();
        let (mut w, mut r) = (Writer::new(), Reader::new());
        w.publish(mem.words(), up(1));
        let other = StatusUpdate { generation: 8, pid: 5, ..up(2) };
        w.publish(mem.words(), other);
        assert_eq!(r.look(mem.words()), Look::Changed(other, 1));
        assert_eq!(mem.words()[WHO].load(Ordering::Relaxed), word(8, 5));
    }

    #[test]
    fn a_stopped_publish_leaves_the_previous_state() {
        // Steps: WHO (the first publish, or a new sender), STATE.
        let mem = SlotMem::new();
        let (mut w, mut r) = (Writer::new(), Reader::new());
        w.publish_steps(mem.words(), up(1), 1);
        assert_eq!(r.look(mem.words()), Look::Unchanged, "the sender written, no state yet");
        w.publish_steps(mem.words(), up(1), 1);
        assert_eq!(r.look(mem.words()), Look::Changed(up(1), 0), "then one store publishes it");
        let other = StatusUpdate { pid: 6, ..up(2) };
        w.publish_steps(mem.words(), other, 1);
        assert_eq!(r.look(mem.words()), Look::Unchanged, "a new sender alone changes no state");
        w.publish_steps(mem.words(), other, 0);
        assert_eq!(r.look(mem.words()), Look::Unchanged);
    }

    #[test]
    fn an_even_sequence_number_is_reported_once() {
        let mem = SlotMem::new();
        let (mut w, mut r) = (Writer::new(), Reader::new());
        w.publish(mem.words(), up(0));
        assert!(matches!(r.look(mem.words()), Look::Changed(..)));
        mem.words()[STATE].store(word(2, 1), Ordering::Relaxed);
        assert_eq!(r.look(mem.words()), Look::Corrupt(Malformed::Corrupt("slot state with an even sequence number")));
        assert_eq!(r.look(mem.words()), Look::Unchanged, "once");
        // The writer goes on from its own count.
        w.publish(mem.words(), up(9));
        assert_eq!(r.look(mem.words()), Look::Changed(up(9), 0));
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
        let words: Vec<AtomicU64> = (0..1).map(|_| AtomicU64::new(u64::MAX)).collect();
        assert_eq!(Reader::new().look(&words), Look::Unchanged);
        let mut w = Writer::new();
        w.publish(&words, up(1));
        assert!(!w.must_ring(&words));
        declare_asleep(&words, 1);
    }
}
