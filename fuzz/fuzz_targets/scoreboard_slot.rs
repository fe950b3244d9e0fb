//! Fuzz target `scoreboard_slot`: the scoreboard transport's slot reader
//! (the master's side) over arbitrary slot memory, interleaved with a
//! hostile child's stores and the master's sleep declarations, beside an
//! honest slot read in the same loop.
//!
//! It goes through the crate's hidden `fuzz` module (feature `fuzzing`),
//! which wraps the transport's own `Reader`, `Writer` and sleep
//! declarations over plain memory. The hostile slot may be shorter than a
//! slot, may start with any words, and gets arbitrary stores between the
//! master's calls: random words, state words that look almost right (the
//! next state, the same one again, one behind, an even `seq` beside them,
//! the word last looked at with another status), and whole states published
//! through a `Writer` of its own under any pid and generation. The honest
//! slot's child publishes, rings when it must, and may be killed between any
//! two stores of a publish; it may start close to the wrap of its sequence
//! numbers. The master watches each slot or sleeps on it, and takes the
//! honest child's doorbell, in any order.
//!
//! Checked after every call, against a plain model of the protocol as the
//! `slot` module's docs state it:
//! - the hostile reader returns (never panics, never reads or writes out of
//!   bounds), and what it returns is what the model says the slot's words
//!   mean: nothing new (the state word the last look found), a corrupt
//!   state (an even `seq`, reported once until the word changes), or a
//!   state with `WHO`'s pid and generation and as many overwritten states
//!   as its `seq` says;
//! - a look writes nothing; a sleep declaration writes the master's epoch
//!   into `SLEEP` and nothing else; a publish writes `WHO` (when it
//!   changed), then `STATE` with the next odd `seq`, and nothing else;
//! - the honest slot delivers its latest state, whole, with the count of
//!   those overwritten: never an older one, never one twice, never a
//!   corrupt one;
//! - the honest child rings exactly when `SLEEP` holds an odd epoch it has
//!   not rung for, and no wake-up is lost: while the master sleeps on the
//!   honest slot, a state it has not seen means a ring is pending (unless
//!   the child was killed before it could ring);
//! - once the child stops, its last state arrives: through the handshake
//!   alone for a child that finished its last publish, and at the master's
//!   last look (when it reaps the child) in any case.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use master_proto::{Malformed, Status, StatusUpdate};
use master_proto_scoreboard::fuzz::{
    Look, Mem, Reader, SLEEP, SLOT_WORDS, STATE, WHO, Writer, declare_asleep, declare_awake, halves, word,
};

#[derive(Arbitrary, Debug)]
struct Input {
    /// Fewer words than a slot has, if set (then this many, modulo
    /// `SLOT_WORDS`).
    short: Option<u8>,
    /// The hostile slot's words before the master first looks.
    init: Vec<u64>,
    /// The honest slot starts `k` states before the wrap of `seq`, as if
    /// its child had published states up to there and the master had seen
    /// them.
    near_wrap: Option<u8>,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Step {
    /// A hostile store of `value` at word `word` (modulo the slot's words).
    Store { word: u8, value: u64 },
    /// A hostile state word that looks almost right (see [`plausible`]).
    Plausible { kind: u8, delta: i8, status: u32 },
    /// The hostile child publishes as an honest one does, through a
    /// `Writer` of its own that knows nothing of what was scribbled.
    Behave { pid: u32, generation: u32, status: u32 },
    /// The honest child publishes its next state, then rings if it must.
    Publish(i32),
    /// The honest child is killed after `stores` stores of publishing its
    /// next state; it publishes nothing more.
    Kill { status: i32, stores: u8 },
    /// The master makes `n` passes: a look at each slot it watches.
    Pass(u8),
    /// The master sleeps on a slot it watches: a new odd epoch, then one
    /// more look; a look that finds something watches it again.
    Sleep { hostile: bool },
    /// The master watches a slot it sleeps on again (a ring from the
    /// hostile child, which may ring whenever it likes; for the honest one,
    /// the master's own reason).
    Wake { hostile: bool },
    /// The master takes the honest child's doorbell, if it rang: the slot
    /// is watched again.
    Harvest,
}

/// The diagnostic a state word with an even `seq` gets.
const EVEN: Malformed = Malformed::Corrupt("slot state with an even sequence number");

/// The honest child's pid, written with its first state.
const HONEST_PID: u32 = 77;
/// The honest child's generation, likewise.
const HONEST_GENERATION: u32 = 5;

/// State numbers wrap with `seq`: 2^31 of them.
const NUMBERS: u32 = 1 << 31;

/// The number `n` of the state with an odd `seq = 2n - 1`, modulo 2^31
/// (state 0, `seq` all ones, is the one before the first).
fn number(seq: u32) -> u32 {
    (seq / 2 + 1) % NUMBERS
}

/// The `seq` of state `n`.
fn seq_of(n: u32) -> u32 {
    n.wrapping_mul(2).wrapping_sub(1)
}

/// What a look at a slot means, from its words alone and what the master
/// remembers of its last looks.
#[derive(Debug)]
struct Meaning {
    /// The state word the last look found (0 in a fresh slot: no state).
    looked: u64,
    /// The number of the last state reported (0: none yet).
    reported: u32,
}

impl Meaning {
    fn new() -> Meaning {
        Meaning { looked: 0, reported: 0 }
    }

