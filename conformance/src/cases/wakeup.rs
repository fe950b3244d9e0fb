//! Cases 10 and 12: no lost wake-up, and `EINTR` under a signal storm.

use std::os::fd::AsFd;
use std::time::Instant;

use master_proto::{Received, Status, StatusSink, StatusSource};

use super::delivery::{updater_role, whole_updates};
use crate::harness::{
    Ctx, Spawn, Storm, WAIT, await_poke, child_sink, fail, readable_now, say, storm_target, wait_readable,
};
use crate::hostile::Hostile;

/// Case 10. An update sent before the master starts waiting makes the
/// source's fd readable at once; then 10,000 rounds of master asleep in
/// `poll` on the source, child notifies, master wakes and finds exactly that
/// update, each round bounded.
pub fn no_lost_wakeup<T: Hostile + Default>(ctx: &Ctx) {
    if let Some(role) = ctx.role() {
        waker_role::<T>(ctx, &role);
    }
    wakeups::<T>(ctx, 10_000, false);
}

/// Case 12. A storm of `SIGUSR1` (a no-op handler installed without
/// `SA_RESTART`, so that every blocking call it hits fails with `EINTR`) at
/// the children and at the master's thread during case 2 (16 children x
/// 10,000 updates) and case 10 (10,000 rounds): no notify fails, nothing is
/// lost, no wake-up is missed.
pub fn eintr_storm<T: Hostile + Default>(ctx: &Ctx) {
    if let Some(role) = ctx.role() {
        if role.starts_with("updater") {
            updater_role::<T>(ctx, &role);
        }
        waker_role::<T>(ctx, &role);
    }
    whole_updates::<T>(ctx, 16, 10_000, true);
    wakeups::<T>(ctx, 10_000, true);
}

/// The child of [`wakeups`]: AVAIL at once, then one update per poke.
fn waker_role<T: Hostile + Default>(ctx: &Ctx, role: &str) -> ! {
    match role {
        "waker" => {}
        "waker-storm" => storm_target(),
        other => fail(format_args!("unknown role {other}")),
    }
    let rounds = i32::try_from(ctx.arg_u64()).unwrap_or_else(|_| fail("too many rounds"));
    let sink = child_sink::<T>();
    sink.notify(Status::AVAIL).unwrap_or_else(|e| fail(format_args!("first notify: {e}")));
    say("sent");
    for r in 0..rounds {
        if !await_poke() {
            fail(format_args!("stdin closed before round {r}"));
        }
        sink.notify(Status(2 + r)).unwrap_or_else(|e| fail(format_args!("round {r}: {e}")));
    }
    std::process::exit(0)
}

fn wakeups<T: Hostile + Default>(ctx: &Ctx, rounds: i32, storm: bool) {
    let t = T::default();
    let mut source = t.open().expect("open a channel");
    let storm = storm.then(Storm::start);
    let role = if storm.is_some() { "waker-storm" } else { "waker" };
    let mut kid = Spawn::new(ctx, role, 1).stdin().stdout().arg(rounds).spawn(&t, &mut source);
    let pid = kid.pid();
    t.register_child(&mut source, 1, pid);
    // The child has finished its notify before it says so: the update is
    // pending before the master looks, and one look must see it.
    kid.expect_line("sent");
    assert!(readable_now(source.as_fd()), "an update sent before the master waited did not make the fd readable");
    let first = source.try_recv().expect("read the channel");
    assert!(
        matches!(first, Some(Received::Update { update, .. }) if update.pid == pid && update.status == Status::AVAIL),
        "the early update: {first:?}"
    );
    if let Some(storm) = &storm {
        storm.add(pid);
    }
    for r in 0..rounds {
        kid.poke();
        let deadline = Instant::now() + WAIT;
        // Asleep in poll until the child's update wakes the master.
        let mut got = None;
        while got.is_none() {
            assert!(
                wait_readable(source.as_fd(), deadline),
                "round {r}: waited {WAIT:?} for the wake-up of update {} (a lost wake-up)",
                2 + r
            );
            got = source.try_recv().expect("read the channel");
        }
        let Some(Received::Update { update, .. }) = got else { panic!("round {r}: {got:?}") };
        assert_eq!((update.pid, update.status), (pid, Status(2 + r)), "round {r}");
        assert_eq!(source.try_recv(), Ok(None), "round {r}: one update, one item");
    }
    if let Some(storm) = &storm {
        storm.remove(pid);
    }
    kid.close_stdin();
    kid.expect_success("the paced child");
    if let Some(storm) = storm {
        let report = storm.stop();
        assert!(report.to_children > 0 && report.to_master > 0, "the storm sent nothing: {report:?}");
    }
}
