//! The scoreboard transport in real processes, where it goes beyond the
//! conformance suite: a child that never waits for a stopped master (and
//! rings once), the death word on close and on `SIGKILL`, a hostile
//! scribbler beside an honest child, the seals, and a forged pid named by
//! its channel.
//!
//! What every transport must do (round trip, fan-in, latest state under
//! back-pressure, close and kill disconnects, a child killed mid-notify, fd
//! hygiene, threads sharing a sink, `EINTR`, edge-triggered wake-ups) is the
//! conformance suite's, run against scoreboard in `master-proto-transports`.
//! Every test here is both the master and, re-executed, the child, through
//! the suite's harness ([`master_proto_conformance::harness`]). Every wait
//! is bounded and says what it waited for.

#![cfg(target_os = "linux")]

use std::io::Write;
use std::os::fd::AsFd;
use std::time::Instant;

use master_proto::{ChildEnv, Received, Sender, Status, StatusSink, StatusSource, StatusUpdate, Transport};
use master_proto_conformance::harness::{
    Ctx, Kid, Spawn, WAIT, child_sink, fail, receive, say, spawn_plain, wait_readable,
};
use master_proto_scoreboard::{Scoreboard, ScoreboardSink, ScoreboardSource};

/// The context of the test `case` of this binary.
fn ctx(case: &str) -> Ctx {
    Ctx::new(module_path!(), case)
}

/// Spawns this test binary as a child in `role`, with its own slot and one
/// listen socket, registered with the source under its pid; its stdout is
/// piped when `stdout` is set.
fn spawn(ctx: &Ctx, source: &mut ScoreboardSource, role: &str, generation: u32, stdout: bool) -> Kid {
    let spawn = Spawn::new(ctx, role, generation).listen(1);
    if stdout { spawn.stdout() } else { spawn }.spawn_registered(&Scoreboard, source)
}

/// Child role: sends `0..count` as status values, then exits 0.
fn count_to(count: i32) -> ! {
    let sink = child_sink::<Scoreboard>();
    for n in 0..count {
        sink.notify(Status(n)).unwrap_or_else(|e| fail(format_args!("notify {n}: {e}")));
    }
    std::process::exit(0)
}

/// The master does not read at all while a child notifies two million
/// times: the child never waits (it finishes and exits), its doorbell rang
/// once (the master slept on its slot the whole time), and once the master
/// reads it gets exactly the child's last state, the others counted as
/// overwritten.
#[test]
fn a_stopped_master_never_holds_a_child_back() {
    const TOTAL: i32 = 2_000_000;
    let ctx = ctx("a_stopped_master_never_holds_a_child_back");
    if ctx.role().is_some() {
        count_to(TOTAL);
    }
    let mut source = Scoreboard.open().expect("open");
    let mut child = spawn(&ctx, &mut source, "count", 6, false);
    let pid = child.pid();
    // Put the master to sleep on the slot (registering started a watch),
    // then stop reading.
    for _ in 0..3 {
        assert_eq!(source.try_recv(), Ok(None));
    }
    assert_eq!(source.watched(), 0, "the master sleeps on the slot");
    child.expect_success("a child notifying while nobody reads");
    assert_eq!(source.doorbell_rings(pid), Some(1), "one ring for the whole of the master's sleep");
    let got = receive(&mut source, 1, "the child's last state");
    assert_eq!(
        got,
        vec![Received::Update {
            update: StatusUpdate { pid, generation: 6, status: Status(TOTAL - 1) },
            sender: Sender::Channel(pid)
        }]
    );
    assert_eq!(source.counters().overwritten, u64::try_from(TOTAL - 1).expect("fits"));
    Scoreboard.forget_child(&mut source, pid).expect("forget_child");
    assert_eq!(source.try_recv(), Ok(None));
}

/// Child role: sends AVAIL, waits for the master to go (lifeline), then
/// reports the death word and what notify says, on stdout.
fn report_disconnect() -> ! {
    let sink: ScoreboardSink = child_sink::<Scoreboard>();
    sink.notify(Status::AVAIL).unwrap_or_else(|e| fail(e));
    if !wait_readable(sink.disconnect_fd(), Instant::now() + WAIT) {
        say("orphan: the lifeline did not fire");
        std::process::exit(3);
    }
    say(format_args!(
        "orphan: death word gone={}; notify: {:?}",
        sink.death_word_says_gone(),
        sink.notify(Status::TAKEN)
    ));
    std::process::exit(0);
}

