//! The demo's master: one service on the supervisor library, in a poll(2) loop beside the demo's own signals and load generator.
//!
//! The master's logic is `master-proto-supervisor`'s ([`Supervisor`],
//! [`Service`]): spawning on demand with the standard environment, reading
//! the status channel, reaping by pidfd, throttling, reloading and shutting
//! down. What stays here is what a program adds around a library:
//!
//! - the listening socket (bound here, so that its address names a Postfix
//!   daemon's service before the first spawn; a Unix socket's file is
//!   removed when the demo ends);
//! - the command: this binary as `xtask demo --echo-child`, or a Postfix
//!   daemon ([`PostfixDaemon`]) for `--service`;
//! - the demo's signals: SIGHUP, SIGINT and SIGTERM arrive on a signalfd
//!   (blocked in every thread, unblocked again in children by
//!   `std::process`). A program may do that; the library does not, and
//!   SIGCHLD is not among them: the supervisor learns of its children's
//!   exits through pidfds;
//! - the phases of a stop: the load generator is told to stop and its
//!   clients get [`DRAIN`] to finish, then the supervisor shuts down (its
//!   channel closed, every child reaped, stragglers killed after [`GRACE`]);
//! - the view: every [`Event`] becomes a line (`--plain`) or a decision in
//!   the live view.
//!
//! The loop is the supervisor's event-loop integration at work: poll(2)
//! on its descriptor with the demo's own, with the earliest of its
//! deadline and the demo's as the timeout, then
//! [`Supervisor::poll_once`] without waiting.
//!
//! Children run in a process group of their own, so that a Ctrl-C typed at
//! the terminal reaches the master only, which then shuts them down in
//! order.

use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use master_proto::master::Outcome;
use master_proto::{Received, Transport};
use master_proto_supervisor::{Event, PostfixDaemon, Service, ServiceId, ServiceType, Supervisor};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{Id, WaitPidFlag, waitid};

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
    fn service_name_and_type(&self) -> (String, ServiceType) {
        match self {
            Listener::Tcp(l) => {
                (l.local_addr().map_or_else(|_| "demo".to_owned(), |a| a.to_string()), ServiceType::Inet)
            }
            // master.cf names a unix service by its socket's file name
            // (private/NAME); daemons build file names from it.
            Listener::Unix(_, path) => (
                path.file_name().map_or_else(|| "demo".to_owned(), |n| n.to_string_lossy().into_owned()),
                ServiceType::Unix,
            ),
        }
    }

    /// A descriptor of the socket for the service.
    fn fd(&self) -> Result<OwnedFd, String> {
        self.as_fd().try_clone_to_owned().map_err(|e| format!("the listening socket: {e}"))
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

/// What every child command gets: no input, standard output left to the
/// view (diagnostics go to stderr), a process group of its own.
fn detach(cmd: &mut Command) {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).process_group(0);
}

