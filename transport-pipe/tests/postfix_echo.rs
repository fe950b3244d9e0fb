//! Integration test of the `postfix_echo` example, with this project's own master side playing master(8).
//!
//! Every case runs the example binary as a real child process, with a
//! [`Duplex`] channel installed at fd 5 and a listening socket at fd 6 by
//! [`ChildFds`], and plays the master: it reads the status updates from the
//! [`StreamSource`], connects clients, and closes the channel. Every wait is
//! bounded by [`WAIT`] and fails saying what it awaited.
//!
//! Cargo builds examples for `cargo test` (unless a single test target is
//! named), next to this test's own binary: `target/<profile>/examples/`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Collector, Conversation, Stream, WAIT, tcp_client, unix_client};
use master_proto::env::{LISTEN_FDS_VAR, TRANSPORT_VAR};
use master_proto::{ChildFds, Received, Status, StatusSource, StatusUpdate, Transport};
use master_proto_pipe::{Duplex, StreamSource};

// ---------------------------------------------------------------------------
// Running the example.

/// A running `postfix_echo`, killed and reaped if the test ends early.
struct Running {
    child: Child,
    stderr: Collector<ChildStderr>,
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning postfix_echo");
        // Dropping `cmd` closes the master's copies of the child's fds.
        drop(cmd);
        let stderr = Collector::new(child.stderr.take());
        Running { child, stderr }
    }

    fn pid(&self) -> i32 {
        common::pid_of(&self.child)
    }

    /// What the child wrote to stderr so far (without waiting).
    fn stderr_text(&mut self) -> String {
        self.stderr.read_to_eof(Instant::now());
        self.stderr.text()
    }

    /// Waits for the child to exit and returns its status; `why` says why
    /// it should.
    fn wait_exit(&mut self, why: &str) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        // The kernel closes the child's stderr as it exits; reaping follows.
        if !self.stderr.read_to_eof(deadline) {
            panic!(
                "timed out after {WAIT:?} awaiting the exit of postfix_echo pid {} ({why}); its stderr:\n{}",
                self.child.id(),
                self.stderr_text()
            );
        }
        match common::try_wait_until(&mut self.child, deadline) {
            Some(status) => status,
            None => panic!(
                "postfix_echo pid {} closed its stderr but was not reaped within {WAIT:?} ({why})",
                self.child.id()
            ),
        }
    }

    /// Waits for the child to exit with status 0 for `why`.
    fn expect_clean_exit(&mut self, why: &str) {
        let status = self.wait_exit(why);
        assert_eq!(
            status.code(),
            Some(0),
            "postfix_echo pid {} should exit 0 ({why}), got {status}; its stderr:\n{}",
            self.child.id(),
            self.stderr_text()
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        common::kill_and_reap(&mut self.child);
    }
}

/// Spawns postfix_echo with `args` as a child of the service whose channel
/// is `source`, with `listen` at fd 6 and `GENERATION` set to `generation`;
/// `edit` may change the command after the environment is installed.
fn spawn_echo(
    source: &mut StreamSource,
    generation: u32,
    listen: OwnedFd,
    args: &[&str],
    edit: impl FnOnce(&mut Command),
) -> Running {
    let end = Duplex.child_end(source, generation).expect("child end");
    let mut cmd = Command::new(common::example_binary("postfix_echo"));
    cmd.args(args);
    ChildFds::new(end, generation).listen(listen).install(&mut cmd).expect("install the standard environment");
    edit(&mut cmd);
    Running::start(cmd)
}

/// Spawns postfix_echo with `args` and no standard environment.
fn spawn_bare(args: &[&str]) -> Running {
    let mut cmd = Command::new(common::example_binary("postfix_echo"));
    cmd.args(args);
    Running::start(cmd)
}

// ---------------------------------------------------------------------------
// The master's view: status updates.

fn update(pid: i32, generation: u32, status: Status) -> StatusUpdate {
    StatusUpdate { pid, generation, status }
}

/// Waits for exactly `n` updates on `source` (more arriving in the same
/// read fail the test); `what` says what they are.
fn expect_updates(source: &mut StreamSource, n: usize, what: &str) -> Vec<StatusUpdate> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    loop {
        while let Some(item) = source.try_recv().expect("try_recv") {
            match item {
                Received::Update { update, .. } => got.push(update),
                Received::Malformed(m) => panic!("malformed input on the status channel ({what}): {m}"),
            }
        }
        if got.len() >= n {
            assert_eq!(got.len(), n, "more status updates than awaited ({what}): {got:?}");
            return got;
        }
        assert!(
            common::wait_readable(source.as_fd(), deadline),
            "timed out after {WAIT:?} awaiting {n} status updates ({what}); got {got:?}"
        );
    }
}

/// Checks that nothing more is pending on `source`.
fn expect_no_more_updates(source: &mut StreamSource, what: &str) {
    assert_eq!(source.try_recv(), Ok(None), "no further status update expected ({what})");
}

// ---------------------------------------------------------------------------
// Listening sockets.

/// A Unix-domain socket path under the temp dir, removed when dropped.
struct SocketPath(PathBuf);

