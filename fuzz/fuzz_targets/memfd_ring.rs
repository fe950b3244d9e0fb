//! Fuzz target `memfd_ring`: the memfd transport's ring consumer (the master's
//! side) over arbitrary ring memory, interleaved with a hostile producer's
//! stores, beside an honest ring consumed in the same loop.
//!
//! It goes through the crate's hidden `fuzz` module (feature `fuzzing`),
//! which wraps the transport's own `Consumer` and `Producer` over plain
//! memory. The hostile ring may be shorter than its capacity, may start with
//! any bytes in its header and slots (its `tail`, `waiting` and `capacity`
//! words included), and gets arbitrary stores between the consumer's calls:
//! random words, and `rec` words that look almost right (a record of
//! another index, one being written, the previous lap's).
//!
//! Checked after every call:
//! - the hostile consumer returns (never panics, never reads or writes out of
//!   bounds), and what it returns is what a plain model of the protocol
//!   says the slot at its own index means: a record (with the `who` word's
//!   pid and generation), nothing yet, or a corrupt slot reported once and
//!   put back to its previous value;
//! - it writes nothing but that one slot's `rec` word and its own `tail`
//!   (written back every quarter ring, or on `flush`), and it notices a
//!   waiting producer exactly when it writes `tail` back;
//! - the honest ring, whose producer never lies, delivers every record once,
//!   in order, and never a malformed one.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use master_proto::{Malformed, Status, StatusUpdate};
use master_proto_memfd::fuzz::{
    CAPACITY, Consumer, HEADER_WORDS, Mem, Producer, SLOT_WORDS, TAIL, WAITING, done, halves, rec, who, writing,
};

