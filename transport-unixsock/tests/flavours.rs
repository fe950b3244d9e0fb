//! Both packet flavours in real processes: verified pids, forgeries,
//! malformed datagrams, disconnects, back-pressure, EINTR, many children;
//! then what only one flavour has: `dgram`'s lifeline, `seqpacket`'s
//! per-child channels (shutdown, forget, fairness, registration).
//!
//! Every test here is both the master and, re-executed, the child: the
//! parent runs this test binary again with only the same test selected and
//! `ROLE` set in the environment, installed through the standard environment
//! (fd 5, listen fd 6, `GENERATION`), and the test body takes the child's
//! branch when it finds `ROLE`. No `fork()` inside the threaded harness.
//! Every wait is bounded and says what it waited for. Linux only: the
//! identity cases expect `SCM_CREDENTIALS`, and blocked children are found
//! in `/proc`.

#![cfg(target_os = "linux")]
#![allow(unsafe_code)] // Safety: the child roles reset SIGPIPE to SIG_DFL, install a signal handler, borrow fd 5.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, IoSlice, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{WAIT, pid_of, poll_until, wait_readable};
use master_proto::master::{Config, Master, Outcome};
use master_proto::{
    BackPressure, ChildEnv, ChildFds, Framing, Identity, Malformed, NotifyError, Received, Sender, Status, StatusSink,
    StatusSource, StatusUpdate, Transport,
};
use master_proto_unixsock::SeqPacket;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, sigaction, signal};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::unistd::Pid;

const ROLE: &str = "UNIXSOCK_FLAVOUR_TEST_ROLE";
/// A value a role needs from the master (another child's pid, say).
const ARG: &str = "UNIXSOCK_FLAVOUR_TEST_ARG";

// ---------------------------------------------------------------- helpers

/// The role this process plays, if it is a re-executed child.
fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// The role's argument, as a number.
fn arg() -> i32 {
    std::env::var(ARG).ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| fail(13, "no argument"))
}

/// Spawns this test binary as a child running only `test` in `role`, with
/// the transport's child end, one listen socket and `generation` installed.
fn spawn_child<T: Transport>(
    transport: &T,
    source: &mut T::Source,
    test: &str,
    role: &str,
    generation: u32,
    stdout: Stdio,
) -> Child {
    spawn_child_with(transport, source, test, role, generation, (Stdio::null(), stdout), 0)
}

/// As [`spawn_child`], without telling the source the child's pid.
fn spawn_unregistered<T: Transport>(
    transport: &T,
    source: &mut T::Source,
    test: &str,
    role: &str,
    generation: u32,
) -> Child {
    spawn_child_with_registration(transport, source, test, role, generation, (Stdio::null(), Stdio::null()), 0, false)
}

/// As [`spawn_child`], passing `arg` to the role.
fn spawn_child_with<T: Transport>(
    transport: &T,
    source: &mut T::Source,
    test: &str,
    role: &str,
    generation: u32,
    stdio: (Stdio, Stdio),
    arg: i32,
) -> Child {
    spawn_child_with_registration(transport, source, test, role, generation, stdio, arg, true)
}

/// Spawns a child as [`spawn_child_with`], registering its pid with the
/// source only if `register`.
#[allow(clippy::too_many_arguments, reason = "one spawn helper behind the short ones above")]
fn spawn_child_with_registration<T: Transport>(
    transport: &T,
    source: &mut T::Source,
    test: &str,
    role: &str,
    generation: u32,
    (stdin, stdout): (Stdio, Stdio),
    arg: i32,
    register: bool,
) -> Child {
    let end = transport.child_end(source, generation).expect("make the child's end");
    let listener = unix_listener();
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE, role)
        .env(ARG, arg.to_string())
        .stdin(stdin)
        .stdout(stdout);
    ChildFds::new(end, generation)
        .listen(OwnedFd::from(listener))
        .install(&mut cmd)
        .expect("install the standard environment");
    let child = cmd.spawn().expect("spawn the child");
    if register {
        transport.register_child(source, generation, pid_of(&child));
    }
    child
}

/// The sender the transport vouches for when `pid` sends: the kernel's word
/// or the child's private channel, as it declares.
fn vouched<T: Transport + Default>(pid: i32) -> Sender {
    match T::default().caps().identity {
        Identity::KernelPid => Sender::KernelPid(pid),
        Identity::PrivateChannel => Sender::Channel(pid),
        Identity::Claimed => Sender::Claimed,
    }
}

/// A listening Unix socket at a fresh path (removed at once: the socket
/// stays usable as a listen fd, and no file is left behind).
fn unix_listener() -> UnixListener {
    let path = common::fresh_temp_path("unixsock-flavours", ".sock");
    let listener = UnixListener::bind(&path).expect("bind a Unix listen socket");
    let _ = std::fs::remove_file(&path);
    listener
}

/// Receives until `want` items arrived, polling the source's fd; panics
/// with `what` if they do not arrive within the bound.
fn receive<S: StatusSource>(source: &mut S, want: usize, what: &str) -> Vec<Received> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < want {
        source.drain(|item| got.push(item)).expect("read the source");
        if got.len() < want {
            assert!(
                wait_readable(source.as_fd(), deadline),
                "waited {WAIT:?} for {what}: got {} of {want} items, the last: {:?}",
                got.len(),
                got.last()
            );
        }
    }
    got
}

/// Receives one item, polling the source's fd; panics with `what` if none
/// arrives within the bound.
fn next_item<S: StatusSource>(source: &mut S, what: &str) -> Received {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(item) = source.try_recv().expect("read the source") {
            return item;
        }
        assert!(wait_readable(source.as_fd(), deadline), "waited {WAIT:?} for {what}");
    }
}

