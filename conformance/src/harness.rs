//! Running a case in real processes: roles, spawning children, bounded
//! waits, per-child sequences, and the signal storm.
//!
//! Every case is both the master and, re-executed, its children: the master
//! runs the test binary again with only the same test selected
//! (`<test> --exact`) and [`ROLE_VAR`] set, after installing the standard
//! environment (fd 5, listen fds from 6, `GENERATION`) with
//! [`master_proto::ChildFds`]. The case function finds the role with
//! [`Ctx::role`] and plays it instead of the master. No `fork()` inside the
//! threaded test harness.
//!
//! Every wait is bounded by [`WAIT`] and a failure says what it waited for.
//! Pauses happen only inside `poll(2)`.
//!
//! The transport crates' own real-process tests use this module too (as a
//! dev-dependency; this crate depends on no transport): the bounded waits ([`wait_readable`], [`poll_until`],
//! [`try_wait_until`], [`receive`]), children ([`Ctx`], [`Spawn`], [`Kid`],
//! [`pid_of`], [`kill_and_reap`], [`line_reader`], [`expect_line`]) and
//! fresh paths ([`fresh_temp_path`], [`TempDir`], [`unix_listener`]) exist
//! once, here.

use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use master_proto::master::Exit;
use master_proto::{ChildEnd, ChildEnv, ChildFds, Delivery, Received, StatusSource, StatusUpdate, Transport};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::sys;

/// Environment variable naming the role a re-executed test binary plays.
pub const ROLE_VAR: &str = "MASTER_PROTO_CONFORMANCE_ROLE";
/// Environment variable carrying a role's parameter (a seed, a count).
pub const ARG_VAR: &str = "MASTER_PROTO_CONFORMANCE_ARG";

/// The bound on every single wait: generous, for a loaded 2-core machine; it
/// only matters when a case fails.
pub const WAIT: Duration = Duration::from_secs(45);

/// The longest a child role lives: past this, `SIGALRM` ends it.
pub const CHILD_LIFETIME: Duration = Duration::from_secs(150);

/// Exit code of a child role whose check failed (it says why on stderr).
pub const CHILD_FAILED: i32 = 70;

/// The pause between two checks of a condition no descriptor reports.
const PAUSE: Duration = Duration::from_millis(2);

// ---------------------------------------------------------------------------
// The case's identity and role.

/// One case of one transport, as the test harness runs it: the full test
/// name (to re-execute exactly this test) and the role, if this process is a
/// re-executed child.
#[derive(Clone, Debug)]
pub struct Ctx {
    test: String,
}

impl Ctx {
    /// The case `case` of the test module at `module_path` (as
    /// `module_path!()` gives it; its first component, the crate, is not
    /// part of a test's name).
    #[must_use]
    pub fn new(module_path: &str, case: &str) -> Ctx {
        let module = module_path.split_once("::").map_or("", |(_, rest)| rest);
        let test = if module.is_empty() { case.to_owned() } else { format!("{module}::{case}") };
        Ctx { test }
    }

    /// The test's full name, as `--exact` wants it.
    #[must_use]
    pub fn test(&self) -> &str {
        &self.test
    }

    /// The role this process plays, if it is a re-executed child.
    ///
    /// A child that asks also arms an alarm ([`CHILD_LIFETIME`]): whatever
    /// a broken transport does to it, and even when its master was killed
    /// and nobody waits for it, it does not outlive the case by much.
    #[must_use]
    pub fn role(&self) -> Option<String> {
        let role = std::env::var(ROLE_VAR).ok();
        if role.is_some() {
            let secs = u32::try_from(CHILD_LIFETIME.as_secs()).unwrap_or(u32::MAX);
            let _ = nix::unistd::alarm::set(secs);
        }
        role
    }

    /// The parameter of this process's role, if any.
    #[must_use]
    pub fn arg(&self) -> Option<String> {
        std::env::var(ARG_VAR).ok()
    }

    /// The parameter of this process's role, parsed; a child role fails if
    /// it is missing or malformed.
    #[must_use]
    pub fn arg_u64(&self) -> u64 {
        self.arg().and_then(|a| a.parse().ok()).unwrap_or_else(|| fail("the role's parameter is missing"))
    }

    /// A command that re-executes this test binary, running only this
    /// case, in `role`. Its stdin is null, stdout null, stderr inherited.
    #[must_use]
    pub fn command(&self, role: &str) -> Command {
        let mut cmd = Command::new(std::env::current_exe().expect("the test binary's path"));
        cmd.args([self.test.as_str(), "--exact", "--nocapture", "--test-threads=1", "-q"])
            .env(ROLE_VAR, role)
            .env_remove(ARG_VAR)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    }
}

