//! The supervisor: several services, one epoll set, one loop; and the thread-safe [`Handle`] that asks it to reload or shut down.
//!
//! Everything the supervisor waits for is in one epoll set of its own:
//! each service's status channel, each service's listening sockets (only
//! while the service wants another child), a pidfd per child, and the
//! eventfd behind [`Handle`]. That set is one descriptor
//! ([`Supervisor::as_fd`]), readable whenever something is ready, so the
//! supervisor fits any event loop:
//!
//! - wait until [`as_fd`](Supervisor::as_fd) is readable or
//!   [`next_deadline`](Supervisor::next_deadline) has passed, then call
//!   [`poll_once`](Supervisor::poll_once) with a zero timeout; drain (call
//!   it again) until it reports nothing ready before waiting again if the
//!   loop waits edge-triggered (tokio, mio);
//! - or let [`run`](Supervisor::run) block until the shutdown is complete;
//! - or, with the `tokio` feature, await `tokio::drive`.
//!
//! Signals stay the application's: it calls [`Handle::reload`] and
//! [`Handle::shutdown`] (or [`Supervisor::reload`] and
//! [`Supervisor::shutdown`]) when it decides to.
//!
//! # Shutdown
//!
//! [`shutdown`](Supervisor::shutdown) closes every service's channel (each
//! child sees the master gone and exits after its client) and stops
//! listening and spawning. Children still alive after the grace period
//! ([`SupervisorBuilder::shutdown_grace`], 10 s by default) are sent
//! `SIGKILL`; a second `shutdown` sends it at once. Every child is reaped
//! either way; then [`is_done`](Supervisor::is_done) is true.
//!
//! Dropping a supervisor before its shutdown is complete closes every
//! channel too (so its children exit after their client) but reaps
//! nothing: the children it leaves are the process's, and stay zombies
//! until it exits. Shut down first.
//!
//! # Errors
//!
//! [`NewError`] when the epoll set or the eventfd cannot be made,
//! [`AddError`], [`PollError`] when `epoll_wait` fails,
//! [`ReloadError`]. Everything that goes wrong with a service or a child is
//! an [`Event`] instead.
//!
//! # See also
//!
//! Postfix `src/master/master.c` (the event loop), `master_sig.c` (what
//! this crate leaves to the application), `master_service.c`.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use master_proto::Transport;
use master_proto::master::Master;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::event::Event;
use crate::listen::ListenAddr;
use crate::service::{Ctx, Entry, ExitsState, Service};
use crate::snapshot::Snapshot;

/// How often children are polled when their exits cannot be watched by
/// pidfd and no interval was given ([`ChildExits::Poll`]).
pub const FALLBACK_INTERVAL: Duration = Duration::from_millis(50);

/// The default grace period of a shutdown.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// How many readiness events one `epoll_wait` takes in.
const BATCH: usize = 64;

/// Names one service of a [`Supervisor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(pub(crate) u32);

impl ServiceId {
    /// The id of a service not added yet.
    pub(crate) const UNSET: ServiceId = ServiceId(u32::MAX);

    /// Its number: 0 for the first service added, then 1, …
    #[must_use]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// How the supervisor learns that a child exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChildExits {
    /// A pidfd per child (`pidfd_open`, Linux 5.3+), in the epoll set:
    /// no signal, no polling, no pid-reuse race. Where `pidfd_open` fails
    /// with `ENOSYS` or `EPERM` (an old kernel, a seccomp filter), the
    /// supervisor falls back to [`Poll`](ChildExits::Poll) every
    /// [`FALLBACK_INTERVAL`], for that child and every later one.
    Pidfd,
    /// `waitpid(pid, WNOHANG)` of each of its own children, this often.
    /// It touches no process it did not spawn, and learns of an exit at
    /// most one interval late.
    Poll(Duration),
}

/// Describes a [`Supervisor`].
#[derive(Clone, Copy, Debug)]
pub struct SupervisorBuilder {
    grace: Duration,
    exits: ChildExits,
}