/// Waits for a child to exit, at most the bound.
fn wait_exit(child: &mut Child, what: &str) -> ExitStatus {
    let status = common::try_wait_until(child, Instant::now() + WAIT);
    status.unwrap_or_else(|| panic!("waited {WAIT:?} for {what} to exit"))
}

/// A child role that fails: say why on stderr and exit with `code`.
fn fail(code: i32, why: impl std::fmt::Display) -> ! {
    eprintln!("child role failed: {why}");
    std::process::exit(code)
}

/// The child's side of every role: claim the environment and build a sink.
fn child_sink<T: Transport + Default>() -> T::Sink {
    let mut env = ChildEnv::from_process().unwrap_or_else(|e| fail(10, e));
    T::default().sink(&mut env).unwrap_or_else(|e| fail(11, e))
}

/// The raw channel at fd 5, for roles that send what no sink would.
fn raw_fd5() -> BorrowedFd<'static> {
    let env = ChildEnv::from_process().unwrap_or_else(|e| fail(10, e));
    let fd = env.status_fd().unwrap_or_else(|| fail(11, "no fd 5")).as_raw_fd();
    // The environment owns fd 5; leak it so that the borrow stays valid for
    // the rest of this short-lived role.
    std::mem::forget(env);
    // SAFETY: fd 5 is open (ChildEnv checked it) and is never closed: its
    // owner was leaked above.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Sends `bytes` as one datagram on `fd`, as a hostile child would.
fn send_raw(fd: BorrowedFd<'_>, bytes: &[u8]) {
    match nix::sys::socket::send(fd.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
        Ok(n) if n == bytes.len() => {}
        other => fail(1, format_args!("raw send of {} bytes: {other:?}", bytes.len())),
    }
}

fn sigpipe_default() {
    // SAFETY: SIG_DFL installs no handler, so no code runs in signal
    // context; the child role is single-threaded at this point of the test.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.unwrap_or_else(|e| fail(12, e));
}

/// Child role: wait for the master to go, then check notify says so.
/// Exits 0 only if the disconnect fd fired without sending and the next
/// notify returned `Disconnected`.
fn await_disconnect(sink: &impl StatusSink) -> ! {
    if !wait_readable(sink.disconnect_fd(), Instant::now() + WAIT) {
        fail(3, "the disconnect fd did not fire");
    }
    match sink.notify(Status::TAKEN) {
        Err(NotifyError::Disconnected) => std::process::exit(0),
        other => fail(4, format_args!("notify after disconnect returned {other:?}")),
    }
}

/// The updates among `items`, with the pid the kernel vouched for; panics
/// on anything else.
fn updates(items: &[Received]) -> Vec<(i32, u32, Status, Sender)> {
    items
        .iter()
        .map(|item| match item {
            Received::Update { update, sender } => (update.pid, update.generation, update.status, *sender),
            Received::Malformed(m) => panic!("unexpected malformed input {m:?}"),
        })
        .collect()
}

/// The full name of a test in this binary, from its module path.
fn test_name(module: &str, test: &str) -> String {
    match module.split_once("::") {
        Some((_, rest)) => format!("{rest}::{test}"),
        None => test.to_owned(),
    }
}

fn line_reader(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
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

/// Awaits a line starting with `prefix` from `lines`.
fn expect_line(lines: &mpsc::Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => {}
            Err(e) => panic!("waited {WAIT:?} for a line starting {prefix:?}: {e}"),
        }
    }
}

/// The thread of `pid` that is blocked in `sendto(5, …)`, if any, as
/// `/proc/PID/task/*/syscall` shows.
fn thread_blocked_sending_fd5(pid: i32) -> Option<i32> {
    blocked_thread(pid, |nr, first| nr == nix::libc::SYS_sendto && first == Some("0x5"))
}

/// Whether some thread of `pid` is blocked sending on fd 5, or in `poll`
/// (where `notify` waits for room on a socket made non-blocking).
fn blocked_on_channel(pid: i32) -> bool {
    blocked_thread(pid, |nr, first| {
        (nr == nix::libc::SYS_sendto && first == Some("0x5")) || nr == nix::libc::SYS_poll || nr == nix::libc::SYS_ppoll
    })
    .is_some()
}

fn blocked_thread(pid: i32, blocked: impl Fn(i64, Option<&str>) -> bool) -> Option<i32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.filter_map(Result::ok).find_map(|task| {
        let text = std::fs::read_to_string(task.path().join("syscall")).unwrap_or_default();
        let mut fields = text.split_whitespace();
        let nr: i64 = fields.next().and_then(|n| n.parse().ok()).unwrap_or(-1);
        blocked(nr, fields.next()).then(|| task.file_name().to_str()?.parse().ok()).flatten()
    })
}

// ---------------------------------------------------------------- cases

/// The declared capabilities: packets, a verified sender, blocking.
fn declares_its_capabilities<T: Transport + Default>(_me: &str) {
    let caps = T::default().caps();
    assert_eq!(caps.framing, Framing::Packet);
    assert_ne!(caps.identity, Identity::Claimed);
    assert_eq!(caps.back_pressure, BackPressure::Block);
    assert!(!caps.postfix_wire);
}