// ---------------------------------------------------------------------------
// Spawning children.

/// How to spawn one child of a case.
#[derive(Debug)]
pub struct Spawn<'a> {
    ctx: &'a Ctx,
    role: &'a str,
    generation: u32,
    listen: usize,
    stdin: bool,
    stdout: Out,
    arg: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Out {
    Null,
    Piped,
    Inherit,
}

impl<'a> Spawn<'a> {
    /// A child playing `role` with `GENERATION=generation`, one listen
    /// socket, no stdin, no stdout.
    #[must_use]
    pub fn new(ctx: &'a Ctx, role: &'a str, generation: u32) -> Spawn<'a> {
        Spawn { ctx, role, generation, listen: 1, stdin: false, stdout: Out::Null, arg: None }
    }

    /// Installs `n` listen sockets (fd 6, 7, …).
    #[must_use]
    pub fn listen(mut self, n: usize) -> Self {
        self.listen = n;
        self
    }

    /// Pipes the child's stdin: the master can pace it ([`Kid::poke`]).
    #[must_use]
    pub fn stdin(mut self) -> Self {
        self.stdin = true;
        self
    }

    /// Pipes the child's stdout into a line reader ([`Kid::expect_line`]).
    #[must_use]
    pub fn stdout(mut self) -> Self {
        self.stdout = Out::Piped;
        self
    }

    /// Lets the child write to this process's stdout.
    #[must_use]
    pub fn inherit_stdout(mut self) -> Self {
        self.stdout = Out::Inherit;
        self
    }

    /// Passes the child a parameter ([`Ctx::arg`]).
    #[must_use]
    pub fn arg(mut self, arg: impl fmt::Display) -> Self {
        self.arg = Some(arg.to_string());
        self
    }

    /// Spawns the child with the transport's end of `source`.
    ///
    /// # Panics
    ///
    /// If the end cannot be made or the child cannot be spawned.
    pub fn spawn<T: Transport>(self, transport: &T, source: &mut T::Source) -> Kid {
        let end = transport.child_end(source, self.generation).expect("make the child's end of the channel");
        self.spawn_end(end).0
    }

    /// As [`spawn`](Self::spawn), then tells the source the child's pid
    /// ([`Transport::register_child`]), as a master does once it knows it.
    ///
    /// # Panics
    ///
    /// If the end cannot be made or the child cannot be spawned.
    pub fn spawn_registered<T: Transport>(self, transport: &T, source: &mut T::Source) -> Kid {
        let generation = self.generation;
        let kid = self.spawn(transport, source);
        transport
            .register_child(source, generation, kid.pid())
            .unwrap_or_else(|e| fail(format_args!("register_child: {e}")));
        kid
    }

    /// Spawns the child with `end` at fd 5; also returns the command's
    /// environment as installed (for cases that edit it, see
    /// [`Spawn::spawn_with`]).
    ///
    /// # Panics
    ///
    /// If the child cannot be spawned.
    pub fn spawn_end(self, end: ChildEnd) -> (Kid, usize) {
        self.spawn_with(end, |_| {})
    }

    /// As [`spawn_end`](Self::spawn_end), letting `edit` change the command
    /// after the standard environment is installed. Returns the child and
    /// the number of auxiliary descriptors its end declared.
    ///
    /// # Panics
    ///
    /// If the child cannot be spawned.
    pub fn spawn_with(self, end: ChildEnd, edit: impl FnOnce(&mut Command)) -> (Kid, usize) {
        let aux = end.aux.len();
        let mut cmd = self.ctx.command(self.role);
        if let Some(arg) = &self.arg {
            cmd.env(ARG_VAR, arg);
        }
        if self.stdin {
            cmd.stdin(Stdio::piped());
        }
        match self.stdout {
            Out::Null => cmd.stdout(Stdio::null()),
            Out::Piped => cmd.stdout(Stdio::piped()),
            Out::Inherit => cmd.stdout(Stdio::inherit()),
        };
        let mut fds = ChildFds::new(end, self.generation);
        for _ in 0..self.listen {
            fds = fds.listen(OwnedFd::from(unix_listener()));
        }
        fds.install(&mut cmd).expect("install the standard environment");
        edit(&mut cmd);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn a child in role {:?}: {e}", self.role));
        let pid = pid_of(&child);
        let stdin = child.stdin.take();
        let lines = child.stdout.take().map(line_reader);
        (Kid { child, pid, stdin, lines, reaped: None }, aux)
    }
}

