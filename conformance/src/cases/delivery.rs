//! Cases 1-4 and 14: round trip, whole updates in per-child order, fan-in
//! at scale, back-pressure as declared, threads sharing a sink.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use master_proto::master::{Master, Outcome, ReapOutcome};
use master_proto::{BackPressure, Delivery, NotifyError, Received, Status, StatusSink, StatusSource};

use super::{Share, expected_sender, open_config};
use crate::harness::{
    Bound, Ctx, Kid, Script, Spawn, Storm, Tracker, WAIT, asleep_in_syscall, child_sink, drain, drain_some, exit_of,
    fail, poll_until, raise_nofile_limit, say, storm_target, update_of, wait_readable,
};
use crate::hostile::Hostile;

/// Case 1. A spawned child's TAKEN and AVAIL arrive with its real pid, its
/// generation and the sender the transport vouches for; the sans-IO
/// master's view follows them.
pub fn round_trip<T: Hostile + Default>(ctx: &Ctx) {
    if ctx.role().is_some() {
        let sink = child_sink::<T>();
        let me = i32::try_from(std::process::id()).unwrap_or(-1);
        if sink.pid() != me {
            fail(format_args!("the sink reports pid {} in process {me}", sink.pid()));
        }
        for status in [Status::TAKEN, Status::AVAIL] {
            sink.notify(status).unwrap_or_else(|e| fail(e));
        }
        std::process::exit(0);
    }
    let t = T::default();
    let caps = t.caps();
    let mut source = t.open().expect("open a channel");
    let mut master = Master::with_generation(open_config(), 0o1234566);
    let generation = master.begin_spawn(Instant::now()).expect("begin a spawn");
    assert_eq!(generation, 0o1234567);
    let mut kid = Spawn::new(ctx, "child", generation).spawn(&t, &mut source);
    let pid = kid.pid();
    t.register_child(&mut source, generation, pid).unwrap_or_else(|e| fail(format_args!("register_child: {e}")));
    master.spawned(pid, generation).expect("register the child");

    let mut tracker = Tracker::new(caps.delivery);
    tracker.add(pid, generation, Script::new(vec![Status::TAKEN.0, Status::AVAIL.0]));
    let mut outcomes = Vec::new();
    let bound = Bound::new(WAIT, WAIT);
    loop {
        drain(&mut source, |item| {
            let Received::Update { update, sender } = item else {
                panic!("malformed input {item:?} from an honest child")
            };
            assert_eq!(sender, expected_sender(caps.identity, pid), "the sender of {update:?}");
            tracker.take(&update).unwrap_or_else(|e| panic!("{e}"));
            outcomes.push(master.receive(&item));
        });
        if tracker.all_complete() {
            break;
        }
        bound.wait(&source, || format!("TAKEN and AVAIL from child {pid} ({})", tracker.incomplete()));
    }
    if caps.delivery == Delivery::EveryUpdate {
        assert_eq!(outcomes, vec![Outcome::Taken, Outcome::Avail]);
        assert_eq!(master.child(pid).map(|c| c.use_count), Some(1), "one client served");
    }
    let child = *master.child(pid).expect("the child is in the table");
    assert!(child.is_available() && child.status == Status::AVAIL, "the master's view: {child:?}");
    assert_eq!(master.available(), 1);
    kid.expect_success("the child");
    let reaped = master.reaped(pid, exit_of(kid.try_reap().expect("reaped")), Instant::now());
    assert!(matches!(reaped, ReapOutcome::Reaped { .. }), "{reaped:?}");
    t.forget_child(&mut source, pid).unwrap_or_else(|e| fail(format_args!("forget_child: {e}")));
    assert_eq!(master.total(), 0);
    assert_eq!(source.try_recv(), Ok(None), "nothing more arrives");
}

/// Case 2. 64 children send 10,000 updates each at full speed, then TAKEN;
/// every update arrives whole, once, in per-child order (for
/// [`Delivery::LatestState`]: never stale, each child's final state
/// exact, and the states the source says it overwrote are exactly those
/// that did not arrive); the master's table ends with every child TAKEN.
pub fn whole_updates_in_order<T: Hostile + Default>(ctx: &Ctx) {
    if let Some(role) = ctx.role() {
        updater_role::<T>(ctx, &role);
    }
    whole_updates::<T>(ctx, 64, 10_000, false);
}