/// A child spawned through the standard environment sends TAKEN and AVAIL;
/// they arrive with its real pid and generation, in order, each vouched for
/// with that pid (by the kernel or by the child's channel).
fn round_trip_with_verified_pid<T: Transport + Default>(me: &str) {
    if role().is_some() {
        let sink = child_sink::<T>();
        for status in [Status::TAKEN, Status::AVAIL] {
            sink.notify(status).unwrap_or_else(|e| fail(1, e));
        }
        std::process::exit(0);
    }
    let t = T::default();
    let mut source = t.open().expect("open");
    let generation = 0o1234567;
    let mut child = spawn_child(&t, &mut source, me, "round-trip", generation, Stdio::null());
    let got = receive(&mut source, 2, "TAKEN and AVAIL from the child");
    let pid = pid_of(&child);
    let verified = vouched::<T>(pid);
    assert_eq!(
        updates(&got),
        vec![(pid, generation, Status::TAKEN, verified), (pid, generation, Status::AVAIL, verified)]
    );
    assert!(wait_exit(&mut child, "the child").success());
    assert_eq!(source.try_recv(), Ok(None), "nothing more arrives");
}

/// A child sends a record claiming another child's pid and generation: the
/// transport names the real sender, and the sans-IO master rejects it as
/// `ForgedPid` without touching the victim's state, while both children's
/// honest updates are accepted.
fn forged_pid_is_rejected<T: Transport + Default>(me: &str) {
    match role().as_deref() {
        Some("victim") => {
            let sink = child_sink::<T>();
            sink.notify(Status::TAKEN).unwrap_or_else(|e| fail(1, e));
            std::process::exit(0);
        }
        Some("forger") => {
            let mut env = ChildEnv::from_process().unwrap_or_else(|e| fail(10, e));
            let victim = arg();
            let generation = env.generation.wrapping_sub(1);
            let sink = T::default().sink(&mut env).unwrap_or_else(|e| fail(11, e));
            // The victim's pid and generation, on the forger's own fd 5.
            let lie = StatusUpdate { pid: victim, generation, status: Status::AVAIL }.encode();
            // SAFETY: fd 5 is the sink's socket, open for the sink's life,
            // which outlasts this borrow.
            let fd5 = unsafe { BorrowedFd::borrow_raw(5) };
            send_raw(fd5, &lie);
            sink.notify(Status::TAKEN).unwrap_or_else(|e| fail(1, e));
            std::process::exit(0);
        }
        Some(other) => fail(2, format_args!("unknown role {other}")),
        None => {}
    }
    let t = T::default();
    let mut source = t.open().expect("open");
    let mut master = Master::new(Config::default());
    let now = Instant::now();
    let g_victim = master.begin_spawn(now).expect("begin spawn");
    let mut victim = spawn_child(&t, &mut source, me, "victim", g_victim, Stdio::null());
    let victim_pid = pid_of(&victim);
    master.spawned(victim_pid, g_victim).expect("register the victim");
    // The victim's TAKEN first, so that a forged AVAIL would change its state.
    let got = receive(&mut source, 1, "the victim's TAKEN");
    assert_eq!(got.iter().map(|item| master.receive(item)).collect::<Vec<_>>(), vec![Outcome::Taken]);
    let g_forger = master.begin_spawn(now).expect("begin spawn");
    assert_eq!(g_forger, g_victim + 1, "the forger computes the victim's generation from its own");
    let mut forger =
        spawn_child_with(&t, &mut source, me, "forger", g_forger, (Stdio::null(), Stdio::null()), victim_pid);
    let forger_pid = pid_of(&forger);
    master.spawned(forger_pid, g_forger).expect("register the forger");
    let got = receive(&mut source, 2, "the forgery and the forger's honest TAKEN");
    let outcomes: Vec<Outcome> = got.iter().map(|item| master.receive(item)).collect();
    assert_eq!(outcomes, vec![Outcome::ForgedPid { claimed: victim_pid, verified: forger_pid }, Outcome::Taken]);
    assert_eq!(master.child(victim_pid).map(|c| c.status), Some(Status::TAKEN), "the forgery changed nothing");
    assert_eq!(master.counters().forged_pid, 1);
    assert!(wait_exit(&mut victim, "the victim").success());
    assert!(wait_exit(&mut forger, "the forger").success());
}

