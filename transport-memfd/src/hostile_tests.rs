//! Property tests: a consumer fed arbitrary ring memory and arbitrary
//! hostile writes never panics, reports what it rejects, and an honest ring
//! next to it stays exact; the same through real sealed memfds. Plus the
//! source's bookkeeping of rings (registering, forgetting, which it
//! watches and which it sleeps on) in one process.

use std::os::fd::OwnedFd;

use master_proto::{Received, Sender, Status, StatusSink, StatusSource, StatusUpdate, Transport};
use proptest::prelude::*;

use crate::ring::{Consumer, HEADER_WORDS, Item, Ordering, Producer, RingMem, SLOT_WORDS, done, halves, rec, writing};
use crate::{Memfd, MemfdSink, MemfdSource};

/// One step of a test run.
#[derive(Clone, Debug)]
enum Step {
    /// The hostile producer stores `value` at word `word` (modulo the
    /// ring's words: the header's 32-bit words, then the slots' 64-bit
    /// words; a header word takes the value's low half).
    Hostile { word: usize, value: u64 },
    /// The honest producer publishes its next record (if there is room).
    Honest,
    /// The consumer takes up to `n` items from each ring.
    Consume { n: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (any::<usize>(), any::<u64>()).prop_map(|(word, value)| Step::Hostile { word, value }),
        // A `rec` word whose seq is near the ones the consumer expects (a
        // record, being written, or the previous lap) is the
        // plausible-looking lie.
        3 => (0usize..CAPACITY as usize, 0u32..40, 0u8..3, any::<u32>()).prop_map(|(slot, i, kind, status)| {
            let seq = match kind { 0 => done(i), 1 => writing(i), _ => i };
            Step::Hostile { word: HEADER_WORDS + SLOT_WORDS * slot, value: rec(seq, status) }
        }),
        3 => Just(Step::Honest),
        2 => (1usize..20).prop_map(|n| Step::Consume { n }),
    ]
}

/// Slots in the rings of the ring-level test.
const CAPACITY: u32 = 8;

