//! Both pipe flavours in real processes: spawn, update, close, kill, flood.
//!
//! Every test here is both the master and, re-executed, the child: the
//! parent runs this test binary again with only the same test selected and
//! `ROLE` set in the environment, installed through the standard environment
//! (fd 5, listen fd 6, `GENERATION`), and the test body takes the child's
//! branch when it finds `ROLE`. No `fork()` inside the threaded harness.
//! Every wait is bounded and says what it waited for.

#![allow(unsafe_code)] // Safety: the child roles reset SIGPIPE to SIG_DFL, and read FIONREAD.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{WAIT, pid_of, poll_until, wait_readable};
use master_proto::{ChildEnv, ChildFds, Malformed, NotifyError, Received, Status, StatusSink, StatusSource, Transport};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, sigaction, signal};
use nix::unistd::Pid;

const ROLE: &str = "PIPE_FLAVOUR_TEST_ROLE";

// ---------------------------------------------------------------- helpers

/// The role this process plays, if it is a re-executed child.
fn role() -> Option<String> {
    std::env::var(ROLE).ok()
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
    let end = transport.child_end(source, generation).expect("make the child's end");
    let listener = unix_listener();
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE, role)
        .stdin(Stdio::null())
        .stdout(stdout);
    ChildFds::new(end, generation)
        .listen(OwnedFd::from(listener))
        .install(&mut cmd)
        .expect("install the standard environment");
    cmd.spawn().expect("spawn the child")
}

/// A listening Unix socket at a fresh path (removed at once: the socket
/// stays usable as a listen fd, and no file is left behind).
fn unix_listener() -> UnixListener {
    let path = common::fresh_temp_path("pipe-flavours", ".sock");
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
                "waited {WAIT:?} for {what}: got {} of {want} items: {got:?}",
                got.len()
            );
        }
    }
    got
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

fn updates(items: &[Received]) -> Vec<(i32, u32, Status)> {
    items
        .iter()
        .map(|item| match item {
            Received::Update { update, .. } => (update.pid, update.generation, update.status),
            Received::Malformed(m) => panic!("unexpected malformed input {m:?}"),
        })
        .collect()
}

/// The full name of a test in this binary, from its module path.
fn test_name(module: &str, test: &str) -> String {
    let module = module.split_once("::").map_or("", |(_, rest)| rest);
    format!("{module}::{test}")
}

// ---------------------------------------------------------------- cases

/// A child spawned through the standard environment sends TAKEN and AVAIL;
/// they arrive with its real pid and generation, in order.
fn round_trip<T: Transport + Default>(me: &str) {
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
    assert_eq!(updates(&got), vec![(pid, generation, Status::TAKEN), (pid, generation, Status::AVAIL)]);
    assert!(wait_exit(&mut child, "the child").success());
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
    let expect_line = |prefix: &str| loop {
        match lines.recv_timeout(WAIT) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => {}
            Err(e) => panic!("waited {WAIT:?} for a line starting {prefix:?}: {e}"),
        }
    };
    expect_line("master: ready");
    kill(Pid::from_raw(pid_of(&master)), Signal::SIGKILL).expect("kill the master");
    assert!(wait_exit(&mut master, "the killed master").code().is_none());
    let line = expect_line("orphan:");
    assert_eq!(line, "orphan: disconnect fd fired; notify: Err(Disconnected)");
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

/// A child inherits exactly fds 0, 1, 2, 5, the listen socket at 6 and the
/// transport's auxiliary descriptors; fd 5 blocks; the master's read end is
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
    let line = loop {
        let line = lines.recv_timeout(WAIT).expect("the child's fd list");
        if line.starts_with("fds=") {
            break line;
        }
    };
    let aux = t.child_end(&mut source, 1).expect("child end").aux.len();
    let want: Vec<String> =
        [0, 1, 2, 5, 6].into_iter().chain((0..aux).map(|i| 7 + i)).map(|fd| fd.to_string()).collect();
    assert_eq!(line, format!("fds={} blocking5=true", want.join(",")));
    assert!(wait_exit(&mut child, "the child").success());
    let master_fd = source.as_fd().as_raw_fd();
    assert!(master_fd > 2, "the master's end is an ordinary descriptor");
}

/// A child writes a partial record straight to fd 5 and exits: the master
/// reports `Short(5)`, and a well-behaved child's update after it arrives
/// whole (the framing restarted once the stream drained).
fn partial_record_is_reported<T: Transport + Default>(me: &str) {
    match role().as_deref() {
        Some("short") => {
            let env = ChildEnv::from_process().unwrap_or_else(|e| fail(10, e));
            let fd5 = env.status_fd().unwrap_or_else(|| fail(11, "no fd 5"));
            nix::unistd::write(fd5, &[0xAB; 5]).unwrap_or_else(|e| fail(1, e));
            std::process::exit(0);
        }
        Some(_) => {
            let sink = child_sink::<T>();
            sink.notify(Status::AVAIL).unwrap_or_else(|e| fail(1, e));
            std::process::exit(0);
        }
        None => {}
    }
    let t = T::default();
    let mut source = t.open().expect("open");
    let mut short = spawn_child(&t, &mut source, me, "short", 1, Stdio::null());
    assert!(wait_exit(&mut short, "the short writer").success());
    let got = receive(&mut source, 1, "the partial record's report");
    assert_eq!(got, vec![Received::Malformed(Malformed::Short(5))]);
    let mut honest = spawn_child(&t, &mut source, me, "honest", 2, Stdio::null());
    let got = receive(&mut source, 1, "the honest child's AVAIL");
    assert_eq!(updates(&got), vec![(pid_of(&honest), 2, Status::AVAIL)]);
    assert!(wait_exit(&mut honest, "the honest child").success());
}

