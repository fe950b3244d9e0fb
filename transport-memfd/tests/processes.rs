//! The memfd transport in real processes: round trip, flood, sleep/wake,
//! master closed or killed, child killed, back-pressure, a hostile child.
//!
//! Every test here is both the master and, re-executed, the child: the
//! parent runs this test binary again with only the same test selected and
//! `ROLE` set, installed through the standard environment, and the test
//! body takes the child's branch when it finds `ROLE`. No `fork()` inside
//! the threaded harness. Every wait is bounded and says what it waited for.

#![cfg(target_os = "linux")]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use common::{WAIT, pid_of, poll_until, wait_readable};
use master_proto::{
    ChildEnv, ChildFds, Identity, Malformed, NotifyError, Received, Sender, Status, StatusSink, StatusSource,
    StatusUpdate, Transport,
};
use master_proto_memfd::{Memfd, MemfdSink, MemfdSource};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const ROLE: &str = "MEMFD_TEST_ROLE";

// ---------------------------------------------------------------- helpers

fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// The full name of a test in this binary.
fn test_name(test: &str) -> String {
    test.to_owned()
}

/// Spawns this test binary as a child running only `test` in `role`, with
/// its own ring, registered with the source under its pid.
fn spawn_child(source: &mut MemfdSource, test: &str, role: &str, generation: u32, stdio: (Stdio, Stdio)) -> Reaped {
    let end = Memfd.child_end(source, generation).expect("make the child's end");
    let path = std::env::temp_dir().join(format!("memfd-test-{}-{generation}-{role}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).expect("bind a listen socket");
    let _ = std::fs::remove_file(&path);
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1", "-q"]).env(ROLE, role).stdin(stdio.0).stdout(stdio.1);
    ChildFds::new(end, generation)
        .listen(OwnedFd::from(listener))
        .install(&mut cmd)
        .expect("install the standard environment");
    let child = cmd.spawn().expect("spawn the child");
    Memfd.register_child(source, generation, pid_of(&child));
    Reaped(child)
}

/// A child process that is killed and reaped when dropped, so that a
/// failing test leaves no process behind.
struct Reaped(Child);

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn quiet() -> (Stdio, Stdio) {
    (Stdio::null(), Stdio::null())
}

/// Receives until `want` items arrived, polling the source's fd.
fn receive(source: &mut MemfdSource, want: usize, what: &str) -> Vec<Received> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::with_capacity(want);
    while got.len() < want {
        source.drain(|item| got.push(item)).expect("read the source");
        if got.len() < want {
            assert!(
                wait_readable(source.as_fd(), deadline),
                "waited {WAIT:?} for {what}: got {} of {want} items",
                got.len()
            );
        }
    }
    got
}

fn wait_exit(child: &mut Child, what: &str) -> ExitStatus {
    common::try_wait_until(child, Instant::now() + WAIT).unwrap_or_else(|| panic!("waited {WAIT:?} for {what} to exit"))
}

/// A child role that fails: say why on stderr and exit with `code`.
fn fail(code: i32, why: impl std::fmt::Display) -> ! {
    eprintln!("child role failed: {why}");
    std::process::exit(code)
}

fn child_sink() -> MemfdSink {
    let mut env = ChildEnv::from_process().unwrap_or_else(|e| fail(10, e));
    Memfd.sink(&mut env).unwrap_or_else(|e| fail(11, e))
}

/// The update and its sender, for an item that must be an update.
fn update(item: &Received) -> (StatusUpdate, Sender) {
    match item {
        Received::Update { update, sender } => (*update, *sender),
        Received::Malformed(m) => panic!("unexpected malformed input {m:?}"),
    }
}

fn line_reader(out: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn expect_line(lines: &mpsc::Receiver<String>, prefix: &str) -> String {
    loop {
        match lines.recv_timeout(WAIT) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => {}
            Err(e) => panic!("waited {WAIT:?} for a line starting {prefix:?}: {e}"),
        }
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

// ---------------------------------------------------------------- tests

/// A child sends TAKEN and AVAIL; they arrive with its pid and generation,
/// named by its own channel.
#[test]
fn round_trip() {
    if role().is_some() {
        let sink = child_sink();
        for status in [Status::TAKEN, Status::AVAIL] {
            sink.notify(status).unwrap_or_else(|e| fail(1, e));
        }
        std::process::exit(0);
    }
    assert_eq!(Memfd.caps().identity, Identity::PrivateChannel);
    let mut source = Memfd.open().expect("open");
    let generation = 0o1234567;
    let mut child = spawn_child(&mut source, &test_name("round_trip"), "child", generation, quiet());
    let got = receive(&mut source, 2, "TAKEN and AVAIL");
    let pid = pid_of(&child);
    let want =
        |status| Received::Update { update: StatusUpdate { pid, generation, status }, sender: Sender::Channel(pid) };
    assert_eq!(got, vec![want(Status::TAKEN), want(Status::AVAIL)]);
    assert!(wait_exit(&mut child, "the child").success());
    assert_eq!(source.try_recv(), Ok(None), "nothing more arrives");
}

/// Eight children send 100,000 updates each while the master drains: every
/// one arrives once, in per-child order (rings fill and block meanwhile).
#[test]
fn flood_eight_children_exact() {
    const PER_CHILD: i32 = 100_000;
    if role().is_some() {
        let sink = child_sink();
        for n in 0..PER_CHILD {
            sink.notify(Status(n)).unwrap_or_else(|e| fail(1, format_args!("notify {n}: {e}")));
        }
        std::process::exit(0);
    }
    let mut source = Memfd.open().expect("open");
    let mut children: Vec<Reaped> = (0..8)
        .map(|_| spawn_child(&mut source, &test_name("flood_eight_children_exact"), "flood", 3, quiet()))
        .collect();
    let pids: Vec<i32> = children.iter().map(|c| pid_of(c)).collect();
    let got = receive(&mut source, 8 * 100_000, "every flooded update");
    assert_exact(&got, &pids, PER_CHILD, 3);
    for child in &mut children {
        assert!(wait_exit(child, "a flooding child").success());
    }
    assert_eq!(source.try_recv(), Ok(None));
}

/// 10,000 rounds of: the master drains to `None` (declares itself asleep)
/// and waits on its fd; the child, told to go, sends one update. Every
/// round's update wakes the master.
#[test]
fn asleep_master_wakes_every_round() {
    const ROUNDS: i32 = 10_000;
    if role().is_some() {
        let sink = child_sink();
        let mut stdin = std::io::stdin().lock();
        let mut go = [0u8; 1];
        for n in 0..ROUNDS {
            stdin.read_exact(&mut go).unwrap_or_else(|e| fail(2, format_args!("awaiting go {n}: {e}")));
            sink.notify(Status(n)).unwrap_or_else(|e| fail(1, e));
        }
        std::process::exit(0);
    }
    let mut source = Memfd.open().expect("open");
    let mut child = spawn_child(
        &mut source,
        &test_name("asleep_master_wakes_every_round"),
        "rounds",
        4,
        (Stdio::piped(), Stdio::null()),
    );
    let mut go = child.stdin.take().expect("stdin");
    let pid = pid_of(&child);
    for n in 0..ROUNDS {
        // Drained to None: the master is asleep now.
        assert_eq!(source.try_recv(), Ok(None), "round {n}: nothing pending before go");
        go.write_all(b"g").expect("tell the child to go");
        assert!(wait_readable(source.as_fd(), Instant::now() + WAIT), "round {n}: waited {WAIT:?} for the doorbell");
        let item =
            source.try_recv().expect("read").unwrap_or_else(|| panic!("round {n}: doorbell rang, nothing pending"));
        assert_eq!(update(&item), (StatusUpdate { pid, generation: 4, status: Status(n) }, Sender::Channel(pid)));
    }
    assert!(wait_exit(&mut child, "the child").success());
}

/// Child role: wait for the master to go (lifeline), then report the death
/// word and what notify says, on stdout.
fn report_disconnect(sink: &MemfdSink) -> ! {
    if !wait_readable(sink.disconnect_fd(), Instant::now() + WAIT) {
        println!("orphan: the lifeline did not fire");
        std::process::exit(3);
    }
    println!("orphan: death word gone={}; notify: {:?}", sink.death_word_says_gone(), sink.notify(Status::TAKEN));
    std::process::exit(0);
}

/// The master drops its source: the death word says so at once (the
/// child's next notify is `Disconnected` without a system call) and the
/// lifeline fires.
#[test]
fn master_close_disconnects() {
    if role().is_some() {
        let sink = child_sink();
        sink.notify(Status::AVAIL).unwrap_or_else(|e| fail(1, e));
        report_disconnect(&sink);
    }
    let mut source = Memfd.open().expect("open");
    let mut child =
        spawn_child(&mut source, &test_name("master_close_disconnects"), "close", 7, (Stdio::null(), Stdio::piped()));
    let lines = line_reader(child.stdout.take().expect("stdout"));
    receive(&mut source, 1, "the child's AVAIL");
    drop(source);
    assert_eq!(expect_line(&lines, "orphan:"), "orphan: death word gone=true; notify: Err(Disconnected)");
    assert!(wait_exit(&mut child, "the child").success());
}

/// The master process is killed with SIGKILL: the kernel marks the death
/// word (robust futex), so the child's next notify is `Disconnected`
/// without a system call; the lifeline fires too.
#[test]
fn master_killed_disconnects() {
    match role().as_deref() {
        Some("orphan") => {
            let sink = child_sink();
            sink.notify(Status::AVAIL).unwrap_or_else(|e| fail(1, e));
            report_disconnect(&sink);
        }
        Some("master") => {
            let mut source = Memfd.open().expect("open");
            println!("master: armed={}", source.death_word_armed());
            // Never reaped here: this process is killed first, and the
            // orphan is reparented.
            let _child = spawn_child(
                &mut source,
                &test_name("master_killed_disconnects"),
                "orphan",
                3,
                (Stdio::null(), Stdio::inherit()),
            );
            receive(&mut source, 1, "the orphan's AVAIL");
            println!("master: ready");
            std::io::stdout().flush().expect("flush");
            loop {
                std::thread::park();
            }
        }
        Some(other) => fail(2, format_args!("unknown role {other}")),
        None => {}
    }
    let mut master = Reaped(
        Command::new(std::env::current_exe().expect("current_exe"))
            .args(["master_killed_disconnects", "--exact", "--nocapture", "--test-threads=1", "-q"])
            .env(ROLE, "master")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the master role"),
    );
    let lines = line_reader(master.stdout.take().expect("stdout"));
    assert_eq!(expect_line(&lines, "master: armed"), "master: armed=true", "the death word needs a robust list");
    expect_line(&lines, "master: ready");
    kill(Pid::from_raw(pid_of(&master)), Signal::SIGKILL).expect("kill the master");
    assert!(wait_exit(&mut master, "the killed master").code().is_none());
    assert_eq!(expect_line(&lines, "orphan:"), "orphan: death word gone=true; notify: Err(Disconnected)");
}

/// One of three flooding children is killed mid-flood: the others' updates
/// stay exact, the master never blocks, and forgetting the dead child
/// delivers what it had published and reports a record it died writing.
#[test]
fn child_killed_mid_flood() {
    const PER_CHILD: i32 = 50_000;
    match role().as_deref() {
        Some("victim") => {
            let sink = child_sink();
            for n in 0.. {
                sink.notify(Status(n)).unwrap_or_else(|e| fail(1, e));
            }
            std::process::exit(0);
        }
        Some(_) => {
            let sink = child_sink();
            for n in 0..PER_CHILD {
                sink.notify(Status(n)).unwrap_or_else(|e| fail(1, e));
            }
            std::process::exit(0);
        }
        None => {}
    }
    let me = test_name("child_killed_mid_flood");
    let mut source = Memfd.open().expect("open");
    let mut victim = spawn_child(&mut source, &me, "victim", 5, quiet());
    let mut honest: Vec<Reaped> = (0..2).map(|_| spawn_child(&mut source, &me, "honest", 5, quiet())).collect();
    let victim_pid = pid_of(&victim);
    let pids: Vec<i32> = honest.iter().map(|c| pid_of(c)).collect();
    let mut got = receive(&mut source, 5_000, "the first updates");
    kill(Pid::from_raw(victim_pid), Signal::SIGKILL).expect("kill the victim");
    assert!(wait_exit(&mut victim, "the victim").code().is_none());
    Memfd.forget_child(&mut source, victim_pid);
    let deadline = Instant::now() + WAIT;
    let want = |got: &[Received]| {
        got.iter().filter(|i| matches!(i, Received::Update { update, .. } if pids.contains(&update.pid))).count()
    };
    while want(&got) < 2 * 50_000 {
        source.drain(|item| got.push(item)).expect("read");
        if want(&got) < 2 * 50_000 {
            assert!(wait_readable(source.as_fd(), deadline), "waited {WAIT:?} for the honest children's updates");
        }
    }
    // The victim's updates arrived in order up to where it died; at most
    // one record is reported torn.
    let mut victim_next = 0;
    let mut torn = 0;
    let mut rest = Vec::new();
    for item in got {
        match item {
            Received::Update { update, sender: Sender::Channel(p) } if p == victim_pid => {
                assert_eq!(update.status, Status(victim_next), "the victim's updates in order");
                victim_next += 1;
            }
            Received::Malformed(Malformed::Torn) => torn += 1,
            other => rest.push(other),
        }
    }
    assert!(victim_next >= 1, "the victim's early updates arrived");
    assert!(torn <= 1, "{torn} torn records from one death");
    assert_exact(&rest, &pids, PER_CHILD, 5);
    for child in &mut honest {
        assert!(wait_exit(child, "an honest child").success());
    }
    assert_eq!(source.rings(), 2);
}

/// A child floods while the master does not read: it blocks in the kernel
/// (a shared FUTEX_WAIT, flagged as waiting), and everything arrives once
/// the master reads.
#[test]
fn full_ring_blocks_in_the_kernel() {
    const TOTAL: i32 = 20_000;
    if role().is_some() {
        let sink = child_sink();
        for n in 0..TOTAL {
            sink.notify(Status(n)).unwrap_or_else(|e| fail(1, e));
        }
        std::process::exit(0);
    }
    let mut source = Memfd.open().expect("open");
    let mut child = spawn_child(&mut source, &test_name("full_ring_blocks_in_the_kernel"), "flood", 6, quiet());
    let pid = pid_of(&child);
    assert!(
        poll_until(Instant::now() + WAIT, || source.blocked_children() == 1 && blocked_on_shared_futex(pid)),
        "waited {WAIT:?} for the child to block on its full ring"
    );
    let got = receive(&mut source, usize::try_from(TOTAL).expect("fits"), "every update");
    assert_exact(&got, &[pid], TOTAL, 6);
    assert!(wait_exit(&mut child, "the child").success());
}

/// A child blocked on a full ring is released with `Disconnected` when the
/// master closes the channel.
#[test]
fn blocked_child_sees_disconnect() {
    if role().is_some() {
        let sink = child_sink();
        for n in 0.. {
            match sink.notify(Status(n)) {
                Ok(()) => {}
                Err(NotifyError::Disconnected) => std::process::exit(0),
                Err(e) => fail(1, e),
            }
        }
        fail(2, "the ring never filled");
    }
    let mut source = Memfd.open().expect("open");
    let mut child = spawn_child(&mut source, &test_name("blocked_child_sees_disconnect"), "flood", 1, quiet());
    assert!(
        poll_until(Instant::now() + WAIT, || source.blocked_children() == 1),
        "waited {WAIT:?} for the child to block"
    );
    drop(source);
    let status = wait_exit(&mut child, "the blocked child after the master closed");
    assert_eq!(status.code(), Some(0), "got {status}");
}

/// A hostile child scribbles pseudo-random bytes all over its own ring,
/// head included, while an honest child sends 20,000 updates: the master
/// reports what it rejects, names everything the hostile child produced
/// with its channel, never panics, and the honest child's updates are exact.
#[test]
fn hostile_child_spoils_only_itself() {
    const HONEST: i32 = 20_000;
    match role().as_deref() {
        Some("hostile") => {
            let mut sink = child_sink();
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
                if round % 4096 == 0 {
                    // Now and then a head that claims a whole ring of records.
                    let head = u32::try_from(x & 0xffff).expect("fits") + 1024;
                    sink.scribble(0, &head.to_ne_bytes());
                }
            }
            std::process::exit(0);
        }
        Some(_) => {
            let sink = child_sink();
            for n in 0..HONEST {
                sink.notify(Status(n)).unwrap_or_else(|e| fail(1, e));
            }
            std::process::exit(0);
        }
        None => {}
    }
    let me = test_name("hostile_child_spoils_only_itself");
    let mut source = Memfd.open().expect("open");
    let mut hostile = spawn_child(&mut source, &me, "hostile", 8, quiet());
    let mut honest = spawn_child(&mut source, &me, "honest", 8, quiet());
    let (hostile_pid, honest_pid) = (pid_of(&hostile), pid_of(&honest));
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
            hostile_done = hostile.try_wait().expect("try_wait").is_some();
        }
        assert!(
            Instant::now() < deadline,
            "waited {WAIT:?}: {} honest updates, hostile done {hostile_done}",
            honest_items.len()
        );
        wait_readable(source.as_fd(), Instant::now() + std::time::Duration::from_millis(10));
    }
    assert_exact(&honest_items, &[honest_pid], HONEST, 8);
    assert!(malformed > 0, "the scribbling was reported ({hostile_updates} updates from the hostile channel)");
    assert!(wait_exit(&mut honest, "the honest child").success());
    assert!(wait_exit(&mut hostile, "the hostile child").success());
    Memfd.forget_child(&mut source, hostile_pid);
    source.drain(|_| {}).expect("drain what the hostile ring held");
    assert_eq!(source.rings(), 1);
}

