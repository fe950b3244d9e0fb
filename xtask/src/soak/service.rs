//! The master's side of every soak phase: one service's channel, opened
//! with the transport the driver named, its children, and proto's sans-IO
//! [`Master`] fed every item, checked against a book of its own.
//!
//! A phase's master role spawns its children with [`Service::spawn`]
//! (generation from [`Master::begin_spawn`], the standard environment
//! through [`ChildFds`], then [`Master::spawned`] and
//! [`Transport::register_child`]), reads the channel with
//! [`Service::drain`] (every item to [`Master::receive`]), and reaps each
//! child with [`Service::reap`] (`waitpid` on that pid, then
//! [`Master::reaped`] and [`Transport::forget_child`]). SIGCHLD is blocked
//! and read from a signalfd, so the master waits for its channel and its
//! children in one poll(2).
//!
//! The [`Book`] is the check: it follows each child's alternating updates
//! on its own, classifies every item (arrived in order, duplicated or out
//! of order, late, torn), checks that the master's outcome for it agrees,
//! and after every reap compares the master's whole table and counters
//! with what it expects.
//!
//! Which of its child's updates an item is depends on the transport's
//! delivery ([`Caps::delivery`](master_proto::Caps)). One that delivers
//! every update hands over the k-th update a child sent as that child's
//! k-th item: a repeat of the recorded state is a duplicate (or a loss).
//! One that keeps each child's latest state
//! ([`Delivery::LatestState`]) skips the states a newer one replaced, and
//! says how many through [`StatusSource::overwritten`]: the count it adds
//! while handing out an item is how many of that child's states came
//! between the item and the child's item before, so the item is the
//! child's state number (the last one's, plus those skipped, plus one).
//! That state must have the status the child sent as that number (see
//! [`status_of`]), and a number no higher than the child sends: an item
//! delivered twice, an older state after a newer one, or a status that
//! does not go with its number is *duplicated or out of order*. A state
//! equal to the one the master recorded (an odd number of states between)
//! is redundant to the master and counted so, not a fault; the states
//! skipped are *coalesced*, a figure. The book's table follows what
//! arrived, as the master's does.
//!
//! [`run`] wraps a phase's body with the resource figures: the master's
//! descriptors, shared mappings and memory before the channel is opened,
//! once it is open, after every child is reaped, and after it is closed
//! again.
//!
//! # Errors
//!
//! A broken channel or a failed system call ends the phase with an error;
//! anything a child sends, and any disagreement of the master's with the
//! book, is counted and reported instead.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use master_proto::master::{Config, Exit, Master, Outcome, ReapOutcome};
use master_proto::{ChildFds, Delivery, Malformed, Received, RecvError, Status, StatusSource, Transport};
use master_proto_transports::{AnySource, AnyTransport};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use serde_json::{Map, Value, json};

use super::child::{Behaviour, ChildArgs, status_of};
use crate::sys;

/// The bound on any one wait of a phase: it only matters when something is
/// broken, and then the error says what was awaited.
pub(super) const WAIT: Duration = Duration::from_secs(60);

/// How much a master's resident set may grow between the moment its
/// channel is open and the moment every child is reaped. Its tables keep
/// the capacity they grew to and the allocator keeps freed pages: memfd's
/// queue of what reaped children left in their rings holds up to a full
/// ring (8,192 records, ~200 KiB) of every victim reaped at once, 3 MiB
/// or so in churn. A leak shows as far more: a memfd ring left mapped is
/// 128 KiB a child (128 MiB over the full churn's 1,000 kills), a byte an
/// update 10 MiB over the full volume phase.
pub(super) const RSS_GROWTH_BOUND_KIB: u64 = 8192;

/// The most items one [`Service::drain`] reads before the master gets
/// back to its other work (kills, reaps, timers). The pipe, duplex and
/// dgram sources' own `drain` (the trait's provided one) reads until the
/// channel is empty, which children that outrun the master keep from ever
/// happening: a master calling it under a flood does little else (the
/// first quick soak took 249 s on dgram for churn's 100 kills that way,
/// 0.3 s with this bound). Postfix's master reads one record per event for the same
/// reason. The source's descriptor stays readable while items are left.
const DRAIN_BOUND: usize = 4096;

/// How often a master looks whether the channel has emptied, once the
/// children it waits for have exited (nothing signals it).
pub(super) const SETTLE: Duration = Duration::from_millis(10);

/// What a child is for, so that a phase can tell its arrivals apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Sends a fixed count as fast as it can (volume).
    Steady,
    /// Reports every few milliseconds while others are killed (churn).
    Survivor,
    /// Floods until it is killed (churn).
    Victim,
    /// Reports every few milliseconds, its latency measured (flood).
    Honest,
    /// Floods the channel (flood).
    Flooder,
    /// Keeps its master under load until the master is killed (master
    /// death).
    Loader,
}

