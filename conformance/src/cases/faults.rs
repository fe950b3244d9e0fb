//! Cases 8 and 9: children killed in the middle of notifying, and children
//! sending garbage.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use master_proto::master::{Master, Outcome, ReapOutcome};
use master_proto::{
    Delivery, Framing, Identity, Malformed, Received, Sender, Status, StatusSink, StatusSource, StatusUpdate, WIRE_SIZE,
};

use super::{expected_sender, open_config};
use crate::harness::{
    Bound, Ctx, Kid, Rng, Script, Spawn, Tracker, WAIT, await_poke, child_env, child_sink, drain, drain_some, exit_of,
    fail, receive, say, update_of, wait_readable,
};
use crate::hostile::Hostile;

/// Case 8. Children hammering the channel are killed with `SIGKILL` at
/// random moments (300 of them, a few alive at a time, each after a random
/// number of its updates arrived, so mostly in the middle of a notify)
/// while survivors keep sending. The channel never wedges: the survivors'
/// updates all arrive whole and in order, every victim's arrivals are a
/// whole, ordered prefix of what it sent, and the master's table, fed every
/// reap, ends exact. A record a victim died writing is never delivered; a
/// transport that can tell (memfd's ring) reports it once, as
/// `Malformed::Torn`, when the victim is forgotten.
pub fn child_killed_mid_notify<T: Hostile + Default>(ctx: &Ctx) {
    const SURVIVORS: usize = 4;
    const PER_SURVIVOR: i32 = 10_000;
    const VICTIMS: usize = 300;
    const ALIVE: usize = 8;
    const HAMMER: i32 = 10_000_000;
    if let Some(role) = ctx.role() {
        let count = if role == "victim" { HAMMER } else { PER_SURVIVOR };
        let tail: &[i32] = if role == "victim" { &[] } else { &[Status::TAKEN.0] };
        let sink = child_sink::<T>();
        for v in Script::sequence(2, count, tail).values() {
            sink.notify(Status(v)).unwrap_or_else(|e| fail(format_args!("notify {v}: {e}")));
        }
        std::process::exit(0);
    }
    let t = T::default();
    let caps = t.caps();
    let seed = Rng::fresh_seed();
    let mut rng = Rng::new(seed);
    let mut source = t.open().expect("open a channel");
    let mut master = Master::new(open_config());
    let mut tracker = Tracker::new(caps.delivery);
    let spawn = |role: &str, master: &mut Master, tracker: &mut Tracker, source: &mut T::Source| {
        let generation = master.begin_spawn(Instant::now()).expect("begin a spawn");
        let kid = Spawn::new(ctx, role, generation).spawn(&t, source);
        t.register_child(source, generation, kid.pid()).unwrap_or_else(|e| fail(format_args!("register_child: {e}")));
        master.spawned(kid.pid(), generation).expect("register");
        let script = if role == "victim" {
            Script::sequence(2, HAMMER, &[])
        } else {
            Script::sequence(2, PER_SURVIVOR, &[Status::TAKEN.0])
        };
        tracker.add(kid.pid(), generation, script);
        kid
    };
    // One script object per kind, so that 300 victims do not build 300
    // ten-million-entry indexes: victims share theirs.
    let victim_script = Script::sequence(2, HAMMER, &[]);
    let mut survivors: Vec<Kid> = Vec::new();
    for _ in 0..SURVIVORS {
        survivors.push(spawn("survivor", &mut master, &mut tracker, &mut source));
    }
    let mut alive: Vec<(Kid, usize)> = Vec::new();
    let (mut spawned, mut killed) = (0usize, 0usize);
    let deadline = Instant::now() + WAIT * 2;
    // A transport may report a record that a victim died writing, once,
    // when the victim is forgotten (`Malformed::Torn`: nothing of it is
    // delivered); any other malformed item, or more of them than victims,
    // fails the case.
    let mut cut_short = 0usize;
    let mut take = |item: Received, master: &mut Master, tracker: &mut Tracker| {
        if item == Received::Malformed(Malformed::Torn) {
            cut_short += 1;
        } else {
            let update = update_of(item, "children killed mid-notify");
            tracker.take(&update).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
        master.receive(&item);
    };
    while killed < VICTIMS {
        while alive.len() < ALIVE && spawned < VICTIMS {
            let generation = master.begin_spawn(Instant::now()).expect("begin a spawn");
            let kid = Spawn::new(ctx, "victim", generation).spawn(&t, &mut source);
            t.register_child(&mut source, generation, kid.pid())
                .unwrap_or_else(|e| fail(format_args!("register_child: {e}")));
            master.spawned(kid.pid(), generation).expect("register");
            tracker.add(kid.pid(), generation, victim_script.clone());
            // Killed once this many of its updates arrived: 0 is at once,
            // possibly before it even runs.
            alive.push((kid, rng.below(64)));
            spawned += 1;
        }
        // A slice at a time: hammering victims keep the channel full, and
        // the kills must happen between reads.
        drain_some(&mut source, 512, |item| take(item, &mut master, &mut tracker));
        let mut i = 0;
        while i < alive.len() {
            if tracker.position(alive[i].0.pid()) >= alive[i].1 {
                let (mut kid, _) = alive.swap_remove(i);
                let status = kid.kill9();
                let reaped = master.reaped(kid.pid(), exit_of(status), Instant::now());
                let ReapOutcome::Reaped { child, .. } = reaped else { panic!("reaping {}: {reaped:?}", kid.pid()) };
                assert_eq!(child.pid, kid.pid());
                t.forget_child(&mut source, kid.pid()).unwrap_or_else(|e| fail(format_args!("forget_child: {e}")));
                killed += 1;
            } else {
                i += 1;
            }
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: waited {:?} for victims to send before being killed ({killed} killed; {})",
            WAIT * 2,
            tracker.incomplete()
        );
        if !alive.is_empty() {
            let _ = wait_readable(source.as_fd(), Instant::now() + Duration::from_millis(5));
        }
    }
    let survivor_pids: Vec<i32> = survivors.iter().map(Kid::pid).collect();
    let bound = Bound::new(WAIT, WAIT);
    loop {
        drain(&mut source, |item| take(item, &mut master, &mut tracker));
        if survivor_pids.iter().all(|&pid| tracker.complete(pid)) {
            break;
        }
        bound.wait(&source, || {
            format!("seed {seed}: every survivor's updates after {killed} kills ({})", tracker.incomplete())
        });
    }
    // The table holds exactly the survivors, each TAKEN as it said last.
    assert_eq!(master.total(), SURVIVORS, "seed {seed}: the table after every victim was reaped");
    for &pid in &survivor_pids {
        let child = master.child(pid).unwrap_or_else(|| panic!("survivor {pid} is missing"));
        assert_eq!(child.status, Status::TAKEN, "seed {seed}: survivor {pid}");
    }
    let counters = *master.counters();
    assert_eq!(counters.reaped, u64::try_from(VICTIMS).expect("fits"));
    assert_eq!(counters.reap_unknown_pid, 0);
    assert_eq!(counters.spawned, u64::try_from(VICTIMS + SURVIVORS).expect("fits"));
    assert!(cut_short <= VICTIMS, "seed {seed}: {cut_short} records cut short by {VICTIMS} deaths");
    assert_eq!(
        counters.malformed,
        u64::try_from(cut_short).expect("fits"),
        "seed {seed}: malformed input other than a record a killed child died writing"
    );
    for kid in &mut survivors {
        kid.expect_success("a surviving child");
        master.reaped(kid.pid(), exit_of(kid.try_reap().expect("reaped")), Instant::now());
    }
    assert_eq!(master.total(), 0);
}

/// One piece of a hostile child's phase 1.
#[derive(Clone, Debug)]
enum Piece {
    /// Bytes written raw, as they are.
    Raw(Vec<u8>),
    /// A well-formed record with chosen fields.
    Record(StatusUpdate),
}

/// Who the pieces name: the hostile child and an honest one.
#[derive(Clone, Copy, Debug)]
struct Cast {
    hostile: (i32, u32),
    honest: (i32, u32),
}

/// The hostile child's phase-1 pieces, the same in both processes for one
/// seed: short writes of every length, wrong sizes, random bytes, unknown
/// status values, foreign and impossible pids, wrong generations.
fn pieces(seed: u64, cast: Cast, framing: Option<Framing>) -> Vec<Piece> {
    let mut rng = Rng::new(seed);
    let (me, own_gen) = cast.hostile;
    let (honest, honest_gen) = cast.honest;
    let record = |pid, generation, status| Piece::Record(StatusUpdate { pid, generation, status: Status(status) });
    let mut out = Vec::new();
    // An empty write is nothing at all on a byte stream; on packets it is
    // an empty packet, which must be reported.
    if framing == Some(Framing::Packet) {
        out.push(Piece::Raw(Vec::new()));
    }
    for len in 1..WIRE_SIZE {
        out.push(Piece::Raw(rng.bytes(len)));
    }
    for len in [13, 17, 23, 24, 25, 35, 100, 1000] {
        out.push(Piece::Raw(rng.bytes(len)));
    }
    for _ in 0..3 {
        out.push(Piece::Raw(rng.bytes(WIRE_SIZE)));
    }
    out.extend([
        record(me, own_gen, 7),
        record(me, own_gen, -1),
        record(me, own_gen, i32::MIN),
        record(me, own_gen ^ 0x55, Status::TAKEN.0),
        record(honest, honest_gen ^ 1, Status::TAKEN.0),
        record(i32::MAX, own_gen, Status::AVAIL.0),
        record(-1, own_gen, Status::TAKEN.0),
        record(0, 0, 0),
        record(me, own_gen, Status::AVAIL.0),
    ]);
    out
}

/// What the master must receive for one piece, when the transport promises
/// how raw writes are framed.
fn expected_items(piece: &Piece, framing: Framing, sender: Sender) -> Vec<Received> {
    let update = |u: StatusUpdate| Received::Update { update: u, sender };
    match piece {
        Piece::Record(u) => vec![update(*u)],
        Piece::Raw(bytes) => match framing {
            Framing::Packet => vec![match StatusUpdate::decode_packet(bytes) {
                Ok(u) => update(u),
                Err(m) => Received::Malformed(m),
            }],
            Framing::ByteStream => {
                let chunks = bytes.chunks_exact(WIRE_SIZE);
                let rest = chunks.remainder().len();
                let mut items: Vec<Received> =
                    chunks.map(|c| update(StatusUpdate::decode(c.try_into().expect("a whole chunk")))).collect();
                if rest > 0 {
                    items.push(Received::Malformed(Malformed::Short(rest)));
                }
                items
            }
        },
    }
}

/// What the master's bookkeeping must make of a crafted record.
fn expected_outcome(u: &StatusUpdate, cast: Cast, identity: Identity) -> Option<Outcome> {
    let (me, own_gen) = cast.hostile;
    let (honest, honest_gen) = cast.honest;
    let verified = identity != Identity::Claimed;
    if verified && u.pid != me {
        return Some(Outcome::ForgedPid { claimed: u.pid, verified: me });
    }
    Some(match (u.pid, u.generation) {
        (p, g) if p == me && g == own_gen && u.status == Status::AVAIL => Outcome::Redundant,
        (p, g) if p == me && g == own_gen => Outcome::UnknownStatus(u.status.0),
        (p, g) if p == me => Outcome::WrongGeneration { expected: own_gen, got: g },
        (p, g) if p == honest && g != honest_gen => Outcome::WrongGeneration { expected: honest_gen, got: g },
        (p, _) if p != honest => Outcome::UnknownPid,
        _ => return None,
    })
}

/// Case 9. A hostile child writes garbage of every length, raw
/// ([`Hostile`]): short writes, wrong sizes, random bytes, unknown status
/// values, foreign pids, wrong generations. First alone, one piece at a
/// time: the master receives exactly what the transport's framing makes of
/// each piece (a byte stream: the whole records in it and the partial rest
/// as `Short`; packets: one verdict per packet) and its bookkeeping counts
/// each as the right outcome, applying none. Then while honest children
/// send: nothing panics, honest updates arrive whole and in order (on a
/// byte stream some may be lost to misframing while the garbage flows, the
/// known weakness), and once the hostile child is gone the honest
/// children's updates all arrive and the master's table is exact.
#[allow(clippy::too_many_lines, reason = "one case, three phases, read top to bottom")]
pub fn hostile_input<T: Hostile + Default>(ctx: &Ctx) {
    const HONEST: usize = 3;
    const PER_HONEST: i32 = 3_000;
    const GARBAGE: usize = 300;
    if let Some(role) = ctx.role() {
        match role.as_str() {
            "hostile" => {
                let arg = ctx.arg().unwrap_or_default();
                let nums: Vec<u64> = arg.split(':').filter_map(|n| n.parse().ok()).collect();
                let [seed, honest, honest_gen] = nums[..] else { fail(format_args!("bad arg {arg:?}")) };
                let mut env = child_env();
                let me = env.pid;
                let own_gen = env.generation;
                let cast = Cast {
                    hostile: (me, own_gen),
                    honest: (i32::try_from(honest).unwrap_or(0), u32::try_from(honest_gen).unwrap_or(0)),
                };
                let mut raw = T::default().raw(&mut env).unwrap_or_else(|e| fail(format_args!("raw: {e}")));
                for piece in pieces(seed, cast, T::RAW_FRAMING) {
                    let sent = match &piece {
                        Piece::Raw(bytes) => T::send_raw(&mut raw, bytes),
                        Piece::Record(u) => T::send_record(&mut raw, u),
                    };
                    sent.unwrap_or_else(|e| fail(format_args!("sending {piece:?}: {e}")));
                    if !await_poke() {
                        fail("stdin closed during phase 1");
                    }
                }
                // Phase 2: garbage at full speed, while honest children send.
                let mut rng = Rng::new(seed ^ 0x9e37_79b9);
                for _ in 0..GARBAGE {
                    let len = rng.below(3 * WIRE_SIZE);
                    let _ = T::send_raw(&mut raw, &rng.bytes(len));
                }
                std::process::exit(0);
            }
            "honest" => {
                let sink = child_sink::<T>();
                if !await_poke() {
                    fail("no start");
                }
                for v in Script::sequence(2, PER_HONEST, &[]).values() {
                    sink.notify(Status(v)).unwrap_or_else(|e| fail(format_args!("notify {v}: {e}")));
                }
                say("sent");
                if !await_poke() {
                    fail("no go for the final updates");
                }
                for s in [Status::TAKEN, Status::AVAIL] {
                    sink.notify(s).unwrap_or_else(|e| fail(format_args!("final notify: {e}")));
                }
                std::process::exit(0);
            }
            other => fail(format_args!("unknown role {other}")),
        }
    }
    let t = T::default();
    let caps = t.caps();
    if let Some(framing) = T::RAW_FRAMING {
        assert_eq!(framing, caps.framing, "the hostile hook's framing differs from the declared one");
    }
    let seed = Rng::fresh_seed();
    let mut source = t.open().expect("open a channel");
    // Generations far from any pid or sequence number, so that misframed
    // bytes cannot pass for an honest child's record.
    let mut master = Master::with_generation(open_config(), 0x7000_0000);
    let mut honest: Vec<Kid> = Vec::new();
    let mut honest_gens = HashMap::new();
    for _ in 0..HONEST {
        let generation = master.begin_spawn(Instant::now()).expect("begin a spawn");
        let kid = Spawn::new(ctx, "honest", generation).stdin().stdout().spawn(&t, &mut source);
        t.register_child(&mut source, generation, kid.pid())
            .unwrap_or_else(|e| fail(format_args!("register_child: {e}")));
        master.spawned(kid.pid(), generation).expect("register");
        honest_gens.insert(kid.pid(), generation);
        honest.push(kid);
    }
    let generation = master.begin_spawn(Instant::now()).expect("begin a spawn");
    let cast_honest = (honest[0].pid(), honest_gens[&honest[0].pid()]);
    let arg = format!("{seed}:{}:{}", cast_honest.0, cast_honest.1);
    let mut hostile = Spawn::new(ctx, "hostile", generation).stdin().arg(arg).spawn(&t, &mut source);
    t.register_child(&mut source, generation, hostile.pid())
        .unwrap_or_else(|e| fail(format_args!("register_child: {e}")));
    master.spawned(hostile.pid(), generation).expect("register");
    let cast = Cast { hostile: (hostile.pid(), generation), honest: cast_honest };
    let sender = expected_sender(caps.identity, hostile.pid());

    // Phase 1: one piece at a time, each accounted for.
    let mut malformed = 0u64;
    for (n, piece) in pieces(seed, cast, T::RAW_FRAMING).iter().enumerate() {
        let expected = T::RAW_FRAMING.map(|framing| expected_items(piece, framing, sender));
        let got = match &expected {
            Some(items) => receive(&mut source, items.len(), &format!("seed {seed}: piece {n} {piece:?}")),
            // No per-write promise: take what arrives by the time the
            // master has looked once more.
            None => {
                let mut got = Vec::new();
                let _ = wait_readable(source.as_fd(), Instant::now() + Duration::from_millis(20));
                source.drain(|item| got.push(item)).expect("read the channel");
                got
            }
        };
        if let Some(items) = &expected {
            assert_eq!(&got, items, "seed {seed}: piece {n} {piece:?}");
        }
        for item in &got {
            let outcome = master.receive(item);
            assert!(!outcome.is_applied(), "seed {seed}: piece {n} {piece:?} changed the table: {outcome:?}");
            match (item, piece) {
                (Received::Malformed(m), _) => {
                    assert_eq!(outcome, Outcome::Malformed(*m));
                    malformed += 1;
                }
                (Received::Update { update, .. }, Piece::Record(_)) => {
                    if let Some(want) = expected_outcome(update, cast, caps.identity) {
                        assert_eq!(outcome, want, "seed {seed}: piece {n} {piece:?}");
                    }
                }
                (Received::Update { .. }, Piece::Raw(_)) => {}
            }
        }
        hostile.poke();
    }
    assert_eq!(master.counters().malformed, malformed);
    assert_eq!(master.available(), HONEST + 1, "no garbage changed anybody's state");

    // Phase 2: garbage while the honest children send.
    let lossy = caps.framing == Framing::ByteStream;
    let mut tracker = if lossy { Tracker::lossy() } else { Tracker::new(caps.delivery) };
    for kid in &honest {
        tracker.add(kid.pid(), honest_gens[&kid.pid()], Script::sequence(2, PER_HONEST, &[]));
    }
    for kid in &mut honest {
        kid.poke();
    }
    let mut sent = 0;
    let take = |item: Received, master: &mut Master, tracker: &mut Tracker| {
        if let Received::Update { update, .. } = item
            && honest_gens.get(&update.pid) == Some(&update.generation)
        {
            tracker.take(&update).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
        // Garbage and honest updates alike: never applied (the honest ones
        // are sequence numbers), never a panic.
        assert!(!master.receive(&item).is_applied(), "seed {seed}: {item:?} was applied");
    };
    let bound = Bound::new(WAIT, Duration::from_millis(10));
    loop {
        drain(&mut source, |item| take(item, &mut master, &mut tracker));
        sent += honest.iter_mut().map(|k| k.has_said("sent")).filter(|&said| said).count();
        if hostile.try_reap().is_some() && sent == HONEST && (lossy || tracker.all_complete()) {
            break;
        }
        bound
            .wait(&source, || format!("seed {seed}: phase 2 ({} honest done sending; {})", sent, tracker.incomplete()));
    }
    assert_eq!(hostile.try_reap().and_then(|s| s.code()), Some(0), "the hostile child's own checks");
    if lossy {
        // A byte stream resynchronises once drained: drain until nothing
        // is pending (the leftover partial is reported then).
        source.drain(|item| take(item, &mut master, &mut tracker)).expect("read the channel");
    } else {
        assert!(tracker.all_complete(), "packets: no honest update may be lost to garbage");
    }

    // Phase 3: the hostile child is gone; every honest update arrives.
    let mut last = Tracker::new(caps.delivery);
    for kid in &honest {
        last.add(kid.pid(), honest_gens[&kid.pid()], Script::new(vec![Status::TAKEN.0, Status::AVAIL.0]));
    }
    for kid in &mut honest {
        kid.poke();
    }
    let bound = Bound::new(WAIT, WAIT);
    loop {
        drain(&mut source, |item| {
            let update = update_of(item, "after the hostile child left");
            last.take(&update).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            master.receive(&item);
        });
        if last.all_complete() {
            break;
        }
        bound.wait(&source, || format!("seed {seed}: the honest children's final updates ({})", last.incomplete()));
    }
    for kid in &mut honest {
        kid.expect_success("an honest child");
        let child = master.child(kid.pid()).expect("in the table");
        assert_eq!(child.status, Status::AVAIL, "seed {seed}: honest child {}", kid.pid());
        if caps.delivery == Delivery::EveryUpdate {
            assert_eq!(child.use_count, 1, "seed {seed}: honest child {}", kid.pid());
        }
    }
    let hostile_info = master.child(hostile.pid()).expect("in the table");
    assert_eq!((hostile_info.status, hostile_info.use_count), (Status::AVAIL, 0), "nothing it sent was applied");
}