    /// What a look at `words` reports, and what the master then remembers.
    fn look(&mut self, words: &[u64]) -> Look {
        // A slot without its state and sender words holds no state.
        let (Some(&state), Some(&who)) = (words.get(STATE), words.get(WHO)) else { return Look::Unchanged };
        if state == self.looked {
            return Look::Unchanged;
        }
        self.looked = state;
        let (seq, status) = halves(state);
        if seq % 2 == 0 {
            return Look::Corrupt(EVEN);
        }
        // The states published since the last one reported, as far as the
        // numbers say: this one and the ones before it that nobody saw. A
        // `seq` that says no state was published since overwrote nothing,
        // and neither does one behind the last (half the numbers or more
        // ahead): no honest child goes back.
        let since = number(seq).wrapping_sub(self.reported) % NUMBERS;
        self.reported = number(seq);
        let (generation, pid) = halves(who);
        Look::Changed {
            update: StatusUpdate { pid: pid.cast_signed(), generation, status: Status(status.cast_signed()) },
            skipped: if since >= NUMBERS / 2 { 0 } else { u64::from(since.saturating_sub(1)) },
        }
    }
}

/// A state word that looks almost right, from what the master remembers:
/// `kind` picks the state `delta` states after the last one reported (the
/// next, the same again, one behind), an even `seq` beside it, the word
/// last looked at with another status or as it was, a fresh slot's zero,
/// or the word last looked at with its `seq` moved by `delta`.
fn plausible(meaning: &Meaning, kind: u8, delta: i8, status: u32) -> u64 {
    let n = meaning.reported.wrapping_add_signed(i32::from(delta));
    let (seq, old_status) = halves(meaning.looked);
    match kind % 6 {
        0 => word(seq_of(n), status),
        1 => word(seq_of(n).wrapping_add(1), status),
        2 => word(seq, status),
        3 => meaning.looked,
        4 => 0,
        _ => word(seq.wrapping_add_signed(i32::from(delta)), old_status),
    }
}

/// Runs `call` on `mem`, and checks that what it wrote is exactly the
/// `(word, value)` stores in `writes` (those beyond the slot's words left
/// out).
fn writes<R>(mem: &Mem, what: &str, writes: &[(usize, u64)], call: impl FnOnce() -> R) -> R {
    let mut expected = mem.snapshot();
    let got = call();
    for &(w, value) in writes {
        if let Some(slot) = expected.get_mut(w) {
            *slot = value;
        }
    }
    assert_eq!(mem.snapshot(), expected, "{what} wrote where it should not, or not what it should");
    got
}

/// The master's sleep epoch for one slot, its own count: even while it
/// watches the slot, odd while it sleeps on it.
#[derive(Debug)]
struct Epoch(u64);

impl Epoch {
    fn watched(&self) -> bool {
        self.0 % 2 == 0
    }

    fn sleep(&mut self, mem: &Mem) {
        self.0 += 1;
        writes(mem, "declare_asleep", &[(SLEEP, self.0)], || declare_asleep(mem, self.0));
    }

    fn wake(&mut self, mem: &Mem) {
        self.0 += 1;
        writes(mem, "declare_awake", &[(SLEEP, self.0)], || declare_awake(mem, self.0));
    }
}

/// The hostile slot, its reader, and the `Writer` its child may use.
struct Hostile {
    mem: Mem,
    reader: Reader,
    meaning: Meaning,
    epoch: Epoch,
    writer: Writer,
    /// What the model says the child's `Writer` knows: its last `seq`, the
    /// `WHO` it last wrote, the epoch it last rang for.
    writer_seq: u32,
    writer_who: Option<u64>,
    writer_rang: u64,
}

impl Hostile {
    fn look(&mut self) -> Look {
        let expected = self.meaning.look(&self.mem.snapshot());
        let got = writes(&self.mem, "a look at the hostile slot", &[], || self.reader.look(&self.mem));
        assert_eq!(got, expected, "the hostile slot's reader and the model disagree");
        got
    }