/// A child inherits exactly fds 0, 1, 2, its ring at 5, the listen socket
/// at 6 and the control area, doorbell and lifeline.
#[test]
fn child_fds_are_exactly_the_standard_ones() {
    if role().is_some() {
        // /proc/self/fd lists what is open, the directory's own descriptor
        // included, which is left out.
        let mut open: Vec<i32> = std::fs::read_dir("/proc/self/fd")
            .unwrap_or_else(|e| fail(1, e))
            .filter_map(Result::ok)
            .filter(|e| std::fs::read_link(e.path()).is_ok_and(|target| !target.starts_with("/proc/")))
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        open.sort_unstable();
        let open: Vec<String> = open.iter().map(ToString::to_string).collect();
        println!("fds={}", open.join(","));
        std::process::exit(0);
    }
    let mut source = Memfd.open().expect("open");
    let mut child = spawn_child(
        &mut source,
        &test_name("child_fds_are_exactly_the_standard_ones"),
        "fds",
        1,
        (Stdio::null(), Stdio::piped()),
    );
    let lines = line_reader(child.stdout.take().expect("stdout"));
    assert_eq!(expect_line(&lines, "fds="), "fds=0,1,2,5,6,7,8,9");
    assert!(wait_exit(&mut child, "the child").success());
}