/// The children of [`whole_updates`]: `updater` (arg: the count; `storm`
/// in the role name: install the no-op handler first).
pub(crate) fn updater_role<T: Hostile + Default>(ctx: &Ctx, role: &str) -> ! {
    if role == "updater-storm" {
        storm_target();
    } else if role != "updater" {
        fail(format_args!("unknown role {role}"));
    }
    let count = i32::try_from(ctx.arg_u64()).unwrap_or_else(|_| fail("count too large"));
    let sink = child_sink::<T>();
    for v in updater_script(count).values() {
        sink.notify(Status(v)).unwrap_or_else(|e| fail(format_args!("notify {v}: {e}")));
    }
    std::process::exit(0)
}

fn updater_script(count: i32) -> std::rc::Rc<Script> {
    Script::sequence(2, count, &[Status::TAKEN.0])
}

/// How many items the master takes between two pauses during a storm.
const STORM_SLICE: usize = 128;
/// The longest pause of the master between two slices during a storm.
const STORM_PAUSE: Duration = Duration::from_millis(5);

/// `children` children send `per_child` sequence numbers and TAKEN; with
/// `storm`, under a storm of `SIGUSR1` at them and at the master.
pub(crate) fn whole_updates<T: Hostile + Default>(ctx: &Ctx, children: usize, per_child: i32, storm: bool) {
    let t = T::default();
    let caps = t.caps();
    let mut source = t.open().expect("open a channel");
    let mut master = Master::new(open_config());
    let script = updater_script(per_child);
    let mut tracker = Tracker::new(caps.delivery);
    let storm = storm.then(Storm::start);
    let role = if storm.is_some() { "updater-storm" } else { "updater" };
    let mut kids: Vec<Kid> = Vec::with_capacity(children);
    let mut heard: HashSet<i32> = HashSet::new();
    let mut delivered = 0u64;
    let mut take = |item: Received, master: &mut Master, tracker: &mut Tracker| {
        delivered += 1;
        let update = update_of(item, "whole updates");
        tracker.take(&update).unwrap_or_else(|e| panic!("{e}"));
        master.receive(&item);
        if heard.insert(update.pid)
            && let Some(storm) = &storm
        {
            // It has installed its handler: it may be signalled now.
            storm.add(update.pid);
        }
    };
    for _ in 0..children {
        let generation = master.begin_spawn(Instant::now()).expect("begin a spawn");
        let kid = Spawn::new(ctx, role, generation).arg(per_child).spawn(&t, &mut source);
        t.register_child(&mut source, generation, kid.pid())
            .unwrap_or_else(|e| fail(format_args!("register_child: {e}")));
        master.spawned(kid.pid(), generation).expect("register");
        tracker.add(kid.pid(), generation, script.clone());
        kids.push(kid);
        source.drain(|item| take(item, &mut master, &mut tracker)).expect("read the channel");
    }
    let total = children * script.len();
    let bound = Bound::new(WAIT, Duration::from_millis(50));
    loop {
        if storm.is_some() {
            // Read slowly, a slice at a time, so that the children spend
            // the storm blocked in notify on a full channel, where a signal
            // makes the write fail with EINTR.
            drain_some(&mut source, STORM_SLICE, |item| take(item, &mut master, &mut tracker));
            // Read on once some child is blocked in notify (the channel is
            // full), or after a short while: the storm's signals land on
            // blocked writes in between.
            poll_until(Instant::now() + STORM_PAUSE, || kids.iter().any(|kid| asleep_in_syscall(kid.pid())));
        } else {
            drain(&mut source, |item| take(item, &mut master, &mut tracker));
        }
        if tracker.all_complete() {
            break;
        }
        if let Some((pid, status)) = kids.iter_mut().find_map(|kid| kid.failed().map(|s| (kid.pid(), s))) {
            panic!("child {pid} ended with {status} before its updates arrived");
        }
        bound.wait(&source, || format!("{total} updates from {children} children ({})", tracker.incomplete()));
    }
    // Every state a child published either arrived or was overwritten by
    // a newer one that did, and the source says how many were overwritten.
    let published = u64::try_from(total).expect("fits");
    match caps.delivery {
        Delivery::EveryUpdate => assert!(
            source.overwritten().is_none_or(|n| n == 0),
            "a source that delivers every update overwrote {:?}",
            source.overwritten()
        ),
        Delivery::LatestState => assert_eq!(
            source.overwritten().map(|n| n + delivered),
            Some(published),
            "overwritten ({:?}) + delivered ({delivered}) = published",
            source.overwritten()
        ),
    }
    // Every child's last word was TAKEN.
    assert_eq!(master.available(), 0, "every child said TAKEN last");
    assert!(master.children().all(|c| c.status == Status::TAKEN), "the master's table: every child TAKEN");
    if caps.delivery == Delivery::EveryUpdate {
        let sequence = u64::try_from(children).expect("fits") * u64::try_from(per_child).expect("fits");
        assert_eq!(master.counters().unknown_status, sequence, "every sequence number reached the master once");
        assert_eq!(master.counters().taken, u64::try_from(children).expect("fits"));
    }
    for kid in &mut kids {
        if let Some(storm) = &storm {
            storm.remove(kid.pid());
        }
        kid.expect_success("an updating child");
        let reaped = master.reaped(kid.pid(), exit_of(kid.try_reap().expect("reaped")), Instant::now());
        assert!(matches!(reaped, ReapOutcome::Reaped { .. }));
        t.forget_child(&mut source, kid.pid()).unwrap_or_else(|e| fail(format_args!("forget_child: {e}")));
    }
    assert_eq!(master.total(), 0);
    if let Some(storm) = storm {
        let report = storm.stop();
        assert!(report.to_children > 0 && report.to_master > 0, "the storm sent nothing: {report:?}");
        assert!(report.caught_by_master > 0, "no signal reached the master's handler: {report:?}");
    }
}