/// A child sends datagrams of the wrong length, one with a descriptor
/// attached, then an honest update: each bad one is reported as what it is,
/// in order, the attached descriptor is closed by the master, and the
/// honest update after them arrives whole.
fn malformed_packets_are_reported<T: Transport + Default>(me: &str) {
    if role().is_some() {
        let fd5 = raw_fd5();
        send_raw(fd5, &[]);
        send_raw(fd5, &[0xAB; 5]);
        send_raw(fd5, &[0xCD; 13]);
        // A pipe's write end rides along with 4096 bytes: once the master
        // has closed it, the read end kept here sees EOF.
        let (reader, writer) = std::io::pipe().unwrap_or_else(|e| fail(1, e));
        let big = [0xEF; 4096];
        let fds = [writer.as_fd().as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        match sendmsg::<()>(fd5.as_raw_fd(), &[IoSlice::new(&big)], &cmsg, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(4096) => {}
            other => fail(1, format_args!("sendmsg with a descriptor: {other:?}")),
        }
        drop(writer);
        let update =
            StatusUpdate { pid: std::process::id().try_into().unwrap_or(0), generation: 3, status: Status::AVAIL };
        send_raw(fd5, &update.encode());
        if !wait_readable(reader.as_fd(), Instant::now() + WAIT) {
            fail(5, "the master kept the descriptor attached to a datagram");
        }
        std::process::exit(0);
    }
    let t = T::default();
    let mut source = t.open().expect("open");
    let mut child = spawn_child(&t, &mut source, me, "hostile", 3, Stdio::null());
    let got = receive(&mut source, 5, "four malformed datagrams and an update");
    let pid = pid_of(&child);
    let update = StatusUpdate { pid, generation: 3, status: Status::AVAIL };
    assert_eq!(
        got,
        vec![
            Received::Malformed(Malformed::Short(0)),
            Received::Malformed(Malformed::Short(5)),
            Received::Malformed(Malformed::Oversized(13)),
            Received::Malformed(Malformed::Oversized(4096)),
            Received::Update { update, sender: vouched::<T>(pid) },
        ]
    );
    let status = wait_exit(&mut child, "the hostile child");
    assert_eq!(status.code(), Some(0), "the attached descriptor must be closed by the master, got {status}");
    assert_eq!(source.try_recv(), Ok(None), "nothing more arrives");
}

/// The master closes the channel (drops its source): a child with SIGPIPE at
/// SIG_DFL sees its disconnect fd fire without sending, then its next
/// notify returns `Disconnected`, and it is not killed by a signal.
fn master_close_disconnects<T: Transport + Default>(me: &str) {
    if role().is_some() {
        sigpipe_default();
        let sink = child_sink::<T>();
        sink.notify(Status::AVAIL).unwrap_or_else(|e| fail(1, e));
        await_disconnect(&sink);
    }
    let t = T::default();
    let mut source = t.open().expect("open");
    let mut child = spawn_child(&t, &mut source, me, "close", 7, Stdio::null());
    receive(&mut source, 1, "the child's first AVAIL");
    drop(source);
    let status = wait_exit(&mut child, "the child after the master closed");
    assert_eq!(status.code(), Some(0), "child must see the disconnect and exit 0, got {status}");
}

/// The master is killed with SIGKILL (the master role runs in its own
/// process): its child, with SIGPIPE at SIG_DFL, sees the disconnect as in
/// an orderly close.
fn master_killed_disconnects<T: Transport + Default>(me: &str) {
    match role().as_deref() {
        Some("orphan") => {
            sigpipe_default();
            let sink = child_sink::<T>();
            sink.notify(Status::AVAIL).unwrap_or_else(|e| fail(1, e));
            // Report the outcome on stdout, which the test reads: this
            // process is not the test's child and cannot be waited for.
            if !wait_readable(sink.disconnect_fd(), Instant::now() + WAIT) {
                println!("orphan: the disconnect fd did not fire");
                std::process::exit(3);
            }
            println!("orphan: disconnect fd fired; notify: {:?}", sink.notify(Status::TAKEN));
            std::process::exit(0);
        }
        Some("master") => {
            let t = T::default();
            let mut source = t.open().expect("open");
            // The orphan inherits this process's stdout: the test's pipe.
            // It is never waited for here: this process is killed, and the
            // orphan is reparented and reaped by init.
            #[allow(clippy::zombie_processes, reason = "the master role is killed before its child exits")]
            let _child = spawn_child(&t, &mut source, me, "orphan", 3, Stdio::inherit());
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
    let mut master = Command::new(std::env::current_exe().expect("current_exe"))
        .args([me, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE, "master")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the master role");
    let lines = line_reader(master.stdout.take().expect("stdout"));
    expect_line(&lines, "master: ready");
    kill(Pid::from_raw(pid_of(&master)), Signal::SIGKILL).expect("kill the master");
    assert!(wait_exit(&mut master, "the killed master").code().is_none());
    let line = expect_line(&lines, "orphan:");
    assert_eq!(line, "orphan: disconnect fd fired; notify: Err(Disconnected)");
}

/// A child inherits exactly fds 0, 1, 2, 5, the listen socket at 6 and the
/// transport's auxiliary descriptors; fd 5 blocks; the master's socket is
/// never among them.
fn child_fds_are_exactly_the_standard_ones<T: Transport + Default>(me: &str) {
    if role().is_some() {
        let open: Vec<String> = (0..1024)
            .filter(|&fd| {
                // Asked with the raw number: a BorrowedFd may only name an
                // open descriptor.
                // SAFETY: fcntl(F_GETFD) takes no pointer and changes
                // nothing; it fails with EBADF if fd is closed.
                unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) >= 0 }
            })
            .map(|fd| fd.to_string())
            .collect();
        // SAFETY: fd 5 is open (listed above); the borrow is for one call.
        let fd5 = unsafe { BorrowedFd::borrow_raw(5) };
        let flags = nix::fcntl::fcntl(fd5, nix::fcntl::FcntlArg::F_GETFL).unwrap_or_else(|e| fail(1, e));
        let blocking = flags & nix::libc::O_NONBLOCK == 0;
        println!("fds={} blocking5={blocking}", open.join(","));
        std::process::exit(0);
    }
    let t = T::default();
    let mut source = t.open().expect("open");
    let mut child = spawn_child(&t, &mut source, me, "fds", 1, Stdio::piped());
    let lines = line_reader(child.stdout.take().expect("stdout"));
    let line = expect_line(&lines, "fds=");
    let aux = t.child_end(&mut source, 1).expect("child end").aux.len();
    let want: Vec<String> =
        [0, 1, 2, 5, 6].into_iter().chain((0..aux).map(|i| 7 + i)).map(|fd| fd.to_string()).collect();
    assert_eq!(line, format!("fds={} blocking5=true", want.join(",")));
    assert!(wait_exit(&mut child, "the child").success());
}

/// Children flood the channel while the master does not read: they block
/// (the declared back-pressure), also the one that made the shared socket
/// non-blocking first; nothing is lost when the master reads again, and
/// every child's records arrive whole and in order.
fn flood_blocks_then_delivers_everything<T: Transport + Default>(me: &str) {
    const PER_CHILD: i32 = 5_000;
    const CHILDREN: usize = 4;
    if let Some(role) = role() {
        let sink = child_sink::<T>();
        if role == "flood-nonblocking" {
            // fd 5's open file is shared with the other children: this
            // makes every child's socket non-blocking.
            // SAFETY: fd 5 is the sink's socket, open for the sink's life.
            let fd5 = unsafe { BorrowedFd::borrow_raw(5) };
            nix::fcntl::fcntl(fd5, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))
                .unwrap_or_else(|e| fail(12, e));
        }
        // The status value carries a sequence number: the transport does
        // not judge values, so per-child order is visible at the master.
        for seq in 2..2 + PER_CHILD {
            sink.notify(Status(seq)).unwrap_or_else(|e| fail(1, format_args!("notify {seq}: {e}")));
        }
        std::process::exit(0);
    }
    let t = T::default();
    let mut source = t.open().expect("open");
    let mut children: Vec<Child> = (0..CHILDREN)
        .map(|i| {
            let role = if i == 0 { "flood-nonblocking" } else { "flood" };
            spawn_child(&t, &mut source, me, role, 9, Stdio::null())
        })
        .collect();
    // 20,000 datagrams are far more than the socket's buffer holds: every
    // child must end up blocked sending (or waiting for room) on fd 5.
    let deadline = Instant::now() + WAIT;
    for child in &children {
        assert!(
            poll_until(deadline, || blocked_on_channel(pid_of(child))),
            "waited {WAIT:?} for child {} to block on fd 5",
            child.id()
        );
    }
    let total = CHILDREN * usize::try_from(PER_CHILD).expect("fits");
    let got = receive(&mut source, total, "every flooded record");
    let mut next: HashMap<i32, i32> = children.iter().map(|c| (pid_of(c), 2)).collect();
    for (pid, generation, status, sender) in updates(&got) {
        assert_eq!((generation, sender), (9, vouched::<T>(pid)));
        let want = next.get_mut(&pid).unwrap_or_else(|| panic!("record from unknown pid {pid}"));
        assert_eq!(status, Status(*want), "child {pid}: out of order, lost or duplicated");
        *want += 1;
    }
    assert!(next.values().all(|&n| n == 2 + PER_CHILD));
    for child in &mut children {
        let status = wait_exit(child, "a flooding child");
        assert!(status.success(), "a flooding child failed: {status}");
    }
}

/// Signals caught while a child is blocked sending on fd 5 interrupt that
/// send (`EINTR`, the handler is installed without `SA_RESTART`): `notify`
/// retries, never fails, and every record still arrives once, in order.
fn eintr_is_retried<T: Transport + Default>(me: &str) {
    const TOTAL: i32 = 10_000;
    const SIGNALS: usize = 100;
    static CAUGHT: AtomicUsize = AtomicUsize::new(0);
    extern "C" fn caught(_: nix::libc::c_int) {
        CAUGHT.fetch_add(1, Ordering::Relaxed);
    }
    if role().is_some() {
        let action = SigAction::new(SigHandler::Handler(caught), SaFlags::empty(), SigSet::empty());
        // SAFETY: the handler only bumps an atomic counter, which is
        // async-signal-safe.
        unsafe { sigaction(Signal::SIGUSR1, &action) }.unwrap_or_else(|e| fail(12, e));
        let sink = child_sink::<T>();
        for seq in 0..TOTAL {
            sink.notify(Status(seq)).unwrap_or_else(|e| fail(1, format_args!("notify {seq}: {e}")));
        }
        println!("caught={}", CAUGHT.load(Ordering::Relaxed));
        std::process::exit(0);
    }
    let t = T::default();
    let mut source = t.open().expect("open");
    let mut child = spawn_child(&t, &mut source, me, "storm", 4, Stdio::piped());
    let lines = line_reader(child.stdout.take().expect("stdout"));
    let pid = pid_of(&child);
    let deadline = Instant::now() + WAIT;
    let (mut next, mut sent) = (0, 0);
    while next < TOTAL {
        // Signal the sending thread only once it is blocked in the send,
        // so that each signal interrupts a send in progress. The reads
        // below are too small to let it finish before all are sent.
        if sent < SIGNALS {
            let mut tid = None;
            assert!(
                poll_until(deadline, || {
                    tid = thread_blocked_sending_fd5(pid);
                    tid.is_some()
                }),
                "waited {WAIT:?} for the child to block on fd 5 ({sent} signals sent, {next} records read)"
            );
            let tid = tid.expect("set when poll_until succeeds");
            // SAFETY: tgkill takes plain integers and touches no memory.
            let rc = unsafe { nix::libc::syscall(nix::libc::SYS_tgkill, pid, tid, nix::libc::SIGUSR1) };
            assert_eq!(rc, 0, "tgkill: {}", std::io::Error::last_os_error());
            sent += 1;
        }
        // Read a little at a time, so that the child blocks again soon.
        let mut took = 0;
        while took < 16
            && let Some(item) = source.try_recv().expect("read the source")
        {
            let Received::Update { update, .. } = item else { panic!("malformed input {item:?}") };
            assert_eq!((update.pid, update.status), (pid, Status(next)), "lost, duplicated or out of order");
            next += 1;
            took += 1;
        }
        assert!(Instant::now() < deadline, "waited {WAIT:?} for record {next} of {TOTAL}");
        if took == 0 {
            // Nothing pending: wait briefly for more (the poll is the pause).
            wait_readable(source.as_fd(), Instant::now() + Duration::from_millis(5));
        }
    }
    assert_eq!(sent, SIGNALS);
    let line = expect_line(&lines, "caught=");
    let caught: usize = line["caught=".len()..].parse().expect("a count");
    assert!(caught > 0, "no signal reached the child's handler");
    assert!(common::try_wait_until(&mut child, Instant::now() + WAIT).is_some_and(|s| s.success()));
}

/// A child blocked on a full channel is released with `Disconnected` when
/// the master closes it, instead of hanging, and is not killed by SIGPIPE.
fn blocked_child_sees_disconnect<T: Transport + Default>(me: &str) {
    if role().is_some() {
        sigpipe_default();
        let sink = child_sink::<T>();
        for seq in 0.. {
            match sink.notify(Status(seq)) {
                Ok(()) => {}
                Err(NotifyError::Disconnected) => std::process::exit(0),
                Err(e) => fail(1, e),
            }
        }
        fail(2, "the channel never filled");
    }
    let t = T::default();
    let mut source = t.open().expect("open");
    let mut child = spawn_child(&t, &mut source, me, "flood", 1, Stdio::null());
    assert!(
        poll_until(Instant::now() + WAIT, || thread_blocked_sending_fd5(pid_of(&child)).is_some()),
        "waited {WAIT:?} for the child to block on fd 5"
    );
    drop(source);
    let status = wait_exit(&mut child, "the blocked child after the master closed");
    assert_eq!(status.code(), Some(0), "got {status}");
}

/// Threads of one child share one sink: every record arrives whole.
fn threads_share_a_sink<T: Transport + Default>(me: &str)
where
    T::Sink: Sync,
{
    const THREADS: i32 = 4;
    const EACH: i32 = 1_000;
    if role().is_some() {
        let sink = child_sink::<T>();
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let sink = &sink;
                s.spawn(move || {
                    for i in 0..EACH {
                        sink.notify(Status(1000 + t * EACH + i)).unwrap_or_else(|e| fail(1, e));
                    }
                });
            }
        });
        std::process::exit(0);
    }
    let t = T::default();
    assert!(t.caps().thread_safe_sink);
    let mut source = t.open().expect("open");
    let mut child = spawn_child(&t, &mut source, me, "threads", 5, Stdio::null());
    let got = receive(&mut source, usize::try_from(THREADS * EACH).expect("fits"), "every thread's records");
    let pid = pid_of(&child);
    let values: BTreeSet<i32> = updates(&got)
        .into_iter()
        .map(|(p, g, s, sender)| {
            assert_eq!((p, g, sender), (pid, 5, vouched::<T>(pid)), "a record arrived torn");
            s.0
        })
        .collect();
    assert_eq!(values, (1000..1000 + THREADS * EACH).collect::<BTreeSet<_>>());
    assert!(wait_exit(&mut child, "the child").success());
}