/// A listening Unix socket at a fresh path (removed at once: the socket
/// stays usable as a listen fd and no file is left behind).
///
/// # Panics
///
/// If the socket cannot be bound.
#[must_use]
pub fn unix_listener() -> UnixListener {
    let path = fresh_temp_path("master-proto-listen", ".sock");
    let listener = UnixListener::bind(&path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
    let _ = std::fs::remove_file(&path);
    listener
}

/// A path in the temp dir, unique to this process and call, for a file or
/// directory to create: `<prefix>-<pid>-<n><suffix>`. A leftover of an
/// earlier process that had the same pid is removed first.
#[must_use]
pub fn fresh_temp_path(prefix: &str, suffix: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("{prefix}-{}-{n}{suffix}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    let _ = std::fs::remove_file(&path);
    path
}

/// A temporary directory, removed with everything in it when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory named after `prefix` in the temp dir (see
    /// [`fresh_temp_path`]).
    ///
    /// # Panics
    ///
    /// If it cannot be created.
    #[must_use]
    pub fn new(prefix: &str) -> TempDir {
        let path = fresh_temp_path(prefix, "");
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TempDir(path)
    }

    /// The directory's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads lines from `out` (a child's stdout) on a thread of its own; see
/// [`expect_line`].
pub fn line_reader(out: impl Read + Send + 'static) -> mpsc::Receiver<String> {
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

/// Waits for a line starting with `prefix` from `lines` (other lines are
/// skipped) and returns it; `who` names the writer in a failure.
///
/// # Panics
///
/// If no such line comes within [`WAIT`], or the writer closes first.
pub fn expect_line(lines: &mpsc::Receiver<String>, prefix: &str, who: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("waited {WAIT:?} for a line {prefix:?} from {who}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                "awaiting a line {prefix:?} from {who}: its stdout closed first (it, and whoever shared its stdout, \
                 exited)"
            ),
        }
    }
}

/// A child process of a case. Dropping it kills and reaps it if it has not
/// been reaped, so that a failing case leaves no process behind.
#[derive(Debug)]
pub struct Kid {
    child: Child,
    pid: i32,
    stdin: Option<ChildStdin>,
    lines: Option<mpsc::Receiver<String>>,
    reaped: Option<ExitStatus>,
}

impl Kid {
    /// The child's pid, as the protocol carries it.
    #[must_use]
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Writes one byte to the child's stdin (a "go" for a paced child).
    ///
    /// # Panics
    ///
    /// If stdin was not piped or the write fails.
    pub fn poke(&mut self) {
        let stdin = self.stdin.as_mut().expect("the child's stdin is piped");
        stdin.write_all(b".").unwrap_or_else(|e| panic!("poking child {}: {e}", self.pid));
    }

    /// Closes the child's stdin: it reads EOF.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for a line of the child's stdout starting with `prefix`
    /// (other lines are skipped) and returns it.
    ///
    /// # Panics
    ///
    /// If stdout was not piped, or no such line comes within [`WAIT`].
    pub fn expect_line(&mut self, prefix: &str) -> String {
        let lines = self.lines.as_ref().expect("the child's stdout is piped");
        expect_line(lines, prefix, &format!("child {}", self.pid))
    }

    /// Waits at most `within` for a line of the child's stdout starting
    /// with `prefix` (other lines are skipped) and returns it; `None` if
    /// none came in time or stdout closed.
    ///
    /// # Panics
    ///
    /// If stdout was not piped.
    pub fn line_within(&mut self, prefix: &str, within: Duration) -> Option<String> {
        let lines = self.lines.as_ref().expect("the child's stdout is piped");
        let deadline = Instant::now() + within;
        loop {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.starts_with(prefix) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Whether the child has printed a line starting with `prefix` by now
    /// (lines read while looking are consumed); never waits.
    ///
    /// # Panics
    ///
    /// If stdout was not piped.
    pub fn has_said(&mut self, prefix: &str) -> bool {
        let lines = self.lines.as_ref().expect("the child's stdout is piped");
        lines.try_iter().any(|line| line.starts_with(prefix))
    }

    /// Reaps the child if it has exited, without waiting.
    pub fn try_reap(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            self.reaped = self.child.try_wait().expect("try_wait");
        }
        self.reaped
    }

    /// How the child ended, if it has exited otherwise than with code 0;
    /// never waits.
    pub fn failed(&mut self) -> Option<ExitStatus> {
        self.try_reap().filter(|status| !status.success())
    }

    /// Waits at most [`WAIT`] for the child to exit and reaps it.
    ///
    /// # Panics
    ///
    /// If it does not exit in time; `what` names it.
    pub fn wait_exit(&mut self, what: &str) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        if !poll_until(deadline, || self.try_reap().is_some()) {
            panic!("waited {WAIT:?} for {what} (pid {}) to exit", self.pid);
        }
        self.reaped.expect("reaped")
    }

    /// Waits for the child to exit and checks that it exited with code 0:
    /// a child role that checked something exits 0 only if it held.
    ///
    /// # Panics
    ///
    /// If it exits otherwise, or not in time.
    pub fn expect_success(&mut self, what: &str) {
        let status = self.wait_exit(what);
        assert_eq!(status.code(), Some(0), "{what} (pid {}) ended with {status}, not exit code 0", self.pid);
    }

    /// Sends `SIGKILL` and reaps the child.
    ///
    /// # Panics
    ///
    /// If it is not gone within [`WAIT`].
    pub fn kill9(&mut self) -> ExitStatus {
        if self.reaped.is_none() {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
        self.wait_exit("a killed child")
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if self.reaped.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Spawns this test binary in `role` with no standard environment, stdout
/// piped (a master role that runs in its own process).
///
/// # Panics
///
/// If it cannot be spawned.
#[must_use]
pub fn spawn_plain(ctx: &Ctx, role: &str, arg: impl fmt::Display) -> Kid {
    let mut cmd = ctx.command(role);
    cmd.env(ARG_VAR, arg.to_string()).stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn role {role:?}: {e}"));
    let pid = pid_of(&child);
    let lines = child.stdout.take().map(line_reader);
    Kid { child, pid, stdin: None, lines, reaped: None }
}

/// How a reaped child ended, as [`master_proto::master::Master::reaped`]
/// wants it.
#[must_use]
pub fn exit_of(status: ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => Exit::Code(-1),
    }
}

// ---------------------------------------------------------------------------
// The child's side.

/// Ends a child role that failed: says why on stderr, exits
/// [`CHILD_FAILED`].
pub fn fail(why: impl fmt::Display) -> ! {
    eprintln!("conformance child {} failed: {why}", std::process::id());
    std::process::exit(CHILD_FAILED)
}

/// The child's standard environment, or a failed role.
#[must_use]
pub fn child_env() -> ChildEnv {
    ChildEnv::from_process().unwrap_or_else(|e| fail(format_args!("reading the standard environment: {e}")))
}

/// The child's sink from its standard environment, or a failed role.
#[must_use]
pub fn child_sink<T: Transport + Default>() -> T::Sink {
    let mut env = child_env();
    T::default().sink(&mut env).unwrap_or_else(|e| fail(format_args!("building the sink: {e}")))
}

/// Prints one line on stdout for the master and flushes it.
pub fn say(line: impl fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).unwrap_or_else(|e| fail(format_args!("stdout: {e}")));
}

/// Waits for the master's next poke on stdin; `false` at EOF.
#[must_use]
pub fn await_poke() -> bool {
    let mut byte = [0u8];
    loop {
        match std::io::stdin().lock().read(&mut byte) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => fail(format_args!("stdin: {e}")),
        }
    }
}

/// Sets this process's `SIGPIPE` disposition to `SIG_DFL` (`true`) or
/// `SIG_IGN`, or fails the role.
pub fn sigpipe(default: bool) {
    sys::set_sigpipe(default).unwrap_or_else(|e| fail(format_args!("sigaction(SIGPIPE): {e}")));
}

/// Installs the storm's no-op `SIGUSR1` handler (without `SA_RESTART`) in
/// a child, or fails the role. Call it before the first notify: the master
/// signals a child only once it has heard from it.
pub fn storm_target() {
    sys::install_storm_handler().unwrap_or_else(|e| fail(format_args!("sigaction(SIGUSR1): {e}")));
}

// ---------------------------------------------------------------------------
// Bounded waiting.

/// A `poll(2)` timeout for `left`, rounded up to whole milliseconds, so
/// that a wait never ends before its deadline.
#[must_use]
pub fn poll_timeout(left: Duration) -> PollTimeout {
    PollTimeout::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(PollTimeout::MAX)
}

/// Waits until `fd` is readable (or reports hang-up or an error), at most
/// until `deadline`; returns whether it is. `EINTR` is retried.
///
/// # Panics
///
/// On any other `poll(2)` error.
pub fn wait_readable(fd: BorrowedFd<'_>, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, poll_timeout(left)) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(Errno::EINTR) => {}
            Err(e) => panic!("poll: {e}"),
        }
    }
}