    fn behave(&mut self, update: StatusUpdate) {
        let who = word(update.generation, update.pid.cast_unsigned());
        let mut stores = Vec::new();
        // A slot without its state and sender words gets nothing.
        if self.mem.word_count() > WHO {
            if self.writer_who != Some(who) {
                self.writer_who = Some(who);
                stores.push((WHO, who));
            }
            self.writer_seq = self.writer_seq.wrapping_add(2);
            stores.push((STATE, word(self.writer_seq, update.status.0.cast_unsigned())));
        }
        writes(&self.mem, "the hostile child's publish", &stores, || self.writer.publish(&self.mem, update));
        let sleep = self.mem.load(SLEEP);
        let ring = sleep.is_some_and(|e| e % 2 == 1 && e != self.writer_rang);
        if ring {
            self.writer_rang = sleep.unwrap_or(0);
        }
        let got = writes(&self.mem, "must_ring", &[], || self.writer.must_ring(&self.mem));
        assert_eq!(got, ring, "the hostile child's writer rings when SLEEP is odd and not rung for");
    }
}

/// The honest slot, its reader, its child, and the model of both.
struct Honest {
    mem: Mem,
    reader: Reader,
    epoch: Epoch,
    writer: Writer,
    /// The `seq` the slot's states count on from.
    base: u32,
    /// States published, and the number of the last one reported (both
    /// counted from `base`).
    published: u32,
    reported: u32,
    /// The latest state's status.
    latest: Status,
    /// `WHO` written (with the child's first publish, or the first store of
    /// it).
    who_written: bool,
    /// The epoch the child last rang for, and whether that ring is still on
    /// the doorbell.
    rang: u64,
    doorbell: bool,
    /// The child was killed: it publishes nothing more.
    killed: bool,
}

impl Honest {
    fn update(&self) -> StatusUpdate {
        StatusUpdate { pid: HONEST_PID.cast_signed(), generation: HONEST_GENERATION, status: self.latest }
    }

    /// One look, checked: the latest state if the master has not seen it,
    /// with the ones it missed counted, else nothing new.
    fn look(&mut self) -> Look {
        let expected = if self.published == self.reported {
            Look::Unchanged
        } else {
            Look::Changed { update: self.update(), skipped: u64::from(self.published - self.reported - 1) }
        };
        let got = writes(&self.mem, "a look at the honest slot", &[], || self.reader.look(&self.mem));
        assert_eq!(got, expected, "the honest slot (published {}, seen {})", self.published, self.reported);
        self.reported = self.published;
        got
    }

    /// The child publishes `status`, its first `stores` stores of it only
    /// when killed.
    fn publish(&mut self, status: Status, stores: Option<u8>) {
        if self.killed {
            return;
        }
        let update = StatusUpdate { status, ..self.update() };
        let mut left = stores.map_or(usize::MAX, usize::from);
        let mut expected = Vec::new();
        if !self.who_written && left > 0 {
            self.who_written = true;
            expected.push((WHO, word(HONEST_GENERATION, HONEST_PID)));
            left -= 1;
        }
        let lands = self.who_written && left > 0;
        if lands {
            self.published += 1;
            self.latest = status;
            let seq = self.base.wrapping_add(self.published.wrapping_mul(2));
            assert_eq!(seq % 2, 1, "an honest seq is odd");
            expected.push((STATE, word(seq, status.0.cast_unsigned())));
        }
        match stores {
            None => writes(&self.mem, "the honest publish", &expected, || self.writer.publish(&self.mem, update)),
            Some(n) => {
                self.killed = true;
                writes(&self.mem, "the honest publish cut short", &expected, || {
                    self.writer.publish_steps(&self.mem, update, usize::from(n));
                });
                return;
            }
        }
        // The child fences and reads SLEEP, which only the master writes
        // here: it rings for an odd epoch once.
        let (epoch, rang) = (self.epoch.0, self.rang);
        let ring = epoch % 2 == 1 && epoch != rang;
        if ring {
            self.rang = epoch;
            self.doorbell = true;
        }
        let got = writes(&self.mem, "must_ring", &[], || self.writer.must_ring(&self.mem));
        assert_eq!(got, ring, "the honest child rings once per odd epoch (epoch {epoch}, last rang for {rang})");
    }