/// Hundreds of children of one service at once: each one's TAKEN and AVAIL
/// reach the sans-IO master, vouched for with its own pid, and are accepted;
/// reaped children are forgotten.
fn hundreds_of_children_share_the_channel<T: Transport + Default>(me: &str) {
    const CHILDREN: usize = 320;
    if role().is_some() {
        let sink = child_sink::<T>();
        for status in [Status::TAKEN, Status::AVAIL] {
            sink.notify(status).unwrap_or_else(|e| fail(1, e));
        }
        std::process::exit(0);
    }
    let t = T::default();
    let mut source = t.open().expect("open");
    let mut master = Master::new(Config { process_limit: 0, ..Config::default() });
    let mut children = Vec::with_capacity(CHILDREN);
    let mut items = Vec::new();
    let mut reaped = Vec::new();
    for _ in 0..CHILDREN {
        let generation = master.begin_spawn(Instant::now()).expect("begin spawn");
        let child = spawn_child(&t, &mut source, me, "many", generation, Stdio::null());
        master.spawned(pid_of(&child), generation).expect("register the child");
        children.push(child);
        // Read while spawning, as a master does, so that no child waits
        // long on a full channel.
        source.drain(|item| items.push(item)).expect("read the source");
        // Reap the children that are done, so that they do not pile up.
        children.retain_mut(|c| match c.try_wait().expect("try_wait") {
            Some(status) => {
                assert!(status.success(), "a child failed: {status}");
                reaped.push(pid_of(c));
                false
            }
            None => true,
        });
    }
    items.extend(receive(&mut source, 2 * CHILDREN - items.len(), "every child's TAKEN and AVAIL"));
    let mut taken = 0;
    for item in &items {
        let Received::Update { update, sender } = item else { panic!("malformed input {item:?}") };
        assert_eq!(*sender, vouched::<T>(update.pid));
        match master.receive(item) {
            Outcome::Taken => taken += 1,
            Outcome::Avail => {}
            other => panic!("child {}: {other}", update.pid),
        }
    }
    assert_eq!(taken, CHILDREN);
    assert_eq!(master.counters().avail, u64::try_from(CHILDREN).expect("fits"));
    assert_eq!(master.available(), CHILDREN, "every child is available again");
    for child in &mut children {
        let status = wait_exit(child, "one of the many children");
        assert!(status.success(), "a child failed: {status}");
        reaped.push(pid_of(child));
    }
    assert_eq!(reaped.len(), CHILDREN);
    for pid in reaped {
        t.forget_child(&mut source, pid);
    }
    source.drain(|item| panic!("after every child was reaped: {item:?}")).expect("read the source");
}