/// What a child can do to the memory the master maps: nothing. Its ring
/// cannot be resized or unsealed; the control area cannot be resized or
/// written, and no writable mapping of it can be made.
#[test]
fn child_cannot_resize_or_write_what_the_master_maps() {
    if role().is_some() {
        use nix::fcntl::{FcntlArg, SealFlag, fcntl};
        let mut env = ChildEnv::from_process().unwrap_or_else(|e| fail(10, e));
        let ring = env.take_status().unwrap_or_else(|e| fail(11, e));
        let control = env.take_aux(master_proto_memfd::CONTROL).unwrap_or_else(|e| fail(12, e));
        let seals = |fd| SealFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GET_SEALS).unwrap_or(0));
        let (ring_seals, control_seals) = (seals(&ring), seals(&control));
        let size_seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        println!(
            "ring: sealed={} truncate={:?} grow={:?} unseal={:?}",
            ring_seals.contains(size_seals),
            nix::unistd::ftruncate(&ring, 0),
            nix::unistd::ftruncate(&ring, 1 << 30),
            fcntl(&ring, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_WRITE)),
        );
        println!(
            "control: sealed={} future_write={} truncate={:?} write={:?}",
            control_seals.contains(size_seals),
            control_seals.contains(SealFlag::F_SEAL_FUTURE_WRITE),
            nix::unistd::ftruncate(&control, 0),
            nix::unistd::write(&control, &[0xff; 16]),
        );
        std::process::exit(0);
    }
    let mut source = Memfd.open().expect("open");
    let mut child = spawn_child(
        &mut source,
        &test_name("child_cannot_resize_or_write_what_the_master_maps"),
        "seals",
        1,
        (Stdio::null(), Stdio::piped()),
    );
    let lines = line_reader(child.stdout.take().expect("stdout"));
    assert_eq!(expect_line(&lines, "ring:"), "ring: sealed=true truncate=Err(EPERM) grow=Err(EPERM) unseal=Err(EPERM)");
    assert_eq!(
        expect_line(&lines, "control:"),
        "control: sealed=true future_write=true truncate=Err(EPERM) write=Err(EPERM)"
    );
    assert!(wait_exit(&mut child, "the child").success());
}