impl SocketPath {
    fn new() -> SocketPath {
        SocketPath(common::fresh_temp_path("postfix_echo-test", ".sock"))
    }

    fn listen(&self) -> UnixListener {
        UnixListener::bind(&self.0).unwrap_or_else(|e| panic!("binding {}: {e}", self.0.display()))
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------------------
// Cases.

/// One child, one client: the lines come back, the master sees TAKEN then
/// AVAIL from that pid and generation; then the master closes the channel
/// and the idle child exits 0.
fn one_client_then_master_close<S: Stream>(
    listen: OwnedFd,
    service_type: &str,
    generation: u32,
    connect: impl Fn() -> S,
) {
    let mut source = Duplex.open().expect("open a duplex channel");
    let args = ["-n", "echo", "-t", service_type, "-o", "max_idle=3600"];
    let mut child = spawn_echo(&mut source, generation, listen, &args, |_| {});
    let pid = child.pid();

    let mut talk = Conversation::new(connect());
    for line in ["hello", "", "a line with  spaces\t", "\u{e9}t\u{e9}"] {
        talk.echo(line);
    }
    talk.finish("no newline at the end");

    let updates = expect_updates(&mut source, 2, "TAKEN and AVAIL around one client");
    assert_eq!(
        updates,
        [update(pid, generation, Status::TAKEN), update(pid, generation, Status::AVAIL)],
        "the updates carry the child's pid and its GENERATION (passed in octal); stderr:\n{}",
        child.stderr_text()
    );

    drop(source);
    child.expect_clean_exit("the master closed the status channel while the child was idle");
}

#[test]
fn tcp_client_is_echoed_between_taken_and_avail() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    // 0o1234567 is 342391: a decimal GENERATION would come back different.
    one_client_then_master_close(listener.into(), "inet", 0o1234567, || tcp_client(addr));
}

#[test]
fn unix_client_is_echoed_between_taken_and_avail() {
    let path = SocketPath::new();
    let listener = path.listen();
    // The largest generation: GENERATION=37777777777.
    one_client_then_master_close(listener.into(), "unix", u32::MAX, || unix_client(&path.0));
}

#[test]
fn master_close_while_serving_lets_the_client_finish_then_the_child_exits() {
    let path = SocketPath::new();
    let mut source = Duplex.open().expect("open a duplex channel");
    let generation = 0o17;
    let args = ["-v", "-n", "echo", "-t", "unix", "-o", "max_idle=3600"];
    let mut child = spawn_echo(&mut source, generation, path.listen().into(), &args, |_| {});
    let pid = child.pid();

    let mut talk = Conversation::new(unix_client(&path.0));
    talk.echo("before the reload");
    let taken = expect_updates(&mut source, 1, "TAKEN for the client being served");
    assert_eq!(taken, [update(pid, generation, Status::TAKEN)]);

    // "postfix reload": the master closes the channel.
    drop(source);
    // The client already accepted is still served to the end.
    talk.echo("after the reload");
    talk.finish("");
    child.expect_clean_exit("AVAIL failed after the master closed the channel");
    let log = child.stderr_text();
    assert!(
        log.contains("master disconnect -- exiting"),
        "the child should say it exits because the master left; stderr:\n{log}"
    );
}

#[test]
fn postfix_arguments_are_accepted_and_max_use_ends_the_child() {
    let path = SocketPath::new();
    let mut source = Duplex.open().expect("open a duplex channel");
    let generation = 0o755;
    let args = ["-d", "-v", "-u", "-n", "echo", "-t", "unix", "-s", "1", "-o", "max_use=2"];
    // As a real master(8): GENERATION only, no variables of this project's.
    let mut child = spawn_echo(&mut source, generation, path.listen().into(), &args, |cmd| {
        cmd.env_remove(TRANSPORT_VAR).env_remove(LISTEN_FDS_VAR);
    });
    let pid = child.pid();

    for n in 1..=2 {
        let mut talk = Conversation::new(unix_client(&path.0));
        talk.echo(&format!("client {n}"));
        talk.finish("");
        let updates = expect_updates(&mut source, 2, &format!("TAKEN and AVAIL around client {n}"));
        assert_eq!(updates, [update(pid, generation, Status::TAKEN), update(pid, generation, Status::AVAIL)]);
    }
    // The channel is still open: only max_use can end the child now.
    child.expect_clean_exit("max_use=2 clients were served");
    expect_no_more_updates(&mut source, "after the child's exit");
    let log = child.stderr_text();
    assert_eq!(
        log.lines().filter(|l| l.contains("echo: client ")).count(),
        2,
        "-v logs one line per client; stderr:\n{log}"
    );
    assert!(log.contains("use limit reached -- exiting"), "stderr:\n{log}");
}

#[test]
fn max_idle_ends_an_idle_child() {
    let path = SocketPath::new();
    let mut source = Duplex.open().expect("open a duplex channel");
    let args = ["-v", "-n", "echo", "-t", "unix", "-o", "max_idle=1s"];
    let started = Instant::now();
    let mut child = spawn_echo(&mut source, 1, path.listen().into(), &args, |_| {});
    child.expect_clean_exit("max_idle=1s passed without a client");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(1), "exited after {elapsed:?}, before max_idle");
    let log = child.stderr_text();
    assert!(log.contains("idle timeout -- exiting"), "stderr:\n{log}");
    expect_no_more_updates(&mut source, "a child that served nobody");
}