/// One child, as the book follows it.
#[derive(Clone, Copy, Debug)]
struct Entry {
    generation: u32,
    kind: Kind,
    /// The state the master should have recorded: AVAIL from the spawn.
    status: Status,
    /// AVAILs applied: the master's use count.
    uses: u64,
    /// The number of the child's next state: one more than that of the
    /// last that arrived in order (0 before any).
    next: u64,
    /// States that arrived in order.
    arrived: u64,
    /// How many states the child sends, if it says (a steady or paced
    /// child with a count): no state numbered as high arrives.
    limit: Option<u64>,
}

/// What one item from the channel was, as the book sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// The child's state number `index` (its `index`-th notify, from 0),
    /// in order: of a transport that delivers every update, the next one;
    /// of a latest-state transport, one after those the transport says it
    /// skipped. The master applied it, or (a latest-state transport that
    /// skipped an odd number of states) found it redundant.
    Arrived {
        /// The child.
        pid: i32,
        /// What it is for.
        kind: Kind,
        /// Which of the child's states it is.
        index: u64,
    },
    /// An update of a live child that is not its next state: a repeat of
    /// its last state on a transport that delivers every update (a
    /// duplicate, or one update lost); on a latest-state transport, a
    /// state whose status is not that of its number, or numbered beyond
    /// what the child sends (delivered twice, or older after newer).
    Duplicated {
        /// The child.
        pid: i32,
    },
    /// An update of a child already reaped (it was in the channel when the
    /// child was killed): the master ignores it, as Postfix does.
    Late,
    /// A record a child died writing, reported as [`Malformed::Torn`]
    /// when the child was forgotten (memfd does; nothing of it is
    /// delivered): at most one per child reaped after a signal, counted,
    /// not a fault.
    DiedWriting,
    /// Not an update of any child of this run: malformed, an unknown
    /// status, a forged or unknown sender.
    Torn,
}

/// The outcome the book expects of the master for one item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    /// A change of a live child's state to this one: taken or avail.
    Status(Status),
    /// A live child's state again.
    Redundant,
    /// An update of a child already reaped: an unknown pid (or, should the
    /// pid be reused already, a wrong generation).
    Gone,
    /// Anything not applied.
    Ignored,
}

/// How many items of each kind arrived.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Tally {
    /// Every item.
    pub(super) received: u64,
    /// Updates the master should have applied (a change of state).
    pub(super) applied: u64,
    /// Updates of live children that the master should have found
    /// redundant.
    pub(super) redundant: u64,
    /// States of live children that arrived in order.
    pub(super) arrived: u64,
    /// States that the transport skipped before those, and before the
    /// late ones (0 unless it keeps each child's latest state).
    pub(super) coalesced: u64,
    /// Updates of live children that were not their next state.
    pub(super) duplicated: u64,
    /// Updates of children already reaped.
    pub(super) late: u64,
    /// Records children died writing, reported as torn at their forget.
    pub(super) died_writing: u64,
    /// Anything else.
    pub(super) torn: u64,
}

/// The soak's own account of the service, to check the master's against.
#[derive(Debug, Default)]
pub(super) struct Book {
    /// Whether the transport keeps each child's latest state
    /// ([`Delivery::LatestState`]) rather than delivering every update.
    latest: bool,
    live: HashMap<i32, Entry>,
    /// Every child reaped, by (pid, generation): its last state stays
    /// numbered, so that what arrives after the reap is checked too.
    gone: HashMap<(i32, u32), Entry>,
    /// Every item, classified.
    pub(super) tally: Tally,
    spawned: u64,
    reaped: u64,
    /// Children reaped after a signal whose torn record (one each at most,
    /// see [`Event::DiedWriting`]) has not arrived.
    killed_unclaimed: u64,
    /// Items whose outcome at the master disagreed with the book, and
    /// table checks that found the table or counters wrong.
    pub(super) mismatches: u64,
    /// Table checks made (one after every reap, one at the end).
    pub(super) checks: u64,
    /// The first few mismatches, described.
    pub(super) first_mismatches: Vec<String>,
}

impl Book {
    /// A book for a transport of `delivery`.
    pub(super) fn new(delivery: Delivery) -> Book {
        Book { latest: delivery == Delivery::LatestState, ..Book::default() }
    }

    fn spawned(&mut self, pid: i32, generation: u32, kind: Kind, limit: Option<u64>) {
        self.spawned += 1;
        let entry = Entry { generation, kind, status: Status::AVAIL, uses: 0, next: 0, arrived: 0, limit };
        self.live.insert(pid, entry);
    }

    fn reaped(&mut self, pid: i32, exit: Exit) {
        if let Some(e) = self.live.remove(&pid) {
            self.gone.insert((pid, e.generation), e);
            self.reaped += 1;
            if matches!(exit, Exit::Signal(_)) {
                self.killed_unclaimed += 1;
            }
        }
    }

