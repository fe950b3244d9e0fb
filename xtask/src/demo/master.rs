//! The demo's master: proto's sans-IO [`Master`] driven by a poll(2) loop over real child processes.
//!
//! One service, as Postfix's master(8) runs it (`master_spawn.c`,
//! `master_status.c`, `master_avail.c`, `master_sig.c`):
//!
//! - the listening socket is opened here and passed to every child at fd 6;
//!   the master itself polls it only while [`Master::should_listen`] says
//!   so (no child available, not throttled, below the process limit), and
//!   a connection then makes it spawn one more child;
//! - the status channel is opened with the chosen [`Transport`]; each child
//!   gets its end at fd 5 and `GENERATION` ([`ChildFds`]); every item read
//!   from the channel goes through [`Master::receive`] and is shown with its
//!   [`Outcome`] — whatever a child sends is counted, never fatal;
//! - SIGCHLD, SIGHUP, SIGINT and SIGTERM arrive on a signalfd (blocked in
//!   every thread, unblocked again in children by `std::process`); SIGCHLD
//!   reaps with `waitpid(WNOHANG)` until nothing is left to reap, so no
//!   child stays a zombie;
//! - a reload (SIGHUP or `--reload-after`) opens a new channel, retires the
//!   children of the old one ([`Master::reload`]) and closes the old
//!   channel's master end, so that old children see the master gone and
//!   exit after their current client; they are still reaped as they go;
//! - shutting down (SIGINT, SIGTERM, or the end of `--duration`) stops the
//!   load generator, waits for its clients (bounded), closes the channel so
//!   that every child exits, reaps them all within [`GRACE`], then kills the
//!   stragglers with SIGKILL and reaps them too.
//!
//! Children run in a process group of their own, so that a Ctrl-C typed at
//! the terminal reaches the master only, which then shuts them down in
//! order.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::{PipeReader, PipeWriter};
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use master_proto::env::{MASTER_FLOW_READ, MASTER_FLOW_WRITE};
use master_proto::master::{Config, Exit, Master, Outcome, ReapOutcome};
use master_proto::{ChildFds, RecvError, Status, StatusSource, Transport};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::child::GOSSIP_VAR;
use super::load::{Load, Target};
use super::options::{ListenSpec, Options};
use super::view::View;

/// How long the children get to exit after the channel is closed at
/// shutdown before they are killed.
pub(super) const GRACE: Duration = Duration::from_secs(10);

/// How long a shutdown waits for the load generator's clients to finish
/// their connections.
const DRAIN: Duration = Duration::from_secs(10);

/// The listening socket the service's children share.
enum Listener {
    Tcp(TcpListener),
    /// The socket, and its path, removed when the demo ends.
    Unix(UnixListener, PathBuf),
}

impl Listener {
    fn bind(spec: &ListenSpec) -> Result<Listener, String> {
        match spec {
            ListenSpec::Tcp(addr) => {
                TcpListener::bind(addr).map(Listener::Tcp).map_err(|e| format!("cannot listen on {addr}: {e}"))
            }
            ListenSpec::Unix(path) => UnixListener::bind(path)
                .map(|l| Listener::Unix(l, path.clone()))
                .map_err(|e| format!("cannot listen on {}: {e}", path.display())),
        }
    }

    /// `tcp ADDRESS` or `unix PATH`, for the view.
    fn describe(&self) -> Result<String, String> {
        match self {
            Listener::Tcp(l) => {
                Ok(format!("tcp {}", l.local_addr().map_err(|e| format!("the listening socket's address: {e}"))?))
            }
            Listener::Unix(_, path) => Ok(format!("unix {}", path.display())),
        }
    }

    /// Where the load generator connects.
    fn target(&self) -> Result<Target, String> {
        match self {
            Listener::Tcp(l) => {
                l.local_addr().map(Target::Tcp).map_err(|e| format!("the listening socket's address: {e}"))
            }
            Listener::Unix(_, path) => Ok(Target::Unix(path.clone())),
        }
    }

