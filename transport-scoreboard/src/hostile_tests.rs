//! Property tests: a reader fed arbitrary slot memory and arbitrary hostile
//! stores never panics and reports what it rejects, while an honest slot
//! next to it stays exact (latest state: in order, never stale, the last
//! one always seen); the same through real sealed memfds and the real
//! source. Plus the source's bookkeeping of slots in one process: the cost
//! of a wake, registering, forgetting, the doorbell rung once per sleep,
//! and the drain's bound.

use std::os::fd::{AsFd, OwnedFd};

use master_proto::{Malformed, Received, Sender, Status, StatusSink, StatusSource, StatusUpdate, Transport};
use proptest::prelude::*;

use crate::slot::{self, AtomicU64, Look, Ordering, Reader, SLOT_WORDS, SlotMem, Writer};
use crate::{Scoreboard, ScoreboardSink, ScoreboardSource};

/// One step of a test run.
#[derive(Clone, Debug)]
enum Step {
    /// The hostile writer stores `value` at word `word` (modulo the slot's
    /// words).
    Hostile { word: usize, value: u64 },
    /// The honest writer publishes its next state.
    Honest,
    /// The master looks at both slots `n` times.
    Look { n: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (any::<usize>(), any::<u64>()).prop_map(|(word, value)| Step::Hostile { word, value }),
        // A state word with a small `seq`, odd or even, is the
        // plausible-looking lie.
        3 => (0u32..40, any::<u32>()).prop_map(|(seq, status)| Step::Hostile { word: slot::STATE, value: slot::word(seq, status) }),
        3 => Just(Step::Honest),
        2 => (1usize..4).prop_map(|n| Step::Look { n }),
    ]
}