/// Stores `value` at word `word` of `mem` (see [`Step::Hostile`]).
fn hostile_store(mem: &RingMem, word: usize, value: u64) {
    let ring = mem.ring();
    let word = word % (ring.header.len() + ring.slots.len());
    match ring.header.get(word) {
        Some(w) => w.store(halves(value).1, Ordering::Release),
        None => ring.slots[word - ring.header.len()].store(value, Ordering::Release),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary initial contents of a hostile ring (the capacity word
    /// included, which the consumer never reads), arbitrary hostile stores
    /// during the run: the consumer returns for every call, and the honest
    /// ring consumed in the same loop delivers exactly what was published.
    #[test]
    fn hostile_ring_never_hurts_the_consumer_or_its_neighbour(
        init in proptest::collection::vec(any::<u64>(), 0..HEADER_WORDS + SLOT_WORDS * CAPACITY as usize),
        steps in proptest::collection::vec(step(), 1..300),
    ) {
        let hostile = RingMem::new(CAPACITY);
        let mut hostile_consumer = Consumer::new(CAPACITY);
        // The consumer's init ran before the child got the ring; then the
        // child wrote anything it liked.
        hostile_consumer.init_zeroed(hostile.ring());
        for (word, value) in init.iter().enumerate() {
            hostile_store(&hostile, word, *value);
        }
        let honest = RingMem::new(CAPACITY);
        let mut honest_consumer = Consumer::new(CAPACITY);
        honest_consumer.init_zeroed(honest.ring());
        let mut producer = Producer::new(honest.ring()).expect("a valid ring");
        let (mut sent, mut received) = (0i32, 0i32);
        for step in steps.iter().chain([Step::Consume { n: 100 }].iter()) {
            match *step {
                Step::Hostile { word, value } => hostile_store(&hostile, word, value),
                Step::Honest => {
                    if producer.has_room(honest.ring()) {
                        producer.push(honest.ring(), StatusUpdate { pid: 1, generation: 2, status: Status(sent) });
                        sent += 1;
                    }
                }
                Step::Consume { n } => {
                    for _ in 0..n {
                        // Whatever it returns, it returns.
                        let _ = hostile_consumer.next(hostile.ring());
                        match honest_consumer.next(honest.ring()) {
                            Some(Item::Update(u)) => {
                                prop_assert_eq!(u, StatusUpdate { pid: 1, generation: 2, status: Status(received) });
                                received += 1;
                            }
                            Some(Item::Malformed(m)) => prop_assert!(false, "honest ring reported {:?}", m),
                            None => honest_consumer.flush(honest.ring()),
                        }
                    }
                }
            }
        }
        prop_assert_eq!(received, sent, "every honest record, once, in order");
    }

    /// The same through real sealed memfds and the real source: one child's
    /// sink scribbles arbitrary bytes at arbitrary offsets of its own ring
    /// while another's notifies; the source never panics and the honest
    /// child's updates arrive exactly, under its channel.
    #[test]
    fn scribbling_sink_never_hurts_the_source_or_its_neighbour(
        writes in proptest::collection::vec((any::<usize>(), proptest::collection::vec(any::<u8>(), 0..24), 0u8..4), 1..200),
    ) {
        let mut source = Memfd.open().expect("open");
        let mut hostile = in_process_sink(&mut source, 11, 100);
        let honest = in_process_sink(&mut source, 11, 200);
        let (mut sent, mut received) = (0i32, 0i32);
        let drain = |source: &mut MemfdSource, received: &mut i32| -> Result<(), TestCaseError> {
            while let Some(item) = source.try_recv().expect("read") {
                match item {
                    Received::Update { update, sender: Sender::Channel(200) } => {
                        prop_assert_eq!(update, StatusUpdate { pid: honest_pid(), generation: 11, status: Status(*received) });
                        *received += 1;
                    }
                    Received::Update { sender, .. } => prop_assert_eq!(sender, Sender::Channel(100)),
                    Received::Malformed(_) => {}
                }
            }
            Ok(())
        };
        for (offset, bytes, honest_sends) in &writes {
            let len = hostile.region_len();
            // Half the writes land in the ring's first 256 bytes (indices,
            // first slots), where lies matter most.
            let at = if offset % 2 == 0 { offset % 256 } else { offset % (len + 64) };
            let written = hostile.scribble(at, bytes);
            prop_assert_eq!(written, bytes.len().min(len.saturating_sub(at)), "writes what fits in the region");
            for _ in 0..*honest_sends {
                honest.notify(Status(sent)).expect("notify");
                sent += 1;
            }
            drain(&mut source, &mut received)?;
        }
        drain(&mut source, &mut received)?;
        prop_assert_eq!(received, sent);
        Memfd.forget_child(&mut source, 100).expect("forget_child");
        drain(&mut source, &mut received)?;
        prop_assert_eq!(source.rings(), 1);
    }
}

/// Forgetting a reaped child delivers what its ring still held, then
/// reports the record it died writing as torn, and unmaps the ring.
#[test]
fn forgetting_a_child_delivers_what_it_left_and_reports_a_torn_record() {
    let mut source = Memfd.open().expect("open");
    let mut sink = in_process_sink(&mut source, 3, 400);
    for n in 0..3 {
        sink.notify(Status(n)).expect("notify");
    }
    // Record 3 half written: its slot's `rec` says "record 3, being
    // written" (seq 2 * 3 + 1, in the word's high half).
    assert_eq!(sink.scribble(128 + 3 * 16, &rec(writing(3), 0).to_ne_bytes()), 8);
    Memfd.forget_child(&mut source, 400).expect("forget_child");
    assert_eq!(source.rings(), 0);
    let mut got = Vec::new();
    source.drain(|item| got.push(item)).expect("read");
    let update = |n| Received::Update {
        update: StatusUpdate { pid: honest_pid(), generation: 3, status: Status(n) },
        sender: Sender::Channel(400),
    };
    assert_eq!(got, vec![update(0), update(1), update(2), Received::Malformed(master_proto::Malformed::Torn)]);
}

/// A ring is not read until its child is registered; registering rings the
/// doorbell, so what the child sent first is not stranded.
#[test]
fn unregistered_ring_waits_for_its_pid() {
    use std::os::fd::AsFd;
    let mut source = Memfd.open().expect("open");
    let end = Memfd.child_end(&mut source, 5).expect("child end");
    let mut aux = end.aux.into_iter().map(|(_, fd)| fd);
    let mut next = || -> OwnedFd { aux.next().expect("three aux descriptors") };
    let (control, doorbell, lifeline) = (next(), next(), next());
    let sink = MemfdSink::new(end.status, control, doorbell, lifeline, honest_pid(), 5).expect("sink");
    assert_eq!(source.try_recv(), Ok(None));
    sink.notify(Status::AVAIL).expect("notify");
    assert_eq!(source.try_recv(), Ok(None), "no pid yet: not read");
    Memfd.register_child(&mut source, 5, 500).expect("register_child");
    let mut fds = [nix::poll::PollFd::new(source.as_fd(), nix::poll::PollFlags::POLLIN)];
    assert_eq!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(1), "registering rang the doorbell");
    let (u, sender) = match source.try_recv() {
        Ok(Some(Received::Update { update, sender })) => (update, sender),
        other => panic!("expected the child's update, got {other:?}"),
    };
    assert_eq!((u.status, sender), (Status::AVAIL, Sender::Channel(500)));
}

/// Ping-pong between a child thread and the master: the child sends a
/// burst of three updates (enough to wake the master fully, so it has a
/// barrier to pass on its way back to sleep), waits until the master has
/// taken them, pauses for a varying while and sends the next burst, so that
/// its publishes land before, during and after the master's way to sleep.
/// A lost wake-up strands a burst and shows as a poll that times out.
#[test]
fn no_wakeup_lost_on_the_way_to_sleep() {
    use std::os::fd::AsFd;
    use std::sync::Arc;
    use std::sync::atomic::AtomicI32;
    const ROUNDS: i32 = 40_000;
    let mut source = Memfd.open().expect("open");
    let sink = in_process_sink(&mut source, 2, 600);
    let taken = Arc::new(AtomicI32::new(-1));
    let seen = Arc::clone(&taken);
    let child = std::thread::spawn(move || {
        let mut x: u32 = 0x1234_5678;
        for n in (0..ROUNDS).step_by(3) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while seen.load(std::sync::atomic::Ordering::Acquire) < n - 1 {
                assert!(std::time::Instant::now() < deadline, "the master never took update {}", n - 1);
                std::thread::yield_now();
            }
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            for _ in 0..(x % 4096) {
                std::hint::spin_loop();
            }
            for k in n..(n + 3).min(ROUNDS) {
                sink.notify(Status(k)).expect("notify");
            }
        }
        sink
    });
    let mut next = 0;
    while next < ROUNDS {
        let mut fds = [nix::poll::PollFd::new(source.as_fd(), nix::poll::PollFlags::POLLIN)];
        let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(30_000u16)).expect("poll");
        assert!(ready > 0, "lost wake-up: the doorbell stayed silent for 30 s with update {next} due");
        while let Some(item) = source.try_recv().expect("read") {
            let Received::Update { update, .. } = item else { panic!("malformed {item:?}") };
            assert_eq!(update.status, Status(next));
            taken.store(next, std::sync::atomic::Ordering::Release);
            next += 1;
        }
    }
    drop(child.join().expect("the child thread"));
}

