//! A real Postfix daemon, spawn(8), under a master built on this project: its TAKEN and AVAIL must reach the `Duplex` source byte for byte and drive `master::Master` as they drive Postfix's own master(8).
//!
//! The other direction of `real_postfix.rs`, which runs a child built on
//! this project under a real Postfix master. Built only with the
//! `real-postfix` feature: it needs root and Debian's `postfix` package
//! (`/usr/lib/postfix/sbin/spawn`), and fails at once, saying so, without
//! them. Run it with
//!
//! ```text
//! cargo test -p master-proto-pipe --features real-postfix --test real_postfix_daemon
//! ```
//!
//! The test plays master(8) for one service, `echo`, a `unix` service run
//! by Postfix's spawn(8) as `spawn -n echo -t unix user=nobody
//! argv=/bin/cat`: a single_server that accepts one client at a time and
//! runs `/bin/cat` with the client's socket as its stdin and stdout. It
//! starts spawn as master(8) does (`master_spawn.c`), with this project's
//! code only: the status channel is a [`Duplex`], the generation comes from
//! [`Master::begin_spawn`], and [`ChildFds`] installs the standard
//! environment (fd 5, the listening socket at fd 6, `GENERATION` in octal,
//! and, as master(8) gives every child, its flow pipe at fds 3 and 4). It
//! sets none of this project's extra variables, since a real master sets
//! none, and runs spawn in the queue directory of a private configuration
//! in a temporary directory. Then:
//!
//! 1. A client is echoed; the source yields exactly spawn's TAKEN, with its
//!    pid and generation, and nothing more while the client is served; once
//!    the client has left, exactly its AVAIL. [`Master`] takes both
//!    ([`Outcome::Taken`], then [`Outcome::Avail`]): the service's idle
//!    count goes 1, 0, 1 and the child has served one client.
//! 2. A second client: the same again, the child's second use.
//! 3. Master gone: the source is dropped, which closes the channel; spawn,
//!    which watches fd 5 for end-of-file, exits by itself with status 0
//!    (`single_server_abort()`, which says why in its log), and [`Master`]
//!    books the reaped child without a throttle.
//!
//! The generation is 0o7654321, so that decimal for octal in `GENERATION`,
//! or bytes out of order in the record, would show; the bookkeeping starts
//! its generation counter just below it.
//!
//! spawn logs to stderr (`-V`, verbosely with `-v`) into a file that the
//! failure messages quote. Every wait is bounded by [`WAIT`] and says what
//! it awaited; spawn and whatever it runs are killed, and the directory
//! removed, however the test ends.

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Conversation, TempDir, WAIT, poll_until, wait_readable};
use master_proto::env::{LISTEN_FDS_VAR, MASTER_FLOW_READ, MASTER_FLOW_WRITE, TRANSPORT_VAR};
use master_proto::master::{Config, Exit, Master, Outcome, ReapOutcome};
use master_proto::{ChildFds, Received, Sender, Status, StatusSource, StatusUpdate, Transport};
use master_proto_pipe::{Duplex, StreamSource};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Debian's spawn(8).
const SPAWN: &str = "/usr/lib/postfix/sbin/spawn";
/// The service's name, as master.cf would give it.
const SERVICE: &str = "echo";
/// The service's type: a UNIX-domain socket, so no port to race for.
const SERVICE_TYPE: &str = "unix";
/// The generation of the one spawn: seven distinct octal digits, three
/// distinct bytes.
const GENERATION: u32 = 0o7654321;
/// What to do without root or without Postfix.
const HOW_TO_RUN: &str = "this test runs Postfix's spawn(8) daemon: it needs Debian's postfix package \
     (`DEBIAN_FRONTEND=noninteractive apt-get install -y postfix`, as .ci/run does) and root \
     (`cargo test -p master-proto-pipe --features real-postfix --test real_postfix_daemon` as root)";

