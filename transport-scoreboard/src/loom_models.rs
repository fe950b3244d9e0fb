//! Loom models of the slot and the per-slot sleep/wake handshake: every
//! interleaving (up to `LOOM_MAX_PREEMPTIONS` preemptions) of small cases.
//!
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p master-proto-scoreboard --release --lib loom`
//!
//! The master's `membarrier` is modelled as a `SeqCst` fence on both sides
//! (what a child that is not registered for it does), and a doorbell as a
//! counter, or, for the edge-triggered model, as what an `EPOLLET` wait
//! sees of the master's epoll.

use loom::sync::atomic::AtomicU64 as Counter;
use loom::sync::{Arc, Mutex};
use loom::thread;
use master_proto::{Status, StatusUpdate};

use crate::slot::{self, Look, Ordering, Reader, SlotMem, Writer, fence};

/// State `n` of the models' child, an honest one: its pid and generation
/// are its own, written with its first state.
fn state(n: i32) -> StatusUpdate {
    StatusUpdate { pid: 7, generation: 9, status: Status(n) }
}

/// The state a look delivered, checked whole: never without the sender
/// written before it (the first state's `WHO`), never a status no publish
/// wrote.
fn whole(look: Look) -> Option<i32> {
    match look {
        Look::Changed(u, _) => {
            assert_eq!(u, state(u.status.0), "a state read without its sender: {u:?}");
            assert!((1..=3).contains(&u.status.0), "a status nobody published: {u:?}");
            Some(u.status.0)
        }
        Look::Unchanged => None,
        Look::Corrupt(m) => panic!("an honest slot reported {m:?}"),
    }
}

/// A child publishes states 1, 2, 3 while the master looks twice; then the
/// master looks once more. Every state delivered is whole (never a mix of
/// two), each later than the one before, and the last one is the child's
/// last.
#[test]
fn loom_states_arrive_whole_in_order_ending_with_the_last() {
    loom::model(|| {
        let mem = Arc::new(SlotMem::new());
        let m = Arc::clone(&mem);
        let child = thread::spawn(move || {
            let mut w = Writer::new();
            for n in 1..=3 {
                w.publish(m.words(), state(n));
            }
        });
        let mut reader = Reader::new();
        let mut seen = Vec::new();
        for _ in 0..2 {
            seen.extend(whole(reader.look(mem.words())));
        }
        child.join().expect("the child");
        seen.extend(whole(reader.look(mem.words())));
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "stale or repeated: {seen:?}");
        assert_eq!(seen.last(), Some(&3), "the last state: {seen:?}");
    });
}

/// A child stops for ever after any number of the stores of its first
/// publish (`WHO`, then `STATE`) or its second (`STATE`). Whatever the
/// master sees meanwhile is nothing, or a state whole with its sender; once
/// the child has stopped, the slot reads as the last state the child
/// finished, never a mix and never nothing after a state.
#[test]
fn loom_a_child_stopped_mid_publish_leaves_the_old_state_or_the_new() {
    for steps in 0..=3 {
        loom::model(move || {
            let mem = Arc::new(SlotMem::new());
            let m = Arc::clone(&mem);
            let child = thread::spawn(move || {
                let mut w = Writer::new();
                w.publish_steps(m.words(), state(1), steps.min(2));
                if steps == 3 {
                    w.publish(m.words(), state(2));
                }
            });
            let mut reader = Reader::new();
            let mut seen: Vec<i32> = whole(reader.look(mem.words())).into_iter().collect();
            child.join().expect("the child");
            seen.extend(whole(reader.look(mem.words())));
            let finished = match steps {
                0 | 1 => None,
                2 => Some(1),
                _ => Some(2),
            };
            assert_eq!(seen.last().copied(), finished, "after {steps} stores: {seen:?}");
        });
    }
}

/// The handshake: the master, watching the slot, looks and finds nothing,
/// goes to sleep on it (odd epoch, barrier, one more look); the child
/// publishes, fences and rings if it sees an odd epoch it has not rung
/// for. In every interleaving the master saw the state or the doorbell
/// rang: no wake-up is lost. And it rang only for the master's sleep.
#[test]
fn loom_going_to_sleep_loses_no_wakeup() {
    loom::model(|| {
        let mem = Arc::new(SlotMem::new());
        slot::declare_awake(mem.words(), 2);
        let bell = Arc::new(Counter::new(0));
        let (m, b) = (Arc::clone(&mem), Arc::clone(&bell));
        let child = thread::spawn(move || {
            let mut w = Writer::new();
            w.publish(m.words(), state(1));
            fence(Ordering::SeqCst);
            if w.must_ring(m.words()) {
                b.fetch_add(1, Ordering::SeqCst);
            }
        });
        let mut reader = Reader::new();
        let mut seen = whole(reader.look(mem.words())).is_some();
        if !seen {
            slot::declare_asleep(mem.words(), 3);
            fence(Ordering::SeqCst);
            seen = whole(reader.look(mem.words())).is_some();
        }
        child.join().expect("the child");
        let rang = bell.load(Ordering::SeqCst);
        assert!(seen || rang > 0, "lost wake-up: nothing seen and the doorbell silent");
        assert!(rang <= 1, "rang {rang} times for one sleep");
    });
}

/// One barrier for several slots, as a pass puts every slot that went idle
/// to sleep together: the master stores an odd epoch in two slots, passes
/// one barrier, and looks at each once more, while each slot's child
/// publishes and rings if it sees its odd epoch. For each slot, the master
/// saw the state or that child rang.
#[test]
fn loom_one_barrier_puts_several_slots_to_sleep() {
    loom::model(|| {
        let slots = [Arc::new(SlotMem::new()), Arc::new(SlotMem::new())];
        let bells = [Arc::new(Counter::new(0)), Arc::new(Counter::new(0))];
        let children: Vec<_> = (0..2)
            .map(|k| {
                let (m, b) = (Arc::clone(&slots[k]), Arc::clone(&bells[k]));
                thread::spawn(move || {
                    let mut w = Writer::new();
                    w.publish(m.words(), state(1));
                    fence(Ordering::SeqCst);
                    if w.must_ring(m.words()) {
                        b.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for slot in &slots {
            slot::declare_asleep(slot.words(), 1);
        }
        fence(Ordering::SeqCst);
        let seen: Vec<bool> = slots.iter().map(|slot| whole(Reader::new().look(slot.words())).is_some()).collect();
        for child in children {
            child.join().expect("a child");
        }
        for k in 0..2 {
            assert!(seen[k] || bells[k].load(Ordering::SeqCst) > 0, "slot {k}: lost wake-up");
        }
    });
}

/// Rings once per epoch, across several sleeps: the master sleeps on the
/// slot; each time its doorbell has rung it wakes (even epoch), looks, and
/// goes to sleep again (a new odd epoch, barrier, a last look). The child
/// publishes twice, ringing only when it sees an odd epoch it has not rung
/// for. Once the child is done, the master has seen its last state or
/// holds a ring it has not taken yet: never asleep on a state nobody rang
/// for, however the rings and epochs interleave.
#[test]
fn loom_no_lost_wakeup_across_sleeps() {
    loom::model(|| {
        let mem = Arc::new(SlotMem::new());
        slot::declare_asleep(mem.words(), 1);
        let bell = Arc::new(Counter::new(0));
        let (m, b) = (Arc::clone(&mem), Arc::clone(&bell));
        let child = thread::spawn(move || {
            let mut w = Writer::new();
            for n in 1..=2 {
                w.publish(m.words(), state(n));
                fence(Ordering::SeqCst);
                if w.must_ring(m.words()) {
                    b.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let mut reader = Reader::new();
        let (mut epoch, mut taken, mut last) = (1u64, 0u64, None);
        for _ in 0..2 {
            let rang = bell.load(Ordering::SeqCst);
            if rang == taken {
                continue;
            }
            taken = rang;
            epoch += 1;
            slot::declare_awake(mem.words(), epoch);
            last = whole(reader.look(mem.words())).or(last);
            epoch += 1;
            slot::declare_asleep(mem.words(), epoch);
            fence(Ordering::SeqCst);
            last = whole(reader.look(mem.words())).or(last);
        }
        child.join().expect("the child");
        assert!(
            last == Some(2) || bell.load(Ordering::SeqCst) > taken,
            "a stall: the last state unseen and no ring pending (seen {last:?})"
        );
    });
}

/// What an edge-triggered wait (tokio, mio, `EPOLLET`) sees of the master's
/// epoll: whether an event is on its ready list, and whether an edge is
/// queued for the outer wait since it last looked. One lock stands for the
/// kernel's: a ring, taking the events and a wait are each atomic.
#[derive(Debug, Default)]
struct EdgeEpoll {
    ready: bool,
    queued: bool,
}

/// A ring of any doorbell in the epoll (a child's, or the master's own).
fn ring(epoll: &Mutex<EdgeEpoll>) {
    let mut e = epoll.lock().expect("the epoll");
    e.ready = true;
    e.queued = true;
}

/// The master takes the epoll's events: whether a child had rung. The
/// ready list is empty after, so a queued edge is reported by no wait.
fn harvest(epoll: &Mutex<EdgeEpoll>) -> bool {
    std::mem::take(&mut epoll.lock().expect("the epoll").ready)
}

/// An `EPOLLET` wait, without blocking: whether it reports the epoll (an
/// edge queued since the last wait, and events on its ready list).
fn wait_edge(epoll: &Mutex<EdgeEpoll>) -> bool {
    let mut e = epoll.lock().expect("the epoll");
    let fired = e.queued && e.ready;
    e.queued = false;
    fired
}

/// Edge-safety (contract item 7), as the source does it: the master watches
/// the slot (its child does not ring); a drain looks, finds nothing, and
/// returns with the slot still watched, so it rings its own doorbell; it
/// waits edge-triggered (which must fire), and the next drain looks again,
/// finds nothing a second time, and sleeps on the slot (odd epoch, barrier,
/// a last look); then the drain after that takes the epoll's events. The
/// child publishes one state at any point. Once it is done, the master has
/// seen the state or its next edge-triggered wait fires: it is never left
/// asleep on a pending state.
#[test]
fn loom_an_edge_triggered_master_is_never_left_asleep_on_a_state() {
    loom::model(|| {
        let mem = Arc::new(SlotMem::new());
        slot::declare_awake(mem.words(), 2);
        let epoll = Arc::new(Mutex::new(EdgeEpoll::default()));
        let (m, e) = (Arc::clone(&mem), Arc::clone(&epoll));
        let child = thread::spawn(move || {
            let mut w = Writer::new();
            w.publish(m.words(), state(1));
            fence(Ordering::SeqCst);
            if w.must_ring(m.words()) {
                ring(&e);
            }
        });
        let mut reader = Reader::new();
        let mut seen = whole(reader.look(mem.words())).is_some();
        if !seen {
            // `None` with the slot watched: an edge to come back on.
            ring(&epoll);
            assert!(wait_edge(&epoll), "the master waits with no edge to come back on");
            seen = whole(reader.look(mem.words())).is_some();
        }
        if !seen {
            slot::declare_asleep(mem.words(), 3);
            fence(Ordering::SeqCst);
            seen = whole(reader.look(mem.words())).is_some();
        }
        if !seen {
            // `None`, every slot slept on: the master waits. Should it come
            // back (its own old ring), it takes the events, and a child's
            // ring among them has it watch and look.
            if wait_edge(&epoll) && harvest(&epoll) {
                seen = whole(reader.look(mem.words())).is_some();
            }
        }
        child.join().expect("the child");
        assert!(seen || wait_edge(&epoll), "a stall: the state is pending and the master's wait has no edge");
    });
}
