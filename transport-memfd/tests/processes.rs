//! The memfd transport in real processes, where it goes beyond the
//! conformance suite: an 8 x 100,000 flood, the death word on close and on
//! `SIGKILL`, a futex-blocked full ring, a hostile scribbler beside an
//! honest ring, the seals, and a forged pid named by its channel.
//!
//! What every transport must do (round trip, fan-in, sleep/wake, close and
//! kill disconnects, a child killed mid-notify, fd hygiene, threads sharing
//! a sink, `EINTR`) is the conformance suite's, run against memfd in
//! `master-proto-conformance`. Every test here is both the master and,
//! re-executed, the child, through the suite's harness
//! ([`master_proto_conformance::harness`]): the parent runs this test binary
//! again with only the same test selected and a role set, installed through
//! the standard environment, and the test body takes the child's branch when
//! it finds the role. No `fork()` inside the threaded harness. Every wait is
//! bounded and says what it waited for.

#![cfg(target_os = "linux")]

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::time::Instant;

use master_proto::{ChildEnv, Received, Sender, Status, StatusSink, StatusSource, StatusUpdate, Transport};
use master_proto_conformance::harness::{
    Ctx, Kid, Spawn, WAIT, child_sink, fail, poll_until, receive, say, spawn_plain, wait_readable,
};
use master_proto_memfd::{Memfd, MemfdSink, MemfdSource};

// ---------------------------------------------------------------- helpers

/// The context of the test `case` of this binary.
fn ctx(case: &str) -> Ctx {
    Ctx::new(module_path!(), case)
}

/// Spawns this test binary as a child in `role`, with its own ring and one
/// listen socket, registered with the source under its pid; its stdout is
/// piped when `stdout` is set.
fn spawn(ctx: &Ctx, source: &mut MemfdSource, role: &str, generation: u32, stdout: bool) -> Kid {
    let spawn = Spawn::new(ctx, role, generation).listen(1);
    if stdout { spawn.stdout() } else { spawn }.spawn_registered(&Memfd, source)
}

/// The update and its sender, for an item that must be an update.
fn update(item: &Received) -> (StatusUpdate, Sender) {
    match item {
        Received::Update { update, sender } => (*update, *sender),
        Received::Malformed(m) => panic!("unexpected malformed input {m:?}"),
    }
}

/// Whether some thread of `pid` sleeps in a shared (not private)
/// `FUTEX_WAIT`, as `/proc/PID/task/*/syscall` shows: where a child blocks
/// on a full ring.
fn blocked_on_shared_futex(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.filter_map(Result::ok).any(|task| {
        let text = std::fs::read_to_string(task.path().join("syscall")).unwrap_or_default();
        let mut fields = text.split_whitespace();
        let nr: i64 = fields.next().and_then(|n| n.parse().ok()).unwrap_or(-1);
        nr == nix::libc::SYS_futex && fields.nth(1) == Some("0x0")
    })
}

/// Checks that `items` hold exactly `per_child` updates `0..per_child` in
/// order from each pid, each named by its channel.
fn assert_exact(items: &[Received], pids: &[i32], per_child: i32, generation: u32) {
    let mut next: HashMap<i32, i32> = pids.iter().map(|&p| (p, 0)).collect();
    for item in items {
        let (u, sender) = update(item);
        assert_eq!(sender, Sender::Channel(u.pid), "the channel names the child that wrote");
        assert_eq!(u.generation, generation);
        let want = next.get_mut(&u.pid).unwrap_or_else(|| panic!("update from unknown pid {}", u.pid));
        assert_eq!(u.status, Status(*want), "child {}: lost, duplicated or out of order", u.pid);
        *want += 1;
    }
    for (pid, n) in next {
        assert_eq!(n, per_child, "child {pid} delivered {n} of {per_child}");
    }
}

/// Child role: sends `0..count` as status values, then exits 0.
fn count_to(count: i32) -> ! {
    let sink = child_sink::<Memfd>();
    for n in 0..count {
        sink.notify(Status(n)).unwrap_or_else(|e| fail(format_args!("notify {n}: {e}")));
    }
    std::process::exit(0)
}

// ---------------------------------------------------------------- tests

