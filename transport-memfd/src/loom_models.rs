//! Loom models of the ring and the sleep/wake handshake: every interleaving
//! (up to `LOOM_MAX_PREEMPTIONS` preemptions) of small cases.
//!
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p master-proto-memfd --release --lib loom`

use loom::sync::{Arc, Mutex};
use loom::thread;
use master_proto::{Status, StatusUpdate};

use crate::ring::{self, ASLEEP, AtomicU32, CONTROL_WORDS, Consumer, Item, Ordering, Producer, RingMem, fence};

fn memory(words: usize) -> Arc<Vec<AtomicU32>> {
    Arc::new((0..words).map(|_| AtomicU32::new(0)).collect())
}

fn ring(capacity: u32) -> (Arc<RingMem>, Consumer) {
    let mem = Arc::new(RingMem::new(capacity));
    let consumer = Consumer::new(capacity);
    consumer.init_zeroed(mem.ring());
    (mem, consumer)
}

fn update(pid: i32, n: i32) -> StatusUpdate {
    StatusUpdate { pid, generation: 1, status: Status(n) }
}

/// Pushes `count` records, waiting (yielding to loom) while the ring is full.
fn produce(mem: &RingMem, pid: i32, count: i32) {
    let ring = mem.ring();
    let mut p = Producer::new(ring).expect("the consumer wrote a valid capacity");
    for n in 0..count {
        while !p.has_room(ring) {
            thread::yield_now();
        }
        p.push(ring, update(pid, n));
    }
}

/// One producer, one consumer, a ring of two slots and four records: the
/// consumer gets every record, whole, in order, and the producer is let
/// through by the consumer's index.
#[test]
fn loom_producer_and_consumer() {
    loom::model(|| {
        let (words, mut consumer) = ring(2);
        let w = Arc::clone(&words);
        let producer = thread::spawn(move || produce(&w, 7, 4));
        let mut got = Vec::new();
        while got.len() < 4 {
            match consumer.next(words.ring()) {
                Some(item) => got.push(item),
                None => {
                    consumer.flush(words.ring());
                    thread::yield_now();
                }
            }
        }
        producer.join().expect("the producer");
        let want: Vec<Item> = (0..4).map(|n| Item::Update(update(7, n))).collect();
        assert_eq!(got, want);
        assert_eq!(consumer.next(words.ring()), None);
    });
}

/// Two producers, each on its own ring, and a consumer that scans both:
/// each ring's records arrive whole and in order, none is lost.
#[test]
fn loom_two_producers_own_rings() {
    loom::model(|| {
        let (a, mut ca) = ring(2);
        let (b, mut cb) = ring(2);
        let (wa, wb) = (Arc::clone(&a), Arc::clone(&b));
        let pa = thread::spawn(move || produce(&wa, 1, 2));
        let pb = thread::spawn(move || produce(&wb, 2, 2));
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        while got_a.len() + got_b.len() < 4 {
            let mut any = false;
            if let Some(item) = ca.next(a.ring()) {
                got_a.push(item);
                any = true;
            }
            if let Some(item) = cb.next(b.ring()) {
                got_b.push(item);
                any = true;
            }
            if !any {
                thread::yield_now();
            }
        }
        pa.join().expect("producer a");
        pb.join().expect("producer b");
        assert_eq!(got_a, vec![Item::Update(update(1, 0)), Item::Update(update(1, 1))]);
        assert_eq!(got_b, vec![Item::Update(update(2, 0)), Item::Update(update(2, 1))]);
    });
}

/// The sleep/wake handshake: the master, awake, finds nothing, resets the
/// doorbell, declares itself asleep, fences (membarrier modelled as a
/// `SeqCst` fence) and scans again; the child publishes, fences and rings
/// if it sees "asleep". In every interleaving the master either saw the
/// record or finds the doorbell rung: no wake-up is lost.
#[test]
fn loom_sleep_wake_no_lost_wakeup() {
    loom::model(|| {
        let (words, mut consumer) = ring(2);
        let control = memory(CONTROL_WORDS);
        let bell = Arc::new(AtomicU32::new(0));
        let (w, c, b) = (Arc::clone(&words), Arc::clone(&control), Arc::clone(&bell));
        let child = thread::spawn(move || {
            let mut p = Producer::new(w.ring()).expect("a valid ring");
            p.push(w.ring(), update(3, 1));
            fence(Ordering::SeqCst);
            if ring::must_ring(&c) {
                b.fetch_add(1, Ordering::SeqCst);
            }
        });
        let mut seen = consumer.next(words.ring()).is_some();
        if !seen {
            bell.swap(0, Ordering::SeqCst);
            ring::declare_asleep(&control, || fence(Ordering::SeqCst));
            seen = consumer.next(words.ring()).is_some();
        }
        // The master would now wait on the doorbell; the child is done.
        child.join().expect("the child");
        assert!(seen || bell.load(Ordering::SeqCst) > 0, "lost wake-up: nothing seen and the doorbell silent");
        if bell.load(Ordering::SeqCst) > 0 {
            assert_eq!(control[ASLEEP].load(Ordering::Relaxed), 1, "the child rang only because the master slept");
        }
    });
}

/// The doorbell as an edge-triggered epoll (tokio, mio, `EPOLLET`) sees
/// it: the eventfd's counter, and whether a write since the last wait left
/// the epoll item queued. One lock stands for the kernel's: a write, a
/// reset and a wait are each atomic.
#[derive(Debug, Default)]
struct EdgeBell {
    count: u64,
    queued: bool,
}

/// An eventfd write: the counter changes, which queues an edge.
fn ring_bell(bell: &Mutex<EdgeBell>) {
    let mut b = bell.lock().expect("the bell");
    b.count += 1;
    b.queued = true;
}

/// The master resets the doorbell (reads the eventfd to zero). A queued
/// edge stays queued, but a wait finds the eventfd unreadable and reports
/// nothing.
fn reset_bell(bell: &Mutex<EdgeBell>) {
    bell.lock().expect("the bell").count = 0;
}

/// An `EPOLLET` wait, without blocking: whether it reports the doorbell
/// (an edge queued since the last wait, and the eventfd readable now).
fn wait_edge(bell: &Mutex<EdgeBell>) -> bool {
    let mut b = bell.lock().expect("the bell");
    let fired = b.queued && b.count > 0;
    b.queued = false;
    fired
}

/// Edge-safety (contract item 7): an awake master whose look finds nothing
/// ends its drain while children do not ring; it leaves an edge (rings the
/// doorbell itself, unless the same call rang it already when it became
/// awake), waits edge-triggered, looks again, finds nothing, and goes to
/// sleep (reset, "asleep", barrier, a last look). A child publishes one
/// record at any point and rings only if it sees "asleep". In every
/// interleaving, once the child is done, the master has seen the record or
/// its next edge-triggered wait fires: it is never left asleep on a
/// pending record.
#[test]
fn loom_awake_master_leaves_an_edge() {
    for rang_in_this_call in [false, true] {
        loom::model(move || {
            let (words, mut consumer) = ring(2);
            // Awake: "asleep" is clear, children do not ring.
            let control = memory(CONTROL_WORDS);
            let bell = Arc::new(Mutex::new(EdgeBell::default()));
            if rang_in_this_call {
                // The ring that made the master awake, earlier in the same
                // `drain` call, after the master's last wait.
                ring_bell(&bell);
            }
            let (w, c, b) = (Arc::clone(&words), Arc::clone(&control), Arc::clone(&bell));
            let child = thread::spawn(move || {
                let mut p = Producer::new(w.ring()).expect("a valid ring");
                p.push(w.ring(), update(6, 1));
                fence(Ordering::SeqCst);
                if ring::must_ring(&c) {
                    ring_bell(&b);
                }
            });
            let mut seen = consumer.next(words.ring()).is_some();
            if !seen {
                // Nothing, for the first time while awake: `None`, with an
                // edge to come back on.
                if !rang_in_this_call {
                    ring_bell(&bell);
                }
                assert!(wait_edge(&bell), "the awake master waits with no edge to come back on");
                seen = consumer.next(words.ring()).is_some();
                if !seen {
                    reset_bell(&bell);
                    ring::declare_asleep(&control, || fence(Ordering::SeqCst));
                    seen = consumer.next(words.ring()).is_some();
                }
            }
            child.join().expect("the child");
            assert!(seen || wait_edge(&bell), "a stall: the record is pending and the master's wait has no edge");
        });
    }
}

/// A producer that stops for ever after any number of the three stores of
/// a publish: the consumer never blocks and never delivers a record that
/// was not published; once the producer has stopped, a half-written record
/// is reported as unfinished, and never as data.
#[test]
fn loom_producer_stops_mid_publish() {
    for steps in 0..=3 {
        loom::model(move || {
            let (mem, mut consumer) = ring(2);
            let m = Arc::clone(&mem);
            let producer = thread::spawn(move || {
                let mut p = Producer::new(m.ring()).expect("a valid ring");
                p.write_steps(m.ring(), update(5, 9), steps);
            });
            // Concurrently: whatever the consumer sees is nothing or the
            // whole record, and each call returns.
            let early = consumer.next(mem.ring());
            assert!(early.is_none() || early == Some(Item::Update(update(5, 9))), "{early:?}");
            producer.join().expect("the producer");
            let late = if early.is_some() { None } else { consumer.next(mem.ring()) };
            let delivered = early.is_some() || late.is_some();
            assert_eq!(delivered, steps == 3, "after {steps} stores");
            if !delivered {
                assert_eq!(late, None);
                assert_eq!(consumer.unfinished(mem.ring()), steps >= 1, "after {steps} stores");
            }
        });
    }
}

/// Back-pressure without a lost wake-up: a producer facing a full ring
/// sets its `waiting` flag, fences and looks at the consumer's index once
/// more before it would sleep; the consumer writes its index back, fences
/// and looks at the flag. In every interleaving either the producer finds
/// room or the consumer knows to wake it.
#[test]
fn loom_full_ring_waiter_is_woken() {
    loom::model(|| {
        let (words, mut consumer) = ring(2);
        let mut p = Producer::new(words.ring()).expect("a valid ring");
        for n in 0..2 {
            assert!(p.has_room(words.ring()));
            p.push(words.ring(), update(4, n));
        }
        assert!(!p.has_room(words.ring()), "two records fill a ring of two");
        let w = Arc::clone(&words);
        let producer = thread::spawn(move || {
            // If this finds no room, the producer would now sleep on the
            // index word, expecting the index it last saw.
            p.prepare_to_wait(w.ring())
        });
        assert_eq!(consumer.next(words.ring()), Some(Item::Update(update(4, 0))));
        consumer.flush(words.ring());
        let found_room = producer.join().expect("the producer");
        assert!(found_room || consumer.take_wake(), "the producer sleeps and nobody wakes it");
    });
}