/// The release-order race of a dying master, held still: the lifeline's
/// write end is closed (the source is dropped) while the master's socket
/// lives on in a duplicate, so the socket still takes datagrams. The child's
/// disconnect fd fires, and its next notify must say `Disconnected` rather
/// than send into a socket nobody will read.
fn lifeline_wins_over_a_live_socket(me: &str) {
    if role().is_some() {
        let sink = child_sink::<master_proto_unixsock::Dgram>();
        sink.notify(Status::AVAIL).unwrap_or_else(|e| fail(1, e));
        await_disconnect(&sink);
    }
    let t = master_proto_unixsock::Dgram;
    let mut source = t.open().expect("open");
    let mut child = spawn_child(&t, &mut source, me, "lifeline", 2, Stdio::null());
    receive(&mut source, 1, "the child's AVAIL");
    let socket = source.as_fd().try_clone_to_owned().expect("duplicate the master's socket");
    drop(source);
    let status = wait_exit(&mut child, "the child after the lifeline fired");
    assert_eq!(status.code(), Some(0), "notify after the lifeline fired must be Disconnected, got {status}");
    drop(socket);
}

#[test]
fn dgram_lifeline_wins_over_a_live_socket() {
    lifeline_wins_over_a_live_socket(&test_name(module_path!(), "dgram_lifeline_wins_over_a_live_socket"));
}