    /// Postfix's `-n` service name and `-t` type for this socket.
    fn service_name_and_type(&self) -> (String, &'static str) {
        match self {
            Listener::Tcp(l) => (l.local_addr().map_or_else(|_| "demo".to_owned(), |a| a.to_string()), "inet"),
            // master.cf names a unix service by its socket's file name
            // (private/NAME); daemons build file names from it.
            Listener::Unix(_, path) => {
                (path.file_name().map_or_else(|| "demo".to_owned(), |n| n.to_string_lossy().into_owned()), "unix")
            }
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l, _) => l.as_fd(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What runs as a child.
enum Program {
    /// This binary, as `xtask demo --echo-child`.
    BuiltIn { exe: PathBuf, gossip: bool },
    /// `COMMAND -n NAME -t TYPE ARGS...`, as master(8) runs a daemon,
    /// with master(8)'s flow pipe at fds 3 and 4: no Postfix daemon runs
    /// without it (each marks both close-on-exec at startup and dies if
    /// either is closed).
    Service { command: OsString, args: Vec<OsString>, name: String, kind: &'static str, flow: (PipeReader, PipeWriter) },
}

impl Program {
    fn command(&self) -> Command {
        let mut cmd = match self {
            Program::BuiltIn { exe, gossip } => {
                let mut cmd = Command::new(exe);
                cmd.args(["demo", "--echo-child"]).env(GOSSIP_VAR, if *gossip { "1" } else { "0" });
                cmd
            }
            Program::Service { command, args, name, kind, .. } => {
                let mut cmd = Command::new(command);
                cmd.arg("-n").arg(name).arg("-t").arg(kind).args(args);
                cmd
            }
        };
        // Standard output belongs to the view; diagnostics go to stderr.
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).process_group(0);
        cmd
    }

    fn describe(&self) -> String {
        match self {
            Program::BuiltIn { gossip: false, .. } => "built-in echo".to_owned(),
            Program::BuiltIn { gossip: true, .. } => "built-in echo (gossiping)".to_owned(),
            Program::Service { command, args, name, kind, .. } => {
                let mut s = format!("{} -n {name} -t {kind}", command.to_string_lossy());
                for arg in args {
                    s.push(' ');
                    s.push_str(&arg.to_string_lossy());
                }
                s
            }
        }
    }
}

/// Where the run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Serving.
    Running,
    /// The load generator was told to stop; waiting for its clients.
    Draining { until: Instant },
    /// The channel is closed; reaping until the table is empty.
    ShuttingDown { kill_at: Instant, killed: bool },
}

/// Something poll(2) reported ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ready {
    Signal,
    Status,
    Listen,
    LoadDone,
}

/// The master of one service, over transport `T`.
struct Demo<T: Transport> {
    transport: T,
    master: Master,
    /// The current channel; `None` once shutting down.
    source: Option<T::Source>,
    /// The current channel failed: not polled again until a reload.
    source_broken: bool,
    /// Pids registered with the current channel.
    registered: HashSet<i32>,
    listener: Listener,
    program: Program,
    signals: SignalFd,
    view: View,
    load: Option<Load>,
    load_done: bool,
    phase: Phase,
    /// The most children `TAKEN` at once.
    busy_max: usize,
}

/// Runs the demo with transport `T` until it is told to stop.
pub(super) fn run<T: Transport>(transport: T, options: &Options) -> Result<(), String> {
    // Before any thread exists, so that every thread inherits the mask and
    // the signals arrive only on the signalfd.
    let mut mask = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGHUP, Signal::SIGINT, Signal::SIGTERM] {
        mask.add(signal);
    }
    mask.thread_block().map_err(|e| format!("blocking signals: {e}"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;

    let listener = Listener::bind(&options.listen)?;
    let program = match &options.service {
        None => Program::BuiltIn {
            exe: std::env::current_exe().map_err(|e| format!("finding this program to run as the child: {e}"))?,
            gossip: options.gossip,
        },
        Some((command, args)) => {
            let (name, kind) = listener.service_name_and_type();
            let flow = std::io::pipe().map_err(|e| format!("creating the flow pipe: {e}"))?;
            Program::Service { command: command.clone(), args: args.clone(), name, kind, flow }
        }
    };
    let source = transport.open().map_err(|e| format!("opening the {} status channel: {e}", transport.name()))?;
    let config = Config { process_limit: options.max_children, throttle_delay: options.throttle };
    let mut view = View::new(options.plain);
    view.started(&listener.describe()?, transport.name(), options.max_children, &program.describe());
    let load = if options.clients > 0 {
        Some(
            Load::start(options.clients, &listener.target()?, options.hold)
                .map_err(|e| format!("load generator: {e}"))?,
        )
    } else {
        None
    };
    let mut demo = Demo {
        transport,
        master: Master::new(config),
        source: Some(source),
        source_broken: false,
        registered: HashSet::new(),
        listener,
        program,
        signals,
        view,
        load,
        load_done: false,
        phase: Phase::Running,
        busy_max: 0,
    };
    let started = Instant::now();
    demo.serve(options.duration.map(|d| started + d), options.reload_after.map(|d| started + d))
}

impl<T: Transport> Demo<T> {
    /// The event loop, until every child is reaped after the shutdown.
    fn serve(&mut self, mut stop_at: Option<Instant>, mut reload_at: Option<Instant>) -> Result<(), String> {
        loop {
            let now = Instant::now();
            if reload_at.is_some_and(|at| now >= at) {
                reload_at = None;
                self.reload("--reload-after");
            }
            if stop_at.is_some_and(|at| now >= at) {
                stop_at = None;
                self.stop("--duration is over");
            }
            match self.phase {
                Phase::Running => {}
                Phase::Draining { until } => {
                    if self.load_done || self.load.is_none() {
                        self.begin_shutdown("the load generator has finished");
                    } else if now >= until {
                        self.begin_shutdown("the load generator's clients did not finish in time");
                    }
                }
                Phase::ShuttingDown { kill_at, killed } => {
                    if self.master.total() == 0 {
                        break;
                    }
                    if !killed && now >= kill_at {
                        self.kill_all(Signal::SIGKILL);
                        self.phase = Phase::ShuttingDown { kill_at, killed: true };
                    } else if killed && now >= kill_at + GRACE {
                        return Err(format!(
                            "{} children are still in the table {:?} after SIGKILL",
                            self.master.total(),
                            GRACE
                        ));
                    }
                }
            }

            let mut deadlines = vec![reload_at, stop_at, self.master.throttled_until(now), self.view.redraw_due()];
            match self.phase {
                Phase::Running => {}
                Phase::Draining { until } => deadlines.push(Some(until)),
                Phase::ShuttingDown { kill_at, killed: false } => deadlines.push(Some(kill_at)),
                Phase::ShuttingDown { kill_at, killed: true } => deadlines.push(Some(kill_at + GRACE)),
            }
            let timeout = match deadlines.into_iter().flatten().min() {
                None => PollTimeout::NONE,
                Some(at) => poll_timeout(at.saturating_duration_since(now)),
            };
            for ready in self.wait(timeout, now)? {
                match ready {
                    Ready::Signal => self.signals()?,
                    Ready::Status => self.receive(),
                    Ready::Listen => {
                        if self.phase == Phase::Running && self.master.should_listen(Instant::now()) {
                            self.spawn();
                        }
                    }
                    Ready::LoadDone => self.load_done = true,
                }
            }
            let load = self.load.as_ref().map(|l| &**l.stats());
            self.view.redraw(&self.master, load, self.busy_max);
        }
        // Nothing is left in the table; anything else would be a child we
        // did not spawn, but reap it all the same.
        self.reap();
        let stats = self.load.as_ref().map(|l| std::sync::Arc::clone(l.stats()));
        // Joined only once every client has finished; clients cut off by
        // the drain bound end with the process.
        if let Some(load) = self.load.take().filter(|_| self.load_done) {
            load.join();
        }
        // ECHILD: no child process at all, running or zombie.
        let left = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::ECHILD) => "0",
            _ => "some",
        };
        self.view.summary(&self.master, stats.as_deref(), self.busy_max, left);
        Ok(())
    }