/// Case 3. 512 children share one channel, each sends two sequence numbers,
/// TAKEN and AVAIL while all are alive; every update is accounted for, the
/// master's table has all 512 available; then one close tells them all.
pub fn fan_in_at_scale<T: Hostile + Default>(ctx: &Ctx) {
    const CHILDREN: usize = 512;
    let script = Script::new(vec![2, 3, Status::TAKEN.0, Status::AVAIL.0]);
    if ctx.role().is_some() {
        let sink = child_sink::<T>();
        for v in script.values() {
            sink.notify(Status(v)).unwrap_or_else(|e| fail(e));
        }
        if !wait_readable(sink.disconnect_fd(), Instant::now() + WAIT) {
            fail("the disconnect fd did not fire after the master closed");
        }
        std::process::exit(0);
    }
    raise_nofile_limit();
    let t = T::default();
    let caps = t.caps();
    let mut source = t.open().expect("open a channel");
    let mut master = Master::new(open_config());
    let mut tracker = Tracker::new(caps.delivery);
    let mut kids = Vec::with_capacity(CHILDREN);
    let take = |item: Received, master: &mut Master, tracker: &mut Tracker| {
        tracker.take(&update_of(item, "fan-in")).unwrap_or_else(|e| panic!("{e}"));
        assert!(!matches!(master.receive(&item), Outcome::UnknownPid | Outcome::WrongGeneration { .. }));
    };
    for _ in 0..CHILDREN {
        let generation = master.begin_spawn(Instant::now()).expect("begin a spawn");
        let kid = Spawn::new(ctx, "fan", generation).spawn(&t, &mut source);
        t.register_child(&mut source, generation, kid.pid())
            .unwrap_or_else(|e| fail(format_args!("register_child: {e}")));
        master.spawned(kid.pid(), generation).expect("register");
        tracker.add(kid.pid(), generation, script.clone());
        kids.push(kid);
        source.drain(|item| take(item, &mut master, &mut tracker)).expect("read the channel");
    }
    let bound = Bound::new(WAIT, WAIT);
    loop {
        drain(&mut source, |item| take(item, &mut master, &mut tracker));
        if tracker.all_complete() {
            break;
        }
        bound.wait(&source, || format!("4 updates from each of {CHILDREN} children ({})", tracker.incomplete()));
    }
    assert_eq!(master.available(), CHILDREN, "every child is AVAIL in the master's table");
    if caps.delivery == Delivery::EveryUpdate {
        assert!(master.children().all(|c| c.use_count == 1), "every child served one client");
        assert_eq!(master.counters().taken, u64::try_from(CHILDREN).expect("fits"));
    }
    drop(source);
    for kid in &mut kids {
        kid.expect_success("a fan-in child after the master closed");
    }
}