/// Children flood the channel while the master does not read: they block
/// (the declared back-pressure), nothing is lost when the master reads
/// again, and every child's records arrive whole and in order.
fn flood_blocks_then_delivers_everything<T: Transport + Default>(me: &str) {
    const PER_CHILD: i32 = 20_000;
    const CHILDREN: usize = 4;
    if role().is_some() {
        let sink = child_sink::<T>();
        // The status value carries a sequence number: the transport does
        // not judge values, so per-child order is visible at the master.
        for seq in 2..2 + PER_CHILD {
            sink.notify(Status(seq)).unwrap_or_else(|e| fail(1, e));
        }
        std::process::exit(0);
    }
    let t = T::default();
    let mut source = t.open().expect("open");
    let mut children: Vec<Child> =
        (0..CHILDREN).map(|_| spawn_child(&t, &mut source, me, "flood", 9, Stdio::null())).collect();
    // 80,000 records are far more than a pipe or socket buffer holds: every
    // child must end up blocked inside its write to fd 5.
    let deadline = Instant::now() + WAIT;
    for child in &children {
        assert!(
            poll_until(deadline, || blocked_writing_fd5(pid_of(child))),
            "waited {WAIT:?} for child {} to block on fd 5",
            child.id()
        );
    }
    let total = CHILDREN * usize::try_from(PER_CHILD).expect("fits");
    let got = receive(&mut source, total, "every flooded record");
    let mut next: HashMap<i32, i32> = children.iter().map(|c| (pid_of(c), 2)).collect();
    for (pid, generation, status) in updates(&got) {
        assert_eq!(generation, 9);
        let want = next.get_mut(&pid).unwrap_or_else(|| panic!("record from unknown pid {pid}"));
        assert_eq!(status, Status(*want), "child {pid}: out of order, lost or duplicated");
        *want += 1;
    }
    assert!(next.values().all(|&n| n == 2 + PER_CHILD));
    for child in &mut children {
        assert!(wait_exit(child, "a flooding child").success());
    }
}

/// Whether some thread of `pid` is blocked in `write(5, …)` or
/// `sendto(5, …)`, as `/proc/PID/task/*/syscall` shows.
fn blocked_writing_fd5(pid: i32) -> bool {
    thread_blocked_writing_fd5(pid).is_some()
}

/// The thread of `pid` that is blocked in `write(5, …)` or `sendto(5, …)`,
/// if any.
fn thread_blocked_writing_fd5(pid: i32) -> Option<i32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.filter_map(Result::ok).find_map(|task| {
        let text = std::fs::read_to_string(task.path().join("syscall")).unwrap_or_default();
        let mut fields = text.split_whitespace();
        let nr: i64 = fields.next().and_then(|n| n.parse().ok()).unwrap_or(-1);
        let blocked = (nr == nix::libc::SYS_write || nr == nix::libc::SYS_sendto) && fields.next() == Some("0x5");
        blocked.then(|| task.file_name().to_str()?.parse().ok()).flatten()
    })
}

/// Signals caught while a child is blocked in its write to fd 5 interrupt
/// that write (`EINTR`, the handler is installed without `SA_RESTART`):
/// `notify` retries, never fails, and every record still arrives once, in
/// order.
fn eintr_is_retried<T: Transport + Default>(me: &str) {
    const TOTAL: i32 = 20_000;
    const SIGNALS: usize = 200;
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
        // Signal the writing thread only once it is blocked in the write,
        // so that each signal interrupts a write in progress. The reads
        // below are too small to let it finish before all are sent.
        if sent < SIGNALS {
            let mut tid = None;
            assert!(
                poll_until(deadline, || {
                    tid = thread_blocked_writing_fd5(pid);
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
        while took < 64
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
    let line = loop {
        let line = lines.recv_timeout(WAIT).expect("the child's report");
        if line.starts_with("caught=") {
            break line;
        }
    };
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
        poll_until(Instant::now() + WAIT, || blocked_writing_fd5(pid_of(&child))),
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
    const EACH: i32 = 2_000;
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
        .map(|(p, g, s)| {
            assert_eq!((p, g), (pid, 5), "a record arrived torn");
            s.0
        })
        .collect();
    assert_eq!(values, (1000..1000 + THREADS * EACH).collect::<BTreeSet<_>>());
    assert!(wait_exit(&mut child, "the child").success());
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
                round_trip,
                master_close_disconnects,
                master_killed_disconnects,
                child_fds_are_exactly_the_standard_ones,
                partial_record_is_reported,
                flood_blocks_then_delivers_everything,
                eintr_is_retried,
                blocked_child_sees_disconnect,
                threads_share_a_sink
            );
        }
    };
}

flavour!(pipe, master_proto_pipe::Pipe);
flavour!(duplex, master_proto_pipe::Duplex);