/// A child shuts its private `SOCK_SEQPACKET` channel down: that channel
/// ends (the source drops it and is not left readable), and another
/// child's update still arrives.
fn shutdown_ends_only_that_channel(me: &str) {
    match role().as_deref() {
        Some("shutdown") => {
            let fd5 = raw_fd5();
            nix::sys::socket::shutdown(fd5.as_raw_fd(), nix::sys::socket::Shutdown::Write)
                .unwrap_or_else(|e| fail(1, e));
            // Stay alive, holding fd 5, until the master drops the channel.
            if !wait_readable(fd5, Instant::now() + WAIT) {
                fail(3, "the master kept the shut-down channel");
            }
            std::process::exit(0);
        }
        Some(_) => {
            let sink = child_sink::<SeqPacket>();
            sink.notify(Status::TAKEN).unwrap_or_else(|e| fail(1, e));
            std::process::exit(0);
        }
        None => {}
    }
    let t = SeqPacket;
    let mut source = t.open().expect("open");
    let mut hostile = spawn_child(&t, &mut source, me, "shutdown", 1, Stdio::null());
    // The end of the hostile child's channel makes the source readable;
    // reading it yields nothing and drops the channel, while the child
    // still holds its end.
    assert!(wait_readable(source.as_fd(), Instant::now() + WAIT), "waited {WAIT:?} for the end of the channel");
    assert_eq!(source.try_recv(), Ok(None));
    assert!(!wait_readable(source.as_fd(), Instant::now()), "an ended channel left the source readable");
    let status = wait_exit(&mut hostile, "the child that shut its channel down");
    assert_eq!(status.code(), Some(0), "its fd 5 must report the dropped channel, got {status}");
    let mut honest = spawn_child(&t, &mut source, me, "honest", 2, Stdio::null());
    let got = receive(&mut source, 1, "the honest child's TAKEN");
    let pid = pid_of(&honest);
    assert_eq!(updates(&got), vec![(pid, 2, Status::TAKEN, Sender::Channel(pid))]);
    assert!(wait_exit(&mut honest, "the honest child").success());
}

#[test]
fn seqpacket_shutdown_ends_only_that_channel() {
    shutdown_ends_only_that_channel(&test_name(module_path!(), "seqpacket_shutdown_ends_only_that_channel"));
}

/// `forget_child` drops that child's channel: the child's fd 5 fires and
/// its next notify says `Disconnected`, while another child's channel
/// carries on.
fn forget_child_disconnects_it(me: &str) {
    if let Some(role) = role() {
        let sink = child_sink::<SeqPacket>();
        sink.notify(Status::TAKEN).unwrap_or_else(|e| fail(1, e));
        if role == "forgotten" {
            await_disconnect(&sink);
        }
        // The kept child: once the test says so on stdin (after forgetting
        // its sibling), its channel must still carry an update.
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap_or_else(|e| fail(1, e));
        sink.notify(Status::AVAIL).unwrap_or_else(|e| fail(1, e));
        std::process::exit(0);
    }
    let t = SeqPacket;
    let mut source = t.open().expect("open");
    let mut forgotten = spawn_child(&t, &mut source, me, "forgotten", 1, Stdio::null());
    let mut kept = spawn_child_with(&t, &mut source, me, "kept", 2, (Stdio::piped(), Stdio::null()), 0);
    let got = receive(&mut source, 2, "both children's TAKEN");
    assert_eq!(got.len(), 2);
    t.forget_child(&mut source, pid_of(&forgotten));
    let status = wait_exit(&mut forgotten, "the forgotten child");
    assert_eq!(status.code(), Some(0), "the forgotten child must see Disconnected, got {status}");
    kept.stdin.take().expect("stdin").write_all(b"go\n").expect("tell the kept child to go on");
    let got = receive(&mut source, 1, "the kept child's AVAIL");
    let pid = pid_of(&kept);
    assert_eq!(updates(&got), vec![(pid, 2, Status::AVAIL, Sender::Channel(pid))]);
    assert!(wait_exit(&mut kept, "the kept child").success());
}