/// Whether `fd` is readable right now (a zero-timeout poll, `EINTR`
/// retried).
#[must_use]
pub fn readable_now(fd: BorrowedFd<'_>) -> bool {
    wait_readable(fd, Instant::now())
}

/// Checks `done` until it holds or `deadline` passes, pausing briefly
/// (inside `poll(2)`) between checks; returns whether it held.
pub fn poll_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        let _ = poll(&mut [], poll_timeout(PAUSE));
    }
}

/// Reaps `child` once it has exited, at most until `deadline`; `None` if it
/// is still running then. std offers nothing to poll for a child's exit, so
/// this checks between short pauses.
///
/// # Panics
///
/// If `waitpid(2)` fails.
pub fn try_wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let mut status = None;
    poll_until(deadline, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status
}

/// Kills `child` and reaps it, unless it has been reaped already: for the
/// `Drop` of a guard, so that a failing test leaves no process behind.
pub fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A child's pid as the status protocol carries it.
///
/// # Panics
///
/// If the pid does not fit an `i32` (it always does on Unix).
#[must_use]
pub fn pid_of(child: &Child) -> i32 {
    i32::try_from(child.id()).expect("a pid fits an i32")
}

/// Hands every pending item of `source` to `each`.
///
/// # Panics
///
/// If the source fails.
pub fn drain<S: StatusSource>(source: &mut S, each: impl FnMut(Received)) {
    source.drain(each).unwrap_or_else(|e| panic!("reading the status channel: {e}"));
}