    fn mismatch(&mut self, what: String) {
        self.mismatches += 1;
        if self.first_mismatches.len() < 5 {
            self.first_mismatches.push(what);
        }
    }

    /// Classifies one item, given the outcome the master gave it and, from
    /// a latest-state transport, how many states of its child the
    /// transport skipped before it; checks that the master's outcome is the
    /// one the book expects.
    pub(super) fn take(&mut self, item: &Received, outcome: Outcome, skipped: u64) -> Event {
        self.tally.received += 1;
        let (event, expected) = self.classify(item, skipped);
        let agrees = match expected {
            Expected::Status(Status::TAKEN) => outcome == Outcome::Taken,
            Expected::Status(_) => outcome == Outcome::Avail,
            Expected::Redundant => outcome == Outcome::Redundant,
            Expected::Gone => matches!(outcome, Outcome::UnknownPid | Outcome::WrongGeneration { .. }),
            Expected::Ignored => !outcome.is_applied(),
        };
        match expected {
            Expected::Status(_) => self.tally.applied += 1,
            Expected::Redundant => self.tally.redundant += 1,
            Expected::Gone | Expected::Ignored => {}
        }
        match event {
            Event::Arrived { .. } => {
                self.tally.arrived += 1;
                self.tally.coalesced += skipped;
            }
            Event::Duplicated { .. } => self.tally.duplicated += 1,
            Event::Late => {
                self.tally.late += 1;
                self.tally.coalesced += skipped;
            }
            Event::DiedWriting => self.tally.died_writing += 1,
            Event::Torn => self.tally.torn += 1,
        }
        if !agrees {
            self.mismatch(format!("{item:?}: the master said {outcome:?}, the book expected {expected:?} ({event:?})"));
        }
        event
    }

    fn classify(&mut self, item: &Received, skipped: u64) -> (Event, Expected) {
        if *item == Received::Malformed(Malformed::Torn) && self.killed_unclaimed > 0 {
            self.killed_unclaimed -= 1;
            return (Event::DiedWriting, Expected::Ignored);
        }
        let Received::Update { update, sender } = *item else { return (Event::Torn, Expected::Ignored) };
        if sender.verified_pid().is_some_and(|v| v != update.pid) || !update.status.is_known() {
            return (Event::Torn, Expected::Ignored);
        }
        let latest = self.latest;
        // Which of its child's states the update is, and whether that is
        // the child's next one.
        let number = |e: &mut Entry| {
            let index = if latest { e.next.saturating_add(skipped) } else { e.next };
            let in_order = if latest {
                update.status == status_of(index) && e.limit.is_none_or(|l| index < l)
            } else {
                update.status != e.status
            };
            if in_order {
                e.next = index + 1;
                e.arrived += 1;
            }
            in_order.then_some(index)
        };
        let key = (update.pid, update.generation);
        if let Some(e) = self.live.get_mut(&update.pid)
            && e.generation == update.generation
        {
            let event = match number(e) {
                Some(index) => Event::Arrived { pid: update.pid, kind: e.kind, index },
                None => Event::Duplicated { pid: update.pid },
            };
            // The master's table follows what arrives.
            if e.status == update.status {
                return (event, Expected::Redundant);
            }
            e.status = update.status;
            if update.status == Status::AVAIL {
                e.uses += 1;
            }
            return (event, Expected::Status(update.status));
        }
        match self.gone.get_mut(&key) {
            // What a latest-state transport delivers after the reap (the
            // last state, at forget) is in order too.
            Some(e) => {
                if latest && number(e).is_none() {
                    (Event::Duplicated { pid: update.pid }, Expected::Gone)
                } else {
                    (Event::Late, Expected::Gone)
                }
            }
            None => (Event::Torn, Expected::Ignored),
        }
    }

    /// The number of `pid`'s next state: how many of its states arrived in
    /// order or were skipped before one that did, before its reap or after
    /// it. `n` means its `n`-th state has arrived (of a transport that
    /// delivers every update: all `n` of them).
    pub(super) fn reached(&self, pid: i32) -> Option<u64> {
        self.live.get(&pid).or_else(|| self.gone.iter().find(|((p, _), _)| *p == pid).map(|(_, e)| e)).map(|e| e.next)
    }

    /// How many of `pid`'s states arrived in order.
    pub(super) fn arrived(&self, pid: i32) -> Option<u64> {
        self.live.get(&pid).map(|e| e.arrived)
    }