    /// Polls what there is to watch now; returns what is ready.
    fn wait(&self, timeout: PollTimeout, now: Instant) -> Result<Vec<Ready>, String> {
        let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        let mut what = vec![Ready::Signal];
        if let Some(source) = self.source.as_ref().filter(|_| !self.source_broken) {
            fds.push(PollFd::new(source.as_fd(), PollFlags::POLLIN));
            what.push(Ready::Status);
        }
        if self.phase == Phase::Running && self.master.should_listen(now) {
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            what.push(Ready::Listen);
        }
        if let Some(load) = self.load.as_ref().filter(|_| !self.load_done) {
            fds.push(PollFd::new(load.done_fd(), PollFlags::POLLIN));
            what.push(Ready::LoadDone);
        }
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(Vec::new()),
            Err(e) => return Err(format!("poll: {e}")),
        }
        Ok(fds.iter().zip(what).filter(|(fd, _)| fd.any().unwrap_or(true)).map(|(_, what)| what).collect())
    }

    /// Handles every pending signal.
    fn signals(&mut self) -> Result<(), String> {
        loop {
            let info = match self.signals.read_signal() {
                Ok(Some(info)) => info,
                Ok(None) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(format!("reading the signalfd: {e}")),
            };
            let signal = i32::try_from(info.ssi_signo).ok().and_then(|n| Signal::try_from(n).ok());
            match signal {
                Some(Signal::SIGCHLD) => self.reap(),
                Some(Signal::SIGHUP) => self.reload("SIGHUP"),
                Some(Signal::SIGINT) => self.stop("SIGINT"),
                Some(Signal::SIGTERM) => self.stop("SIGTERM"),
                _ => {}
            }
        }
    }

    /// Reads every pending item from the channel and judges it.
    fn receive(&mut self) {
        let Some(source) = self.source.as_mut() else { return };
        loop {
            match source.try_recv() {
                Ok(Some(item)) => {
                    let outcome = self.master.receive(&item);
                    if outcome == Outcome::Taken {
                        let busy = self.master.children().filter(|c| !c.retired && c.status == Status::TAKEN).count();
                        self.busy_max = self.busy_max.max(busy);
                    }
                    self.view.update(&item, outcome);
                }
                Ok(None) => return,
                Err(e) => {
                    // Not polled again until a reload opens a new channel:
                    // a failed channel would report the same at once.
                    self.source_broken = true;
                    let what = match e {
                        RecvError::Closed => "the status channel has no senders left".to_owned(),
                        e => e.to_string(),
                    };
                    self.view.error(&format!("status channel: {what}"));
                    return;
                }
            }
        }
    }

    /// Spawns one child, as `master_spawn()` does.
    fn spawn(&mut self) {
        let now = Instant::now();
        let generation = match self.master.begin_spawn(now) {
            Ok(generation) => generation,
            Err(e) => {
                self.view.error(&format!("spawn refused: {e}"));
                return;
            }
        };
        let throttled = self.master.counters().throttled;
        match self.start_child(generation) {
            Ok(child) => {
                let Ok(pid) = i32::try_from(child.id()) else {
                    self.view.error(&format!("child pid {} does not fit an i32", child.id()));
                    return;
                };
                if let Err(e) = self.master.spawned(pid, generation) {
                    // Our own bookkeeping is wrong, not a child's: say so,
                    // and take the child out again (it is reaped as unknown).
                    self.view.error(&format!("spawned pid {pid} could not be registered: {e}"));
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    return;
                }
                if let Some(source) = self.source.as_mut() {
                    match self.transport.register_child(source, generation, pid) {
                        Ok(()) => {
                            self.registered.insert(pid);
                        }
                        // The child's channel is closed: it sees the master
                        // gone and exits, and is reaped as any other.
                        Err(e) => self.view.error(&format!("pid {pid}: registering its channel: {e}")),
                    }
                }
                self.view.spawned(pid, generation, self.master.total());
            }
            Err(why) => {
                let _ = self.master.spawn_failed(generation, now);
                self.view.spawn_failed(generation, &why);
                if self.master.counters().throttled > throttled {
                    self.view.throttled(self.master.config().throttle_delay);
                }
            }
        }
    }

    /// Starts the child process for `generation` with its standard
    /// environment.
    fn start_child(&mut self, generation: u32) -> Result<std::process::Child, String> {
        let source = self.source.as_mut().ok_or("the status channel is closed")?;
        let end = self.transport.child_end(source, generation).map_err(|e| format!("child end: {e}"))?;
        let listen = self.listener.as_fd().try_clone_to_owned().map_err(|e| format!("listening socket: {e}"))?;
        let mut cmd = self.program.command();
        let mut fds = ChildFds::new(end, generation).listen(listen);
        if let Program::Service { flow: (read, write), .. } = &self.program {
            let dup = |e: std::io::Error| format!("flow pipe: {e}");
            fds = fds
                .fixed(MASTER_FLOW_READ, read.try_clone().map_err(dup)?.into())
                .fixed(MASTER_FLOW_WRITE, write.try_clone().map_err(dup)?.into());
        }
        fds.install(&mut cmd).map_err(|e| e.to_string())?;
        cmd.spawn().map_err(|e| e.to_string())
    }

    /// Reaps every child that has exited, as `master_reap_child()` does.
    fn reap(&mut self) {
        loop {
            let (pid, exit) = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid.as_raw(), Exit::Signal(signal as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    self.view.error(&format!("waitpid: {e}"));
                    return;
                }
            };
            if self.registered.remove(&pid)
                && let Some(source) = self.source.as_mut()
                && let Err(e) = self.transport.forget_child(source, pid)
            {
                self.view.error(&format!("pid {pid}: letting its channel go: {e}"));
            }
            let outcome = self.master.reaped(pid, exit, Instant::now());
            self.view.reaped(pid, exit, outcome);
            if let ReapOutcome::Reaped { throttle_began: true, .. } = outcome {
                self.view.throttled(self.master.config().throttle_delay);
            }
        }
    }

    /// Opens a new channel and retires the children of the old one.
    fn reload(&mut self, why: &str) {
        if self.source.is_none() {
            return; // shutting down
        }
        let new = match self.transport.open() {
            Ok(new) => new,
            Err(e) => {
                self.view.error(&format!("reload: cannot open a new status channel, keeping the old one: {e}"));
                return;
            }
        };
        // What the old children said before the reload still counts.
        self.receive();
        // Dropping the old source closes its master end: the old children
        // see the master gone and exit after their current client.
        self.source = Some(new);
        self.source_broken = false;
        self.registered.clear();
        let retired = self.master.reload();
        self.view.reload(self.master.epoch(), &retired, why);
    }

    /// Stops the load generator; shuts down once its clients are done. A
    /// second request shuts down at once; a third kills the children.
    fn stop(&mut self, why: &str) {
        match self.phase {
            Phase::Running => {
                self.view.stopping(why);
                if let Some(load) = &self.load {
                    load.stop();
                }
                self.phase = Phase::Draining { until: Instant::now() + DRAIN };
            }
            Phase::Draining { .. } => self.begin_shutdown(why),
            Phase::ShuttingDown { killed: false, .. } => {
                self.kill_all(Signal::SIGKILL);
                self.phase = Phase::ShuttingDown { kill_at: Instant::now(), killed: true };
            }
            Phase::ShuttingDown { killed: true, .. } => {}
        }
    }

    /// Closes the channel, so that every child exits after its client.
    fn begin_shutdown(&mut self, why: &str) {
        self.receive();
        self.source = None;
        self.registered.clear();
        self.view.shutdown(why);
        self.phase = Phase::ShuttingDown { kill_at: Instant::now() + GRACE, killed: false };
    }

    /// Sends `signal` to every child in the table (none of them is reaped
    /// yet, so none of their pids can have been reused).
    fn kill_all(&mut self, signal: Signal) {
        let pids: Vec<i32> = self.master.children().map(|c| c.pid).collect();
        self.view.error(&format!("killing {} children that did not exit: {pids:?}", pids.len()));
        for pid in pids {
            if let Err(e) = kill(Pid::from_raw(pid), signal) {
                self.view.error(&format!("kill {pid}: {e}"));
            }
        }
    }
}

/// A poll(2) timeout for `left`, rounded up to whole milliseconds so that
/// no wait ends before its deadline.
fn poll_timeout(left: Duration) -> PollTimeout {
    PollTimeout::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(PollTimeout::MAX)
}