/// The master drops its source: the death word says so at once (the
/// child's next notify is `Disconnected` without a system call) and the
/// lifeline fires.
#[test]
fn master_close_disconnects() {
    let ctx = ctx("master_close_disconnects");
    if ctx.role().is_some() {
        report_disconnect();
    }
    let mut source = Scoreboard.open().expect("open");
    let mut child = spawn(&ctx, &mut source, "close", 7, true);
    receive(&mut source, 1, "the child's AVAIL");
    drop(source);
    assert_eq!(child.expect_line("orphan:"), "orphan: death word gone=true; notify: Err(Disconnected)");
    child.expect_success("the child");
}

/// The master process is killed with SIGKILL: the kernel marks the death
/// word (robust futex), so the child's next notify is `Disconnected`
/// without a system call; the lifeline fires too.
#[test]
fn master_killed_disconnects() {
    let ctx = ctx("master_killed_disconnects");
    match ctx.role().as_deref() {
        Some("orphan") => report_disconnect(),
        Some("master") => {
            let mut source = Scoreboard.open().expect("open");
            say(format_args!("master: armed={}", source.death_word_armed()));
            // The orphan inherits this process's stdout, the test's pipe.
            let orphan =
                Spawn::new(&ctx, "orphan", 3).listen(1).inherit_stdout().spawn_registered(&Scoreboard, &mut source);
            receive(&mut source, 1, "the orphan's AVAIL");
            say("master: ready");
            std::io::stdout().flush().expect("flush");
            // The orphan must outlive this process: never drop it (which
            // would kill it); this process is killed first.
            std::mem::forget(orphan);
            loop {
                std::thread::park();
            }
        }
        Some(other) => fail(format_args!("unknown role {other}")),
        None => {}
    }
    let mut master = spawn_plain(&ctx, "master", 0);
    assert_eq!(master.expect_line("master: armed"), "master: armed=true", "the death word needs a robust list");
    master.expect_line("master: ready");
    let status = master.kill9();
    assert!(status.code().is_none(), "the master role must die of SIGKILL, got {status}");
    assert_eq!(master.expect_line("orphan:"), "orphan: death word gone=true; notify: Err(Disconnected)");
}

/// A hostile child scribbles pseudo-random bytes all over its own slot,
/// the master's sleep word included, while an honest child sends 20,000
/// states: the master names everything the hostile child produced with its
/// channel, never panics, reports the lie it is sure to see (the slot's
/// last word, an even `seq`, at the last look when it forgets the slot),
/// and the honest child's states arrive in order, ending with its last.
/// (Scribbles ring no doorbell: which of the others the master sees is
/// chance, as for any latest state.)
#[test]
fn hostile_child_spoils_only_itself() {
    const HONEST: i32 = 20_000;
    let ctx = ctx("hostile_child_spoils_only_itself");
    match ctx.role().as_deref() {
        Some("hostile") => {
            let mut sink = child_sink::<Scoreboard>();
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            for round in 0..200_000u32 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // The slot's words and the sleep word (bytes 0..72).
                let offset = usize::try_from(x % 80).expect("fits");
                let bytes = x.to_ne_bytes();
                let n = usize::try_from(x >> 61).expect("fits") + 1;
                sink.scribble(offset, &bytes[..n]);
                if round % 64 == 0 {
                    // Often a state word with an even `seq` (the
                    // documented layout: word 0, `seq` in the high half).
                    sink.scribble(0, &((x >> 8) & 0x3e).to_ne_bytes());
                }
                if round % 1024 == 0 {
                    // And now and then an honest-looking state, which rings.
                    let _ = sink.notify(Status(7));
                }
            }
            // Last, a lie the master is sure to see: the slot's final word
            // (an even `seq`), looked at once more when it forgets the slot.
            sink.scribble(0, &((0x40u64 << 32) | 0x1234).to_ne_bytes());
            std::process::exit(0);
        }
        Some(_) => count_to(HONEST),
        None => {}
    }
    let mut source = Scoreboard.open().expect("open");
    let mut hostile = spawn(&ctx, &mut source, "hostile", 8, false);
    let mut honest = spawn(&ctx, &mut source, "honest", 8, false);
    let (hostile_pid, honest_pid) = (hostile.pid(), honest.pid());
    let (mut last, mut malformed, mut hostile_updates) = (-1, 0usize, 0usize);
    let deadline = Instant::now() + WAIT;
    let mut hostile_done = false;
    while last != HONEST - 1 || !hostile_done {
        source
            .drain(|item| match item {
                Received::Update { update, sender: Sender::Channel(p) } if p == honest_pid => {
                    assert_eq!((update.pid, update.generation), (honest_pid, 8), "the honest child's own words");
                    assert!(update.status.0 > last, "stale: {update:?} after {last}");
                    last = update.status.0;
                }
                Received::Update { sender: Sender::Channel(p), .. } => {
                    assert_eq!(p, hostile_pid, "only two channels exist");
                    hostile_updates += 1;
                }
                Received::Update { sender, .. } => panic!("an update without its channel: {sender:?}"),
                Received::Malformed(_) => malformed += 1,
            })
            .expect("read");
        if !hostile_done {
            hostile_done = hostile.try_reap().is_some();
        }
        assert!(Instant::now() < deadline, "waited {WAIT:?}: honest child at {last}, hostile done {hostile_done}");
        wait_readable(source.as_fd(), Instant::now() + std::time::Duration::from_millis(10));
    }
    honest.expect_success("the honest child");
    hostile.expect_success("the hostile child");
    Scoreboard.forget_child(&mut source, hostile_pid).expect("forget_child");
    source
        .drain(|item| {
            if let Received::Malformed(_) = item {
                malformed += 1;
            }
        })
        .expect("drain what the hostile slot held");
    assert!(malformed > 0, "the scribbling was reported ({hostile_updates} states from the hostile channel)");
    assert_eq!(source.slots(), 1);
}