    /// Compares the master's table and counters with the book's.
    pub(super) fn check(&mut self, master: &Master) {
        self.checks += 1;
        let mut wrong = Vec::new();
        if master.total() != self.live.len() {
            wrong.push(format!("{} children in the table, {} alive", master.total(), self.live.len()));
        }
        for (&pid, e) in &self.live {
            match master.child(pid) {
                None => wrong.push(format!("child {pid} is missing")),
                Some(c) => {
                    if (c.generation, c.status, c.use_count, c.retired) != (e.generation, e.status, e.uses, false) {
                        wrong.push(format!("child {pid} is {c:?}, the book says {e:?}"));
                    }
                }
            }
        }
        let available = self.live.values().filter(|e| e.status == Status::AVAIL).count();
        if master.available() != available {
            wrong.push(format!("{} available, the book says {available}", master.available()));
        }
        let c = master.counters();
        let t = &self.tally;
        let counted = [
            ("spawned", c.spawned, self.spawned),
            ("reaped", c.reaped, self.reaped),
            ("received", c.received(), t.received),
            ("taken + avail", c.taken + c.avail, t.applied),
            ("redundant", c.redundant, t.redundant),
            ("reap_unknown_pid", c.reap_unknown_pid, 0),
        ];
        for (name, master_says, book_says) in counted {
            if master_says != book_says {
                wrong.push(format!("counter {name} is {master_says}, the book says {book_says}"));
            }
        }
        if !wrong.is_empty() {
            self.mismatch(format!("table check {}: {}", self.checks, wrong.join("; ")));
        }
    }
}

/// One service: the channel, the master's bookkeeping, the book, and the
/// signalfd its children's deaths arrive on.
pub(super) struct Service {
    /// The transport the channel was opened with.
    pub(super) transport: AnyTransport,
    source: AnySource,
    /// Proto's sans-IO master, fed every item.
    pub(super) master: Master,
    /// The check.
    pub(super) book: Book,
    signals: SignalFd,
    exe: PathBuf,
}

impl Service {
    /// Opens a channel with the transport called `name`. Blocks SIGCHLD
    /// (the role process is single-threaded; children start with an empty
    /// mask) and reads it from a signalfd.
    pub(super) fn open(name: &str) -> io::Result<Service> {
        let transport = AnyTransport::from_name(name).map_err(io::Error::other)?;
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.thread_block()?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        // No process limit and no throttle: the soak spawns what it
        // decides, and killed children have served nobody.
        let master = Master::new(Config { process_limit: 0, throttle_delay: Duration::ZERO });
        let delivery = transport.caps().delivery;
        let source = transport.open()?;
        if delivery == Delivery::LatestState && source.overwritten().is_none() {
            return Err(io::Error::other(format!(
                "{transport} keeps each child's latest state but does not say how many it overwrote: \
                 the soak cannot tell which state an update is"
            )));
        }
        Ok(Service { transport, source, master, book: Book::new(delivery), signals, exe: std::env::current_exe()? })
    }