#[test]
fn seqpacket_forget_child_disconnects_it() {
    forget_child_disconnects_it(&test_name(module_path!(), "seqpacket_forget_child_disconnects_it"));
}

/// A child flooding its private channel neither keeps a drain going nor
/// starves another: one drain yields one round, and once the quiet child's
/// update is queued, it is among the next few items read, not behind
/// everything the flooder can send.
fn flooder_does_not_starve_others(me: &str) {
    const FLOOD: i32 = 5_000;
    match role().as_deref() {
        Some("flooder") => {
            let sink = child_sink::<SeqPacket>();
            for seq in 2..2 + FLOOD {
                sink.notify(Status(seq)).unwrap_or_else(|e| fail(1, e));
            }
            std::process::exit(0);
        }
        Some(_) => {
            let sink = child_sink::<SeqPacket>();
            sink.notify(Status::TAKEN).unwrap_or_else(|e| fail(1, e));
            std::process::exit(0);
        }
        None => {}
    }
    let t = SeqPacket;
    let mut source = t.open().expect("open");
    let mut flooder = spawn_child(&t, &mut source, me, "flooder", 1, Stdio::null());
    assert!(
        poll_until(Instant::now() + WAIT, || thread_blocked_sending_fd5(pid_of(&flooder)).is_some()),
        "waited {WAIT:?} for the flooder to fill its channel"
    );
    // Its first record is read now, so that its channel is the one the
    // source is busy with when the quiet child's update comes in.
    // One drain is one round: the flooder's full channel yields 8 records,
    // then the drain ends although the flooder refills it at once.
    let mut first = Vec::new();
    let n = source.drain(|item| first.push(item)).expect("read the source");
    assert_eq!(n, 8, "one drain of one full channel");
    assert_eq!(updates(&first).iter().map(|u| u.2.0).collect::<Vec<_>>(), (2..10).collect::<Vec<_>>());
    let mut quiet = spawn_child(&t, &mut source, me, "quiet", 2, Stdio::null());
    assert!(wait_exit(&mut quiet, "the quiet child").success(), "the quiet child's update is queued");
    let quiet_pid = pid_of(&quiet);
    let mut before = 0;
    while !matches!(next_item(&mut source, "the quiet child's update"), Received::Update { update, .. } if update.pid == quiet_pid)
    {
        before += 1;
    }
    // The source reads at most 8 records of a channel before it looks
    // for other ready channels: at most the rest of one burst and one more.
    assert!(before <= 16, "{before} of the flooder's records came before the quiet child's queued update");
    receive(&mut source, usize::try_from(FLOOD).expect("fits") - n - before, "the rest of the flood");
    assert!(wait_exit(&mut flooder, "the flooder").success());
}

#[test]
fn seqpacket_flooder_does_not_starve_others() {
    flooder_does_not_starve_others(&test_name(module_path!(), "seqpacket_flooder_does_not_starve_others"));
}

/// A child that sent its update and exited before the master registered it
/// keeps its channel through another spawn (which drops pending channels
/// that are closed and empty): once registered, its update is reported
/// with its pid.
fn update_before_registration_is_kept(me: &str) {
    if role().is_some() {
        let sink = child_sink::<SeqPacket>();
        sink.notify(Status::TAKEN).unwrap_or_else(|e| fail(1, e));
        std::process::exit(0);
    }
    let t = SeqPacket;
    let mut source = t.open().expect("open");
    let mut early = spawn_unregistered(&t, &mut source, me, "early", 1);
    assert!(wait_exit(&mut early, "the early child").success());
    assert_eq!(source.try_recv(), Ok(None), "an unregistered channel is not read");
    let mut later = spawn_child(&t, &mut source, me, "later", 2, Stdio::null());
    let got = receive(&mut source, 1, "the later child's TAKEN");
    let later_pid = pid_of(&later);
    assert_eq!(updates(&got), vec![(later_pid, 2, Status::TAKEN, Sender::Channel(later_pid))]);
    let early_pid = pid_of(&early);
    t.register_child(&mut source, 1, early_pid);
    let got = receive(&mut source, 1, "the early child's TAKEN, once registered");
    assert_eq!(updates(&got), vec![(early_pid, 1, Status::TAKEN, Sender::Channel(early_pid))]);
    assert!(wait_exit(&mut later, "the later child").success());
}

#[test]
fn seqpacket_update_before_registration_is_kept() {
    update_before_registration_is_kept(&test_name(module_path!(), "seqpacket_update_before_registration_is_kept"));
}

/// Instantiates the named cases as tests for one transport.
macro_rules! cases {
    ($transport:ty, $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                super::$case::<$transport>(&test_name(module_path!(), stringify!($case)));
            }
        )*
    };
}

/// Instantiates every case for one flavour, under a module named after its
/// short name.
macro_rules! flavour {
    ($name:ident, $transport:ty) => {
        mod $name {
            use super::*;

            #[test]
            fn short_name() {
                assert_eq!(<$transport as Transport>::NAME, stringify!($name));
            }

            cases!(
                $transport,
                declares_its_capabilities,
                round_trip_with_verified_pid,
                forged_pid_is_rejected,
                malformed_packets_are_reported,
                master_close_disconnects,
                master_killed_disconnects,
                child_fds_are_exactly_the_standard_ones,
                flood_blocks_then_delivers_everything,
                eintr_is_retried,
                blocked_child_sees_disconnect,
                threads_share_a_sink,
                hundreds_of_children_share_the_channel,
            );
        }
    };
}

flavour!(dgram, master_proto_unixsock::Dgram);
flavour!(seqpacket, SeqPacket);