#[test]
fn usage_errors_exit_2_with_a_usage_message() {
    let cases: [&[&str]; 6] = [
        &["-Q"],
        &["-n", "echo", "-t", "unix", "-Q"],
        &["-n", "echo", "-t", "unix", "-s"],
        &["-t", "unix", "-o", "max_use=many"],
        &["-t", "unix", "-s", "0"],
        &["-t", "unix", "stray-operand"],
    ];
    for args in cases {
        let mut child = spawn_bare(args);
        let status = child.wait_exit("a usage error");
        let log = child.stderr_text();
        assert_eq!(status.code(), Some(2), "{args:?} should exit 2; stderr:\n{log}");
        assert!(log.contains("usage: postfix_echo"), "{args:?}: no usage message; stderr:\n{log}");
    }
    let mut child = spawn_bare(&["-Q"]);
    child.wait_exit("a usage error");
    let log = child.stderr_text();
    assert!(log.contains("invalid option -- 'Q'"), "the message names the option; stderr:\n{log}");
}

#[test]
fn a_listening_socket_of_the_wrong_family_is_fatal() {
    let path = SocketPath::new();
    let mut source = Duplex.open().expect("open a duplex channel");
    let args = ["-n", "echo", "-t", "inet"];
    let mut child = spawn_echo(&mut source, 1, path.listen().into(), &args, |_| {});
    let status = child.wait_exit("-t inet with a Unix-domain listening socket");
    let log = child.stderr_text();
    assert_eq!(status.code(), Some(1), "stderr:\n{log}");
    assert!(log.contains("fatal:") && log.contains("does not match service type"), "stderr:\n{log}");
}

#[test]
fn two_children_share_one_listening_socket_and_one_channel() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    let mut source = Duplex.open().expect("open a duplex channel");
    let args = ["-n", "echo", "-t", "inet", "-o", "max_idle=3600"];
    let fd = |l: &TcpListener| OwnedFd::from(l.try_clone().expect("dup the listening socket"));
    let mut first = spawn_echo(&mut source, 0o101, fd(&listener), &args, |_| {});
    let mut second = spawn_echo(&mut source, 0o202, fd(&listener), &args, |_| {});
    drop(listener);
    let children: BTreeSet<(i32, u32)> = [(first.pid(), 0o101), (second.pid(), 0o202)].into();

    // Two clients held open at once: a single server busy with one cannot
    // take the other, so each child serves one.
    let mut a = Conversation::new(tcp_client(addr));
    a.echo("held open: a");
    let mut b = Conversation::new(tcp_client(addr));
    b.echo("held open: b");
    let taken = expect_updates(&mut source, 2, "TAKEN from each child while two clients are held open");
    assert!(taken.iter().all(|u| u.status == Status::TAKEN), "{taken:?}");
    let who: BTreeSet<(i32, u32)> = taken.iter().map(|u| (u.pid, u.generation)).collect();
    assert_eq!(who, children, "each child took one client");
    a.finish("");
    b.finish("");
    let avail = expect_updates(&mut source, 2, "AVAIL from each child");
    assert!(avail.iter().all(|u| u.status == Status::AVAIL), "{avail:?}");

    // Many concurrent clients: both children race for every connection.
    const CLIENTS: usize = 8;
    std::thread::scope(|s| {
        for n in 0..CLIENTS {
            s.spawn(move || {
                let mut talk = Conversation::new(tcp_client(addr));
                talk.echo(&format!("client {n}, line 1"));
                talk.echo(&format!("client {n}, line 2"));
                talk.finish(&format!("client {n}, tail"));
            });
        }
    });
    let updates = expect_updates(&mut source, 2 * CLIENTS, "TAKEN and AVAIL around every concurrent client");
    let mut per_child: BTreeMap<(i32, u32), Vec<Status>> = BTreeMap::new();
    for u in &updates {
        assert!(children.contains(&(u.pid, u.generation)), "update {u:?} is from neither child {children:?}");
        per_child.entry((u.pid, u.generation)).or_default().push(u.status);
    }
    for (child, statuses) in &per_child {
        let alternating = statuses.chunks(2).all(|pair| pair == [Status::TAKEN, Status::AVAIL]);
        assert!(alternating, "child {child:?} should alternate TAKEN, AVAIL: {statuses:?}");
    }
    let served: usize = per_child.values().map(|s| s.len() / 2).sum();
    assert_eq!(served, CLIENTS, "every client was served once: {per_child:?}");

    // Both survived the races for connections (EAGAIN from accept) and
    // leave when the master closes the channel.
    drop(source);
    first.expect_clean_exit("the master closed the channel shared by both children");
    second.expect_clean_exit("the master closed the channel shared by both children");
}