    /// Spawns one child of `kind` behaving as `args`.
    pub(super) fn spawn(&mut self, args: ChildArgs, kind: Kind, stdin: Stdio, stdout: Stdio) -> io::Result<Child> {
        let now = Instant::now();
        let generation = self.master.begin_spawn(now).map_err(io::Error::other)?;
        let mut cmd = Command::new(&self.exe);
        cmd.args(["soak", "--role", "child"]).args(args.to_args());
        cmd.stdin(stdin).stdout(stdout).stderr(Stdio::inherit());
        let spawned = self
            .transport
            .child_end(&mut self.source, generation)
            .and_then(|end| ChildFds::new(end, generation).install(&mut cmd).map_err(io::Error::other))
            .and_then(|()| cmd.spawn());
        // The command holds the child's descriptors until it is dropped.
        drop(cmd);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = self.master.spawn_failed(generation, now);
                return Err(e);
            }
        };
        let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
        let registered = self.master.spawned(pid, generation).map_err(io::Error::other).and_then(|()| {
            let limit = match args.behaviour {
                Behaviour::Steady { count } => Some(count),
                Behaviour::Paced { count, .. } => (count > 0).then_some(count),
                Behaviour::Flood => None,
            };
            self.book.spawned(pid, generation, kind, limit);
            self.transport.register_child(&mut self.source, generation, pid)
        });
        if let Err(e) = registered {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(child)
    }

    /// Waits at most `timeout` for the channel to be readable or (with
    /// `signals`) a child's death to be pending: (channel, death).
    pub(super) fn wait(&self, timeout: Duration, signals: bool) -> io::Result<(bool, bool)> {
        let (channel, death, _) = self.wait_with(&[], timeout, signals)?;
        Ok((channel, death))
    }

    /// As [`wait`](Self::wait), also for any of `extra` to be readable:
    /// (channel, death, which of `extra`).
    pub(super) fn wait_with(
        &self,
        extra: &[BorrowedFd<'_>],
        timeout: Duration,
        signals: bool,
    ) -> io::Result<(bool, bool, Vec<bool>)> {
        let mut fds = vec![self.source.as_fd()];
        if signals {
            fds.push(self.signals.as_fd());
        }
        fds.extend_from_slice(extra);
        let fired = sys::wait_any(&fds, timeout)?;
        let death = signals && fired[1];
        Ok((fired[0], death, fired[if signals { 2 } else { 1 }..].to_vec()))
    }

    /// Reads `out` (a child's stdout) to its end, at most until
    /// `deadline`, draining the channel meanwhile (the child may be
    /// blocked in `notify` on a full channel before it can finish).
    pub(super) fn read_output(&mut self, out: &OwnedFd, deadline: Instant) -> io::Result<String> {
        let mut text = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let (_, _, ready) =
                self.wait_with(&[out.as_fd()], deadline.saturating_duration_since(Instant::now()), false)?;
            self.drain(|_| {})?;
            if ready[0] {
                match nix::unistd::read(out, &mut buf) {
                    Ok(0) => return String::from_utf8(text).map_err(io::Error::other),
                    Ok(n) => text.extend_from_slice(&buf[..n]),
                    Err(Errno::EINTR | Errno::EAGAIN) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!("waited {WAIT:?} for a child's report")));
            }
        }
    }

    /// Drains until `pid`'s `count`-th state has arrived (every one of its
    /// `count` updates, or the last of them from a latest-state transport;
    /// see [`Book::reached`]), or it has exited without and nothing more
    /// can come ([`settled`](Self::settled)), at most until `deadline`;
    /// whether it has arrived.
    pub(super) fn await_reached(&mut self, pid: i32, count: u64, deadline: Instant) -> io::Result<bool> {
        loop {
            if self.book.reached(pid).is_none_or(|n| n >= count) {
                return Ok(self.book.reached(pid).is_some());
            }
            if Instant::now() >= deadline || self.settled(&[pid], |_| {})? {
                return Ok(false);
            }
            // Once it has exited, nothing signals that the channel has
            // emptied: look again after a short while.
            let left = deadline.saturating_duration_since(Instant::now());
            self.wait(if exited(&[pid])? { left.min(SETTLE) } else { left }, true)?;
            self.clear_signals()?;
            self.drain(|_| {})?;
        }
    }

    /// Whether every child of `pids` has exited (it is not reaped, only
    /// looked at) and the channel then held nothing: everything they sent
    /// has arrived. The look is two drains that find nothing, since a
    /// source may end a drain early once without being empty (seqpacket's
    /// rounds do); what they find goes to `f`.
    pub(super) fn settled(&mut self, pids: &[i32], mut f: impl FnMut(Event)) -> io::Result<bool> {
        Ok(exited(pids)? && self.drain(&mut f)? == 0 && self.drain(&mut f)? == 0)
    }

    /// Reads what is pending, at most [`DRAIN_BOUND`] items, hands every
    /// item to the master and the book (with the states the transport says
    /// it skipped before it), and each event to `f`; returns how many items
    /// there were.
    pub(super) fn drain(&mut self, mut f: impl FnMut(Event)) -> io::Result<usize> {
        for n in 0..DRAIN_BOUND {
            let before = self.source.overwritten();
            match self.source.try_recv() {
                Ok(Some(item)) => {
                    let skipped = self.source.overwritten().zip(before).map_or(0, |(a, b)| a.saturating_sub(b));
                    let outcome = self.master.receive(&item);
                    f(self.book.take(&item, outcome, skipped));
                }
                Ok(None) => return Ok(n),
                Err(RecvError::Io(e)) => return Err(e.into()),
                Err(e) => return Err(io::Error::other(e)),
            }
        }
        Ok(DRAIN_BOUND)
    }

    /// Empties the signalfd (the deaths it announced are reaped by pid).
    pub(super) fn clear_signals(&self) -> io::Result<()> {
        while self.signals.read_signal()?.is_some() {}
        Ok(())
    }

    /// Reaps `pid` if it has ended: tells the master and the transport,
    /// and checks the master's table.
    pub(super) fn reap(&mut self, pid: i32) -> io::Result<Option<Exit>> {
        let exit = match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Exit::Code(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => Exit::Signal(signal as i32),
            Ok(_) => return Ok(None),
            Err(Errno::EINTR) => return Ok(None),
            Err(e) => return Err(io::Error::other(format!("waitpid({pid}): {e}"))),
        };
        match self.master.reaped(pid, exit, Instant::now()) {
            ReapOutcome::Reaped { .. } => {}
            other => self.book.mismatch(format!("reaping {pid}: the master said {other:?}")),
        }
        self.transport.forget_child(&mut self.source, pid)?;
        self.book.reaped(pid, exit);
        self.book.check(&self.master);
        Ok(Some(exit))
    }

    /// Reaps `pid`, waiting for its end at most until `deadline` (reading
    /// the channel meanwhile, so a child blocked on a full channel can
    /// finish); then kills it, reaps it and says so.
    pub(super) fn reap_by(&mut self, pid: i32, deadline: Instant) -> io::Result<Exit> {
        loop {
            if let Some(exit) = self.reap(pid)? {
                return Ok(exit);
            }
            if Instant::now() >= deadline {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = waitpid(Pid::from_raw(pid), None);
                return Err(io::Error::other(format!("child {pid} did not exit in time; killed")));
            }
            let (_, died) = self.wait(deadline.saturating_duration_since(Instant::now()), true)?;
            self.drain(|_| {})?;
            if died {
                self.clear_signals()?;
            }
        }
    }
}