/// A child writes a whole, well-formed record by hand (the documented
/// layout: slot 0 at byte 128, `seq` 2 = "record 0, whole", then head 1 at
/// byte 0) claiming to be pid 1: the master delivers it, named by the
/// forger's own channel. (Scribbling rings no doorbell, so the master
/// looks once the forger has exited.)
#[test]
fn forged_pid_is_named_by_its_channel() {
    if role().is_some() {
        let mut sink = child_sink();
        let mut slot = Vec::new();
        for word in [2u32, 1, sink.generation(), 1] {
            slot.extend_from_slice(&word.to_ne_bytes());
        }
        assert_eq!(sink.scribble(128, &slot), 16);
        assert_eq!(sink.scribble(0, &1u32.to_ne_bytes()), 4);
        std::process::exit(0);
    }
    let mut source = Memfd.open().expect("open");
    let mut child = spawn_child(&mut source, &test_name("forged_pid_is_named_by_its_channel"), "forger", 9, quiet());
    // Scribbling rings no doorbell: look once the forger is done.
    assert!(wait_exit(&mut child, "the forger").success());
    let mut got = Vec::new();
    source.drain(|item| got.push(item)).expect("read");
    let forger = pid_of(&child);
    assert_eq!(
        got,
        vec![Received::Update {
            update: StatusUpdate { pid: 1, generation: 9, status: Status::AVAIL },
            sender: Sender::Channel(forger)
        }]
    );
}