/// Case 4. The master stops reading while children keep notifying; what
/// `notify` does is exactly the declared [`BackPressure`], and nothing
/// declared delivered is lost once the master reads again.
pub fn back_pressure_as_declared<T: Hostile + Default>(ctx: &Ctx) {
    if let Some(role) = ctx.role() {
        pressure_role::<T>(ctx, &role);
    }
    back_pressure::<T>(ctx, 3, 40_000);
}

/// The children of [`back_pressure`] (role `pressure`, arg: the count).
pub(crate) fn pressure_role<T: Hostile + Default>(ctx: &Ctx, role: &str) -> ! {
    if role != "pressure" {
        fail(format_args!("unknown role {role}"));
    }
    let count = i32::try_from(ctx.arg_u64()).unwrap_or_else(|_| fail("count too large"));
    let sink = child_sink::<T>();
    say("started");
    let mut sent = 0usize;
    for v in Script::sequence(2, count, &[]).values() {
        let began = Instant::now();
        match sink.notify(Status(v)) {
            Ok(()) => sent += 1,
            Err(NotifyError::Full) => {
                say(format_args!("full after {sent} waited_ms {}", began.elapsed().as_millis()));
                std::process::exit(0);
            }
            Err(e) => fail(format_args!("notify {v}: {e}")),
        }
    }
    say(format_args!("done {sent}"));
    std::process::exit(0)
}

/// `children` children each notify `per_child` times while the master
/// does not read; see [`back_pressure_as_declared`].
pub(crate) fn back_pressure<T: Hostile + Default>(ctx: &Ctx, children: usize, per_child: i32) {
    let t = T::default();
    let caps = t.caps();
    let mut source = t.open().expect("open a channel");
    let mut kids: Vec<Kid> = (0..children)
        .map(|_| {
            let kid = Spawn::new(ctx, "pressure", 1).stdout().arg(per_child).spawn(&t, &mut source);
            t.register_child(&mut source, 1, kid.pid()).unwrap_or_else(|e| fail(format_args!("register_child: {e}")));
            kid
        })
        .collect();
    for kid in &mut kids {
        kid.expect_line("started");
    }
    // What each child got through while nobody read, per the declaration.
    let mut delivered: HashMap<i32, i32> = HashMap::new();
    match caps.back_pressure {
        BackPressure::Block => {
            // Far more than any channel holds: every child must end up
            // asleep inside notify, its last line still "started".
            let deadline = Instant::now() + WAIT;
            for kid in &kids {
                assert!(
                    poll_until(deadline, || asleep_in_syscall(kid.pid())),
                    "waited {WAIT:?} for child {} to block in notify while the master does not read",
                    kid.pid()
                );
            }
            for kid in &mut kids {
                assert!(
                    !kid.has_said("done"),
                    "child {} finished although nobody read: notify did not block",
                    kid.pid()
                );
                assert!(!kid.has_said("full"), "child {} got Full from a transport that declares Block", kid.pid());
                assert!(kid.try_reap().is_none(), "child {} exited while blocked", kid.pid());
                delivered.insert(kid.pid(), per_child);
            }
        }
        BackPressure::Overwrite => {
            // notify never waits: every child finishes while nobody reads.
            for kid in &mut kids {
                let line = kid.expect_line("done");
                assert_eq!(line, format!("done {per_child}"), "child {}: notify must never fail", kid.pid());
                delivered.insert(kid.pid(), per_child);
            }
        }
        BackPressure::BlockFor(_) | BackPressure::Error => {
            // The channel fills and notify says Full: after `bound`, or at
            // once.
            for kid in &mut kids {
                let line = kid.expect_line("full after");
                let mut words = line.split_whitespace().skip(2);
                let sent: i32 = words.next().and_then(|w| w.parse().ok()).expect("a count");
                let waited: u64 = words.nth(1).and_then(|w| w.parse().ok()).expect("a duration");
                assert!(sent < per_child, "child {}: Full only after everything was sent", kid.pid());
                if let BackPressure::BlockFor(bound) = caps.back_pressure {
                    let floor = bound.as_millis().saturating_sub(1);
                    assert!(
                        u128::from(waited) >= floor,
                        "child {}: Full after {waited} ms, declared {bound:?}",
                        kid.pid()
                    );
                }
                delivered.insert(kid.pid(), sent);
            }
        }
    }
    // Read again: everything that notify accepted arrives (the latest of
    // it, for a coalescing transport).
    let mut tracker = Tracker::new(caps.delivery);
    for kid in &kids {
        let sent = delivered[&kid.pid()];
        tracker.add(kid.pid(), 1, Script::sequence(2, sent, &[]));
    }
    let bound = Bound::new(WAIT, WAIT);
    loop {
        drain(&mut source, |item| tracker.take(&update_of(item, "back-pressure")).unwrap_or_else(|e| panic!("{e}")));
        if tracker.all_complete() {
            break;
        }
        bound.wait(&source, || format!("every accepted update once the master reads again ({})", tracker.incomplete()));
    }
    for kid in &mut kids {
        kid.expect_success("a child under back-pressure");
    }
    assert_eq!(source.try_recv(), Ok(None), "nothing beyond what notify accepted arrives");
}