/// Whether every child of `pids` has exited; they are looked at
/// (`WNOWAIT`), not reaped.
pub(super) fn exited(pids: &[i32]) -> io::Result<bool> {
    for &pid in pids {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(Pid::from_raw(pid)), flags) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => return Ok(false),
            Ok(_) => {}
            Err(e) => return Err(io::Error::other(format!("waitid({pid}): {e}"))),
        }
    }
    Ok(true)
}

/// A master's descriptors and memory at one moment.
#[derive(Debug)]
struct Snapshot {
    fds: BTreeMap<i32, String>,
    shared: Vec<String>,
    rss_kib: u64,
    hwm_kib: u64,
}

impl Snapshot {
    fn take() -> io::Result<Snapshot> {
        Ok(Snapshot {
            fds: sys::open_fds()?,
            shared: sys::shared_mappings()?,
            rss_kib: sys::rss_kib()?,
            hwm_kib: sys::peak_rss_kib()?,
        })
    }

    /// The descriptors open now that were not at `before`.
    fn grown(&self, before: &Snapshot) -> Vec<String> {
        self.fds
            .iter()
            .filter(|(fd, what)| before.fds.get(fd) != Some(what))
            .map(|(fd, w)| format!("{fd}:{w}"))
            .collect()
    }
}

/// What a phase's master role reports: its figures and what it found
/// wrong.
#[derive(Debug, Default)]
pub(super) struct Report {
    /// The figures, by name.
    pub(super) metrics: Map<String, Value>,
    /// Each rule the phase broke, in words.
    pub(super) problems: Vec<String>,
}

impl Report {
    /// Records a figure.
    pub(super) fn set(&mut self, name: &str, value: Value) {
        self.metrics.insert(name.to_owned(), value);
    }

    /// Records a broken rule.
    pub(super) fn problem(&mut self, what: impl Into<String>) {
        self.problems.push(what.into());
    }

    /// The report as the one JSON object a role prints.
    pub(super) fn into_json(self) -> Value {
        let mut m = self.metrics;
        m.insert("problems".into(), json!(self.problems));
        Value::Object(m)
    }
}

