//! Loom models of the ring and the per-ring sleep/wake handshake: every
//! interleaving (up to `LOOM_MAX_PREEMPTIONS` preemptions) of small cases.
//!
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p master-proto-memfd --release --lib loom`
//!
//! The master's barrier on its way to sleep is modelled as a `SeqCst` fence
//! on both sides, which is what a child not registered for `membarrier`
//! does, and exactly what `membarrier` gives a registered child, whose
//! compiler fence keeps its publish before its load of `SLEEP`: the full
//! barrier the kernel runs on the child's CPU falls before the publish (then
//! the load sees the master's store), after the load (then the publish is
//! visible once the call returns), or between the two, as the fence does.
//! A doorbell is a counter, or, for the edge-triggered model, what an
//! `EPOLLET` wait sees of the master's epoll.

use loom::sync::{Arc, Mutex};
use loom::thread;
use master_proto::{Status, StatusUpdate};

use crate::ring::{self, AtomicU32, Consumer, Item, Ordering, Producer, RingMem, fence};

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

/// The doorbells as the handshake sees them, in the master's epoll: the
/// counters of the child's doorbell and of the master's own bell, and
/// whether an edge is queued for an edge-triggered wait (tokio, mio,
/// `EPOLLET`) on the epoll's descriptor since that wait last returned. One
/// lock stands for the kernel's: a write, a reset and a wait are each
/// atomic, and order what the thread did before them before what the next
/// one to take the lock does after.
#[derive(Debug, Default)]
struct Epoll {
    child: u64,
    own: u64,
    queued: bool,
}

/// The child rings its doorbell (an eventfd write: the counter changes,
/// which queues an edge).
fn ring_child(epoll: &Mutex<Epoll>) {
    let mut e = epoll.lock().expect("the epoll");
    e.child += 1;
    e.queued = true;
}

/// The master rings its own bell.
fn ring_own(epoll: &Mutex<Epoll>) {
    let mut e = epoll.lock().expect("the epoll");
    e.own += 1;
    e.queued = true;
}

/// The master asks the epoll and resets the child's doorbell if it rang
/// (`epoll_wait`, then a read of the eventfd); whether it had.
fn take_child(epoll: &Mutex<Epoll>) -> bool {
    std::mem::take(&mut epoll.lock().expect("the epoll").child) > 0
}

/// The master resets its own bell. A queued edge stays queued, but a wait
/// finds nothing readable and reports nothing.
fn reset_own(epoll: &Mutex<Epoll>) {
    epoll.lock().expect("the epoll").own = 0;
}

/// An `EPOLLET` wait on the epoll's descriptor, without blocking: whether
/// it returns (an edge queued since the last wait, and a bell readable
/// now).
fn wait_edge(epoll: &Mutex<Epoll>) -> bool {
    let mut e = epoll.lock().expect("the epoll");
    let fired = e.queued && (e.child > 0 || e.own > 0);
    e.queued = false;
    fired
}

/// The child's publish as the sink does it: the record, a full fence (the
/// compiler fence a master's `membarrier` makes enough, see the module
/// docs), then its ring's `SLEEP` word; set: it rings.
fn publish_and_ring(mem: &RingMem, p: &mut Producer, n: i32, ring_bell: impl FnOnce()) {
    p.push(mem.ring(), update(3, n));
    fence(Ordering::SeqCst);
    if ring::must_ring(mem.ring()) {
        ring_bell();
    }
}

/// Going to sleep on one ring: the master watches the ring (`SLEEP` 0),
/// looks and finds nothing, then sleeps on it (`SLEEP` 1, the barrier, a
/// last look); the child publishes, fences and rings if it sees `SLEEP`
/// set. In every interleaving the master saw the record or the doorbell
/// rang: no wake-up is lost. And the child rang only if the master slept
/// on its ring.
#[test]
fn loom_going_to_sleep_on_a_ring_loses_no_wakeup() {
    loom::model(|| {
        let (mem, mut consumer) = ring(2);
        let epoll = Arc::new(Mutex::new(Epoll::default()));
        let (m, e) = (Arc::clone(&mem), Arc::clone(&epoll));
        let child = thread::spawn(move || {
            let mut p = Producer::new(m.ring()).expect("a valid ring");
            publish_and_ring(&m, &mut p, 1, || ring_child(&e));
        });
        let mut seen = consumer.next(mem.ring()).is_some();
        let slept = !seen;
        if slept {
            ring::declare_asleep(mem.ring());
            fence(Ordering::SeqCst);
            seen = consumer.next(mem.ring()).is_some();
        }
        child.join().expect("the child");
        let rang = take_child(&epoll);
        assert!(seen || rang, "lost wake-up: nothing seen and the doorbell silent");
        assert!(slept || !rang, "the child rang while the master watched its ring");
    });
}

/// One barrier for several rings, as a pass puts every ring that went idle
/// to sleep together: the master stores `SLEEP` 1 in two rings, passes one
/// barrier, and looks at each once more, while each ring's child publishes
/// and rings if it sees its ring's word set. For each ring, the master saw
/// the record or that child rang.
#[test]
fn loom_one_barrier_puts_two_rings_to_sleep() {
    loom::model(|| {
        let rings = [ring(2), ring(2)];
        let bells = [Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0))];
        let children: Vec<_> = (0..2)
            .map(|k| {
                let (m, b) = (Arc::clone(&rings[k].0), Arc::clone(&bells[k]));
                thread::spawn(move || {
                    let mut p = Producer::new(m.ring()).expect("a valid ring");
                    publish_and_ring(&m, &mut p, 1, || {
                        b.fetch_add(1, Ordering::SeqCst);
                    });
                })
            })
            .collect();
        let [(a, mut ca), (b, mut cb)] = rings;
        ring::declare_asleep(a.ring());
        ring::declare_asleep(b.ring());
        fence(Ordering::SeqCst);
        let seen = [ca.next(a.ring()).is_some(), cb.next(b.ring()).is_some()];
        for child in children {
            child.join().expect("a child");
        }
        for k in 0..2 {
            assert!(seen[k] || bells[k].load(Ordering::SeqCst) > 0, "ring {k}: lost wake-up");
        }
    });
}

/// A ring slept on, across wake-ups: the master sleeps on the ring from
/// the start; each time its doorbell has rung, it resets it, then looks
/// until the ring is empty, leaving it slept on (no barrier) unless it
/// yielded a second record in a row, when the master watches it (`SLEEP`
/// 0) and, once it is empty, sleeps on it again (`SLEEP` 1, the barrier, a
/// last look). The child publishes three records, ringing after each while
/// it sees its ring's word set. Once the child is done, the master has
/// taken all three, in order, or holds a ring it has not taken yet: never
/// asleep on a record nobody rang for.
#[test]
fn loom_a_ring_slept_on_rings_for_every_record() {
    loom::model(|| {
        let (mem, mut consumer) = ring(4);
        ring::declare_asleep(mem.ring());
        let bell = Arc::new(AtomicU32::new(0));
        let (m, b) = (Arc::clone(&mem), Arc::clone(&bell));
        let child = thread::spawn(move || {
            let mut p = Producer::new(m.ring()).expect("a valid ring");
            for n in 0..3 {
                publish_and_ring(&m, &mut p, n, || {
                    b.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        let (mut got, mut asleep) = (0, true);
        let mut take = |consumer: &mut Consumer| {
            let item = consumer.next(mem.ring());
            if let Some(item) = item {
                assert_eq!(item, Item::Update(update(3, got)), "whole and in order");
                got += 1;
            }
            item.is_some()
        };
        for _ in 0..3 {
            // Slept on and silent: the master would wait for the doorbell.
            if asleep && bell.swap(0, Ordering::SeqCst) == 0 {
                continue;
            }
            let mut run = 0;
            while take(&mut consumer) {
                run += 1;
                if asleep && run == 2 {
                    ring::declare_awake(mem.ring());
                    asleep = false;
                }
            }
            if !asleep {
                ring::declare_asleep(mem.ring());
                fence(Ordering::SeqCst);
                asleep = true;
                while take(&mut consumer) {}
            }
        }
        child.join().expect("the child");
        assert!(got == 3 || bell.load(Ordering::SeqCst) > 0, "a stall: {got} of 3 taken and no ring pending");
    });
}

/// Edge-safety (contract item 7): the master watches the ring (its child
/// does not ring). A call finds it empty and ends with the ring still
/// watched, so it leaves an edge (rings its own bell, unless the same call
/// rang it already, as it does before it wakes a ring); the master waits
/// edge-triggered (which must return), the next call finds the ring empty
/// again and sleeps on it (`SLEEP` 1, the barrier, a last look), and with
/// nothing watched and nothing found resets its own bell and waits. The
/// child publishes one record at any point. Once it is done, the master
/// has seen the record, or its next edge-triggered wait returns and the
/// call after it (which asks the epoll, the ring being slept on) finds the
/// child's ring and the record: it is never left asleep on a record.
#[test]
fn loom_a_watched_ring_leaves_an_edge() {
    for rang_in_this_call in [false, true] {
        loom::model(move || {
            let (mem, mut consumer) = ring(2);
            let epoll = Arc::new(Mutex::new(Epoll::default()));
            if rang_in_this_call {
                ring_own(&epoll);
            }
            let (m, e) = (Arc::clone(&mem), Arc::clone(&epoll));
            let child = thread::spawn(move || {
                let mut p = Producer::new(m.ring()).expect("a valid ring");
                publish_and_ring(&m, &mut p, 1, || ring_child(&e));
            });
            let mut seen = consumer.next(mem.ring()).is_some();
            if !seen {
                if !rang_in_this_call {
                    ring_own(&epoll);
                }
                assert!(wait_edge(&epoll), "the master waits with no edge to come back on");
                seen = consumer.next(mem.ring()).is_some();
                if !seen {
                    ring::declare_asleep(mem.ring());
                    fence(Ordering::SeqCst);
                    seen = consumer.next(mem.ring()).is_some();
                    if !seen {
                        reset_own(&epoll);
                    }
                }
            }
            child.join().expect("the child");
            if !seen && wait_edge(&epoll) && take_child(&epoll) {
                seen = consumer.next(mem.ring()).is_some();
            }
            assert!(seen, "a stall: the record is pending and the master's wait has no edge");
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