impl SupervisorBuilder {
    /// How long children get to exit after the shutdown closed their
    /// channel, before `SIGKILL` ([`DEFAULT_GRACE`] by default).
    #[must_use]
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How child exits are learned ([`ChildExits::Pidfd`] by default).
    #[must_use]
    pub fn child_exits(mut self, exits: ChildExits) -> Self {
        self.exits = exits;
        self
    }

    /// Makes the supervisor: its epoll set and its eventfd.
    ///
    /// # Errors
    ///
    /// [`NewError`] naming the call that failed.
    pub fn build(self) -> Result<Supervisor, NewError> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(NewError::Epoll)?;
        let wake = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).map_err(NewError::EventFd)?;
        epoll.add(&wake, EpollEvent::new(EpollFlags::EPOLLIN, token::WAKE)).map_err(NewError::Epoll)?;
        Ok(Supervisor {
            epoll,
            shared: Arc::new(Shared { wake, reload: AtomicBool::new(false), shutdown: AtomicBool::new(false) }),
            entries: Vec::new(),
            events: VecDeque::new(),
            exits: ExitsState { mode: self.exits, pidfd_unsupported: false },
            grace: self.grace,
            phase: Phase::Running,
        })
    }
}

/// Where the supervisor is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// Channels closed; children get until `kill_at`.
    ShuttingDown {
        kill_at: Instant,
    },
    /// Stragglers were sent `SIGKILL`; reaping them.
    Killing,
    /// Every child reaped.
    Done,
}

/// What the [`Handle`]s share with the supervisor.
#[derive(Debug)]
struct Shared {
    wake: EventFd,
    reload: AtomicBool,
    shutdown: AtomicBool,
}

/// Asks a [`Supervisor`] to reload or to shut down, from any thread
/// (a signal-handling thread, say).
///
/// Each call sets a flag and writes the supervisor's eventfd, so the
/// supervisor's descriptor becomes readable and its next
/// [`poll_once`](Supervisor::poll_once) acts on it. Both calls are
/// async-signal-safe (an atomic store and a `write(2)`): they may be made
/// from a signal handler too.
#[derive(Clone, Debug)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// Asks for a reload of every service ([`Supervisor::reload`]).
    pub fn reload(&self) {
        self.shared.reload.store(true, Ordering::Release);
        let _ = self.shared.wake.write(1);
    }

    /// Asks for the shutdown ([`Supervisor::shutdown`]); asked again
    /// during the shutdown, the children left are killed at once.
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::Release);
        let _ = self.shared.wake.write(1);
    }
}