/// Hands at most `max` pending items of `source` to `each`; returns how
/// many. For a master that must look at other things between reads while
/// children keep the channel full.
///
/// # Panics
///
/// If the source fails.
pub fn drain_some<S: StatusSource>(source: &mut S, max: usize, mut each: impl FnMut(Received)) -> usize {
    for n in 0..max {
        match source.try_recv() {
            Ok(Some(item)) => each(item),
            Ok(None) => return n,
            Err(e) => panic!("reading the status channel: {e}"),
        }
    }
    max
}

/// A bound on one phase of a case, and the sleep between two looks at the
/// channel:
///
/// ```text
/// let bound = Bound::new(WAIT, WAIT);
/// loop {
///     drain(&mut source, |item| tracker.take(..));
///     if tracker.all_complete() { break; }
///     bound.wait(&source, || format!("… {}", tracker.incomplete()));
/// }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    deadline: Instant,
    bound: Duration,
    tick: Duration,
}

impl Bound {
    /// A phase that must end within `bound`, looking again at least every
    /// `tick` (so that a loop may also watch what no descriptor reports).
    #[must_use]
    pub fn new(bound: Duration, tick: Duration) -> Bound {
        Bound { deadline: Instant::now() + bound, bound, tick }
    }

    /// Sleeps in `poll(2)` until `source`'s fd is readable, or a tick
    /// passed.
    ///
    /// # Panics
    ///
    /// If the phase's deadline has passed: the message says it waited for
    /// `what()`.
    pub fn wait<S: AsFd>(&self, source: &S, what: impl FnOnce() -> String) {
        let now = Instant::now();
        assert!(now < self.deadline, "waited {:?} for {}", self.bound, what());
        let _ = wait_readable(source.as_fd(), self.deadline.min(now + self.tick));
    }
}

/// Receives until `want` items arrived; panics naming `what` if they do not
/// within [`WAIT`].
pub fn receive<S: StatusSource>(source: &mut S, want: usize, what: &str) -> Vec<Received> {
    let mut got = Vec::new();
    let bound = Bound::new(WAIT, WAIT);
    loop {
        drain(source, |item| got.push(item));
        if got.len() >= want {
            return got;
        }
        bound.wait(source, || format!("{what}: got {} of {want} items: {got:?}", got.len()));
    }
}

/// The update inside `item`, or a panic naming it.
///
/// # Panics
///
/// If `item` is malformed input.
#[must_use]
pub fn update_of(item: Received, what: &str) -> StatusUpdate {
    match item {
        Received::Update { update, .. } => update,
        Received::Malformed(m) => panic!("{what}: malformed input {m:?} where only honest updates were sent"),
    }
}

/// Whether process `pid`'s main thread is asleep inside a system call (the
/// kernel's `/proc/PID/stat` state `S` or `D`, and `/proc/PID/syscall`
/// naming a call rather than `running`).
#[must_use]
pub fn asleep_in_syscall(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    let in_call = syscall.split_whitespace().next().is_some_and(|nr| nr.parse::<i64>().is_ok_and(|nr| nr >= 0));
    matches!(state, Some("S" | "D")) && in_call
}