/// Eight children send 100,000 updates each while the master drains: every
/// one arrives once, in per-child order (rings fill and block meanwhile).
#[test]
fn flood_eight_children_exact() {
    const PER_CHILD: i32 = 100_000;
    let ctx = ctx("flood_eight_children_exact");
    if ctx.role().is_some() {
        count_to(PER_CHILD);
    }
    let mut source = Memfd.open().expect("open");
    let mut children: Vec<Kid> = (0..8).map(|_| spawn(&ctx, &mut source, "flood", 3, false)).collect();
    let pids: Vec<i32> = children.iter().map(Kid::pid).collect();
    let got = receive(&mut source, 8 * 100_000, "every flooded update");
    assert_exact(&got, &pids, PER_CHILD, 3);
    for child in &mut children {
        child.expect_success("a flooding child");
    }
    assert_eq!(source.try_recv(), Ok(None));
}

/// Child role: sends AVAIL, waits for the master to go (lifeline), then
/// reports the death word and what notify says, on stdout.
fn report_disconnect() -> ! {
    let sink: MemfdSink = child_sink::<Memfd>();
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
    let mut source = Memfd.open().expect("open");
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
            let mut source = Memfd.open().expect("open");
            say(format_args!("master: armed={}", source.death_word_armed()));
            // The orphan inherits this process's stdout, the test's pipe.
            let orphan = Spawn::new(&ctx, "orphan", 3).listen(1).inherit_stdout().spawn_registered(&Memfd, &mut source);
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

/// A child floods while the master does not read: it blocks in the kernel
/// (a shared FUTEX_WAIT, flagged as waiting), and everything arrives once
/// the master reads.
#[test]
fn full_ring_blocks_in_the_kernel() {
    const TOTAL: i32 = 20_000;
    let ctx = ctx("full_ring_blocks_in_the_kernel");
    if ctx.role().is_some() {
        count_to(TOTAL);
    }
    let mut source = Memfd.open().expect("open");
    let mut child = spawn(&ctx, &mut source, "flood", 6, false);
    let pid = child.pid();
    assert!(
        poll_until(Instant::now() + WAIT, || source.blocked_children() == 1 && blocked_on_shared_futex(pid)),
        "waited {WAIT:?} for the child to block on its full ring"
    );
    let got = receive(&mut source, usize::try_from(TOTAL).expect("fits"), "every update");
    assert_exact(&got, &[pid], TOTAL, 6);
    child.expect_success("the child");
}

/// A hostile child scribbles pseudo-random bytes all over its own ring,
/// header included (the master's `SLEEP` word among them), while an honest
/// child sends 20,000 updates: the master names everything the hostile
/// child produced with its channel, never panics, reports the lie it is
/// sure to see (every slot's last `rec` word, which names no index near
/// the master's, at the last look when it forgets the ring), and the
/// honest child's updates are exact. (Scribbles ring no doorbell, and the
/// master sleeps on the hostile ring: which of the others it sees is
/// chance.)
#[test]
fn hostile_child_spoils_only_itself() {
    const HONEST: i32 = 20_000;
    let ctx = ctx("hostile_child_spoils_only_itself");
    match ctx.role().as_deref() {
        Some("hostile") => {
            let mut sink = child_sink::<Memfd>();
            let len = sink.region_len();
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            for round in 0..200_000u32 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let offset = usize::try_from(x % (len as u64 + 8)).expect("fits");
                let bytes = x.to_ne_bytes();
                let n = usize::try_from(x >> 61).expect("fits") + 1;
                sink.scribble(offset, &bytes[..n]);
                if round % 64 == 0 {
                    // Often a slot whose `rec` word looks like a record
                    // (even seq: "published") for some index near the
                    // start, in the documented layout: slots of 16 bytes
                    // from byte 128, `rec` first, seq in its high half.
                    let slot = usize::try_from(x % 64).expect("fits");
                    let seq = (x >> 8) & 0x3e;
                    sink.scribble(128 + 16 * slot, &((seq << 32) | 1).to_ne_bytes());
                }
            }
            // Last, a lie the master is sure to see: every slot's `rec`
            // says "published, record 0x7fff_fff7", far from any index the
            // master reached, looked at once more when it forgets the ring.
            for slot in (128..len).step_by(16) {
                sink.scribble(slot, &(0xffff_fff0u64 << 32).to_ne_bytes());
            }
            std::process::exit(0);
        }
        Some(_) => count_to(HONEST),
        None => {}
    }
    let mut source = Memfd.open().expect("open");
    let mut hostile = spawn(&ctx, &mut source, "hostile", 8, false);
    let mut honest = spawn(&ctx, &mut source, "honest", 8, false);
    let (hostile_pid, honest_pid) = (hostile.pid(), honest.pid());
    let mut honest_items = Vec::new();
    let (mut malformed, mut hostile_updates) = (0usize, 0usize);
    let deadline = Instant::now() + WAIT;
    let mut hostile_done = false;
    while honest_items.len() < usize::try_from(HONEST).expect("fits") || !hostile_done {
        source
            .drain(|item| match item {
                Received::Update { sender: Sender::Channel(p), .. } if p == honest_pid => honest_items.push(item),
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
        assert!(
            Instant::now() < deadline,
            "waited {WAIT:?}: {} honest updates, hostile done {hostile_done}",
            honest_items.len()
        );
        wait_readable(source.as_fd(), Instant::now() + std::time::Duration::from_millis(10));
    }
    assert_exact(&honest_items, &[honest_pid], HONEST, 8);
    honest.expect_success("the honest child");
    hostile.expect_success("the hostile child");
    Memfd.forget_child(&mut source, hostile_pid).expect("forget_child");
    source
        .drain(|item| {
            if let Received::Malformed(_) = item {
                malformed += 1;
            }
        })
        .expect("drain what the hostile ring held");
    assert!(malformed > 0, "the scribbling was reported ({hostile_updates} updates from the hostile channel)");
    assert_eq!(source.rings(), 1);
}

/// What a child can do to the memory the master maps: nothing. Its ring
/// cannot be resized or unsealed; the control area cannot be resized or
/// written, and no writable mapping of it can be made.
#[test]
fn child_cannot_resize_or_write_what_the_master_maps() {
    let ctx = ctx("child_cannot_resize_or_write_what_the_master_maps");
    if ctx.role().is_some() {
        use nix::fcntl::{FcntlArg, SealFlag, fcntl};
        let mut env = ChildEnv::from_process().unwrap_or_else(|e| fail(e));
        let ring = env.take_status().unwrap_or_else(|e| fail(e));
        let control = env.take_aux(master_proto_memfd::CONTROL).unwrap_or_else(|e| fail(e));
        let seals = |fd| SealFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GET_SEALS).unwrap_or(0));
        let (ring_seals, control_seals) = (seals(&ring), seals(&control));
        let size_seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        say(format_args!(
            "ring: sealed={} truncate={:?} grow={:?} unseal={:?}",
            ring_seals.contains(size_seals),
            nix::unistd::ftruncate(&ring, 0),
            nix::unistd::ftruncate(&ring, 1 << 30),
            fcntl(&ring, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_WRITE)),
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
    let mut source = Memfd.open().expect("open");
    let mut child = spawn(&ctx, &mut source, "seals", 1, true);
    assert_eq!(child.expect_line("ring:"), "ring: sealed=true truncate=Err(EPERM) grow=Err(EPERM) unseal=Err(EPERM)");
    assert_eq!(
        child.expect_line("control:"),
        "control: sealed=true future_write=true truncate=Err(EPERM) write=Err(EPERM)"
    );
    child.expect_success("the child");
}

/// A child writes a whole, well-formed record by hand (the documented
/// layout: slot 0 at byte 128, its `who` word, generation and pid 1, then
/// its `rec` word, seq 2 = "record 0, published" and status 1) claiming to
/// be pid 1: the master delivers it, named by the forger's own channel.
/// (Scribbling rings no doorbell, so the master looks once the forger has
/// exited.)
#[test]
fn forged_pid_is_named_by_its_channel() {
    let ctx = ctx("forged_pid_is_named_by_its_channel");
    if ctx.role().is_some() {
        let mut sink = child_sink::<Memfd>();
        let who = (u64::from(sink.generation()) << 32) | 1;
        let rec = (2u64 << 32) | 1;
        if (sink.scribble(136, &who.to_ne_bytes()), sink.scribble(128, &rec.to_ne_bytes())) != (8, 8) {
            fail("the forged record did not fit the ring");
        }
        std::process::exit(0);
    }
    let mut source = Memfd.open().expect("open");
    let mut child = spawn(&ctx, &mut source, "forger", 9, false);
    // Scribbling rings no doorbell: look once the forger is done.
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