/// The prefork master: several services, one loop.
///
/// # Examples
///
/// ```no_run
/// use master_proto_supervisor::{Service, Supervisor};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut supervisor = Supervisor::new()?;
/// supervisor.add(
///     Service::builder("echo")
///         .listen_tcp(([127, 0, 0, 1], 0))
///         .command(|_| std::process::Command::new("/usr/libexec/echo-child"))
///         .build()?,
/// )?;
/// let handle = supervisor.handle(); // for the signal-handling thread
/// # let _ = handle;
/// supervisor.run(|event| eprintln!("{event}"))?; // until handle.shutdown()
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Supervisor {
    epoll: Epoll,
    shared: Arc<Shared>,
    entries: Vec<Entry>,
    events: VecDeque<Event>,
    exits: ExitsState,
    grace: Duration,
    phase: Phase,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("name", &self.state.name).finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor with no service, the default grace period and pidfds.
    ///
    /// # Errors
    ///
    /// As [`SupervisorBuilder::build`].
    pub fn new() -> Result<Supervisor, NewError> {
        Supervisor::builder().build()
    }

    /// Describes a supervisor.
    #[must_use]
    pub fn builder() -> SupervisorBuilder {
        SupervisorBuilder { grace: DEFAULT_GRACE, exits: ChildExits::Pidfd }
    }

    /// Adds a service. It spawns nothing until a client comes (or its
    /// spare pool asks for children, at the next
    /// [`poll_once`](Self::poll_once)). Like [`reload`](Self::reload) and
    /// [`shutdown`](Self::shutdown), it makes [`as_fd`](Self::as_fd)
    /// readable, so that a loop waiting on it calls `poll_once` next.
    ///
    /// # Errors
    ///
    /// [`AddError::ShuttingDown`] once the shutdown has begun,
    /// [`AddError::Register`] when its channel cannot join the epoll set.
    pub fn add<T>(&mut self, service: Service<T>) -> Result<ServiceId, AddError>
    where
        T: Transport + Send + 'static,
        T::Source: Send,
    {
        if self.phase != Phase::Running {
            return Err(AddError::ShuttingDown);
        }
        let id = ServiceId(u32::try_from(self.entries.len()).map_err(|_| AddError::TooMany)?);
        if id.0 >= token::MAX_SERVICES {
            return Err(AddError::TooMany);
        }
        let mut entry = Entry::new(service, id);
        if let Err(errno) = entry.register(&self.epoll) {
            entry.deregister(&self.epoll);
            return Err(AddError::Register(errno));
        }
        self.entries.push(entry);
        // Its sockets join the epoll set at the next poll_once: make sure
        // a loop waiting on our descriptor calls it.
        self.wake();
        Ok(id)
    }

    /// A handle for other threads (or signal handlers) to ask for a reload
    /// or the shutdown.
    #[must_use]
    pub fn handle(&self) -> Handle {
        Handle { shared: Arc::clone(&self.shared) }
    }

    /// The services, in the order they were added.
    pub fn services(&self) -> impl ExactSizeIterator<Item = ServiceId> + '_ {
        self.entries.iter().map(|e| e.state.id)
    }

    /// A service's bookkeeping: its process table, counters, epoch and
    /// throttle, read-only.
    #[must_use]
    pub fn master(&self, id: ServiceId) -> Option<&Master> {
        self.entries.get(id.index()).map(|e| &e.state.master)
    }

    /// A service's name.
    #[must_use]
    pub fn name(&self, id: ServiceId) -> Option<&str> {
        self.entries.get(id.index()).map(|e| e.state.name.as_str())
    }

    /// Where a service listens.
    #[must_use]
    pub fn listen_addrs(&self, id: ServiceId) -> Option<Vec<ListenAddr>> {
        self.entries.get(id.index()).map(Entry::listen_addrs)
    }

    /// A service now, for metrics.
    #[must_use]
    pub fn snapshot(&self, id: ServiceId) -> Option<Snapshot> {
        let now = Instant::now();
        self.entries.get(id.index()).map(|e| e.snapshot(now))
    }

    /// Reloads every service: each opens a new channel, retires its
    /// children (they exit after their client) and spawns new generations
    /// from then on. A service whose new channel cannot be opened keeps
    /// the old one ([`Event::ReloadFailed`]). Ignored once the shutdown has
    /// begun. The events come out of the next [`poll_once`](Self::poll_once).
    pub fn reload(&mut self) {
        for index in 0..self.entries.len() {
            let _ = self.reload_service(ServiceId(u32::try_from(index).unwrap_or(u32::MAX)));
        }
    }

    /// Reloads one service; returns its new epoch.
    ///
    /// # Errors
    ///
    /// [`ReloadError::UnknownService`], [`ReloadError::ShuttingDown`], or
    /// [`ReloadError::Open`] when the new channel cannot be opened (the old
    /// one stays; an [`Event::ReloadFailed`] has the whole error).
    pub fn reload_service(&mut self, id: ServiceId) -> Result<u64, ReloadError> {
        if self.phase != Phase::Running {
            return Err(ReloadError::ShuttingDown);
        }
        let entry = self.entries.get_mut(id.index()).ok_or(ReloadError::UnknownService)?;
        let mut ctx = Ctx { epoll: &self.epoll, events: &mut self.events, exits: &mut self.exits };
        let result = entry.reload(&mut ctx);
        self.wake();
        result
    }

    /// Begins the shutdown (see the module docs); called again during it,
    /// kills the children left at once. The events come out of the next
    /// [`poll_once`](Self::poll_once).
    pub fn shutdown(&mut self) {
        let now = Instant::now();
        match self.phase {
            Phase::Running => {
                let mut ctx = Ctx { epoll: &self.epoll, events: &mut self.events, exits: &mut self.exits };
                let children = self.entries.iter().map(Entry::total).sum();
                ctx.events.push_back(Event::ShutdownBegan { grace: self.grace, children });
                for entry in &mut self.entries {
                    entry.close(&mut ctx);
                }
                self.phase = Phase::ShuttingDown { kill_at: now + self.grace };
            }
            Phase::ShuttingDown { .. } => self.kill_all(),
            Phase::Killing | Phase::Done => {}
        }
        self.wake();
    }

    /// Makes our descriptor readable, so that a loop waiting on it calls
    /// [`poll_once`](Self::poll_once), which hands out the events a direct
    /// call queued and does what became due.
    fn wake(&self) {
        let _ = self.shared.wake.write(1);
    }

    /// Whether the shutdown has begun.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.phase != Phase::Running
    }

    /// Whether the shutdown is complete: every child of every service
    /// reaped.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The next instant at which something changes with time alone (the
    /// end of a throttle or back-off, a poll of children without pidfds,
    /// the end of the grace period): the latest time to call
    /// [`poll_once`](Self::poll_once) again. `None`: only readiness of
    /// [`as_fd`](Self::as_fd) matters.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        let now = Instant::now();
        let shutdown = match self.phase {
            Phase::ShuttingDown { kill_at } => Some(kill_at),
            _ => None,
        };
        self.entries.iter().filter_map(|e| e.next_deadline(now)).chain(shutdown).min()
    }

    /// Waits for readiness up to `timeout` (`None`: until the next
    /// deadline, or for ever if there is none; `Some(Duration::ZERO)`:
    /// not at all), handles whatever is ready and due, and hands every
    /// event to `on_event`, in order. Returns how many ready descriptors
    /// it handled: 0 means nothing was ready.
    ///
    /// # Errors
    ///
    /// [`PollError::Wait`] when `epoll_wait` fails (`EINTR` is not an
    /// error: the call returns early).
    pub fn poll_once(
        &mut self,
        timeout: Option<Duration>,
        mut on_event: impl FnMut(Event),
    ) -> Result<usize, PollError> {
        // What is due before waiting: above all, a service added since the
        // last call puts its listening sockets in the epoll set here.
        self.step(Instant::now());
        let n = self.wait_and_dispatch(timeout)?;
        self.step(Instant::now());
        while let Some(event) = self.events.pop_front() {
            #[cfg(feature = "tracing")]
            crate::trace::emit(&event);
            on_event(event);
        }
        Ok(n)
    }

    /// Runs until the shutdown is complete ([`is_done`](Self::is_done)),
    /// handing every event to `on_event`.
    ///
    /// # Errors
    ///
    /// As [`poll_once`](Self::poll_once).
    pub fn run(&mut self, mut on_event: impl FnMut(Event)) -> Result<(), PollError> {
        while !self.is_done() {
            self.poll_once(None, &mut on_event)?;
        }
        Ok(())
    }

    fn wait_and_dispatch(&mut self, timeout: Option<Duration>) -> Result<usize, PollError> {
        if self.phase == Phase::Done {
            return Ok(0);
        }
        let now = Instant::now();
        let mut wait = timeout;
        if let Some(deadline) = self.next_deadline() {
            let left = deadline.saturating_duration_since(now);
            wait = Some(wait.map_or(left, |w| w.min(left)));
        }
        if !self.events.is_empty() {
            wait = Some(Duration::ZERO);
        }
        let mut ready = [EpollEvent::empty(); BATCH];
        let n = match self.epoll.wait(&mut ready, epoll_timeout(wait)) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(errno) => return Err(PollError::Wait(errno)),
        };
        for event in &ready[..n] {
            self.dispatch(event.data());
        }
        Ok(n)
    }

    /// Handles one ready descriptor.
    fn dispatch(&mut self, data: u64) {
        let now = Instant::now();
        let (kind, service, value) = token::split(data);
        if kind == token::Kind::Wake {
            // Read before looking at the flags: a flag set after this read
            // comes with a write that makes the eventfd readable again.
            let _ = self.shared.wake.read();
            if self.shared.shutdown.swap(false, Ordering::AcqRel) {
                self.shutdown();
            }
            if self.shared.reload.swap(false, Ordering::AcqRel) && self.phase == Phase::Running {
                self.reload();
            }
            return;
        }
        let Some(entry) = self.entries.get_mut(service) else { return };
        let mut ctx = Ctx { epoll: &self.epoll, events: &mut self.events, exits: &mut self.exits };
        match kind {
            token::Kind::Source => entry.receive(&mut ctx),
            token::Kind::Listen => entry.on_listen(&mut ctx, now),
            token::Kind::Child => entry.reap(&mut ctx, token::pid(value), now),
            token::Kind::Wake => {}
        }
    }

    /// What is due: polled children, throttle and back-off ends, spares,
    /// listening, and the shutdown's steps.
    fn step(&mut self, now: Instant) {
        if self.phase == Phase::Done {
            return;
        }
        let mut ctx = Ctx { epoll: &self.epoll, events: &mut self.events, exits: &mut self.exits };
        for entry in &mut self.entries {
            entry.poll_exits(&mut ctx, now);
            entry.tick(&mut ctx, now);
        }
        if let Phase::ShuttingDown { kill_at } = self.phase
            && now >= kill_at
        {
            self.kill_all();
        }
        if self.phase != Phase::Running && self.entries.iter().all(|e| e.total() == 0) {
            self.phase = Phase::Done;
            self.events.push_back(Event::ShutdownComplete);
        }
    }

    fn kill_all(&mut self) {
        let mut ctx = Ctx { epoll: &self.epoll, events: &mut self.events, exits: &mut self.exits };
        for entry in &mut self.entries {
            entry.kill_all(&mut ctx);
        }
        self.phase = Phase::Killing;
    }
}

