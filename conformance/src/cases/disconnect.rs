//! Cases 5-7: the master goes (orderly close, or `SIGKILL`) and every child
//! learns it, without sending and without dying of `SIGPIPE`.

use std::collections::BTreeSet;
use std::time::Instant;

use master_proto::{BackPressure, NotifyError, Received, Status, StatusSink};

use crate::harness::{
    Bound, Ctx, Kid, Script, Spawn, Tracker, WAIT, asleep_in_syscall, child_sink, drain_some, fail, poll_until,
    readable_now, say, sigpipe, spawn_plain, update_of, wait_readable,
};
use crate::hostile::Hostile;

/// Case 5. The master closes the channel (drops its source): idle children
/// see their disconnect fd fire while sending nothing, and their next
/// notify returns `Disconnected`; a child blocked in notify on a full
/// channel is released with `Disconnected`. `SIGPIPE` keeps Rust's default
/// (ignored) here; case 7 runs this at `SIG_DFL`.
pub fn master_close_disconnects<T: Hostile + Default>(ctx: &Ctx) {
    if let Some(role) = ctx.role() {
        disconnect_role::<T>(ctx, &role);
    }
    close::<T>(ctx, false);
}

/// Case 6. The master role, in a process of its own, is killed with
/// `SIGKILL`: its orphaned children learn it as in case 5.
pub fn master_killed_disconnects<T: Hostile + Default>(ctx: &Ctx) {
    if let Some(role) = ctx.role() {
        disconnect_role::<T>(ctx, &role);
    }
    killed(ctx, false);
}

/// Case 7. Cases 5 and 6 with `SIGPIPE` at `SIG_DFL` in every child: none
/// dies of a signal.
pub fn sigpipe_default_never_kills<T: Hostile + Default>(ctx: &Ctx) {
    if let Some(role) = ctx.role() {
        disconnect_role::<T>(ctx, &role);
    }
    close::<T>(ctx, true);
    killed(ctx, true);
}

/// Every child role of cases 5-7. The arg says the `SIGPIPE` disposition:
/// 1 for `SIG_DFL`, 0 to keep Rust's `SIG_IGN`.
fn disconnect_role<T: Hostile + Default>(ctx: &Ctx, role: &str) -> ! {
    let dfl = ctx.arg_u64() == 1;
    if dfl {
        sigpipe(true);
    }
    match role {
        "idle" | "orphan-idle" => {
            let sink = child_sink::<T>();
            sink.notify(Status::AVAIL).unwrap_or_else(|e| fail(format_args!("first notify: {e}")));
            if readable_now(sink.disconnect_fd()) {
                fail("the disconnect fd fired while the master was alive");
            }
            say(format_args!("armed {}", std::process::id()));
            // Nothing is sent from here on until the fd fires.
            let fired = wait_readable(sink.disconnect_fd(), Instant::now() + WAIT);
            let next = sink.notify(Status::TAKEN);
            if role == "orphan-idle" {
                // Not the test's child: it reports on stdout instead.
                say(format_args!("orphan {}: fired {fired}; notify {next:?}", std::process::id()));
            }
            if !fired {
                fail("the disconnect fd did not fire");
            }
            match next {
                Err(NotifyError::Disconnected) => std::process::exit(0),
                other => fail(format_args!("notify after the disconnect returned {other:?}")),
            }
        }
        "flood" | "orphan-flood" => {
            let sink = child_sink::<T>();
            say(format_args!("armed {}", std::process::id()));
            let deadline = Instant::now() + WAIT;
            for seq in 2.. {
                match sink.notify(Status(seq)) {
                    Ok(()) | Err(NotifyError::Full) => {}
                    Err(NotifyError::Disconnected) => {
                        if role == "orphan-flood" {
                            say(format_args!("orphan {}: flood ended Disconnected", std::process::id()));
                        }
                        std::process::exit(0);
                    }
                    Err(e) => fail(format_args!("notify {seq}: {e}")),
                }
                if Instant::now() > deadline {
                    fail("notify never said Disconnected");
                }
            }
            fail("ran out of sequence numbers")
        }
        "master" => master_role::<T>(ctx, dfl),
        other => fail(format_args!("unknown role {other}")),
    }
}

/// Whether a flooding child should be seen blocked in notify.
fn blocks(back_pressure: BackPressure) -> bool {
    back_pressure == BackPressure::Block
}

