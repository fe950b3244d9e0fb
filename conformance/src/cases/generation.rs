//! Case 13: generations, and a reload with a new channel.

use std::collections::HashMap;
use std::time::Instant;

use master_proto::master::{Master, Outcome, ReapOutcome};
use master_proto::{Delivery, NotifyError, Received, Status, StatusSink};

use super::open_config;
use crate::harness::{
    Bound, Ctx, Kid, Spawn, WAIT, await_poke, child_sink, drain, exit_of, fail, readable_now, say, update_of,
    wait_readable,
};
use crate::hostile::Hostile;

/// The child roles of case 13.
fn role<T: Hostile + Default>(role: &str) -> ! {
    let sink = child_sink::<T>();
    let notify = |s: Status| sink.notify(s).unwrap_or_else(|e| fail(format_args!("notify {s}: {e}")));
    let await_gone = |sink: &T::Sink| {
        if !wait_readable(sink.disconnect_fd(), Instant::now() + WAIT) {
            fail("the disconnect fd did not fire");
        }
        match sink.notify(Status::AVAIL) {
            Err(NotifyError::Disconnected) => std::process::exit(0),
            other => fail(format_args!("notify after the disconnect returned {other:?}")),
        }
    };
    match role {
        "old" => {
            notify(Status::TAKEN);
            notify(Status::AVAIL);
            say("armed");
            // After the reload: one more update, on the old channel.
            if !await_poke() {
                fail("no poke");
            }
            notify(Status::TAKEN);
            say("sent");
            await_gone(&sink)
        }
        "liar" => {
            notify(Status::TAKEN);
            say("armed");
            await_gone(&sink)
        }
        "new" => {
            notify(Status::TAKEN);
            notify(Status::AVAIL);
            say("armed");
            if !await_poke() {
                fail("no poke");
            }
            if readable_now(sink.disconnect_fd()) {
                fail("a child of the new channel was told to go when the old one closed");
            }
            notify(Status::TAKEN);
            await_gone(&sink)
        }
        other => fail(format_args!("unknown role {other}")),
    }
}

/// Receives until every pid in `want` has delivered its expected last
/// status, feeding every item to `master`; returns the outcomes per pid.
fn settle<S: master_proto::StatusSource>(
    source: &mut S,
    master: &mut Master,
    want: &HashMap<i32, Status>,
    what: &str,
) -> HashMap<i32, Vec<Outcome>> {
    let mut outcomes: HashMap<i32, Vec<Outcome>> = HashMap::new();
    let mut last: HashMap<i32, Status> = HashMap::new();
    let bound = Bound::new(WAIT, WAIT);
    loop {
        drain(source, |item: Received| {
            let update = update_of(item, what);
            outcomes.entry(update.pid).or_default().push(master.receive(&item));
            last.insert(update.pid, update.status);
        });
        if want.iter().all(|(pid, s)| last.get(pid) == Some(s)) {
            return outcomes;
        }
        bound.wait(source, || format!("{what}: want {want:?}, last seen {last:?}"));
    }
}