/// The thread of process `pid` that is blocked in `write(fd, …)`,
/// `pwritev2(fd, …)` or `sendto(fd, …)` (`send(2)` is `sendto`), if any, as
/// `/proc/PID/task/*/syscall` shows: where a child waits for room on a full
/// pipe or socket.
#[must_use]
pub fn thread_blocked_writing(pid: i32, fd: i32) -> Option<i32> {
    let fd = format!("{fd:#x}");
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.filter_map(Result::ok).find_map(|task| {
        let text = std::fs::read_to_string(task.path().join("syscall")).unwrap_or_default();
        let mut fields = text.split_whitespace();
        let nr: i64 = fields.next().and_then(|n| n.parse().ok()).unwrap_or(-1);
        let writes = [nix::libc::SYS_write, nix::libc::SYS_sendto, nix::libc::SYS_pwritev2];
        let blocked = writes.contains(&nr) && fields.next() == Some(fd.as_str());
        blocked.then(|| task.file_name().to_str()?.parse().ok()).flatten()
    })
}

/// Raises this process's soft limit on open files to the hard limit.
pub fn raise_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

// ---------------------------------------------------------------------------
// Per-child sequences.

/// What one kind of child sends, in order: the values of its status field,
/// `count` consecutive numbers from `first`, then a tail.
#[derive(Debug)]
pub struct Script {
    first: i32,
    count: i32,
    tail: Vec<i32>,
}

impl Script {
    /// A script of the distinct values `values`.
    ///
    /// # Panics
    ///
    /// If a value repeats (per-child order could not be checked).
    #[must_use]
    pub fn new(values: Vec<i32>) -> Rc<Script> {
        Script::sequence(0, 0, &values)
    }

    /// `first`, `first + 1`, … (`count` of them), then the values of
    /// `tail`.
    ///
    /// # Panics
    ///
    /// If a value repeats.
    #[must_use]
    pub fn sequence(first: i32, count: i32, tail: &[i32]) -> Rc<Script> {
        let script = Script { first, count: count.max(0), tail: tail.to_vec() };
        for (i, v) in tail.iter().enumerate() {
            assert!(
                script.index_in_range(*v).is_none() && !tail[..i].contains(v),
                "a script's values must be distinct"
            );
        }
        Rc::new(script)
    }

    fn index_in_range(&self, v: i32) -> Option<usize> {
        let at = i64::from(v) - i64::from(self.first);
        (0..i64::from(self.count)).contains(&at).then(|| usize::try_from(at).ok()).flatten()
    }

    /// How many values.
    #[must_use]
    pub fn len(&self) -> usize {
        usize::try_from(self.count).unwrap_or(0) + self.tail.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value number `i`.
    #[must_use]
    pub fn get(&self, i: usize) -> Option<i32> {
        let count = usize::try_from(self.count).unwrap_or(0);
        if i < count { i32::try_from(i).ok().map(|i| self.first + i) } else { self.tail.get(i - count).copied() }
    }

    /// Where value `v` stands.
    #[must_use]
    pub fn index(&self, v: i32) -> Option<usize> {
        let count = usize::try_from(self.count).unwrap_or(0);
        self.index_in_range(v).or_else(|| self.tail.iter().position(|&t| t == v).map(|p| p + count))
    }

    /// The values in order.
    pub fn values(&self) -> impl Iterator<Item = i32> + '_ {
        (self.first..self.first + self.count).chain(self.tail.iter().copied())
    }
}

/// Checks, as updates arrive, that each child's updates are whole, not
/// duplicated and in its order: every one of them ([`Delivery::EveryUpdate`])
/// or a subsequence ending with its last ([`Delivery::LatestState`], or a
/// byte stream under hostile garbage, which may misframe and so lose
/// records).
#[derive(Debug)]
pub struct Tracker {
    every: bool,
    children: HashMap<i32, (u32, Rc<Script>, usize)>,
}

impl Tracker {
    /// A tracker for the delivery the transport declares.
    #[must_use]
    pub fn new(delivery: Delivery) -> Tracker {
        Tracker { every: delivery == Delivery::EveryUpdate, children: HashMap::new() }
    }

    /// A tracker that allows gaps (but never duplicates or disorder).
    #[must_use]
    pub fn lossy() -> Tracker {
        Tracker { every: false, children: HashMap::new() }
    }

    /// Expects child `pid` of `generation` to send `script`.
    pub fn add(&mut self, pid: i32, generation: u32, script: Rc<Script>) {
        self.children.insert(pid, (generation, script, 0));
    }

    /// Whether `pid` is tracked.
    #[must_use]
    pub fn tracks(&self, pid: i32) -> bool {
        self.children.contains_key(&pid)
    }