impl AsFd for Supervisor {
    /// The supervisor's epoll descriptor: wait for it to be readable, then
    /// call [`poll_once`](Supervisor::poll_once). Do not read from it or
    /// change it.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

/// An `epoll_wait` timeout for `wait`, rounded up to whole milliseconds
/// so that no wait ends before its deadline.
fn epoll_timeout(wait: Option<Duration>) -> EpollTimeout {
    match wait {
        None => EpollTimeout::NONE,
        Some(wait) => EpollTimeout::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(EpollTimeout::MAX),
    }
}

/// Why [`SupervisorBuilder::build`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NewError {
    /// `epoll_create1` or adding the eventfd to it failed.
    #[error("creating the epoll set: {0}")]
    Epoll(#[source] Errno),
    /// `eventfd` failed.
    #[error("creating the eventfd: {0}")]
    EventFd(#[source] Errno),
}

/// Why [`Supervisor::add`] refused a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddError {
    /// The shutdown has begun.
    #[error("the supervisor is shutting down")]
    ShuttingDown,
    /// The service's channel could not join the epoll set.
    #[error("adding the status channel to the epoll set: {0}")]
    Register(#[source] Errno),
    /// More services than a supervisor holds (2^24).
    #[error("too many services")]
    TooMany,
}

/// Why [`Supervisor::poll_once`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    /// `epoll_wait` failed.
    #[error("waiting on the epoll set: {0}")]
    Wait(#[source] Errno),
}

/// Why [`Supervisor::reload_service`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// No service has this id.
    #[error("no such service")]
    UnknownService,
    /// The shutdown has begun.
    #[error("the supervisor is shutting down")]
    ShuttingDown,
    /// The transport could not open a new channel; the old one stays.
    #[error("opening a new status channel: {0}")]
    Open(std::io::ErrorKind),
}

/// The epoll data word of each registration: what is ready, for which
/// service.
pub(crate) mod token {
    use crate::ServiceId;