fn store(words: &[AtomicU64], word: usize, value: u64) {
    words[word % words.len()].store(value, Ordering::Release);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary initial contents of a hostile slot and arbitrary hostile
    /// stores during the run: every look returns, and the honest slot
    /// looked at in the same loop delivers a strictly increasing
    /// subsequence of what was published, ending with the last.
    #[test]
    fn hostile_slot_never_hurts_the_reader_or_its_neighbour(
        init in proptest::collection::vec(any::<u64>(), 0..SLOT_WORDS),
        steps in proptest::collection::vec(step(), 1..300),
    ) {
        let hostile = SlotMem::new();
        for (word, value) in init.iter().enumerate() {
            store(hostile.words(), word, *value);
        }
        let mut hostile_reader = Reader::new();
        let honest = SlotMem::new();
        let mut honest_reader = Reader::new();
        let mut writer = Writer::new();
        let (mut sent, mut last_seen) = (0i32, -1i32);
        for step in steps.iter().chain([Step::Look { n: 1 }].iter()) {
            match *step {
                Step::Hostile { word, value } => store(hostile.words(), word, value),
                Step::Honest => {
                    writer.publish(honest.words(), StatusUpdate { pid: 1, generation: 2, status: Status(sent) });
                    sent += 1;
                }
                Step::Look { n } => {
                    for _ in 0..n {
                        // Whatever it returns, it returns.
                        let _ = hostile_reader.look(hostile.words());
                        match honest_reader.look(honest.words()) {
                            Look::Changed(u, skipped) => {
                                prop_assert_eq!((u.pid, u.generation), (1, 2));
                                prop_assert!(u.status.0 > last_seen, "stale or repeated: {:?} after {}", u, last_seen);
                                prop_assert_eq!(i64::from(u.status.0 - last_seen - 1), i64::try_from(skipped).unwrap_or(-1));
                                last_seen = u.status.0;
                            }
                            Look::Unchanged => {}
                            other => prop_assert!(false, "honest slot reported {:?}", other),
                        }
                    }
                }
            }
        }
        prop_assert_eq!(last_seen, sent - 1, "the last state is seen");
    }

    /// The same through real sealed memfds and the real source: one child's
    /// sink scribbles arbitrary bytes at arbitrary offsets of its own slot
    /// while another's notifies; the source never panics, and the honest
    /// child's states arrive in order under its channel, ending with its
    /// last.
    #[test]
    fn scribbling_sink_never_hurts_the_source_or_its_neighbour(
        writes in proptest::collection::vec((any::<usize>(), proptest::collection::vec(any::<u8>(), 0..24), 0u8..4), 1..100),
    ) {
        let mut source = Scoreboard.open().expect("open");
        let mut hostile = in_process_sink(&mut source, 11, 100);
        let honest = in_process_sink(&mut source, 11, 200);
        let (mut sent, mut last_seen) = (0i32, -1i32);
        let drain = |source: &mut ScoreboardSource, last_seen: &mut i32| -> Result<(), TestCaseError> {
            let mut items = Vec::new();
            source.drain(|item| items.push(item)).expect("drain");
            for item in items {
                match item {
                    Received::Update { update, sender: Sender::Channel(200) } => {
                        prop_assert_eq!((update.pid, update.generation), (own_pid(), 11));
                        prop_assert!(update.status.0 > *last_seen, "stale: {:?} after {}", update, last_seen);
                        *last_seen = update.status.0;
                    }
                    Received::Update { sender, .. } => prop_assert_eq!(sender, Sender::Channel(100)),
                    Received::Malformed(m) => {
                        prop_assert_eq!(m, Malformed::Corrupt("slot state with an even sequence number"));
                    }
                }
            }
            Ok(())
        };
        for (offset, bytes, honest_sends) in &writes {
            let len = hostile.region_len();
            // Most writes land on the slot's words, where lies matter.
            let at = if offset % 4 == 0 { offset % (len + 64) } else { offset % (slot::SLOT_BYTES + 8) };
            let written = hostile.scribble(at, bytes);
            prop_assert_eq!(written, bytes.len().min(len.saturating_sub(at)), "writes what fits in the region");
            for _ in 0..*honest_sends {
                honest.notify(Status(sent)).expect("notify");
                sent += 1;
            }
            drain(&mut source, &mut last_seen)?;
        }
        drain(&mut source, &mut last_seen)?;
        prop_assert_eq!(last_seen, sent - 1, "the honest child's last state arrived");
        Scoreboard.forget_child(&mut source, 100).expect("forget_child");
        drain(&mut source, &mut last_seen)?;
        prop_assert_eq!(source.slots(), 1);
    }
}

fn own_pid() -> i32 {
    i32::try_from(std::process::id()).expect("a pid fits an i32")
}

/// The descriptors of a fresh child end, taken apart.
fn end_parts(source: &mut ScoreboardSource, generation: u32) -> (OwnedFd, OwnedFd, OwnedFd, OwnedFd) {
    let end = Scoreboard.child_end(source, generation).expect("child end");
    let mut aux = end.aux.into_iter().map(|(_, fd)| fd);
    let mut next = || -> OwnedFd { aux.next().expect("three aux descriptors") };
    let (control, doorbell, lifeline) = (next(), next(), next());
    (end.status, control, doorbell, lifeline)
}

/// A sink in this process over a fresh child end, registered under `pid`.
fn in_process_sink(source: &mut ScoreboardSource, generation: u32, pid: i32) -> ScoreboardSink {
    let (slot, control, doorbell, lifeline) = end_parts(source, generation);
    Scoreboard.register_child(source, generation, pid).expect("register_child");
    ScoreboardSink::new(slot, control, doorbell, lifeline, own_pid(), generation).expect("sink")
}

/// Drains `source` until a drain finds nothing twice in a row with no slot
/// watched (every slot slept on), returning what arrived.
///
/// # Panics
///
/// If that takes more than a hundred drains (the slots never go to sleep).
fn settle(source: &mut ScoreboardSource) -> Vec<Received> {
    let mut got = Vec::new();
    let mut quiet = 0;
    for _ in 0..100 {
        let n = source.drain(|item| got.push(item)).expect("drain");
        quiet = if n == 0 && source.watched() == 0 { quiet + 1 } else { 0 };
        if quiet == 2 {
            return got;
        }
    }
    panic!("a hundred drains and {} slots are still watched", source.watched());
}

