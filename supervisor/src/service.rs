//! One service: its sockets, its channel and transport, its command, its policy, and its children.
//!
//! A [`Service`] is what one master.cf line is to Postfix's master(8): a
//! command run as a pool of identical children that share the service's
//! listening sockets and status channel. [`ServiceBuilder`] describes it;
//! [`Supervisor::add`](crate::Supervisor::add) runs it.
//!
//! For each child the service calls the transport and the bookkeeping in
//! the one order that is right, so that no caller has to: the generation
//! from [`Master::begin_spawn`], the child's end from
//! [`Transport::child_end`], the standard environment installed with
//! [`ChildFds`] (fd 5, the listening sockets from fd 6, `GENERATION`, and
//! any fixed descriptors), the spawn, then [`Master::spawned`] and
//! [`Transport::register_child`] with the pid. After the reap it calls
//! [`Transport::forget_child`] (for a child of the current channel; a
//! reload's old channel is gone with all of its children's ends) and
//! [`Master::reaped`]. The service keeps that pairing itself, in its table
//! of children.
//!
//! # Errors
//!
//! [`BuildError`] from [`ServiceBuilder::build`]. Once running, nothing a
//! service meets stops it: failures are [`Event`]s.
//!
//! # See also
//!
//! Postfix `src/master/master_ent.c` (a service's definition),
//! `master_service.c`, `master_spawn.c`, `master_status.c`,
//! `master_avail.c`.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use master_proto::master::{Config, Exit, Master, Outcome, ReapOutcome};
use master_proto::{ChildEnd, ChildFds, Received, RecvError, Status, StatusSource, Transport};
use master_proto_transports::AnyTransport;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::event::{ChannelOp, Event, ExitWatch, SpawnReason, StartError, StopReason};
use crate::listen::{ListenAddr, ListenSpec, Listener};
use crate::policy::{CrashGuard, GuardState, Spare, SpareError};
use crate::postfix::PostfixDaemon;
use crate::snapshot::{ChildSnapshot, ChildState, ServiceCounters, Snapshot};
use crate::supervisor::{ChildExits, ServiceId, token};
use crate::sys;

/// The command closure: one [`Command`] per spawn.
type CommandFn = Box<dyn FnMut(&Spawning<'_>) -> Command + Send>;

/// What the command closure is told about the spawn it builds a command
/// for.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Spawning<'a> {
    /// The service's name.
    pub service: &'a str,
    /// The child's generation (the service sets `GENERATION` itself).
    pub generation: u32,
    /// How many listening sockets the child gets, from fd 6 (the service
    /// sets `MASTER_LISTEN_FDS` itself; a Postfix daemon is told with
    /// `-s`).
    pub listen_count: usize,
}

/// A service, built and with its channel open, ready for
/// [`Supervisor::add`](crate::Supervisor::add).
///
/// `T` is its transport: [`AnyTransport`] (chosen at run time) by default,
/// or any [`Transport`].
pub struct Service<T: Transport = AnyTransport> {
    pub(crate) state: ServiceState,
    pub(crate) channel: Channel<T>,
}

impl<T: Transport> std::fmt::Debug for Service<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.state.name)
            .field("transport", &self.channel.transport.name())
            .field("listen", &self.listen_addrs())
            .finish_non_exhaustive()
    }
}

impl Service<AnyTransport> {
    /// Starts describing a service called `name`, with the platform's
    /// best transport ([`AnyTransport::platform_default`]), Postfix's
    /// default [`Config`], no listening socket and no command yet.
    #[must_use]
    pub fn builder(name: impl Into<String>) -> ServiceBuilder<AnyTransport> {
        ServiceBuilder {
            name: name.into(),
            transport: AnyTransport::platform_default(),
            listen: Vec::new(),
            command: None,
            config: Config::default(),
            spare: None,
            guard: None,
            postfix: None,
            fixed: Vec::new(),
            last_generation: None,
        }
    }
}

impl<T: Transport> Service<T> {
    /// The service's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Where it listens, in the order its children get the sockets.
    #[must_use]
    pub fn listen_addrs(&self) -> Vec<ListenAddr> {
        self.state.listeners.iter().map(|l| l.addr().clone()).collect()
    }
}