#[derive(Arbitrary, Debug)]
struct Input {
    /// log2 of the capacity, 1 to 4 (2 to 16 slots).
    capacity_log2: u8,
    /// Fewer slot words than the capacity needs, if set (then this many,
    /// modulo the full count).
    short: Option<u8>,
    /// The hostile ring's memory before the run, word by word (header
    /// words take the low half).
    init: Vec<u64>,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Step {
    /// A store of `value` at word `word` (header words, then slot words).
    Store { word: u16, value: u64 },
    /// A `rec` word that looks almost right, into slot `slot`: its index is
    /// the consumer's own plus `ahead`, and `kind` picks done, writing, or
    /// the previous lap's record.
    Plausible { slot: u8, ahead: i8, kind: u8, status: u32 },
    /// A whole record published properly at the consumer's index, as an
    /// honest producer would (a hostile child may also behave).
    Publish { pid: u32, generation: u32, status: u32 },
    /// The honest producer publishes its next record, if there is room.
    Honest,
    /// Both consumers take up to `n` items.
    Consume(u8),
    /// Both consumers write their index back.
    Flush,
    /// The hostile producer says it is (or is not) waiting for room.
    Waiting(bool),
}

/// What the model says the hostile consumer knows: its own index and lap.
struct Model {
    mask: u32,
    tail: u32,
    lapped: bool,
    unpublished: u32,
    /// A write back found the producer waiting, not yet taken.
    wake_due: bool,
}

impl Model {
    fn previous(&self) -> u32 {
        if self.lapped { done(self.tail.wrapping_sub(self.mask + 1)) } else { 0 }
    }
}

/// A copy of every word of `mem`.
fn snapshot(mem: &Mem) -> (Vec<u32>, Vec<u64>) {
    let header = (0..HEADER_WORDS).map(|w| mem.header(w).expect("header word")).collect();
    let slots = (0..mem.slot_words()).map(|w| mem.slot(w).expect("slot word")).collect();
    (header, slots)
}

/// One call of the hostile consumer, checked against the model.
fn hostile_next(consumer: &mut Consumer, mem: &Mem, model: &mut Model) {
    let before = snapshot(mem);
    let i = model.tail;
    let s = SLOT_WORDS * (i & model.mask) as usize;
    let got = consumer.next(mem);
    let after = snapshot(mem);
    // What the slot at the model's index means.
    let expected = match before.1.get(s).copied() {
        None => None,
        Some(word) => {
            let (seq, status) = halves(word);
            if seq == done(i) {
                before.1.get(s + 1).map(|&w| {
                    let (generation, pid) = halves(w);
                    Ok(StatusUpdate { pid: pid.cast_signed(), generation, status: Status(status.cast_signed()) })
                })
            } else if seq == writing(i) || seq == model.previous() {
                None
            } else {
                Some(Err(Malformed::Corrupt("slot not written for its index")))
            }
        }
    };
    assert_eq!(got, expected, "record {i} (slot word {s}): the consumer and the model disagree");
    // What it may have written.
    let mut allowed = before.clone();
    match got {
        Some(Ok(_)) => {
            model.tail = i.wrapping_add(1);
            if model.tail == model.mask + 1 {
                model.lapped = true;
            }
            model.unpublished += 1;
            if model.unpublished > model.mask / 4 {
                model.unpublished = 0;
                allowed.0[TAIL] = model.tail;
                model.wake_due |= before.0[WAITING] != 0;
            }
        }
        Some(Err(_)) => {
            // Put back, and so "nothing yet" until written again.
            allowed.1[s] = rec(model.previous(), 0);
            assert_eq!(consumer.next(mem), None, "a corrupt slot reported twice");
        }
        None => {}
    }
    assert_eq!(after, allowed, "the consumer wrote where it should not");
}

fuzz_target!(|input: Input| {
    let capacity = 1u32 << (input.capacity_log2 % 4 + 1);
    let full = SLOT_WORDS * capacity as usize;
    let slot_words = input.short.map_or(full, |n| usize::from(n) % full);
    let words = HEADER_WORDS + slot_words;

    // The hostile ring: initialised by the consumer, then the child wrote
    // anything it liked before the master first looked.
    let hostile = Mem::new(slot_words);
    let mut consumer = Consumer::new(capacity).expect("a valid capacity");
    assert_eq!(consumer.capacity(), capacity);
    consumer.init_zeroed(&hostile);
    assert_eq!(hostile.header(CAPACITY), Some(capacity));
    let store = |word: usize, value: u64| {
        let word = word % words;
        if word < HEADER_WORDS {
            hostile.store_header(word, halves(value).1);
        } else {
            hostile.store_slot(word - HEADER_WORDS, value);
        }
    };
    for (word, value) in input.init.iter().take(words).enumerate() {
        store(word, *value);
    }
    let mut model = Model { mask: capacity - 1, tail: 0, lapped: false, unpublished: 0, wake_due: false };

    // The honest ring beside it.
    let honest = Mem::new(full);
    let mut honest_consumer = Consumer::new(capacity).expect("a valid capacity");
    honest_consumer.init_zeroed(&honest);
    let mut producer = Producer::new(&honest).expect("an honest ring has a producer");
    let (mut sent, mut received) = (0i32, 0i32);
    let honest_next = |consumer: &mut Consumer, received: &mut i32| match consumer.next(&honest) {
        Some(Ok(update)) => {
            assert_eq!(update, StatusUpdate { pid: 77, generation: 5, status: Status(*received) }, "honest ring");
            *received += 1;
        }
        Some(Err(m)) => panic!("the honest ring reported {m:?}"),
        None => consumer.flush(&honest),
    };

    // At the end, enough calls to empty the honest ring whatever it holds.
    let last = Step::Consume(u8::try_from(capacity + 2).expect("at most 18"));
    for step in input.steps.iter().take(4000).copied().chain([last, Step::Flush]) {
        match step {
            Step::Store { word, value } => store(usize::from(word), value),
            Step::Plausible { slot, ahead, kind, status } => {
                let i = model.tail.wrapping_add_signed(i32::from(ahead));
                let seq = match kind % 3 {
                    0 => done(i),
                    1 => writing(i),
                    _ => done(i.wrapping_sub(capacity)),
                };
                store(HEADER_WORDS + SLOT_WORDS * usize::from(slot), rec(seq, status));
            }
            Step::Publish { pid, generation, status } => {
                let s = SLOT_WORDS * (model.tail & model.mask) as usize;
                hostile.store_slot(s, rec(writing(model.tail), 0));
                hostile.store_slot(s + 1, who(generation, pid));
                hostile.store_slot(s, rec(done(model.tail), status));
            }
            Step::Honest => {
                if producer.has_room(&honest) {
                    producer.push(&honest, StatusUpdate { pid: 77, generation: 5, status: Status(sent) });
                    sent += 1;
                }
            }
            Step::Consume(n) => {
                for _ in 0..n % 40 {
                    hostile_next(&mut consumer, &hostile, &mut model);
                    honest_next(&mut honest_consumer, &mut received);
                }
                let s = SLOT_WORDS * (model.tail & model.mask) as usize;
                let unfinished = hostile.slot(s).is_some_and(|w| halves(w).0 == writing(model.tail));
                assert_eq!(consumer.unfinished(&hostile), unfinished, "unfinished at record {}", model.tail);
            }
            Step::Flush => {
                let waiting = hostile.header(WAITING) != Some(0);
                consumer.flush(&hostile);
                if model.unpublished > 0 {
                    model.unpublished = 0;
                    assert_eq!(hostile.header(TAIL), Some(model.tail), "flush wrote the index back");
                    model.wake_due |= waiting;
                }
                let wake = std::mem::take(&mut model.wake_due);
                assert_eq!(consumer.take_wake(), wake, "a waiting producer is noticed when the index is written back");
                honest_consumer.flush(&honest);
            }
            Step::Waiting(on) => hostile.store_header(WAITING, u32::from(on)),
        }
    }
    // Everything the honest producer published arrived.
    assert_eq!(received, sent, "every honest record, once, in order");
});