    /// Takes one update.
    ///
    /// # Errors
    ///
    /// What is wrong with it: an unknown sender, a wrong generation, a value
    /// out of order, duplicated, or never sent.
    pub fn take(&mut self, update: &StatusUpdate) -> Result<(), String> {
        let Some((generation, script, next)) = self.children.get_mut(&update.pid) else {
            return Err(format!("an update from pid {} that no child sent: {update:?}", update.pid));
        };
        if update.generation != *generation {
            return Err(format!("child {}: generation {} instead of {generation}", update.pid, update.generation));
        }
        let v = update.status.0;
        if self.every {
            match script.get(*next) {
                Some(want) if want == v => {
                    *next += 1;
                    Ok(())
                }
                want => Err(format!(
                    "child {}: update #{next} is {v}, expected {want:?} (lost, duplicated or out of order)",
                    update.pid
                )),
            }
        } else {
            match script.index(v) {
                Some(at) if at >= *next => {
                    *next = at + 1;
                    Ok(())
                }
                Some(at) => Err(format!(
                    "child {}: value {v} (#{at}) after #{} (stale or duplicated)",
                    update.pid,
                    next.saturating_sub(1)
                )),
                None => Err(format!("child {}: value {v} is not one it sent", update.pid)),
            }
        }
    }

    /// Whether child `pid` has delivered its last value.
    #[must_use]
    pub fn complete(&self, pid: i32) -> bool {
        self.children.get(&pid).is_some_and(|(_, script, next)| *next == script.len())
    }

    /// How many updates of `pid` were accounted for (its position in the
    /// script).
    #[must_use]
    pub fn position(&self, pid: i32) -> usize {
        self.children.get(&pid).map_or(0, |(_, _, next)| *next)
    }

    /// Whether every child has delivered its last value.
    #[must_use]
    pub fn all_complete(&self) -> bool {
        self.children.values().all(|(_, script, next)| *next == script.len())
    }

    /// The children that have not delivered their last value, and where
    /// each stands, for a failure message.
    #[must_use]
    pub fn incomplete(&self) -> String {
        let mut out: Vec<String> = self
            .children
            .iter()
            .filter(|(_, (_, script, next))| *next < script.len())
            .map(|(pid, (_, script, next))| format!("{pid}:{next}/{}", script.len()))
            .collect();
        out.sort();
        let n = out.len();
        out.truncate(8);
        format!("{n} incomplete [{}]", out.join(" "))
    }
}

// ---------------------------------------------------------------------------
// Randomness.

/// A small deterministic generator (xorshift64*), seeded per run; cases
/// name the seed in their failures.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// A seed from the clock and the pid.
    #[must_use]
    pub fn fresh_seed() -> u64 {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let low = u64::try_from(nanos & u128::from(u64::MAX)).unwrap_or(0);
        low ^ (u64::from(std::process::id()) << 32)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        let n64 = u64::try_from(n.max(1)).unwrap_or(u64::MAX);
        usize::try_from(self.next_u64() % n64).unwrap_or(0)
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64().to_ne_bytes()[0]).collect()
    }
}

// ---------------------------------------------------------------------------
// The signal storm.

/// A thread that sends `SIGUSR1` (handled by a no-op handler installed
/// without `SA_RESTART`, so that blocking calls fail with `EINTR`) to the
/// children registered with it and to the master's thread, until stopped.
#[derive(Debug)]
pub struct Storm {
    stop: Arc<AtomicBool>,
    targets: Arc<Mutex<Vec<i32>>>,
    thread: Option<JoinHandle<(usize, usize)>>,
}

/// What a storm did.
#[derive(Clone, Copy, Debug)]
pub struct StormReport {
    /// Signals sent to children.
    pub to_children: usize,
    /// Signals sent to the master's thread.
    pub to_master: usize,
    /// Signals the master's process caught while the storm ran.
    pub caught_by_master: usize,
}