/// Runs a phase's `body` on a service of transport `name`, with the
/// resource figures around it, the book's totals and the check that no
/// child is left. `body` must have reaped every child (and dropped its
/// pipes to them) when it returns.
pub(super) fn run(name: &str, body: impl FnOnce(&mut Service, &mut Report) -> io::Result<()>) -> io::Result<Report> {
    let mut report = Report::default();
    let start = Snapshot::take()?;
    let mut service = Service::open(name)?;
    let open = Snapshot::take()?;
    body(&mut service, &mut report)?;
    let reaped = Snapshot::take()?;
    // Anything still a child of this process is a child the phase did not
    // reap (a zombie, or worse, alive): counted, then killed and reaped so
    // that it does not outlive the phase.
    let left = sys::children_of(i32::try_from(std::process::id()).map_err(io::Error::other)?)?;
    for &(pid, _) in &left {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid), None);
    }
    service.book.check(&service.master);
    let book = std::mem::take(&mut service.book);
    drop(service);
    let end = Snapshot::take()?;

    let t = book.tally;
    report.set("items", json!(t.received));
    report.set("applied", json!(t.applied));
    report.set("redundant", json!(t.redundant));
    report.set("arrived", json!(t.arrived));
    report.set("coalesced", json!(t.coalesced));
    report.set("torn", json!(t.torn));
    report.set("duplicated", json!(t.duplicated));
    report.set("late", json!(t.late));
    report.set("died_writing", json!(t.died_writing));
    report.set("table_checks", json!(book.checks));
    report.set("table_mismatches", json!(book.mismatches));
    for m in &book.first_mismatches {
        report.problem(format!("the master's table disagrees with the book: {m}"));
    }
    if t.torn > 0 {
        report.problem(format!("{} items were torn, malformed or from no child of the run", t.torn));
    }
    if t.duplicated > 0 {
        report.problem(format!(
            "{} updates were not their child's next state (duplicated, out of order, or one lost)",
            t.duplicated
        ));
    }
    report.set("fds_start", json!(start.fds.len()));
    report.set("fds_open", json!(open.fds.len()));
    report.set("fds_reaped", json!(reaped.fds.len()));
    report.set("fds_end", json!(end.fds.len()));
    report.set("shared_maps_open", json!(open.shared.len()));
    report.set("shared_maps_reaped", json!(reaped.shared.len()));
    report.set("rss_open_kib", json!(open.rss_kib));
    report.set("rss_reaped_kib", json!(reaped.rss_kib));
    report.set("hwm_kib", json!(reaped.hwm_kib.max(end.hwm_kib)));
    report.set("zombies", json!(left.len()));
    let grown = reaped.grown(&open);
    if !grown.is_empty() {
        report.problem(format!("descriptors left open after every child was reaped: {grown:?}"));
    }
    let grown = end.grown(&start);
    if !grown.is_empty() {
        report.problem(format!("descriptors left open after the channel was closed: {grown:?}"));
    }
    if reaped.shared.len() > open.shared.len() {
        report.problem(format!(
            "{} shared mappings left after every child was reaped (a channel per child not let go?), {} when the channel opened",
            reaped.shared.len(),
            open.shared.len()
        ));
    }
    let growth = reaped.rss_kib.saturating_sub(open.rss_kib);
    if growth > RSS_GROWTH_BOUND_KIB {
        report.problem(format!("RSS grew by {growth} KiB while the children ran (bound {RSS_GROWTH_BOUND_KIB} KiB)"));
    }
    if !left.is_empty() {
        report.problem(format!("children left unreaped at the end: {left:?}"));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use master_proto::{Sender, StatusUpdate};

    use super::*;

    fn update(pid: i32, generation: u32, status: Status) -> Received {
        Received::Update { update: StatusUpdate { pid, generation, status }, sender: Sender::Claimed }
    }

    /// A master and a book of a transport that delivers every update, with
    /// children 10 and 11 of `kind` spawned in both.
    fn two_children(kind: Kind, now: Instant) -> (Master, Book) {
        let mut master = Master::new(Config { process_limit: 0, throttle_delay: Duration::ZERO });
        let mut book = Book::new(Delivery::EveryUpdate);
        for pid in [10, 11] {
            let g = master.begin_spawn(now).expect("spawn");
            master.spawned(pid, g).expect("spawned");
            book.spawned(pid, g, kind, None);
        }
        (master, book)
    }

    /// A master and a book fed the same items agree, and a master that is
    /// told less than the book (a reap it never heard of) is caught.
    #[test]
    fn the_book_follows_the_master_and_catches_a_missed_reap() {
        let now = Instant::now();
        let (mut master, mut book) = two_children(Kind::Steady, now);
        let items = [
            update(10, 1, Status::TAKEN),
            update(11, 2, Status::TAKEN),
            update(10, 1, Status::AVAIL),
            update(10, 1, Status::AVAIL),
            update(12, 1, Status::TAKEN),
            update(11, 2, Status(7)),
            Received::Malformed(Malformed::Short(3)),
        ];
        let events: Vec<Event> = items.iter().map(|i| book.take(i, master.receive(i), 0)).collect();
        assert_eq!(
            events,
            [
                Event::Arrived { pid: 10, kind: Kind::Steady, index: 0 },
                Event::Arrived { pid: 11, kind: Kind::Steady, index: 0 },
                Event::Arrived { pid: 10, kind: Kind::Steady, index: 1 },
                Event::Duplicated { pid: 10 },
                Event::Torn,
                Event::Torn,
                Event::Torn,
            ]
        );
        master.reaped(10, Exit::Code(0), now);
        book.reaped(10, Exit::Code(0));
        book.check(&master);
        assert_eq!(book.mismatches, 0, "{:?}", book.first_mismatches);
        assert_eq!(book.take(&items[2], master.receive(&items[2]), 0), Event::Late);

        // The book reaps 11, the master is never told.
        book.reaped(11, Exit::Code(0));
        book.check(&master);
        assert_eq!(book.mismatches, 1);
        assert!(book.first_mismatches[0].contains("1 children in the table, 0 alive"), "{:?}", book.first_mismatches);
    }

    /// A record a child died writing (memfd reports it as torn when the
    /// child is forgotten) is counted as such once per child reaped after
    /// a signal; a second one, or one after a clean exit, is torn.
    #[test]
    fn a_torn_record_is_one_a_killed_child_died_writing_once() {
        let now = Instant::now();
        let (mut master, mut book) = two_children(Kind::Victim, now);
        let torn = Received::Malformed(Malformed::Torn);
        assert_eq!(book.take(&torn, master.receive(&torn), 0), Event::Torn, "no child has died");
        master.reaped(10, Exit::Code(0), now);
        book.reaped(10, Exit::Code(0));
        assert_eq!(book.take(&torn, master.receive(&torn), 0), Event::Torn, "10 exited");
        master.reaped(11, Exit::Signal(9), now);
        book.reaped(11, Exit::Signal(9));
        assert_eq!(book.take(&torn, master.receive(&torn), 0), Event::DiedWriting);
        assert_eq!(book.take(&torn, master.receive(&torn), 0), Event::Torn, "one per killed child");
        assert_eq!((book.tally.died_writing, book.tally.torn), (1, 3));
        book.check(&master);
        assert_eq!(book.mismatches, 0, "{:?}", book.first_mismatches);
    }

    fn channel(pid: i32, generation: u32, status: Status) -> Received {
        Received::Update { update: StatusUpdate { pid, generation, status }, sender: Sender::Channel(pid) }
    }

    /// Of a latest-state transport, the book numbers each state by what
    /// the transport says it skipped: states in order with gaps pass (a
    /// repeat of the recorded status after an odd gap is redundant, not a
    /// fault), the master's table follows what arrived, and a state
    /// delivered twice, one older after a newer, one beyond the child's
    /// count, or a wrong one at forget are caught.
    #[test]
    fn the_latest_state_book_numbers_states_by_what_was_skipped() {
        let now = Instant::now();
        let mut master = Master::new(Config { process_limit: 0, throttle_delay: Duration::ZERO });
        let mut book = Book::new(Delivery::LatestState);
        let g = master.begin_spawn(now).expect("spawn");
        master.spawned(10, g).expect("spawned");
        book.spawned(10, g, Kind::Steady, Some(6));
        // States 0..6 are T A T A T A; these arrive: 0, 2 (one skipped: a
        // redundant TAKEN), 3, 5 (one skipped).
        let take = |master: &mut Master, book: &mut Book, status, skipped| {
            let item = channel(10, g, status);
            let outcome = master.receive(&item);
            (book.take(&item, outcome, skipped), outcome)
        };
        let arrived = |index| Event::Arrived { pid: 10, kind: Kind::Steady, index };
        assert_eq!(take(&mut master, &mut book, Status::TAKEN, 0), (arrived(0), Outcome::Taken));
        assert_eq!(take(&mut master, &mut book, Status::TAKEN, 1), (arrived(2), Outcome::Redundant));
        assert_eq!(take(&mut master, &mut book, Status::AVAIL, 0), (arrived(3), Outcome::Avail));
        assert_eq!(take(&mut master, &mut book, Status::AVAIL, 1), (arrived(5), Outcome::Redundant));
        assert_eq!(book.reached(10), Some(6), "the last state arrived");
        assert_eq!((book.tally.arrived, book.tally.coalesced, book.tally.duplicated), (4, 2, 0));
        book.check(&master);
        assert_eq!(book.mismatches, 0, "{:?}", book.first_mismatches);

        // Delivered twice: the same state again, nothing skipped.
        assert_eq!(take(&mut master, &mut book, Status::AVAIL, 0).0, Event::Duplicated { pid: 10 });
        // Older after newer: the transport's count wraps.
        assert_eq!(
            take(&mut master, &mut book, Status::TAKEN, u64::from(u32::MAX) / 2).0,
            Event::Duplicated { pid: 10 }
        );
        // Beyond the six the child sends.
        assert_eq!(take(&mut master, &mut book, Status::TAKEN, 2).0, Event::Duplicated { pid: 10 });
        assert_eq!(book.tally.duplicated, 3);
        assert_eq!(book.reached(10), Some(6), "what is out of order moves nothing on");
        book.check(&master);
        assert_eq!(book.mismatches, 0, "the table still follows what arrived: {:?}", book.first_mismatches);

        // After the reap, a state at forget that is not the child's next
        // is caught too; an in-order one is late.
        master.reaped(10, Exit::Code(0), now);
        book.reaped(10, Exit::Code(0));
        let late = channel(10, g, Status::AVAIL);
        assert_eq!(book.take(&late, master.receive(&late), 0), Event::Duplicated { pid: 10 });
        let g2 = master.begin_spawn(now).expect("spawn");
        master.spawned(11, g2).expect("spawned");
        book.spawned(11, g2, Kind::Victim, None);
        let first = channel(11, g2, Status::TAKEN);
        assert_eq!(
            book.take(&first, master.receive(&first), 0),
            Event::Arrived { pid: 11, kind: Kind::Victim, index: 0 }
        );
        master.reaped(11, Exit::Code(0), now);
        book.reaped(11, Exit::Code(0));
        let last = channel(11, g2, Status::AVAIL);
        assert_eq!(book.take(&last, master.receive(&last), 2), Event::Late, "state 3, two skipped");
        book.check(&master);
        assert_eq!(book.mismatches, 0, "{:?}", book.first_mismatches);
    }
}