/// Case 13. With a master whose generation counter is about to wrap:
/// children of the first channel are counted; a child whose updates carry
/// another generation than it was spawned with is ignored
/// (`WrongGeneration`, nothing changes); after a reload (a new channel,
/// `Master::reload`), updates from old children are `Retired`, closing the
/// old channel tells the old children to go (their disconnect fd fires,
/// notify says `Disconnected`) and not the new ones, and the new children
/// are counted.
#[allow(clippy::too_many_lines, reason = "one story, told in order")]
pub fn generation_and_reload<T: Hostile + Default>(ctx: &Ctx) {
    if let Some(r) = ctx.role() {
        role::<T>(&r);
    }
    let t = T::default();
    let caps = t.caps();
    let every = caps.delivery == Delivery::EveryUpdate;
    let mut master = Master::with_generation(open_config(), u32::MAX - 1);
    let mut old_channel = t.open().expect("open the first channel");
    let spawn = |master: &mut Master, source: &mut T::Source, role: &str, lie: bool| -> (Kid, u32) {
        let generation = master.begin_spawn(Instant::now()).expect("begin a spawn");
        // A liar is given another generation than the one registered.
        let installed = if lie { generation ^ 0x00ff_0000 } else { generation };
        let kid = Spawn::new(ctx, role, installed).stdin().stdout().spawn(&t, source);
        t.register_child(source, installed, kid.pid()).unwrap_or_else(|e| fail(format_args!("register_child: {e}")));
        master.spawned(kid.pid(), generation).expect("register");
        (kid, generation)
    };
    let (mut old1, g1) = spawn(&mut master, &mut old_channel, "old", false);
    let (mut old2, g2) = spawn(&mut master, &mut old_channel, "old", false);
    let (mut liar, gl) = spawn(&mut master, &mut old_channel, "liar", true);
    assert_eq!((g1, g2, gl), (u32::MAX, 0, 1), "the generation counter wraps");
    let want = HashMap::from([(old1.pid(), Status::AVAIL), (old2.pid(), Status::AVAIL), (liar.pid(), Status::TAKEN)]);
    let outcomes = settle(&mut old_channel, &mut master, &want, "the first children's updates");
    if every {
        assert_eq!(outcomes[&old1.pid()], vec![Outcome::Taken, Outcome::Avail]);
        assert_eq!(outcomes[&old2.pid()], vec![Outcome::Taken, Outcome::Avail]);
    }
    assert_eq!(outcomes[&liar.pid()], vec![Outcome::WrongGeneration { expected: gl, got: gl ^ 0x00ff_0000 }]);
    let liar_info = master.child(liar.pid()).expect("the liar is in the table");
    assert_eq!((liar_info.status, liar_info.use_count), (Status::AVAIL, 0), "the wrong generation changed nothing");
    assert_eq!(master.available(), 3);
    for kid in [&mut old1, &mut old2, &mut liar] {
        kid.expect_line("armed");
    }

    // Reload: a new channel for new children; the old ones are retired.
    let mut new_channel = t.open().expect("open the new channel");
    let mut retired = master.reload();
    let mut olds = vec![old1.pid(), old2.pid(), liar.pid()];
    olds.sort_unstable();
    retired.sort_unstable();
    assert_eq!(retired, olds, "reload retires every child of the old channel");
    assert_eq!(master.available(), 0);
    let (mut new1, n1) = spawn(&mut master, &mut new_channel, "new", false);
    let (mut new2, n2) = spawn(&mut master, &mut new_channel, "new", false);
    assert_eq!((n1, n2), (2, 3));
    let want = HashMap::from([(new1.pid(), Status::AVAIL), (new2.pid(), Status::AVAIL)]);
    let outcomes = settle(&mut new_channel, &mut master, &want, "the new children's updates");
    if every {
        assert_eq!(outcomes[&new1.pid()], vec![Outcome::Taken, Outcome::Avail]);
    }
    assert_eq!(master.available(), 2, "the new children are counted");
    for kid in [&mut new1, &mut new2] {
        kid.expect_line("armed");
    }

    // The old children speak on the old channel after the reload: retired.
    for kid in [&mut old1, &mut old2] {
        kid.poke();
        kid.expect_line("sent");
    }
    let want = HashMap::from([(old1.pid(), Status::TAKEN), (old2.pid(), Status::TAKEN)]);
    let outcomes = settle(&mut old_channel, &mut master, &want, "the retired children's updates");
    assert_eq!(outcomes[&old1.pid()], vec![Outcome::Retired]);
    assert_eq!(outcomes[&old2.pid()], vec![Outcome::Retired]);

    // Closing the old channel tells its children to go, and only them.
    drop(old_channel);
    for kid in [&mut old1, &mut old2, &mut liar] {
        kid.expect_success("an old child told to go (exit 0: fd fired, then Disconnected)");
        let reaped = master.reaped(kid.pid(), exit_of(kid.try_reap().expect("reaped")), Instant::now());
        assert!(matches!(reaped, ReapOutcome::Reaped { child, .. } if child.retired), "{reaped:?}");
    }
    for kid in [&mut new1, &mut new2] {
        kid.poke();
    }
    let want = HashMap::from([(new1.pid(), Status::TAKEN), (new2.pid(), Status::TAKEN)]);
    let outcomes = settle(&mut new_channel, &mut master, &want, "the new children, still connected");
    assert_eq!(outcomes[&new1.pid()], vec![Outcome::Taken]);
    assert_eq!(master.available(), 0);
    assert_eq!(master.total(), 2);
    let counters = *master.counters();
    assert_eq!((counters.reloads, counters.retired, counters.wrong_generation), (1, 2, 1));
    assert_eq!(master.epoch(), 1);
    drop(new_channel);
    for kid in [&mut new1, &mut new2] {
        kid.expect_success("a new child after its channel closed");
    }
}