fn honest_pid() -> i32 {
    i32::try_from(std::process::id()).expect("a pid fits an i32")
}

/// A sink in this process over a fresh child end, registered under `pid`.
fn in_process_sink(source: &mut MemfdSource, generation: u32, pid: i32) -> MemfdSink {
    let end = Memfd.child_end(source, generation).expect("child end");
    Memfd.register_child(source, generation, pid).expect("register_child");
    let mut aux = end.aux.into_iter().map(|(_, fd)| fd);
    let mut next = || -> OwnedFd { aux.next().expect("three aux descriptors") };
    let (control, doorbell, lifeline) = (next(), next(), next());
    MemfdSink::new(end.status, control, doorbell, lifeline, honest_pid(), generation).expect("sink")
}

/// A child that notifies as fast as it can, for ever, cannot hold the
/// master in `drain`: each call ends after a bounded number of passes (and
/// the doorbell stays readable), and every update still arrives in order.
#[test]
fn drain_ends_while_a_child_floods() {
    use std::os::fd::AsFd;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let mut source = Memfd.open().expect("open");
    let sink = in_process_sink(&mut source, 4, 700);
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let child = std::thread::spawn(move || {
        let mut sent = 0;
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            sink.notify(Status(sent)).expect("notify");
            sent += 1;
        }
        sent
    });
    // The next update expected; every update must come in order.
    let next = std::cell::Cell::new(0);
    let take = |item: Received| {
        let Received::Update { update, .. } = item else { panic!("malformed {item:?}") };
        assert_eq!(update.status, Status(next.get()));
        next.set(next.get() + 1);
    };
    let mut calls = 0;
    while next.get() < 1_000_000 {
        let n = source.drain(&take).expect("read");
        let most = crate::source::PASSES * crate::source::STREAK;
        assert!(n <= most as usize, "one drain took {n} updates: more than its passes allow");
        calls += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // The child may be blocked on a full ring, waiting for this master to
    // read: go on reading until it has seen the stop.
    while !child.is_finished() {
        source.drain(&take).expect("read");
    }
    let sent = child.join().expect("the child thread");
    while next.get() < sent {
        let mut fds = [nix::poll::PollFd::new(source.as_fd(), nix::poll::PollFlags::POLLIN)];
        let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10_000u16)).expect("poll");
        assert!(ready > 0, "update {} pending, the doorbell silent", next.get());
        source.drain(&take).expect("read");
    }
    assert_eq!(next.get(), sent);
    assert!(calls > 1);
}