/// Threads of one child share its sink: every update arrives whole, once,
/// in each thread's order.
#[test]
fn threads_share_a_sink() {
    const THREADS: i32 = 4;
    const EACH: i32 = 20_000;
    if role().is_some() {
        let sink = child_sink();
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let sink = &sink;
                s.spawn(move || {
                    for i in 0..EACH {
                        sink.notify(Status(t * EACH + i)).unwrap_or_else(|e| fail(1, e));
                    }
                });
            }
        });
        std::process::exit(0);
    }
    assert!(Memfd.caps().thread_safe_sink);
    let mut source = Memfd.open().expect("open");
    let mut child = spawn_child(&mut source, &test_name("threads_share_a_sink"), "threads", 5, quiet());
    let pid = pid_of(&child);
    let got = receive(&mut source, usize::try_from(THREADS * EACH).expect("fits"), "every thread's updates");
    let mut next: Vec<i32> = (0..THREADS).map(|t| t * EACH).collect();
    for item in &got {
        let (u, sender) = update(item);
        assert_eq!((u.pid, u.generation, sender), (pid, 5, Sender::Channel(pid)));
        let t = usize::try_from(u.status.0 / EACH).expect("a thread's range");
        assert_eq!(u.status.0, next[t], "thread {t}: lost, duplicated or out of order");
        next[t] += 1;
    }
    assert!(wait_exit(&mut child, "the child").success());
}