/// Three idle children and one flooding child, then the source is dropped.
fn close<T: Hostile + Default>(ctx: &Ctx, dfl: bool) {
    let t = T::default();
    let caps = t.caps();
    let mut source = t.open().expect("open a channel");
    let arg = u64::from(dfl);
    let mut idle: Vec<Kid> =
        (0..3).map(|_| Spawn::new(ctx, "idle", 2).stdout().arg(arg).spawn(&t, &mut source)).collect();
    let mut flood = Spawn::new(ctx, "flood", 2).stdout().arg(arg).spawn(&t, &mut source);
    for kid in idle.iter().chain(std::iter::once(&flood)) {
        t.register_child(&mut source, 2, kid.pid()).unwrap_or_else(|e| fail(format_args!("register_child: {e}")));
    }
    let mut tracker = Tracker::new(caps.delivery);
    for kid in &idle {
        tracker.add(kid.pid(), 2, Script::new(vec![Status::AVAIL.0]));
    }
    // Read until every idle child was heard; the flooder's updates are
    // read along but not checked here.
    let bound = Bound::new(WAIT, WAIT);
    loop {
        drain_some(&mut source, 512, |item| {
            let update = update_of(item, "close");
            if tracker.tracks(update.pid) {
                tracker.take(&update).unwrap_or_else(|e| panic!("{e}"));
            }
        });
        if tracker.all_complete() {
            break;
        }
        bound.wait(&source, || format!("the idle children's AVAIL ({})", tracker.incomplete()));
    }
    for kid in idle.iter_mut().chain(std::iter::once(&mut flood)) {
        kid.expect_line("armed");
    }
    if blocks(caps.back_pressure) {
        assert!(
            poll_until(Instant::now() + WAIT, || asleep_in_syscall(flood.pid())),
            "waited {WAIT:?} for the flooding child to block in notify"
        );
    }
    drop(source);
    for kid in &mut idle {
        kid.expect_success("an idle child after the master closed (exit 0: fd fired, then Disconnected)");
    }
    flood.expect_success("a flooding child after the master closed (exit 0: notify said Disconnected)");
}

/// The master role of case 6: spawns two idle orphans and a flooder that
/// inherit its stdout, reads until it heard the idle ones, says so, and
/// waits to be killed.
fn master_role<T: Hostile + Default>(ctx: &Ctx, dfl: bool) -> ! {
    let t = T::default();
    let mut source = t.open().unwrap_or_else(|e| fail(format_args!("open: {e}")));
    let arg = u64::from(dfl);
    let mut pids = BTreeSet::new();
    let mut kids = Vec::new();
    for role in ["orphan-idle", "orphan-idle", "orphan-flood"] {
        let kid = Spawn::new(ctx, role, 3).inherit_stdout().arg(arg).spawn(&t, &mut source);
        t.register_child(&mut source, 3, kid.pid()).unwrap_or_else(|e| fail(format_args!("register_child: {e}")));
        if role == "orphan-idle" {
            pids.insert(kid.pid());
        }
        kids.push(kid);
    }
    let mut heard = BTreeSet::new();
    let bound = Bound::new(WAIT, WAIT);
    loop {
        drain_some(&mut source, 512, |item| {
            if let Received::Update { update, .. } = item {
                heard.insert(update.pid);
            }
        });
        if pids.is_subset(&heard) {
            break;
        }
        bound.wait(&source, || "the orphans' first updates".to_owned());
    }
    say(format_args!("master: ready {}", kids.iter().map(|k| k.pid().to_string()).collect::<Vec<_>>().join(" ")));
    // The children must outlive this process: never drop them (which
    // would kill them).
    std::mem::forget(kids);
    let _keep = source;
    loop {
        std::thread::park();
    }
}

/// Runs the master role in its own process, waits until its children are
/// armed and it is ready, kills it, and reads the orphans' reports from
/// the stdout they share with it.
fn killed(ctx: &Ctx, dfl: bool) {
    let mut master = spawn_plain(ctx, "master", u64::from(dfl));
    // "master: ready" and the children's three "armed" lines, in any
    // order.
    let (mut ready, mut armed) = (None, 0);
    while ready.is_none() || armed < 3 {
        let line = master.expect_line("");
        if line.starts_with("master: ready") {
            ready = Some(line);
        } else if line.starts_with("armed") {
            armed += 1;
        }
    }
    let ready = ready.expect("seen");
    let pids: Vec<i32> = ready.split_whitespace().skip(2).map(|p| p.parse().expect("a pid")).collect();
    assert_eq!(pids.len(), 3);
    let status = master.kill9();
    assert!(status.code().is_none(), "the master role must die of SIGKILL, got {status}");
    let mut reports = BTreeSet::new();
    for _ in 0..3 {
        reports.insert(master.expect_line("orphan "));
    }
    let want: BTreeSet<String> = [
        format!("orphan {}: fired true; notify Err(Disconnected)", pids[0]),
        format!("orphan {}: fired true; notify Err(Disconnected)", pids[1]),
        format!("orphan {}: flood ended Disconnected", pids[2]),
    ]
    .into_iter()
    .collect();
    assert_eq!(reports, want, "what the orphans saw after the master was killed");
}