    /// No wake-up lost: while the master sleeps on the slot, a state it
    /// has not seen has rung the doorbell (unless its child died first).
    fn check_handshake(&self) {
        if !self.epoch.watched() && self.published != self.reported && !self.killed {
            assert!(self.doorbell, "lost wake-up: asleep on the honest slot with a state unseen and no ring");
        }
    }
}

fuzz_target!(|input: Input| {
    let words = input.short.map_or(SLOT_WORDS, |n| usize::from(n) % SLOT_WORDS);

    // Both slots as the transport makes them: slept on from the start
    // (epoch 1), then watched once the child is registered (epoch 2). The
    // hostile child wrote anything it liked in between.
    let mut hostile = Hostile {
        mem: Mem::new(words),
        reader: Reader::new(),
        meaning: Meaning::new(),
        epoch: Epoch(0),
        writer: Writer::new(),
        writer_seq: u32::MAX,
        writer_who: None,
        writer_rang: 0,
    };
    hostile.epoch.sleep(&hostile.mem);
    for (w, value) in input.init.iter().take(words).enumerate() {
        hostile.mem.store(w, *value);
    }
    hostile.epoch.wake(&hostile.mem);

    let base = input.near_wrap.map_or(u32::MAX, |k| u32::MAX.wrapping_sub(2 * u32::from(k)));
    let (reader, writer) = match input.near_wrap {
        Some(_) => (Reader::resumed(base), Writer::resumed(base)),
        None => (Reader::new(), Writer::new()),
    };
    let mut honest = Honest {
        mem: Mem::new(SLOT_WORDS),
        reader,
        epoch: Epoch(0),
        writer,
        base,
        published: 0,
        reported: 0,
        latest: Status(0),
        who_written: false,
        rang: 0,
        doorbell: false,
        killed: false,
    };
    honest.epoch.sleep(&honest.mem);
    honest.epoch.wake(&honest.mem);

    for step in input.steps.iter().take(4000).copied() {
        match step {
            Step::Store { word: w, value } => {
                if words > 0 {
                    hostile.mem.store(usize::from(w) % words, value);
                }
            }
            Step::Plausible { kind, delta, status } => {
                hostile.mem.store(STATE, plausible(&hostile.meaning, kind, delta, status));
            }
            Step::Behave { pid, generation, status } => hostile.behave(StatusUpdate {
                pid: pid.cast_signed(),
                generation,
                status: Status(status.cast_signed()),
            }),
            Step::Publish(status) => honest.publish(Status(status), None),
            Step::Kill { status, stores } => honest.publish(Status(status), Some(stores % 3)),
            Step::Pass(n) => {
                for _ in 0..n % 8 {
                    if hostile.epoch.watched() {
                        hostile.look();
                    }
                    if honest.epoch.watched() {
                        honest.look();
                    }
                }
            }
            Step::Sleep { hostile: true } => {
                if hostile.epoch.watched() {
                    hostile.epoch.sleep(&hostile.mem);
                    if hostile.look() != Look::Unchanged {
                        hostile.epoch.wake(&hostile.mem);
                    }
                }
            }
            Step::Sleep { hostile: false } => {
                if honest.epoch.watched() {
                    honest.epoch.sleep(&honest.mem);
                    if honest.look() != Look::Unchanged {
                        honest.epoch.wake(&honest.mem);
                    }
                }
            }
            Step::Wake { hostile: true } => {
                if !hostile.epoch.watched() {
                    hostile.epoch.wake(&hostile.mem);
                }
            }
            Step::Wake { hostile: false } => {
                if !honest.epoch.watched() {
                    honest.epoch.wake(&honest.mem);
                }
            }
            Step::Harvest => {
                if std::mem::take(&mut honest.doorbell) && !honest.epoch.watched() {
                    honest.epoch.wake(&honest.mem);
                }
            }
        }
        honest.check_handshake();
    }

    // The child stops. The master takes its doorbell and looks at what it
    // watches: a child that finished its last publish has had its last
    // state delivered by now. Then the master reaps it, with one last look
    // whether it watches the slot or not: the last state has arrived.
    if std::mem::take(&mut honest.doorbell) && !honest.epoch.watched() {
        honest.epoch.wake(&honest.mem);
    }
    if honest.epoch.watched() {
        honest.look();
    }
    if !honest.killed {
        assert_eq!(honest.reported, honest.published, "the last state arrives through the handshake");
    }
    honest.look();
    assert_eq!(honest.reported, honest.published, "the last state arrives");
    if hostile.epoch.watched() {
        hostile.look();
    }
});