fn state(pid: i32, generation: u32, status: i32) -> Received {
    Received::Update {
        update: StatusUpdate { pid: own_pid(), generation, status: Status(status) },
        sender: Sender::Channel(pid),
    }
}

/// The master's work per wake grows with the children that changed, not
/// with the children: 512 children asleep, one changes, and the master
/// looks at that one slot (and nothing else) to deliver it.
#[test]
fn a_wake_costs_the_changes_not_the_children() {
    let mut source = Scoreboard.open().expect("open");
    let sinks: Vec<ScoreboardSink> = (0..512).map(|k| in_process_sink(&mut source, 1, 1000 + k)).collect();
    for sink in &sinks {
        sink.notify(Status::AVAIL).expect("notify");
    }
    let first = settle(&mut source);
    assert_eq!(first.len(), 512, "every child's first state");
    assert_eq!(source.watched(), 0, "every slot slept on");
    for (round, k) in [7usize, 300, 511, 0].into_iter().enumerate() {
        let before = source.counters();
        sinks[k].notify(Status::TAKEN).expect("notify");
        let got = settle(&mut source);
        assert_eq!(got, vec![state(1000 + i32::try_from(k).expect("fits"), 1, 0)], "round {round}");
        let looks = source.counters().looks - before.looks;
        // One look delivers it, two more find it idle, one last look after
        // the barrier: four, whatever the number of children.
        assert!(looks <= 4, "round {round}: {looks} looks at slots for one change among 512 children");
        sinks[k].notify(Status::AVAIL).expect("notify");
        let _ = settle(&mut source);
    }
}

/// While the master does not read, a child notifies as often as it likes,
/// never waits, and rings its doorbell once: the master then reads its
/// latest state, with the overwritten ones counted.
#[test]
fn a_stopped_master_costs_a_child_one_ring() {
    let mut source = Scoreboard.open().expect("open");
    let sink = in_process_sink(&mut source, 3, 400);
    let _ = settle(&mut source);
    for n in 0..100_000 {
        sink.notify(Status(n)).expect("notify");
    }
    assert_eq!(source.doorbell_rings(400), Some(1), "one ring for a whole sleep of the master");
    let got = settle(&mut source);
    assert_eq!(got, vec![state(400, 3, 99_999)]);
    assert_eq!(source.counters().overwritten, 99_999);
    sink.notify(Status(7)).expect("notify");
    assert_eq!(source.doorbell_rings(400), Some(2), "the master slept again: one more ring");
    assert_eq!(settle(&mut source), vec![state(400, 3, 7)]);
}

/// Forgetting a reaped child delivers its last state, and unmaps the slot;
/// a slot whose last word is a scribble is reported as such.
#[test]
fn forgetting_a_child_delivers_its_last_state() {
    let mut source = Scoreboard.open().expect("open");
    let sink = in_process_sink(&mut source, 3, 400);
    for n in 0..3 {
        sink.notify(Status(n)).expect("notify");
    }
    Scoreboard.forget_child(&mut source, 400).expect("forget_child");
    assert_eq!(source.slots(), 0);
    assert_eq!(settle(&mut source), vec![state(400, 3, 2)]);

    let mut sink2 = in_process_sink(&mut source, 4, 401);
    sink2.notify(Status(5)).expect("notify");
    assert_eq!(settle(&mut source), vec![state(401, 4, 5)]);
    // A state word with an even seq (the documented layout: word 0).
    assert_eq!(sink2.scribble(0, &slot::word(4, 1).to_ne_bytes()), 8);
    Scoreboard.forget_child(&mut source, 401).expect("forget_child");
    assert_eq!(
        settle(&mut source),
        vec![Received::Malformed(Malformed::Corrupt("slot state with an even sequence number"))]
    );
    assert_eq!(source.slots(), 0);
}