/// What a child can do to the memory the master maps: nothing. Its slot
/// cannot be resized or unsealed; the control area cannot be resized or
/// written, and no writable mapping of it can be made.
#[test]
fn child_cannot_resize_or_write_what_the_master_maps() {
    let ctx = ctx("child_cannot_resize_or_write_what_the_master_maps");
    if ctx.role().is_some() {
        use nix::fcntl::{FcntlArg, SealFlag, fcntl};
        let mut env = ChildEnv::from_process().unwrap_or_else(|e| fail(e));
        let slot = env.take_status().unwrap_or_else(|e| fail(e));
        let control = env.take_aux(master_proto_scoreboard::CONTROL).unwrap_or_else(|e| fail(e));
        let seals = |fd| SealFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GET_SEALS).unwrap_or(0));
        let (slot_seals, control_seals) = (seals(&slot), seals(&control));
        let size_seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        say(format_args!(
            "slot: sealed={} truncate={:?} grow={:?} unseal={:?}",
            slot_seals.contains(size_seals),
            nix::unistd::ftruncate(&slot, 0),
            nix::unistd::ftruncate(&slot, 1 << 30),
            fcntl(&slot, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_WRITE)),
        ));
        say(format_args!(
            "control: sealed={} future_write={} truncate={:?} write={:?}",
            control_seals.contains(size_seals),
            control_seals.contains(SealFlag::F_SEAL_FUTURE_WRITE),
            nix::unistd::ftruncate(&control, 0),
            nix::unistd::write(&control, &[0xff; 16]),
        ));
        std::process::exit(0);
    }
    let mut source = Scoreboard.open().expect("open");
    let mut child = spawn(&ctx, &mut source, "seals", 1, true);
    assert_eq!(child.expect_line("slot:"), "slot: sealed=true truncate=Err(EPERM) grow=Err(EPERM) unseal=Err(EPERM)");
    assert_eq!(
        child.expect_line("control:"),
        "control: sealed=true future_write=true truncate=Err(EPERM) write=Err(EPERM)"
    );
    child.expect_success("the child");
}

/// A child writes a whole state by hand (the documented layout: word 1 its
/// generation and pid 1, then word 0, `seq` 1 = "the first state" and
/// status 1) claiming to be pid 1: the master delivers it, named by the
/// forger's own channel. (Scribbling rings no doorbell; the master
/// watches the slot from registration until it has looked twice, so it
/// looks once the forger has exited.)
#[test]
fn forged_pid_is_named_by_its_channel() {
    let ctx = ctx("forged_pid_is_named_by_its_channel");
    if ctx.role().is_some() {
        let mut sink = child_sink::<Scoreboard>();
        let who = (u64::from(sink.generation()) << 32) | 1;
        let state = (1u64 << 32) | 1;
        if (sink.scribble(8, &who.to_ne_bytes()), sink.scribble(0, &state.to_ne_bytes())) != (8, 8) {
            fail("the forged state did not fit the slot");
        }
        std::process::exit(0);
    }
    let mut source = Scoreboard.open().expect("open");
    let mut child = spawn(&ctx, &mut source, "forger", 9, false);
    child.expect_success("the forger");
    let mut got = Vec::new();
    source.drain(|item| got.push(item)).expect("read");
    let forger = child.pid();
    assert_eq!(
        got,
        vec![Received::Update {
            update: StatusUpdate { pid: 1, generation: 9, status: Status::AVAIL },
            sender: Sender::Channel(forger)
        }]
    );
}