    /// The most services a supervisor holds: 24 bits of the token.
    pub(crate) const MAX_SERVICES: u32 = 1 << 24;

    /// The handle's eventfd.
    pub(crate) const WAKE: u64 = 0;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Kind {
        Wake,
        Source,
        Listen,
        Child,
    }

    const SOURCE: u64 = 1;
    const LISTEN: u64 = 2;
    const CHILD: u64 = 3;

    fn make(kind: u64, service: ServiceId, value: u32) -> u64 {
        (kind << 56) | (u64::from(service.0 & (MAX_SERVICES - 1)) << 32) | u64::from(value)
    }

    pub(crate) fn source(service: ServiceId) -> u64 {
        make(SOURCE, service, 0)
    }

    pub(crate) fn listen(service: ServiceId, index: usize) -> u64 {
        make(LISTEN, service, u32::try_from(index).unwrap_or(u32::MAX))
    }

    pub(crate) fn child(service: ServiceId, pid: i32) -> u64 {
        make(CHILD, service, pid.cast_unsigned())
    }

    pub(crate) fn pid(value: u32) -> i32 {
        value.cast_signed()
    }

    /// Kind, service index and value.
    pub(crate) fn split(data: u64) -> (Kind, usize, u32) {
        let kind = match data >> 56 {
            SOURCE => Kind::Source,
            LISTEN => Kind::Listen,
            CHILD => Kind::Child,
            _ => Kind::Wake,
        };
        let service = usize::try_from((data >> 32) & u64::from(MAX_SERVICES - 1)).unwrap_or(usize::MAX);
        (kind, service, u32::try_from(data & u64::from(u32::MAX)).unwrap_or(u32::MAX))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn tokens_round_trip() {
            let s = ServiceId(77);
            assert_eq!(split(source(s)), (Kind::Source, 77, 0));
            assert_eq!(split(listen(s, 3)), (Kind::Listen, 77, 3));
            let (kind, service, value) = split(child(s, 123_456));
            assert_eq!((kind, service, pid(value)), (Kind::Child, 77, 123_456));
            assert_eq!(split(WAKE).0, Kind::Wake);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_supervisor_moves_between_threads_and_handles_are_shared() {
        fn send<T: Send>() {}
        fn sync<T: Send + Sync>() {}
        send::<Supervisor>();
        sync::<Handle>();
    }

    #[test]
    fn a_handle_wakes_the_supervisor_and_asks_once() {
        let mut sup = Supervisor::new().unwrap();
        let handle = sup.handle();
        assert!(!readable(&sup));
        handle.reload();
        assert!(readable(&sup), "the handle makes the descriptor readable");
        let mut events = Vec::new();
        sup.poll_once(Some(Duration::ZERO), |e| events.push(e.name())).unwrap();
        assert!(events.is_empty(), "a reload of no service says nothing: {events:?}");
        assert!(!readable(&sup), "the request was taken in");
        std::thread::spawn(move || handle.shutdown()).join().unwrap();
        sup.poll_once(None, |e| events.push(e.name())).unwrap();
        assert_eq!(events, ["shutdown-began", "shutdown-complete"]);
        assert!(sup.is_done());
    }

    /// Whether the supervisor's descriptor is readable now.
    fn readable(sup: &Supervisor) -> bool {
        let mut fds = [nix::poll::PollFd::new(sup.as_fd(), nix::poll::PollFlags::POLLIN)];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap() == 1
    }
}