/// A child that resets its own doorbell (reads the eventfd, as a hostile
/// child may) strands nothing of another child's: each child's doorbell is
/// its own, so the master's descriptor stays readable for the other's
/// update, which then arrives.
#[test]
fn a_doorbell_reset_by_one_child_strands_no_other() {
    use std::os::fd::AsFd;
    let mut source = Memfd.open().expect("open");
    let end = Memfd.child_end(&mut source, 1).expect("child end");
    Memfd.register_child(&mut source, 1, 801).expect("register_child");
    let hostile_bell = end.aux.iter().find(|(name, _)| *name == crate::DOORBELL).expect("a doorbell").1.try_clone();
    let hostile_bell = hostile_bell.expect("dup the doorbell");
    let honest = in_process_sink(&mut source, 2, 802);
    // Registering rang; the master takes nothing, and is asleep.
    assert_eq!(source.try_recv(), Ok(None));
    assert_eq!(source.try_recv(), Ok(None));
    honest.notify(Status::TAKEN).expect("notify");
    let mut counter = [0u8; 8];
    let _ = nix::unistd::read(&hostile_bell, &mut counter);
    let mut fds = [nix::poll::PollFd::new(source.as_fd(), nix::poll::PollFlags::POLLIN)];
    assert_eq!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(1), "the honest child's ring is heard");
    let got = source.try_recv().expect("read");
    assert!(
        matches!(got, Some(Received::Update { update, sender: Sender::Channel(802) }) if update.status == Status::TAKEN),
        "{got:?}"
    );
}