#[test]
fn a_real_postfix_daemon_reports_to_a_master_built_on_this_project() {
    let postfix_uid = common::postfix::preflight(&[SPAWN], HOW_TO_RUN);
    let (mut master, generation) = master_about_to_spawn(GENERATION);
    let mut source = Duplex.open().expect("opening the service's duplex channel");
    let mut spawn = Daemon::start(postfix_uid, &mut source, generation);
    let pid = spawn.pid;
    master.spawned(pid, generation).expect("registering spawn with the master");
    // A new child counts as idle from the start, so the master no longer
    // watches the socket itself (Postfix's master_spawn()).
    assert_eq!(master.available(), 1, "the new child is available");
    assert!(!master.should_listen(Instant::now()), "a master with an idle child leaves the socket to it");
    let expected =
        |status| Received::Update { update: StatusUpdate { pid, generation, status }, sender: Sender::Claimed };

    // 1 and 2. Two clients, one after the other, each announced by a TAKEN
    //    and followed by an AVAIL.
    for client in 1..=2u64 {
        let mut conv = spawn.connect();
        let first = format!("client {client}, line 1");
        conv.send(&first);
        spawn.await_answer(&conv, &format!("the echo of client {client}'s first line"));
        conv.expect_echo(&first);

        // spawn says TAKEN before it runs the command, so the TAKEN is on
        // its way by the time the command answers.
        let taken = spawn.next_item(&mut source, &format!("spawn's TAKEN for client {client}"));
        assert_eq!(taken, expected(Status::TAKEN), "spawn's TAKEN for client {client}\n{}", spawn.diagnostics());
        assert_eq!(master.receive(&taken), Outcome::Taken, "the master's verdict on the TAKEN");
        assert_eq!(master.available(), 0, "no child is idle while client {client} is served");
        // Postfix's master watches the socket again now, to spawn another
        // child for the next client.
        assert!(master.should_listen(Instant::now()), "a master with no idle child watches the socket");

        for line in 2..=3 {
            conv.echo(&format!("client {client}, line {line}"));
        }
        // One update per change of state: nothing while the client is
        // served, not even a partial record.
        spawn.assert_nothing_pending(&mut source, &format!("while client {client} is served"));

        // EOF ends cat; spawn reaps it, closes the connection, then says
        // AVAIL.
        conv.finish(&format!("client {client}, a last line without a newline"));
        let avail = spawn.next_item(&mut source, &format!("spawn's AVAIL after client {client} left"));
        assert_eq!(avail, expected(Status::AVAIL), "spawn's AVAIL after client {client}\n{}", spawn.diagnostics());
        assert_eq!(master.receive(&avail), Outcome::Avail, "the master's verdict on the AVAIL");
        assert_eq!(master.available(), 1, "the child is idle again after client {client}");
        assert!(!master.should_listen(Instant::now()), "a master with an idle child leaves the socket to it");
        let child = master.child(pid).expect("spawn is in the process table");
        assert_eq!(child.use_count, client, "clients served, as far as the master knows");
        spawn.assert_nothing_pending(&mut source, &format!("after client {client}"));
    }

    // 3. Master gone: closing the channel is all it takes for an idle
    //    Postfix daemon to exit.
    drop(source);
    let status = spawn.await_exit("the channel was closed");
    let exit = exit_of(status);
    assert_eq!(exit, Exit::Code(0), "Postfix servers exit normally when the master goes\n{}", spawn.diagnostics());
    // Not its idle timeout nor its use limit: the closed channel.
    spawn.assert_logged("master disconnect -- exiting", "spawn's reason for exiting");
    match master.reaped(pid, exit, Instant::now()) {
        ReapOutcome::Reaped { child, throttle_began } => {
            assert_eq!((child.pid, child.generation, child.status), (pid, generation, Status::AVAIL));
            assert_eq!(child.use_count, 2, "spawn served two clients");
            assert!(!throttle_began, "a normal exit begins no throttle");
        }
        other => panic!("reaping spawn: {other:?}"),
    }
    assert_eq!((master.total(), master.available()), (0, 0), "the process table is empty");
    let counters = master.counters();
    assert_eq!((counters.taken, counters.avail, counters.received()), (2, 2, 4), "every update was applied");
    spawn.assert_clean_log();
}

