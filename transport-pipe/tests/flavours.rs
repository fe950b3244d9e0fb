//! What is particular to the pipe flavours, in real processes: a signal
//! caught while a child is blocked in its `write(2)`/`send(2)` on fd 5.
//!
//! Everything every transport must do (round trip, disconnect, fd hygiene,
//! back-pressure, hostile input, `EINTR` under a signal storm, …) is checked
//! by the conformance suite (`cargo test -p master-proto-conformance pipe::`
//! and `duplex::`). This test is narrower and sharper than the suite's
//! storm: it finds, in `/proc`, the child's thread blocked in the very
//! system call on fd 5 that these flavours make, and signals exactly that
//! thread, so that every signal interrupts a write in progress.
//!
//! The test is both the master and, re-executed, the child: the parent runs
//! this test binary again with only the same test selected and `ROLE` set in
//! the environment, installed through the standard environment (fd 5,
//! listen fd 6, `GENERATION`). No `fork()` inside the threaded harness.
//! Every wait is bounded and says what it waited for.

#![allow(unsafe_code)] // Safety: the child role installs a signal handler; the parent calls tgkill.

mod common;

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{WAIT, pid_of, poll_until, wait_readable};
use master_proto::{ChildEnv, ChildFds, Received, Status, StatusSink, StatusSource, Transport};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

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

/// The full name of a test in this binary, from its module path.
fn test_name(module: &str, test: &str) -> String {
    let module = module.split_once("::").map_or("", |(_, rest)| rest);
    format!("{module}::{test}")
}

// ---------------------------------------------------------------- cases

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

/// Instantiates the test for one flavour, under a module named after its
/// short name.
macro_rules! flavour {
    ($name:ident, $transport:ty) => {
        mod $name {
            use super::*;

            #[test]
            fn eintr_is_retried() {
                super::eintr_is_retried::<$transport>(&test_name(module_path!(), "eintr_is_retried"));
            }
        }
    };
}

flavour!(pipe, master_proto_pipe::Pipe);
flavour!(duplex, master_proto_pipe::Duplex);