/// A sleeping master with many idle children looks, per wake-up, at the
/// ring that rang, not at the others; going back to sleep after a child
/// was busy looks again at that child's ring only.
#[test]
fn a_wakeup_looks_at_the_ring_that_rang_not_at_every_ring() {
    use std::os::fd::AsFd;
    const CHILDREN: i32 = 64;
    let mut source = Memfd.open().expect("open");
    let sinks: Vec<MemfdSink> = (0..CHILDREN).map(|k| in_process_sink(&mut source, 20, 1000 + k)).collect();
    // Every child busy once: two updates each make the master watch every
    // ring, and the drain's pass that finds nothing keeps watching them;
    // the next drain, finding nothing again, sleeps on them all.
    for sink in &sinks {
        sink.notify(Status::TAKEN).expect("notify");
        sink.notify(Status::AVAIL).expect("notify");
    }
    assert_eq!(source.drain(|_| {}), Ok(2 * 64));
    assert_eq!(source.watched(), 64, "the first empty pass keeps watching");
    assert_eq!(source.drain(|_| {}), Ok(0));
    assert_eq!(source.watched(), 0, "the second sleeps on every ring");
    assert_eq!(source.sleep_word(1000), Some(1));
    // One update at a time, from each child in turn: each wake-up looks at
    // that child's ring twice (its record, then empty) and leaves it slept on.
    for (k, sink) in (0..).zip(&sinks) {
        let looks = source.looks();
        sink.notify(Status(k)).expect("notify");
        let mut fds = [nix::poll::PollFd::new(source.as_fd(), nix::poll::PollFlags::POLLIN)];
        assert_eq!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(1), "child {k} rang");
        let mut got = Vec::new();
        source.drain(|item| got.push(item)).expect("read");
        assert!(
            matches!(got[..], [Received::Update { update, sender: Sender::Channel(p) }] if update.status == Status(k) && p == 1000 + k),
            "child {k}: {got:?}"
        );
        assert_eq!(source.looks() - looks, 2, "child {k}: looks at one ring of {CHILDREN}");
        assert_eq!(source.watched(), 0);
    }
    // A burst wakes its ring; going back to sleep looks at it alone.
    let looks = source.looks();
    for n in 0..3 {
        sinks[5].notify(Status(n)).expect("notify");
    }
    assert_eq!(source.drain(|_| {}), Ok(3));
    assert_eq!(source.watched(), 1);
    assert_eq!(source.sleep_word(1005), Some(0), "watched: its child stops ringing");
    assert_eq!(source.drain(|_| {}), Ok(0));
    assert_eq!(source.watched(), 0);
    assert_eq!(source.sleep_word(1005), Some(1));
    assert_eq!(source.looks() - looks, 4, "a pass with the burst, one empty, one empty and the last look");
}

/// Two children's sinks (`generation`, `pids`), each of which has sent an
/// update the master drained: both rings are watched, each found empty
/// once (the drain's last pass).
fn two_watched_rings(source: &mut MemfdSource, generation: u32, pids: [i32; 2]) -> (MemfdSink, MemfdSink) {
    let sinks = pids.map(|pid| in_process_sink(source, generation, pid));
    for sink in &sinks {
        sink.notify(Status::TAKEN).expect("notify");
        sink.notify(Status::AVAIL).expect("notify");
    }
    assert_eq!(source.drain(|_| {}), Ok(4));
    assert_eq!(source.watched(), 2);
    let [a, b] = sinks;
    (a, b)
}

