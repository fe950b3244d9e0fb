//! Helpers shared by this crate's integration tests: the test kit's, the examples, and the master's side of a service played with this project's own code.
//!
//! Each test file includes this module with `mod common;` (Cargo's layout
//! for code shared by integration tests: a file in a subdirectory of
//! `tests/` is not a test target of its own). The bounded waits, child
//! process helpers and temporary paths are the conformance harness's
//! (`master_proto_conformance::harness`), children's output and line
//! clients its `talk` module, and the private Postfix instance its
//! `postfix` module. Every wait ends at a deadline the caller gives and
//! pauses only inside poll(2), never in a bare sleep, so a test that fails
//! says what it awaited instead of hanging.

// Each test binary compiles its own copy of this module and uses only some
// of it; the rest would otherwise warn in every binary that does not.
#![allow(dead_code, unused_imports, unused_macros, reason = "each test binary uses only some of the shared helpers")]

pub(crate) use master_proto_conformance::harness::{
    TempDir, WAIT, fresh_temp_path, kill_and_reap, pid_of, poll_timeout, poll_until, try_wait_until, wait_readable,
};
pub(crate) use master_proto_conformance::postfix;
pub(crate) use master_proto_conformance::talk::{
    Collector, Conversation, Stream, example_binary, tcp_client, try_unix_client, unix_client,
};

pub(crate) mod real;

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::Instant;

use master_proto::env::{LISTEN_FDS_VAR, TRANSPORT_VAR};
use master_proto::master::{Config, Master, Outcome};
use master_proto::{ChildFds, Received, Status, StatusSource, StatusUpdate, Transport};
use master_proto_transports::{AnySource, AnyTransport};

/// This crate's example `name`, as cargo built it for this test run
/// (refused if older than its source; `cargo test --test NAME` alone builds
/// no example, and does not rebuild one after a change to the library).
pub(crate) fn example(name: &str) -> PathBuf {
    example_binary(env!("CARGO_MANIFEST_DIR"), name)
}

/// A running example, killed and reaped if the test ends early.
pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) stderr: Collector<ChildStderr>,
    pub(crate) stdin: Option<ChildStdin>,
    pub(crate) stdout: Option<ChildStdout>,
}

impl Running {
    /// Spawns `cmd` with stderr collected (and stdin, stdout piped if
    /// `stdio`).
    pub(crate) fn start(mut cmd: Command, stdio: bool) -> Running {
        let io = || if stdio { Stdio::piped() } else { Stdio::null() };
        cmd.stdin(io()).stdout(io()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning the example");
        // Dropping `cmd` closes the master's copies of the child's fds.
        drop(cmd);
        let stderr = Collector::new(child.stderr.take());
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        Running { child, stderr, stdin, stdout }
    }

    /// The example `name` with `args` and no standard environment.
    pub(crate) fn bare(name: &str, args: &[&str], stdio: bool) -> Running {
        let mut cmd = Command::new(example(name));
        cmd.args(args);
        Running::start(cmd, stdio)
    }

    pub(crate) fn pid(&self) -> i32 {
        pid_of(&self.child)
    }

    /// What the child wrote to stderr so far (without waiting).
    pub(crate) fn stderr_text(&mut self) -> String {
        self.stderr.read_to_eof(Instant::now());
        self.stderr.text()
    }

    /// Whether the child exits (closes its stderr) before `deadline`.
    pub(crate) fn exits_before(&mut self, deadline: Instant) -> bool {
        self.stderr.read_to_eof(deadline)
    }

    /// Waits for the child to exit and returns its status; `why` says why
    /// it should.
    pub(crate) fn wait_exit(&mut self, why: &str) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        // The kernel closes the child's stderr as it exits; reaping follows.
        if !self.stderr.read_to_eof(deadline) {
            panic!(
                "timed out after {WAIT:?} awaiting the exit of pid {} ({why}); its stderr:\n{}",
                self.child.id(),
                self.stderr_text()
            );
        }
        try_wait_until(&mut self.child, deadline).unwrap_or_else(|| {
            panic!("pid {} closed its stderr but was not reaped within {WAIT:?} ({why})", self.child.id())
        })
    }