impl Storm {
    /// Installs the no-op handler in this process and starts signalling the
    /// calling thread (the master's).
    ///
    /// # Panics
    ///
    /// If the handler cannot be installed.
    #[must_use]
    pub fn start() -> Storm {
        static INSTALLED: OnceLock<()> = OnceLock::new();
        INSTALLED.get_or_init(|| sys::install_storm_handler().expect("install the SIGUSR1 handler"));
        let master_pid = i32::try_from(std::process::id()).expect("pid");
        let master_tid = nix::unistd::gettid().as_raw();
        let stop = Arc::new(AtomicBool::new(false));
        let targets: Arc<Mutex<Vec<i32>>> = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, targets) = (Arc::clone(&stop), Arc::clone(&targets));
            std::thread::spawn(move || {
                let (mut to_children, mut to_master) = (0usize, 0usize);
                while !stop.load(Ordering::Relaxed) {
                    {
                        // The lock is held while signalling, so a child
                        // removed (before being reaped) is never signalled
                        // after: its pid cannot have been reused.
                        let targets = targets.lock().expect("storm targets");
                        for &pid in targets.iter() {
                            if nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGUSR1).is_ok() {
                                to_children += 1;
                            }
                        }
                    }
                    if sys::tgkill(master_pid, master_tid, Signal::SIGUSR1).is_ok() {
                        to_master += 1;
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
                (to_children, to_master)
            })
        };
        Storm { stop, targets, thread: Some(thread) }
    }

    /// Starts signalling child `pid` too. Call it only once the child has
    /// installed its handler (the master has heard from it).
    pub fn add(&self, pid: i32) {
        let mut targets = self.targets.lock().expect("storm targets");
        if !targets.contains(&pid) {
            targets.push(pid);
        }
    }

    /// Stops signalling child `pid`. Call it before reaping the child.
    pub fn remove(&self, pid: i32) {
        self.targets.lock().expect("storm targets").retain(|&p| p != pid);
    }

    /// Stops the storm and says what it did.
    ///
    /// # Panics
    ///
    /// If the storm thread panicked.
    pub fn stop(mut self) -> StormReport {
        self.stop.store(true, Ordering::Relaxed);
        let (to_children, to_master) = self.thread.take().expect("running").join().expect("the storm thread");
        StormReport { to_children, to_master, caught_by_master: sys::storm_caught() }
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The file descriptors open in this process, ascending, as
/// `/proc/self/fd` lists them (the listing's own descriptor excluded).
#[must_use]
pub fn open_fds() -> Vec<i32> {
    let listed: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .unwrap_or_else(|e| fail(format_args!("reading /proc/self/fd: {e}")))
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The directory's own descriptor was in the listing; it is closed now.
    let mut open: Vec<i32> = listed.into_iter().filter(|&fd| sys::is_open(fd)).collect();
    open.sort_unstable();
    open
}

/// Whether descriptor `child_fd` of process `child` is the same open file
/// as this process's `fd` (`kcmp(2)`).
///
/// # Errors
///
/// The errno of `kcmp(2)`.
pub fn shares_open_file(child: i32, child_fd: i32, fd: BorrowedFd<'_>) -> nix::Result<bool> {
    use std::os::fd::AsRawFd;
    let me = i32::try_from(std::process::id()).expect("pid");
    sys::same_open_file(me, fd.as_raw_fd(), child, child_fd)
}

#[cfg(test)]
mod tests {
    use master_proto::{Delivery, Status, StatusUpdate};

    use super::{Script, Tracker};

    fn up(pid: i32, status: i32) -> StatusUpdate {
        StatusUpdate { pid, generation: 7, status: Status(status) }
    }

    #[test]
    fn scripts_index_their_values() {
        let s = Script::sequence(2, 3, &[0, 1]);
        assert_eq!(s.values().collect::<Vec<_>>(), vec![2, 3, 4, 0, 1]);
        assert_eq!((s.len(), s.get(2), s.get(3), s.get(5)), (5, Some(4), Some(0), None));
        assert_eq!((s.index(4), s.index(1), s.index(5)), (Some(2), Some(4), None));
    }

    #[test]
    fn every_update_tracking_rejects_loss_duplication_and_disorder() {
        let mut t = Tracker::new(Delivery::EveryUpdate);
        t.add(10, 7, Script::sequence(2, 3, &[0]));
        assert!(t.take(&up(10, 2)).is_ok());
        assert!(t.take(&up(10, 2)).is_err(), "a duplicate");
        assert!(t.take(&up(10, 4)).is_err(), "a gap");
        assert!(t.take(&up(10, 3)).is_ok() && t.take(&up(10, 4)).is_ok());
        assert!(!t.complete(10));
        assert!(t.take(&up(10, 0)).is_ok());
        assert!(t.complete(10) && t.all_complete());
        assert!(t.take(&up(11, 2)).is_err(), "an unknown sender");
        assert!(t.take(&StatusUpdate { generation: 8, ..up(10, 2) }).is_err(), "a wrong generation");
    }

    #[test]
    fn latest_state_tracking_allows_gaps_but_never_staleness() {
        let mut t = Tracker::new(Delivery::LatestState);
        t.add(10, 7, Script::sequence(2, 5, &[]));
        assert!(t.take(&up(10, 4)).is_ok());
        assert!(t.take(&up(10, 4)).is_err(), "a repeat of the same record");
        assert!(t.take(&up(10, 3)).is_err(), "stale after newer");
        assert!(t.take(&up(10, 9)).is_err(), "never sent");
        assert!(t.take(&up(10, 6)).is_ok() && t.complete(10));
        let mut lossy = Tracker::lossy();
        lossy.add(10, 7, Script::sequence(2, 5, &[]));
        assert!(lossy.take(&up(10, 5)).is_ok() && !lossy.complete(10));
    }
}