/// Only the rings that went idle are slept on: with one child busy and one
/// idle, the master sleeps on the idle child's ring (whose next update
/// rings its doorbell) and watches the busy one (whose updates ring
/// nothing).
#[test]
fn only_the_rings_that_went_idle_are_slept_on() {
    let mut source = Memfd.open().expect("open");
    let (busy, idle) = two_watched_rings(&mut source, 30, [2001, 2002]);
    for n in 0..3 {
        busy.notify(Status(n)).expect("notify");
        assert_eq!(source.drain(|_| {}), Ok(1));
    }
    assert_eq!(source.watched(), 1, "the idle ring is slept on, the busy one watched");
    assert_eq!((source.sleep_word(2001), source.sleep_word(2002)), (Some(0), Some(1)));
    busy.notify(Status(3)).expect("notify");
    idle.notify(Status(4)).expect("notify");
    assert_eq!(source.bell_count(2001), Some(0), "a watched ring's child does not ring");
    assert_eq!(source.bell_count(2002), Some(1), "a slept-on ring's child rings");
    let mut got = Vec::new();
    source.drain(|item| got.push(item)).expect("read");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(source.bell_count(2002), Some(0), "reset before the ring was looked at");
}

/// A child that clears its ring's `SLEEP` word (as a hostile child may)
/// keeps only itself from ringing: the master, asleep on both rings, still
/// hears the honest child, and has the other's update once it forgets that
/// child's ring.
#[test]
fn a_child_that_clears_its_sleep_word_strands_only_itself() {
    use std::os::fd::AsFd;
    let mut source = Memfd.open().expect("open");
    let mut hostile = in_process_sink(&mut source, 1, 901);
    let honest = in_process_sink(&mut source, 2, 902);
    assert_eq!(source.try_recv(), Ok(None), "registered, nothing sent");
    assert_eq!(hostile.scribble(4 * crate::ring::SLEEP, &0u32.to_ne_bytes()), 4);
    hostile.notify(Status::TAKEN).expect("notify");
    assert_eq!(source.bell_count(901), Some(0), "it reads its own word, and does not ring");
    honest.notify(Status::AVAIL).expect("notify");
    let mut fds = [nix::poll::PollFd::new(source.as_fd(), nix::poll::PollFlags::POLLIN)];
    assert_eq!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(1), "the honest child's ring is heard");
    let mut got = Vec::new();
    source.drain(|item| got.push(item)).expect("read");
    assert!(
        matches!(got[..], [Received::Update { update, sender: Sender::Channel(902) }] if update.status == Status::AVAIL),
        "{got:?}"
    );
    let mut fds = [nix::poll::PollFd::new(source.as_fd(), nix::poll::PollFlags::POLLIN)];
    assert_eq!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(0), "nothing more rang");
    Memfd.forget_child(&mut source, 901).expect("forget_child");
    got.clear();
    source.drain(|item| got.push(item)).expect("read");
    assert!(
        matches!(got[..], [Received::Update { update, sender: Sender::Channel(901) }] if update.status == Status::TAKEN),
        "{got:?}"
    );
}

/// A ring that stays empty while another keeps every pass busy is slept on
/// after `LONG_IDLE` empty looks, within the drain: the passes after that
/// look at the busy ring alone.
#[test]
fn a_ring_idle_beside_a_busy_one_is_slept_on_within_a_drain() {
    use crate::source::{LONG_IDLE, STREAK};
    let mut source = Memfd.open().expect("open");
    let (busy, _idle) = two_watched_rings(&mut source, 40, [3001, 3002]);
    let passes = LONG_IDLE + 10;
    for n in 0..STREAK * passes {
        busy.notify(Status(n.cast_signed())).expect("notify");
    }
    let looks = source.looks();
    assert_eq!(source.drain(|_| {}), Ok((STREAK * passes) as usize));
    assert_eq!(source.watched(), 1, "the idle ring slept on, the busy one watched");
    assert_eq!(source.sleep_word(3002), Some(1));
    // The busy ring: a look per pass, and the empty pass that ends the
    // drain. The idle one: empty looks until it had LONG_IDLE in a row,
    // then its last look.
    assert_eq!(source.looks() - looks, u64::from(passes + 1) + u64::from(LONG_IDLE));
}