    /// Waits for the child to exit with status 0 for `why`.
    pub(crate) fn expect_clean_exit(&mut self, why: &str) {
        let status = self.wait_exit(why);
        assert_eq!(
            status.code(),
            Some(0),
            "pid {} should exit 0 ({why}), got {status}; its stderr:\n{}",
            self.child.id(),
            self.stderr_text()
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// The master's side of one service, played with this project's own code:
/// a channel of `transport` from the facade and proto's sans-IO
/// [`Master`], which every update goes through.
pub(crate) struct Service {
    pub(crate) transport: AnyTransport,
    source: Option<AnySource>,
    pub(crate) master: Master,
}

impl Service {
    /// A service on `transport` whose first child gets generation
    /// `first_generation`.
    pub(crate) fn new(transport: AnyTransport, first_generation: u32) -> Service {
        let source = transport.open().expect("open a channel");
        let config = Config { process_limit: 0, ..Config::default() };
        Service {
            transport,
            source: Some(source),
            master: Master::with_generation(config, first_generation.wrapping_sub(1)),
        }
    }

    fn source(&mut self) -> &mut AnySource {
        self.source.as_mut().expect("the channel is open")
    }

    /// Spawns example `name` with `args` and `listen` from fd 6, as a real
    /// master does: the generation from the bookkeeping, the pid back to it
    /// and to the transport. A duplex child gets only what a real Postfix
    /// master(8) passes (`GENERATION`, no variable of this project's).
    pub(crate) fn spawn(&mut self, name: &str, args: &[&str], listen: Vec<OwnedFd>) -> Running {
        let generation = self.master.begin_spawn(Instant::now()).expect("begin_spawn");
        let transport = self.transport;
        let end = transport.child_end(self.source(), generation).expect("child end");
        let mut cmd = Command::new(example(name));
        cmd.args(args);
        let mut fds = ChildFds::new(end, generation);
        for fd in listen {
            fds = fds.listen(fd);
        }
        fds.install(&mut cmd).expect("install the standard environment");
        if transport.caps().postfix_wire {
            cmd.env_remove(TRANSPORT_VAR).env_remove(LISTEN_FDS_VAR);
        }
        let child = Running::start(cmd, false);
        self.master.spawned(child.pid(), generation).expect("spawned");
        transport.register_child(self.source(), generation, child.pid()).expect("register_child");
        child
    }

    /// The generation the child `pid` was spawned with.
    pub(crate) fn generation_of(&self, pid: i32) -> u32 {
        self.master.child(pid).expect("a child of the service").generation
    }

    /// Waits for exactly `n` updates (more arriving in the same read fail
    /// the test), each of which the bookkeeping must apply (a TAKEN or an
    /// AVAIL that changes the child's state); `what` says what they are.
    pub(crate) fn expect_updates(&mut self, n: usize, what: &str) -> Vec<StatusUpdate> {
        let deadline = Instant::now() + WAIT;
        let mut got = Vec::new();
        loop {
            while let Some(item) = self.source().try_recv().expect("try_recv") {
                let outcome = self.master.receive(&item);
                match item {
                    Received::Update { update, .. } => {
                        assert!(
                            matches!(outcome, Outcome::Taken | Outcome::Avail),
                            "the master's bookkeeping did not apply {update:?} ({what}): {outcome:?}"
                        );
                        got.push(update);
                    }
                    Received::Malformed(m) => panic!("malformed input on the status channel ({what}): {m}"),
                }
            }
            if got.len() >= n {
                assert_eq!(got.len(), n, "more status updates than awaited ({what}): {got:?}");
                return got;
            }
            let source = self.source.as_ref().expect("the channel is open");
            assert!(
                wait_readable(source.as_fd(), deadline),
                "timed out after {WAIT:?} awaiting {n} status updates ({what}); got {got:?}"
            );
        }
    }

    /// Checks that nothing more is pending.
    pub(crate) fn expect_no_more_updates(&mut self, what: &str) {
        assert_eq!(self.source().try_recv(), Ok(None), "no further status update expected ({what})");
    }

    /// Closes the status channel, as master(8) does on `postfix reload`.
    pub(crate) fn close(&mut self) {
        self.source = None;
    }
}

/// A status update.
pub(crate) fn update(pid: i32, generation: u32, status: Status) -> StatusUpdate {
    StatusUpdate { pid, generation, status }
}

/// A UNIX-domain socket path under the temp dir, removed when dropped.
pub(crate) struct SocketPath(pub(crate) PathBuf);

impl SocketPath {
    pub(crate) fn new() -> SocketPath {
        SocketPath(fresh_temp_path("daemon-test", ".sock"))
    }

    pub(crate) fn listen(&self) -> OwnedFd {
        std::os::unix::net::UnixListener::bind(&self.0)
            .unwrap_or_else(|e| panic!("binding {}: {e}", self.0.display()))
            .into()
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Defines each named test once per transport: duplex (Postfix's own, as
/// a real master(8) runs it) and memfd (this project's fastest), each a
/// function `fn(AnyTransport)` of the test file.
macro_rules! per_transport {
    ($($case:ident),* $(,)?) => {
        mod duplex {
            $(#[test] fn $case() { super::$case(master_proto_transports::flavours::Duplex.into()) })*
        }
        mod memfd {
            $(#[test] fn $case() { super::$case(master_proto_transports::flavours::Memfd.into()) })*
        }
    };
}
pub(crate) use per_transport;