/// Describes a [`Service`].
///
/// # Examples
///
/// ```no_run
/// use master_proto_supervisor::{Service, Supervisor};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let echo = Service::builder("echo")
///     .listen_tcp(([127, 0, 0, 1], 7777))
///     .process_limit(8)
///     .command(|_| std::process::Command::new("/usr/libexec/echo-child"))
///     .build()?;
/// let mut supervisor = Supervisor::new()?;
/// let id = supervisor.add(echo)?;
/// # let _ = id; Ok(()) }
/// ```
pub struct ServiceBuilder<T: Transport = AnyTransport> {
    name: String,
    transport: T,
    listen: Vec<ListenSpec>,
    command: Option<CommandFn>,
    config: Config,
    spare: Option<Spare>,
    guard: Option<CrashGuard>,
    postfix: Option<PostfixDaemon>,
    fixed: Vec<(RawFd, OwnedFd)>,
    last_generation: Option<u32>,
}

impl<T: Transport> std::fmt::Debug for ServiceBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("name", &self.name)
            .field("transport", &self.transport.name())
            .field("listen", &self.listen)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> ServiceBuilder<T> {
    /// Uses transport `transport` for the status channel (an
    /// [`AnyTransport`], or any other [`Transport`]).
    #[must_use]
    pub fn transport<U: Transport>(self, transport: U) -> ServiceBuilder<U> {
        let ServiceBuilder { name, listen, command, config, spare, guard, postfix, fixed, last_generation, .. } = self;
        ServiceBuilder { name, transport, listen, command, config, spare, guard, postfix, fixed, last_generation }
    }

    /// Adds a listening socket the caller made (`listen(2)` already
    /// called). Its children get it at the next fd from 6.
    #[must_use]
    pub fn listen(mut self, socket: impl Into<OwnedFd>) -> Self {
        self.listen.push(ListenSpec::Fd(socket.into()));
        self
    }

    /// Adds a TCP socket bound to `addr` when the service is built (port 0:
    /// the kernel picks one; see [`Service::listen_addrs`]).
    #[must_use]
    pub fn listen_tcp(mut self, addr: impl Into<SocketAddr>) -> Self {
        self.listen.push(ListenSpec::Tcp(addr.into()));
        self
    }

    /// Adds a Unix-domain socket bound at `path` when the service is built,
    /// and removed again when the service is dropped.
    #[must_use]
    pub fn listen_unix(mut self, path: impl Into<PathBuf>) -> Self {
        self.listen.push(ListenSpec::Unix(path.into()));
        self
    }

    /// The command of each child: `command` is called once per spawn and
    /// returns the [`Command`] to run (program, arguments, environment,
    /// working directory, standard I/O, process group: all the caller's).
    /// The service then installs the standard environment into it and
    /// spawns it. Piped standard I/O is closed in the master right after
    /// the spawn: the children's output is not the supervisor's to read.
    #[must_use]
    pub fn command(mut self, command: impl FnMut(&Spawning<'_>) -> Command + Send + 'static) -> Self {
        self.command = Some(Box::new(command));
        self.postfix = None;
        self
    }

    /// Runs a Postfix daemon, as master(8) does ([`PostfixDaemon`]): its
    /// command line, and the flow pipe at fds 3 and 4. The transport must
    /// speak Postfix's wire (`AnyTransport::postfix()`).
    #[must_use]
    pub fn postfix_daemon(mut self, daemon: PostfixDaemon) -> Self {
        self.postfix = Some(daemon);
        self.command = None;
        self
    }

    /// Gives every child `fd` at descriptor number `at` (a duplicate per
    /// child), for descriptors outside the status protocol.
    #[must_use]
    pub fn fixed_fd(mut self, at: RawFd, fd: impl Into<OwnedFd>) -> Self {
        self.fixed.push((at, fd.into()));
        self
    }

    /// The process limit and throttle ([`Config`]).
    #[must_use]
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The most children at once (`maxproc`); 0 means no limit.
    #[must_use]
    pub fn process_limit(mut self, limit: usize) -> Self {
        self.config.process_limit = limit;
        self
    }

    /// How long spawning stops after a child died before serving anyone
    /// (Postfix `service_throttle_time`); zero turns the throttle off.
    #[must_use]
    pub fn throttle_delay(mut self, delay: Duration) -> Self {
        self.config.throttle_delay = delay;
        self
    }

    /// Keeps a spare pool of idle children ([`Spare`]); off by default.
    #[must_use]
    pub fn spare(mut self, spare: Spare) -> Self {
        self.spare = Some(spare);
        self
    }

    /// Guards against crash loops ([`CrashGuard`]); off by default.
    #[must_use]
    pub fn crash_guard(mut self, guard: CrashGuard) -> Self {
        self.guard = Some(guard);
        self
    }

    /// Starts the generation counter at `last`: the first child gets
    /// `last + 1` ([`Master::with_generation`]).
    #[must_use]
    pub fn last_generation(mut self, last: u32) -> Self {
        self.last_generation = Some(last);
        self
    }

    /// Binds the sockets, opens the status channel and checks the policy.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoCommand`] without a command,
    /// [`BuildError::Bind`] or [`BuildError::NotListening`] for a socket,
    /// [`BuildError::NotPostfixWire`] for a Postfix daemon on another
    /// transport, [`BuildError::FlowPipe`], [`BuildError::Spare`],
    /// [`BuildError::Open`] when the transport cannot open a channel.
    pub fn build(self) -> Result<Service<T>, BuildError> {
        let ServiceBuilder {
            name,
            transport,
            listen,
            command,
            config,
            spare,
            guard,
            postfix,
            mut fixed,
            last_generation,
        } = self;
        if let Some(spare) = spare {
            spare.check(config.process_limit).map_err(BuildError::Spare)?;
        }
        let listeners = listen.into_iter().map(Listener::open).collect::<Result<Vec<_>, _>>()?;
        let command: CommandFn = match (command, postfix) {
            (Some(command), _) => command,
            (None, Some(mut daemon)) => {
                if !transport.caps().postfix_wire {
                    return Err(BuildError::NotPostfixWire { transport: transport.name() });
                }
                let flow = daemon.flow_pipe_or_new().map_err(BuildError::FlowPipe)?;
                fixed.extend(flow.fixed_fds().map_err(BuildError::FlowPipe)?);
                Box::new(move |spawning: &Spawning<'_>| daemon.command(spawning.listen_count))
            }
            (None, None) => return Err(BuildError::NoCommand),
        };
        let source = transport.open().map_err(BuildError::Open)?;
        let master = match last_generation {
            Some(last) => Master::with_generation(config, last),
            None => Master::new(config),
        };
        Ok(Service {
            state: ServiceState {
                id: ServiceId::UNSET,
                name,
                master,
                listeners,
                command,
                fixed: fixed.into_iter().map(|(at, fd)| (at, Arc::new(fd))).collect(),
                children: HashMap::new(),
                spare,
                guard: guard.map(GuardState::new),
                listening: false,
                channel_broken: false,
                closed: false,
                limit_reported: false,
                throttle_reported: false,
                busy: 0,
                poll_at: None,
                spawn_seq: 0,
                counters: ServiceCounters::default(),
            },
            channel: Channel { transport, source: Some(source), staged: None },
        })
    }
}

/// Why a service could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Neither [`ServiceBuilder::command`] nor
    /// [`ServiceBuilder::postfix_daemon`] was given.
    #[error("the service has no command")]
    NoCommand,
    /// A socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address or path.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A socket the caller gave is not a listening socket.
    #[error("the descriptor given is not a listening socket: {0}")]
    NotListening(#[source] Errno),
    /// A Postfix daemon needs Postfix's wire, which this transport does
    /// not speak.
    #[error("a Postfix daemon speaks Postfix's wire, which the {transport} transport does not")]
    NotPostfixWire {
        /// The transport's short name.
        transport: &'static str,
    },
    /// The flow pipe could not be made.
    #[error("creating the flow pipe: {0}")]
    FlowPipe(#[source] io::Error),
    /// The spare pool cannot be kept.
    #[error(transparent)]
    Spare(SpareError),
    /// The transport could not open the status channel.
    #[error("opening the status channel: {0}")]
    Open(#[source] io::Error),
}

/// A transport and its open channel.
pub(crate) struct Channel<T: Transport> {
    transport: T,
    source: Option<T::Source>,
    /// A reload's new channel, opened before the old one goes.
    staged: Option<T::Source>,
}

/// What the supervisor does with a service's channel, whatever its
/// transport: the one place that is generic over it.
/// The most status items one service's channel hands over per wake-up.
const RECEIVE_BUDGET: usize = 1024;

pub(crate) trait ChannelOps: Send {
    fn name(&self) -> &'static str;
    fn fd(&self) -> Option<BorrowedFd<'_>>;
    fn child_end(&mut self, generation: u32) -> Result<ChildEnd, StartError>;
    fn register(&mut self, generation: u32, pid: i32) -> io::Result<()>;
    fn forget(&mut self, pid: i32) -> io::Result<()>;
    fn drain(&mut self, f: &mut dyn FnMut(Received)) -> Result<usize, RecvError>;
    /// Opens the next channel beside the current one.
    fn stage(&mut self) -> io::Result<()>;
    /// Replaces the current channel with the staged one, closing it.
    fn commit(&mut self);
    /// Closes the channel.
    fn close(&mut self);
}

impl<T> ChannelOps for Channel<T>
where
    T: Transport + Send + 'static,
    T::Source: Send,
{
    fn name(&self) -> &'static str {
        self.transport.name()
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.source.as_ref().map(AsFd::as_fd)
    }

    fn child_end(&mut self, generation: u32) -> Result<ChildEnd, StartError> {
        let source = self.source.as_mut().ok_or(StartError::ChannelClosed)?;
        self.transport.child_end(source, generation).map_err(StartError::ChildEnd)
    }

    fn register(&mut self, generation: u32, pid: i32) -> io::Result<()> {
        match self.source.as_mut() {
            Some(source) => self.transport.register_child(source, generation, pid),
            None => Ok(()),
        }
    }

    fn forget(&mut self, pid: i32) -> io::Result<()> {
        match self.source.as_mut() {
            Some(source) => self.transport.forget_child(source, pid),
            None => Ok(()),
        }
    }

    /// At most [`RECEIVE_BUDGET`] items: a child flooding a shared channel
    /// (a pipe or datagram socket, whose source reads until the channel is
    /// empty) must not keep the supervisor from its other work. The
    /// supervisor's epoll is level-triggered, so a channel left readable is
    /// reported again at its next wait.
    fn drain(&mut self, f: &mut dyn FnMut(Received)) -> Result<usize, RecvError> {
        let Some(source) = self.source.as_mut() else { return Ok(0) };
        let mut n = 0;
        while n < RECEIVE_BUDGET {
            let Some(item) = source.try_recv()? else { break };
            f(item);
            n += 1;
        }
        Ok(n)
    }

    fn stage(&mut self) -> io::Result<()> {
        self.staged = Some(self.transport.open()?);
        Ok(())
    }

    fn commit(&mut self) {
        if let Some(staged) = self.staged.take() {
            // Dropping the old source closes the master's end: the old
            // children see the master gone and exit after their client.
            self.source = Some(staged);
        }
    }

    fn close(&mut self) {
        self.source = None;
        self.staged = None;
    }
}

/// One child process of a service.
#[derive(Debug)]
struct ChildRec {
    child: Child,
    /// Its pidfd, registered in the supervisor's epoll set; `None` when it
    /// is watched by polling.
    pidfd: Option<OwnedFd>,
    /// The bookkeeping's epoch when it was spawned: the channel it was
    /// registered with.
    epoch: u64,
    /// Whether `register_child` succeeded.
    registered: bool,
    /// Whether (and why) the supervisor signalled it.
    stopped: Option<StopReason>,
    /// Spawn order, to find the youngest.
    seq: u64,
}

impl ChildRec {
    fn watch(&self) -> ExitWatch {
        if self.pidfd.is_some() { ExitWatch::Pidfd } else { ExitWatch::Poll }
    }
}

/// The supervisor's shared state a service works with.
pub(crate) struct Ctx<'a> {
    pub(crate) epoll: &'a Epoll,
    pub(crate) events: &'a mut VecDeque<Event>,
    pub(crate) exits: &'a mut ExitsState,
}

/// How child exits are watched, and whether pidfds turned out to be
/// unavailable.
#[derive(Debug)]
pub(crate) struct ExitsState {
    pub(crate) mode: ChildExits,
    pub(crate) pidfd_unsupported: bool,
}

impl ExitsState {
    fn interval(&self) -> Duration {
        match self.mode {
            ChildExits::Poll(interval) => interval,
            ChildExits::Pidfd => crate::supervisor::FALLBACK_INTERVAL,
        }
    }
}

/// A service's state, apart from its channel.
pub(crate) struct ServiceState {
    pub(crate) id: ServiceId,
    pub(crate) name: String,
    pub(crate) master: Master,
    listeners: Vec<Listener>,
    command: CommandFn,
    fixed: Vec<(RawFd, Arc<OwnedFd>)>,
    children: HashMap<i32, ChildRec>,
    spare: Option<Spare>,
    guard: Option<GuardState>,
    /// Whether the listening sockets are in the epoll set.
    listening: bool,
    /// The channel failed and is out of the epoll set until a reload.
    channel_broken: bool,
    /// Shutting down: the channel is closed and nothing is spawned.
    closed: bool,
    limit_reported: bool,
    throttle_reported: bool,
    /// Children `TAKEN` and not retired.
    busy: usize,
    /// When the children watched by polling are looked at next.
    poll_at: Option<Instant>,
    spawn_seq: u64,
    counters: ServiceCounters,
}

/// A service as the supervisor holds it.
pub(crate) struct Entry {
    pub(crate) state: ServiceState,
    pub(crate) channel: Box<dyn ChannelOps>,
}

impl Entry {
    pub(crate) fn new<T>(service: Service<T>, id: ServiceId) -> Entry
    where
        T: Transport + Send + 'static,
        T::Source: Send,
    {
        let Service { mut state, channel } = service;
        state.id = id;
        Entry { state, channel: Box::new(channel) }
    }

    /// Puts the channel in the epoll set.
    pub(crate) fn register(&mut self, epoll: &Epoll) -> nix::Result<()> {
        if let Some(fd) = self.channel.fd() {
            epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token::source(self.state.id)))?;
        }
        Ok(())
    }

    /// Takes the service out of the epoll set (for a failed add).
    pub(crate) fn deregister(&mut self, epoll: &Epoll) {
        if let Some(fd) = self.channel.fd() {
            let _ = epoll.delete(fd);
        }
    }

    pub(crate) fn total(&self) -> usize {
        self.state.children.len()
    }

    pub(crate) fn listen_addrs(&self) -> Vec<ListenAddr> {
        self.state.listeners.iter().map(|l| l.addr().clone()).collect()
    }

    /// Whether the service wants another child for a waiting client now.
    fn wants_listen(&self, now: Instant) -> bool {
        let s = &self.state;
        !s.closed
            && !s.listeners.is_empty()
            && !s.guard.as_ref().is_some_and(|g| g.suspended(now))
            && s.master.should_listen(now)
    }

    /// A listening socket is readable: spawn a child for the client, if
    /// the service still wants one.
    pub(crate) fn on_listen(&mut self, ctx: &mut Ctx<'_>, now: Instant) {
        if self.wants_listen(now) {
            self.spawn(ctx, now, SpawnReason::Demand);
        }
    }

    /// Spawns one child; false if none was.
    fn spawn(&mut self, ctx: &mut Ctx<'_>, now: Instant, reason: SpawnReason) -> bool {
        let Ok(generation) = self.state.master.begin_spawn(now) else { return false };
        let child = match self.start(generation) {
            Ok(child) => child,
            Err(error) => {
                let throttled = self.state.master.counters().throttled;
                self.state.master.spawn_failed(generation, now).expect("the generation was just handed out");
                ctx.events.push_back(Event::SpawnFailed { service: self.state.id, generation, error });
                if self.state.master.counters().throttled > throttled {
                    self.throttled(ctx, now);
                }
                return false;
            }
        };
        let (mut child, pid) = child;
        let s = &mut self.state;
        // A pid we have not reaped cannot be in the table twice, and the
        // generation was just handed out: a refusal is our own bug.
        s.master.spawned(pid, generation).expect("a fresh child registers with the bookkeeping");
        let registered = match self.channel.register(generation, pid) {
            Ok(()) => true,
            Err(error) => {
                s.counters.channel_errors += 1;
                ctx.events.push_back(Event::ChildChannelFailed { service: s.id, pid, op: ChannelOp::Register, error });
                false
            }
        };
        let pidfd = watch_exit(ctx, s.id, pid);
        if pidfd.is_none() && s.poll_at.is_none() {
            s.poll_at = Some(now + ctx.exits.interval());
        }
        let _ = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        s.spawn_seq += 1;
        let rec = ChildRec { child, pidfd, epoch: s.master.epoch(), registered, stopped: None, seq: s.spawn_seq };
        let watch = rec.watch();
        s.children.insert(pid, rec);
        match reason {
            SpawnReason::Demand => s.counters.spawned_on_demand += 1,
            SpawnReason::Spare => s.counters.spawned_spare += 1,
        }
        ctx.events.push_back(Event::Spawned {
            service: s.id,
            pid,
            generation,
            children: s.master.total(),
            reason,
            watch,
        });
        true
    }

    /// Builds and spawns the command of one child.
    fn start(&mut self, generation: u32) -> Result<(Child, i32), StartError> {
        let end = self.channel.child_end(generation)?;
        let s = &mut self.state;
        let spawning = Spawning { service: &s.name, generation, listen_count: s.listeners.len() };
        let mut cmd = (s.command)(&spawning);
        let mut fds = ChildFds::new(end, generation);
        for listener in &s.listeners {
            fds = fds.listen(listener.as_fd().try_clone_to_owned().map_err(StartError::Dup)?);
        }
        for (at, fd) in &s.fixed {
            fds = fds.fixed(*at, fd.as_fd().try_clone_to_owned().map_err(StartError::Dup)?);
        }
        fds.install(&mut cmd).map_err(StartError::Install)?;
        let mut child = cmd.spawn().map_err(StartError::Exec)?;
        match i32::try_from(child.id()) {
            Ok(pid) => Ok((child, pid)),
            Err(_) => {
                let id = child.id();
                let _ = child.kill();
                let _ = child.wait();
                Err(StartError::Pid(id))
            }
        }
    }

    /// The status channel is readable: judges everything pending.
    pub(crate) fn receive(&mut self, ctx: &mut Ctx<'_>) {
        if self.state.channel_broken {
            return;
        }
        let s = &mut self.state;
        let (id, master, busy, events) = (s.id, &mut s.master, &mut s.busy, &mut *ctx.events);
        let result = self.channel.drain(&mut |item| {
            let outcome = master.receive(&item);
            match outcome {
                Outcome::Taken => *busy += 1,
                Outcome::Avail => *busy = busy.saturating_sub(1),
                _ => {}
            }
            events.push_back(match item {
                Received::Update { update, sender } => {
                    Event::Status { service: id, update, sender, outcome, available: master.available(), busy: *busy }
                }
                Received::Malformed(malformed) => Event::Malformed { service: id, malformed },
            });
        });
        if let Err(error) = result {
            // Not read again until a reload: a failed channel would say the
            // same at once, for ever.
            s.channel_broken = true;
            s.counters.channel_errors += 1;
            if let Some(fd) = self.channel.fd() {
                let _ = ctx.epoll.delete(fd);
            }
            ctx.events.push_back(Event::ChannelFailed { service: s.id, error });
        }
    }

    /// A child's pidfd is readable, or its poll is due: reaps it if it has
    /// exited.
    pub(crate) fn reap(&mut self, ctx: &mut Ctx<'_>, pid: i32, now: Instant) {
        let s = &mut self.state;
        let Some(rec) = s.children.get_mut(&pid) else { return };
        let exit = match rec.child.try_wait() {
            Ok(Some(status)) => Some(exit_of(status)),
            Ok(None) => return,
            Err(e) if e.raw_os_error() == Some(Errno::ECHILD as i32) => None,
            // WNOHANG does not wait, so nothing else is expected; look
            // again at the next readiness or poll.
            Err(_) => return,
        };
        let rec = s.children.remove(&pid).expect("looked up above");
        if let Some(fd) = &rec.pidfd {
            let _ = ctx.epoll.delete(fd);
        }
        if rec.registered
            && rec.epoch == s.master.epoch()
            && let Err(error) = self.channel.forget(pid)
        {
            s.counters.channel_errors += 1;
            ctx.events.push_back(Event::ChildChannelFailed { service: s.id, pid, op: ChannelOp::Forget, error });
        }
        // A child we stopped ourselves, or whose status is lost, does not
        // count as a failure of the service.
        let reported = match exit {
            Some(exit) if rec.stopped.is_none() => exit,
            _ => Exit::Code(0),
        };
        let throttled = s.master.counters().throttled;
        let outcome = s.master.reaped(pid, reported, now);
        if let ReapOutcome::Reaped { child, .. } = outcome
            && child.status == Status::TAKEN
            && !child.retired
        {
            s.busy = s.busy.saturating_sub(1);
        }
        match exit {
            Some(exit) => {
                ctx.events.push_back(Event::Reaped { service: s.id, pid, exit, outcome, stopped: rec.stopped })
            }
            None => {
                s.counters.reap_failures += 1;
                ctx.events.push_back(Event::ReapFailed { service: s.id, pid, errno: Errno::ECHILD });
            }
        }
        if s.master.counters().throttled > throttled {
            self.throttled(ctx, now);
        }
        let s = &mut self.state;
        if let (Some(exit), None, Some(guard)) = (exit, rec.stopped, s.guard.as_mut())
            && !exit.is_normal()
            && let Some(trip) = guard.failure(now)
        {
            s.counters.crash_loops += 1;
            ctx.events.push_back(Event::CrashLoop {
                service: s.id,
                failures: trip.failures,
                level: trip.level,
                backoff: trip.backoff,
                until: trip.until,
            });
        }
    }

    /// Reports a throttle that just began.
    fn throttled(&mut self, ctx: &mut Ctx<'_>, now: Instant) {
        let s = &mut self.state;
        if let Some(until) = s.master.throttled_until(now) {
            s.throttle_reported = true;
            ctx.events.push_back(Event::Throttled { service: s.id, delay: s.master.config().throttle_delay, until });
        }
    }

    /// Reaps the children watched by polling, if their poll is due.
    pub(crate) fn poll_exits(&mut self, ctx: &mut Ctx<'_>, now: Instant) {
        if self.state.poll_at.is_none_or(|at| now < at) {
            return;
        }
        let polled: Vec<i32> = self.state.children.iter().filter(|(_, r)| r.pidfd.is_none()).map(|(&p, _)| p).collect();
        for pid in polled {
            self.reap(ctx, pid, now);
        }
        let any = self.state.children.values().any(|r| r.pidfd.is_none());
        self.state.poll_at = any.then(|| now + ctx.exits.interval());
    }

    /// Opens a new channel and retires the children of the old one.
    pub(crate) fn reload(&mut self, ctx: &mut Ctx<'_>) -> Result<u64, crate::ReloadError> {
        if self.state.closed {
            return Err(crate::ReloadError::ShuttingDown);
        }
        if let Err(error) = self.channel.stage() {
            self.state.counters.reload_failures += 1;
            let kind = error.kind();
            ctx.events.push_back(Event::ReloadFailed { service: self.state.id, error });
            return Err(crate::ReloadError::Open(kind));
        }
        // What the old children said before the reload still counts.
        self.receive(ctx);
        if let Some(fd) = self.channel.fd()
            && !self.state.channel_broken
        {
            let _ = ctx.epoll.delete(fd);
        }
        self.channel.commit();
        let s = &mut self.state;
        s.channel_broken = false;
        if let Some(fd) = self.channel.fd()
            && let Err(errno) = ctx.epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token::source(s.id)))
        {
            s.channel_broken = true;
            s.counters.channel_errors += 1;
            ctx.events.push_back(Event::ChannelFailed { service: s.id, error: RecvError::Io(errno) });
        }
        let retired = s.master.reload();
        s.busy = 0;
        let epoch = s.master.epoch();
        ctx.events.push_back(Event::Reloaded { service: s.id, epoch, retired });
        Ok(epoch)
    }

    /// The shutdown: closes the channel and stops listening and spawning.
    pub(crate) fn close(&mut self, ctx: &mut Ctx<'_>) {
        if self.state.closed {
            return;
        }
        self.receive(ctx);
        if let Some(fd) = self.channel.fd()
            && !self.state.channel_broken
        {
            let _ = ctx.epoll.delete(fd);
        }
        self.channel.close();
        self.state.closed = true;
        self.sync_listen(ctx, Instant::now());
    }

    /// Sends every child `SIGKILL` (the end of the grace period).
    pub(crate) fn kill_all(&mut self, ctx: &mut Ctx<'_>) {
        let s = &mut self.state;
        let mut pids: Vec<i32> = s.children.keys().copied().collect();
        if pids.is_empty() {
            return;
        }
        pids.sort_unstable();
        for &pid in &pids {
            // Not reaped yet, so the pid still names our child.
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) => {
                    s.counters.killed += 1;
                    if let Some(rec) = s.children.get_mut(&pid) {
                        rec.stopped = Some(StopReason::Shutdown);
                    }
                }
                Err(errno) => {
                    ctx.events.push_back(Event::SignalFailed { service: s.id, pid, signal: Signal::SIGKILL, errno })
                }
            }
        }
        ctx.events.push_back(Event::Killed { service: s.id, pids });
    }

    /// Everything that depends on time and on the table rather than on a
    /// descriptor: the ends of throttles and back-offs, the process limit,
    /// the spare pool, and whether to watch the listening sockets.
    pub(crate) fn tick(&mut self, ctx: &mut Ctx<'_>, now: Instant) {
        let s = &mut self.state;
        if s.throttle_reported && s.master.throttled_until(now).is_none() {
            s.throttle_reported = false;
            ctx.events.push_back(Event::ThrottleEnded { service: s.id });
        }
        if s.guard.as_mut().is_some_and(|g| g.take_ended(now)) {
            ctx.events.push_back(Event::CrashLoopEnded { service: s.id });
        }
        if !s.closed {
            self.keep_spares(ctx, now);
            let s = &mut self.state;
            let limit = s.master.config().process_limit;
            let at_limit = limit != 0 && s.master.available() == 0 && s.master.total() >= limit;
            if at_limit && !s.limit_reported {
                s.counters.limit_reached += 1;
                ctx.events.push_back(Event::LimitReached { service: s.id, limit });
            }
            s.limit_reported = at_limit;
        }
        self.sync_listen(ctx, now);
    }

    /// Available children the supervisor has not signalled.
    fn idle(&self) -> usize {
        let s = &self.state;
        let stopping = s
            .children
            .iter()
            .filter(|(pid, r)| r.stopped.is_some() && s.master.child(**pid).is_some_and(|c| c.is_available()))
            .count();
        s.master.available().saturating_sub(stopping)
    }

    /// Spawns spares up to `min_idle`, stops idle children beyond
    /// `max_idle`.
    fn keep_spares(&mut self, ctx: &mut Ctx<'_>, now: Instant) {
        let Some(spare) = self.state.spare else { return };
        if self.state.channel_broken || self.state.guard.as_ref().is_some_and(|g| g.suspended(now)) {
            return;
        }
        let mut idle = self.idle();
        while idle < spare.min_idle && self.spawn(ctx, now, SpawnReason::Spare) {
            idle += 1;
        }
        if idle <= spare.max_idle {
            return;
        }
        let s = &mut self.state;
        let mut candidates: Vec<(u64, i32)> = s
            .children
            .iter()
            .filter(|(pid, r)| r.stopped.is_none() && s.master.child(**pid).is_some_and(|c| c.is_available()))
            .map(|(&pid, r)| (r.seq, pid))
            .collect();
        // The youngest first: the older ones have shown they work.
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        for (_, pid) in candidates.into_iter().take(idle - spare.max_idle) {
            match kill(Pid::from_raw(pid), spare.stop_signal) {
                Ok(()) => {
                    s.counters.spare_stopped += 1;
                    if let Some(rec) = s.children.get_mut(&pid) {
                        rec.stopped = Some(StopReason::Spare);
                    }
                    ctx.events.push_back(Event::SpareStopped { service: s.id, pid, signal: spare.stop_signal });
                }
                Err(errno) => {
                    ctx.events.push_back(Event::SignalFailed { service: s.id, pid, signal: spare.stop_signal, errno })
                }
            }
        }
    }

    /// Puts the listening sockets in the epoll set, or takes them out, as
    /// the service wants a child for a waiting client or not.
    fn sync_listen(&mut self, ctx: &mut Ctx<'_>, now: Instant) {
        let want = self.wants_listen(now);
        let s = &mut self.state;
        if want == s.listening {
            return;
        }
        for (index, listener) in s.listeners.iter().enumerate() {
            if want {
                let event = EpollEvent::new(EpollFlags::EPOLLIN, token::listen(s.id, index));
                if let Err(errno) = ctx.epoll.add(listener, event) {
                    // Out of memory for the epoll set: try again next time.
                    let _ = errno;
                    for earlier in &s.listeners[..index] {
                        let _ = ctx.epoll.delete(earlier);
                    }
                    return;
                }
            } else {
                let _ = ctx.epoll.delete(listener);
            }
        }
        s.listening = want;
    }

    /// The next instant at which something here changes with time alone.
    pub(crate) fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let s = &self.state;
        [s.master.throttled_until(now), s.guard.as_ref().and_then(|g| g.suspended_until(now)), s.poll_at]
            .into_iter()
            .flatten()
            .min()
    }

    pub(crate) fn snapshot(&self, now: Instant) -> Snapshot {
        let s = &self.state;
        let mut children: Vec<ChildSnapshot> = s
            .master
            .children()
            .map(|c| {
                let rec = s.children.get(&c.pid);
                let state = if rec.is_some_and(|r| r.stopped.is_some()) {
                    ChildState::Stopping
                } else if c.retired {
                    ChildState::Retired
                } else if c.status == Status::TAKEN {
                    ChildState::Busy
                } else {
                    ChildState::Idle
                };
                ChildSnapshot {
                    pid: c.pid,
                    generation: c.generation,
                    state,
                    use_count: c.use_count,
                    watch: rec.map_or(ExitWatch::Poll, ChildRec::watch),
                }
            })
            .collect();
        children.sort_unstable_by_key(|c| c.pid);
        let count = |state| children.iter().filter(|c| c.state == state).count();
        Snapshot {
            name: s.name.clone(),
            transport: self.channel.name(),
            listen: self.listen_addrs(),
            process_limit: s.master.config().process_limit,
            epoch: s.master.epoch(),
            idle: count(ChildState::Idle),
            busy: count(ChildState::Busy),
            retired: count(ChildState::Retired),
            stopping: count(ChildState::Stopping),
            listening: s.listening,
            throttled_until: s.master.throttled_until(now),
            suspended_until: s.guard.as_ref().and_then(|g| g.suspended_until(now)),
            counters: *s.master.counters(),
            service_counters: s.counters,
            children,
        }
    }
}

/// Opens a pidfd for a new child and puts it in the epoll set; `None`
/// when the child is to be watched by polling (forced, or pidfds are not
/// to be had).
fn watch_exit(ctx: &mut Ctx<'_>, service: ServiceId, pid: i32) -> Option<OwnedFd> {
    if ctx.exits.mode != ChildExits::Pidfd || ctx.exits.pidfd_unsupported {
        return None;
    }
    match sys::pidfd_open(pid) {
        Ok(fd) => {
            let event = EpollEvent::new(EpollFlags::EPOLLIN, token::child(service, pid));
            ctx.epoll.add(&fd, event).ok().map(|()| fd)
        }
        Err(errno) => {
            if sys::pidfd_unsupported(errno) {
                ctx.exits.pidfd_unsupported = true;
            }
            None
        }
    }
}

/// How `waitpid` says a child ended.
fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        // Neither exited nor killed: try_wait reports only those two.
        (None, None) => Exit::Code(status.into_raw()),
    }
}