/// A slot is not read until its child is registered; registering leaves an
/// edge, so what the child sent first is not stranded.
#[test]
fn unregistered_slot_waits_for_its_pid() {
    let mut source = Scoreboard.open().expect("open");
    let (slot, control, doorbell, lifeline) = end_parts(&mut source, 5);
    let sink = ScoreboardSink::new(slot, control, doorbell, lifeline, own_pid(), 5).expect("sink");
    assert_eq!(source.try_recv(), Ok(None));
    sink.notify(Status::AVAIL).expect("notify");
    assert_eq!(source.try_recv(), Ok(None), "no pid yet: not read");
    Scoreboard.register_child(&mut source, 5, 500).expect("register_child");
    let mut fds = [nix::poll::PollFd::new(source.as_fd(), nix::poll::PollFlags::POLLIN)];
    assert_eq!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(1), "registering left an edge");
    assert_eq!(source.try_recv(), Ok(Some(state(500, 5, 1))));
}

/// Ping-pong between a child thread and the master: the child sends a
/// state, waits until the master has taken it, pauses for a varying while
/// and sends the next, so that its publishes land before, during and after
/// the master's way to sleep on its slot. A lost wake-up strands a state
/// and shows as a poll that times out.
#[test]
fn no_wakeup_lost_on_the_way_to_sleep() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicI32;
    const ROUNDS: i32 = 20_000;
    let mut source = Scoreboard.open().expect("open");
    let sink = in_process_sink(&mut source, 2, 600);
    let taken = Arc::new(AtomicI32::new(-1));
    let seen = Arc::clone(&taken);
    let child = std::thread::spawn(move || {
        let mut x: u32 = 0x1234_5678;
        for n in 0..ROUNDS {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while seen.load(std::sync::atomic::Ordering::Acquire) < n - 1 {
                assert!(std::time::Instant::now() < deadline, "the master never took state {}", n - 1);
                std::thread::yield_now();
            }
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            for _ in 0..(x % 4096) {
                std::hint::spin_loop();
            }
            sink.notify(Status(n)).expect("notify");
        }
        sink
    });
    let mut next = 0;
    while next < ROUNDS {
        let mut fds = [nix::poll::PollFd::new(source.as_fd(), nix::poll::PollFlags::POLLIN)];
        let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(30_000u16)).expect("poll");
        assert!(ready > 0, "lost wake-up: the epoll stayed silent for 30 s with state {next} due");
        while let Some(item) = source.try_recv().expect("read") {
            let Received::Update { update, .. } = item else { panic!("malformed {item:?}") };
            assert_eq!(update.status, Status(next), "one state per round, in order");
            taken.store(next, std::sync::atomic::Ordering::Release);
            next += 1;
        }
    }
    drop(child.join().expect("the child thread"));
    assert!(source.counters().sleeps > 0, "the master went to sleep on the slot in between");
}

/// A child that notifies as fast as it can, for ever, cannot hold the
/// master in `drain`: each call ends after a bounded number of passes (one
/// state a pass), the descriptor stays readable, and states keep arriving
/// in order.
#[test]
fn drain_ends_while_a_child_floods() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let mut source = Scoreboard.open().expect("open");
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
    let mut last = -1;
    let mut calls = 0;
    while calls < 2_000 {
        let n = source
            .drain(|item| {
                let Received::Update { update, .. } = item else { panic!("malformed {item:?}") };
                assert!(update.status.0 > last, "stale: {update:?} after {last}");
                last = update.status.0;
            })
            .expect("read");
        assert!(n <= crate::source::PASSES as usize, "one drain took {n} states: more than its passes allow");
        let mut fds = [nix::poll::PollFd::new(source.as_fd(), nix::poll::PollFlags::POLLIN)];
        let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10_000u16)).expect("poll");
        assert!(ready > 0, "the child floods, the epoll is silent");
        calls += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = child.join().expect("the child thread");
    let got = settle(&mut source);
    if let Some(Received::Update { update, .. }) = got.last() {
        last = update.status.0;
    }
    assert_eq!(last, sent - 1, "the last state arrives");
}