/// Case 14. Threads of one child notify through one shared sink
/// concurrently: every update arrives whole and each thread's in its order
/// (for [`Delivery::LatestState`]: each thread's updates that arrive are in
/// its order, and the child's last state, which its main thread sends once
/// the threads are done, arrives last); or, where the transport declares
/// its sink not thread-safe, the type system forbids sharing it (`share` is
/// `None`, from [`SyncProbe`](super::SyncProbe)).
pub fn threads_share_a_sink<T: Hostile + Default>(ctx: &Ctx, share: Option<Share<T>>) {
    const THREADS: i32 = 4;
    const EACH: i32 = 2_500;
    let t = T::default();
    let caps = t.caps();
    if !caps.thread_safe_sink {
        // Moot: a sink declared not thread-safe must not be shareable at
        // all, which the type system decides.
        assert!(share.is_none(), "the sink is declared not thread-safe but is Sync");
        return;
    }
    let share = share.expect("the sink is declared thread-safe but is not Sync");
    // Four threads overwrite one another's states in a latest-state slot:
    // only the child's last state is owed, so the child says which it is.
    let latest = caps.delivery == Delivery::LatestState;
    if ctx.role().is_some() {
        let sink = child_sink::<T>();
        share(&sink, THREADS, EACH);
        if latest {
            sink.notify(Status::TAKEN).unwrap_or_else(|e| fail(format_args!("the last notify: {e}")));
        }
        std::process::exit(0);
    }
    let mut source = t.open().expect("open a channel");
    let mut kid = Spawn::new(ctx, "threads", 5).spawn(&t, &mut source);
    let pid = kid.pid();
    t.register_child(&mut source, 5, pid).unwrap_or_else(|e| fail(format_args!("register_child: {e}")));
    // One tracker entry per thread: its values are its own sequence.
    let mut trackers: Vec<Tracker> = (0..THREADS)
        .map(|th| {
            let mut tr = if latest { Tracker::lossy() } else { Tracker::new(caps.delivery) };
            tr.add(pid, 5, Script::sequence(2 + th * EACH, EACH, &[]));
            tr
        })
        .collect();
    let mut last_arrived = false;
    let bound = Bound::new(WAIT, WAIT);
    loop {
        drain(&mut source, |item| {
            let update = update_of(item, "threads");
            assert_eq!((update.pid, update.generation), (pid, 5), "a torn update: {update:?}");
            assert!(!last_arrived, "an update after the child's last state: {update:?}");
            if latest && update.status == Status::TAKEN {
                last_arrived = true;
                return;
            }
            let th = usize::try_from((update.status.0 - 2) / EACH).ok().filter(|&th| th < trackers.len());
            let th = th.unwrap_or_else(|| panic!("a value no thread sent: {update:?}"));
            trackers[th].take(&update).unwrap_or_else(|e| panic!("thread {th}: {e}"));
        });
        if if latest { last_arrived } else { trackers.iter().all(Tracker::all_complete) } {
            break;
        }
        bound.wait(&source, || {
            let left: Vec<String> = trackers.iter().map(Tracker::incomplete).collect();
            format!("every thread's updates ({}; the last state arrived: {last_arrived})", left.join("; "))
        });
    }
    kid.expect_success("the threaded child");
}