/// What the demo runs as its children, for the view's header.
fn describe_program(options: &Options, name: &str, kind: ServiceType) -> String {
    match &options.service {
        None if options.gossip => "built-in echo (gossiping)".to_owned(),
        None => "built-in echo".to_owned(),
        Some((command, args)) => {
            let mut s = format!("{} -n {name} -t {kind}", command.to_string_lossy());
            for arg in args {
                s.push(' ');
                s.push_str(&arg.to_string_lossy());
            }
            s
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
    /// The supervisor is shutting down.
    ShuttingDown,
}

/// The demo around its supervisor.
struct Demo {
    supervisor: Supervisor,
    service: ServiceId,
    signals: SignalFd,
    view: View,
    load: Option<Load>,
    load_done: bool,
    phase: Phase,
    /// Why the next reload or shutdown event happens, for its line.
    reason: String,
    /// The most children `TAKEN` at once.
    busy_max: usize,
    /// Keeps the socket (and a Unix socket's file) until the end.
    _listener: Listener,
}

/// Runs the demo with transport `T` until it is told to stop.
pub(super) fn run<T>(transport: T, options: &Options) -> Result<(), String>
where
    T: Transport + Send + 'static,
    T::Source: Send,
{
    // Before any thread exists, so that every thread inherits the mask and
    // the signals arrive only on the signalfd.
    let mut mask = SigSet::empty();
    for signal in [Signal::SIGHUP, Signal::SIGINT, Signal::SIGTERM] {
        mask.add(signal);
    }
    mask.thread_block().map_err(|e| format!("blocking signals: {e}"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;

    let listener = Listener::bind(&options.listen)?;
    let (name, kind) = listener.service_name_and_type();
    let transport_name = transport.name();
    let builder = Service::builder(name.clone())
        .transport(transport)
        .listen(listener.fd()?)
        .process_limit(options.max_children)
        .throttle_delay(options.throttle);
    let builder = match &options.service {
        None => {
            let exe = std::env::current_exe().map_err(|e| format!("finding this program to run as the child: {e}"))?;
            let gossip = if options.gossip { "1" } else { "0" };
            builder.command(move |_| {
                let mut cmd = Command::new(&exe);
                cmd.args(["demo", super::CHILD_ROLE]).env(GOSSIP_VAR, gossip);
                detach(&mut cmd);
                cmd
            })
        }
        Some((command, args)) => {
            builder.postfix_daemon(PostfixDaemon::new(command, name.clone(), kind).args(args).configure(detach))
        }
    };
    let service = builder.build().map_err(|e| e.to_string())?;
    let mut supervisor = Supervisor::builder().shutdown_grace(GRACE).build().map_err(|e| e.to_string())?;
    let id = supervisor.add(service).map_err(|e| e.to_string())?;

    let mut view = View::new(options.plain);
    view.started(&listener.describe()?, transport_name, options.max_children, &describe_program(options, &name, kind));
    let load = if options.clients > 0 {
        Some(
            Load::start(options.clients, &listener.target()?, options.hold)
                .map_err(|e| format!("load generator: {e}"))?,
        )
    } else {
        None
    };
    let mut demo = Demo {
        supervisor,
        service: id,
        signals,
        view,
        load,
        load_done: false,
        phase: Phase::Running,
        reason: String::new(),
        busy_max: 0,
        _listener: listener,
    };
    let started = Instant::now();
    demo.serve(options.duration.map(|d| started + d), options.reload_after.map(|d| started + d))
}

impl Demo {
    /// The event loop, until every child is reaped after the shutdown.
    fn serve(&mut self, mut stop_at: Option<Instant>, mut reload_at: Option<Instant>) -> Result<(), String> {
        while !self.supervisor.is_done() {
            let now = Instant::now();
            if reload_at.is_some_and(|at| now >= at) {
                reload_at = None;
                self.reload("--reload-after");
            }
            if stop_at.is_some_and(|at| now >= at) {
                stop_at = None;
                self.stop("--duration is over");
            }
            if let Phase::Draining { until } = self.phase {
                if self.load_done || self.load.is_none() {
                    self.begin_shutdown("the load generator has finished");
                } else if now >= until {
                    self.begin_shutdown("the load generator's clients did not finish in time");
                }
            }
            if self.supervisor.is_done() {
                break;
            }
            let mut deadlines = vec![reload_at, stop_at, self.supervisor.next_deadline(), self.view.redraw_due()];
            if let Phase::Draining { until } = self.phase {
                deadlines.push(Some(until));
            }
            let timeout = match deadlines.into_iter().flatten().min() {
                None => PollTimeout::NONE,
                Some(at) => poll_timeout(at.saturating_duration_since(now)),
            };
            self.wait(timeout)?;
            self.events()?;
            let load = self.load.as_ref().map(|l| &**l.stats());
            if let Some(master) = self.supervisor.master(self.service) {
                self.view.redraw(master, load, self.busy_max);
            }
        }
        let stats = self.load.as_ref().map(|l| std::sync::Arc::clone(l.stats()));
        // Joined only once every client has finished; clients cut off by
        // the drain bound end with the process.
        if let Some(load) = self.load.take().filter(|_| self.load_done) {
            load.join();
        }
        // ECHILD: no child process at all, running or zombie. WNOWAIT: a
        // look that reaps nothing.
        let left = match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT) {
            Err(Errno::ECHILD) => "0",
            _ => "some",
        };
        let master = self.supervisor.master(self.service).ok_or("the service is gone")?;
        self.view.summary(master, stats.as_deref(), self.busy_max, left);
        Ok(())
    }

    /// Waits in poll(2) for the supervisor, the signals and the load
    /// generator, and handles the demo's own.
    fn wait(&mut self, timeout: PollTimeout) -> Result<(), String> {
        let load_fd = self.load.as_ref().filter(|_| !self.load_done).map(Load::done_fd);
        let mut fds = vec![
            PollFd::new(self.supervisor.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(fd) = load_fd {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        let ready: Vec<bool> = fds.iter().map(|fd| fd.any().unwrap_or(true)).collect();
        drop(fds);
        if ready[1] {
            self.signals()?;
        }
        if ready.get(2).copied().unwrap_or(false) {
            self.load_done = true;
        }
        Ok(())
    }

    /// Lets the supervisor do what is ready and due, and shows every event.
    fn events(&mut self) -> Result<(), String> {
        let Demo { supervisor, view, reason, busy_max, .. } = self;
        supervisor
            .poll_once(Some(Duration::ZERO), |event| show(view, reason, busy_max, event))
            .map_err(|e| e.to_string())?;
        Ok(())
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
            match i32::try_from(info.ssi_signo).ok().and_then(|n| Signal::try_from(n).ok()) {
                Some(Signal::SIGHUP) => self.reload("SIGHUP"),
                Some(Signal::SIGINT) => self.stop("SIGINT"),
                Some(Signal::SIGTERM) => self.stop("SIGTERM"),
                _ => {}
            }
        }
    }

    /// Reloads the service, and shows it at once.
    fn reload(&mut self, why: &str) {
        if self.supervisor.is_shutting_down() {
            return;
        }
        why.clone_into(&mut self.reason);
        self.supervisor.reload();
        let _ = self.events();
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
            Phase::ShuttingDown => {
                // The supervisor's second shutdown kills what is left.
                self.supervisor.shutdown();
                let _ = self.events();
            }
        }
    }

    /// The supervisor's shutdown: every child exits after its client.
    fn begin_shutdown(&mut self, why: &str) {
        why.clone_into(&mut self.reason);
        self.phase = Phase::ShuttingDown;
        self.supervisor.shutdown();
        let _ = self.events();
    }
}

/// One supervisor event, as the view shows it.
fn show(view: &mut View, reason: &str, busy_max: &mut usize, event: Event) {
    match event {
        Event::Spawned { pid, generation, children, .. } => view.spawned(pid, generation, children),
        Event::SpawnFailed { generation, error, .. } => view.spawn_failed(generation, &error.to_string()),
        Event::Status { update, sender, outcome, busy, .. } => {
            if outcome == Outcome::Taken {
                *busy_max = (*busy_max).max(busy);
            }
            view.update(&Received::Update { update, sender }, outcome);
        }
        Event::Malformed { malformed, .. } => {
            view.update(&Received::Malformed(malformed), Outcome::Malformed(malformed));
        }
        Event::Reaped { pid, exit, outcome, .. } => view.reaped(pid, exit, outcome),
        Event::Throttled { delay, .. } => view.throttled(delay),
        Event::Reloaded { epoch, retired, .. } => view.reload(epoch, &retired, reason),
        Event::ShutdownBegan { .. } => view.shutdown(reason),
        Event::Killed { pids, .. } => {
            view.error(&format!("killing {} children that did not exit: {pids:?}", pids.len()));
        }
        Event::ReloadFailed { error, .. } => {
            view.error(&format!("reload: cannot open a new status channel, keeping the old one: {error}"));
        }
        Event::ChannelFailed { error, .. } => view.error(&format!("status channel: {error}")),
        Event::ChildChannelFailed { pid, op, error, .. } => view.error(&format!("pid {pid}: {op:?} channel: {error}")),
        Event::SignalFailed { pid, signal, errno, .. } => view.error(&format!("kill {pid} {signal}: {errno}")),
        Event::ReapFailed { pid, errno, .. } => view.error(&format!("waitpid {pid}: {errno}")),
        // Shown in the live view only: the plain lines are a fixed set.
        other => view.note(&other.to_string()),
    }
}

/// A poll(2) timeout for `left`, rounded up to whole milliseconds so that
/// no wait ends before its deadline.
fn poll_timeout(left: Duration) -> PollTimeout {
    PollTimeout::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(PollTimeout::MAX)
}