// ---------------------------------------------------------------------------
// The master's side.

/// A master whose pending spawn has generation `target`, as one that has
/// been up for a while might have.
fn master_about_to_spawn(target: u32) -> (Master, u32) {
    let mut master = Master::with_generation(Config::default(), target.wrapping_sub(1));
    let generation = master.begin_spawn(Instant::now()).expect("a master with no children may spawn");
    assert_eq!(generation, target);
    (master, generation)
}

/// How a reaped process ended, as the bookkeeping wants it.
fn exit_of(status: ExitStatus) -> Exit {
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => panic!("{status} is neither an exit nor a signal"),
    }
}

// ---------------------------------------------------------------------------
// spawn(8), started as master(8) starts a child.

/// A running spawn(8) and its private configuration; dropping it kills
/// spawn and what it runs, then removes the directory.
struct Daemon {
    child: Child,
    pid: i32,
    /// The service's socket, which a master keeps open for the next child.
    _listener: UnixListener,
    socket: PathBuf,
    /// spawn's stderr.
    log: PathBuf,
    /// Removed last, after the processes (fields drop after `drop`).
    _dir: TempDir,
}

impl Daemon {
    /// Writes the configuration, binds the service's socket and starts
    /// spawn as the child of `source`'s service with `generation`.
    fn start(postfix_uid: u32, source: &mut StreamSource, generation: u32) -> Daemon {
        let daemons = Path::new(SPAWN).parent().expect("spawn's directory").to_str().expect("a plain path");
        let dir = common::postfix::private_instance("real_postfix_daemon-test", postfix_uid, daemons, "", None);
        let d = dir.path();

        // master(8) makes its listening sockets non-blocking: the children
        // of a service race to accept.
        let socket = d.join("echo.socket");
        let listener = UnixListener::bind(&socket).unwrap_or_else(|e| panic!("binding {}: {e}", socket.display()));
        listener.set_nonblocking(true).expect("making the service's socket non-blocking");
        // master(8)'s flow pipe, which every child gets at fds 3 and 4.
        // spawn does not use it, but every Postfix server marks both
        // close-on-exec at startup and dies if either is closed. Without
        // it spawn still runs, by luck: it has by then opened its lock file
        // and its epoll instance at fds 3 and 4, and marks those instead.
        let (flow_read, flow_write) = os_pipe::pipe().expect("creating the flow pipe");

        let log = d.join("spawn.log");
        let stderr = std::fs::File::create(&log).expect("creating spawn's log");
        let mut cmd = Command::new(SPAWN);
        // As master.cf `echo unix - n n - - spawn user=nobody argv=/bin/cat`:
        // the master passes the service's name and type, then the
        // command's own arguments. -V logs to stderr (there is no syslog),
        // -v verbosely.
        cmd.args(["-n", SERVICE, "-t", SERVICE_TYPE, "-v", "-V", "user=nobody", "argv=/bin/cat"])
            // A Postfix server opens its lock file pid/<type>.<service>
            // before it changes to the queue directory: master(8) starts
            // its children there.
            .current_dir(d.join("queue"))
            // master(8) passes only import_environment, MAIL_CONFIG among it.
            .env_clear()
            .env("MAIL_CONFIG", d.join("conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let end = Duplex.child_end(source, generation).expect("the child's end of the channel");
        ChildFds::new(end, generation)
            .listen(listener.try_clone().expect("duplicating the service's socket").into())
            .fixed(MASTER_FLOW_READ, OwnedFd::from(flow_read))
            .fixed(MASTER_FLOW_WRITE, OwnedFd::from(flow_write))
            .install(&mut cmd)
            .expect("installing the standard environment");
        // A real master passes the number of sockets as -s (here the
        // default, 1) and names no transport: only GENERATION stays.
        cmd.env_remove(LISTEN_FDS_VAR).env_remove(TRANSPORT_VAR);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {SPAWN}: {e}"));
        // Dropping `cmd` closes the master's copies of the child's fds.
        drop(cmd);
        let pid = common::pid_of(&child);
        Daemon { child, pid, _listener: listener, socket, log, _dir: dir }
    }

    /// Connects a client to the service's socket. The kernel queues it
    /// until spawn accepts.
    fn connect(&self) -> Conversation<UnixStream> {
        Conversation::new(common::unix_client(&self.socket))
    }

    /// Waits until spawn (its command) answers `conv`; fails at once, with
    /// spawn's log, should spawn exit instead.
    fn await_answer(&mut self, conv: &Conversation<UnixStream>, what: &str) {
        let mut exited = None;
        let answered = poll_until(Instant::now() + WAIT, || {
            if conv.answers_within(Duration::ZERO) {
                return true;
            }
            exited = self.child.try_wait().expect("try_wait on spawn");
            exited.is_some()
        });
        if let Some(status) = exited {
            panic!("spawn exited ({status}) while the test awaited {what}\n{}", self.diagnostics());
        }
        assert!(answered, "timed out after {WAIT:?} awaiting {what}\n{}", self.diagnostics());
    }

    /// The next item on the status channel, waiting for it; `what` says
    /// what it should be.
    fn next_item(&mut self, source: &mut StreamSource, what: &str) -> Received {
        let deadline = Instant::now() + WAIT;
        loop {
            match source.try_recv() {
                Ok(Some(item)) => return item,
                Ok(None) => {}
                Err(e) => panic!("reading the status channel, awaiting {what}: {e}\n{}", self.diagnostics()),
            }
            if !wait_readable(source.as_fd(), deadline) {
                panic!("timed out after {WAIT:?} awaiting {what} on the status channel\n{}", self.diagnostics());
            }
        }
    }

    /// Checks that the status channel holds nothing now.
    fn assert_nothing_pending(&mut self, source: &mut StreamSource, when: &str) {
        let pending = source.try_recv();
        assert_eq!(pending, Ok(None), "nothing should be on the status channel {when}\n{}", self.diagnostics());
    }

    /// Reaps spawn once it has exited by itself, since `why`.
    fn await_exit(&mut self, why: &str) -> ExitStatus {
        let status = common::try_wait_until(&mut self.child, Instant::now() + WAIT);
        status.unwrap_or_else(|| {
            panic!("spawn did not exit within {WAIT:?} after {why}\n{}", self.diagnostics());
        })
    }

    /// What spawn logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(reading {}: {e})", self.log.display()))
    }

    /// Checks that spawn logged `needle`; `what` says what it is.
    fn assert_logged(&self, needle: &str, what: &str) {
        assert!(self.log().contains(needle), "spawn should log {what} ({needle:?})\n{}", self.diagnostics());
    }

    /// Checks that spawn logged no problem.
    fn assert_clean_log(&self) {
        let log = self.log();
        assert!(log.contains("process generation: "), "spawn's log is empty or foreign\n{}", self.diagnostics());
        // spawn logs the GENERATION it read and what it made of it, in octal.
        let parsed = format!("process generation: {GENERATION:o} ({GENERATION:o})");
        assert!(log.contains(&parsed), "spawn should log {parsed:?}\n{}", self.diagnostics());
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| [": warning:", ": error:", ": fatal:", ": panic:"].iter().any(|m| l.contains(m)))
            .collect();
        assert!(bad.is_empty(), "spawn's log reports problems: {bad:#?}\n{}", self.diagnostics());
    }

    /// spawn's log, for a failure message.
    fn diagnostics(&self) -> String {
        format!("--- spawn (pid {}) logged to {}:\n{}", self.pid, self.log.display(), self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // What spawn runs first (cat, in a session of its own, which
            // killing spawn would leave behind): while spawn is unreaped,
            // its children are what it runs.
            for pid in children_of(self.pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            common::kill_and_reap(&mut self.child);
        }
    }
}

/// The pids of `parent`'s children, from `/proc`.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &i32| {
            // The command name is in parentheses and may itself contain
            // them; the parent's pid is the second field after it.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat.rsplit_once(')').and_then(|(_, tail)| tail.split_whitespace().nth(1)?.parse().ok());
            ppid == Some(parent)
        })
        .collect()
}
