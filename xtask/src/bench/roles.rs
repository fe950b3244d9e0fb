//! The processes of one measurement: a master role (one process per
//! workload, subject and repetition, so its peak RSS and its signal mask
//! are its own) and the child roles it spawns, both this very binary
//! re-executed with `bench --role ...`.
//!
//! A master role prints one JSON object of metrics on stdout; a child role
//! reports what only it can see (its own timings) on its stdout, which the
//! master reads.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use master_proto::env::GENERATION_VAR;
use master_proto::{ChildFds, Status, StatusUpdate};
use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde_json::{Map, Value, json};

use super::subjects::{Item, KILL_PIDFD, Master, Subject, Workload};
use crate::stats::histogram;
use crate::sys;

/// The bound on any one wait of a measurement: it only matters when
/// something is broken, and then the error says what was awaited.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// The pause, in the wake-latency child, between the master's go-ahead and
/// the next update: long enough for the master to be asleep in poll(2).
const SPACING: Duration = Duration::from_micros(200);

/// How often the active child of a `sparse` run sends an update.
const SPARSE_PERIOD: Duration = Duration::from_millis(1);

/// What one role process is told.
#[derive(Clone, Debug)]
pub(crate) struct RoleArgs {
    /// The workload measured.
    pub(crate) workload: Workload,
    /// The subject measured.
    pub(crate) subject: Subject,
    /// Children (fan-in, sparse), else 1.
    pub(crate) children: usize,
    /// Updates per child (for a sparse child: 0 if it is an idle one), or
    /// samples.
    pub(crate) count: u64,
    /// The CPU for children, if pinned.
    pub(crate) child_cpu: Option<usize>,
}

fn status_of(k: u64) -> Status {
    if k.is_multiple_of(2) { Status::TAKEN } else { Status::AVAIL }
}

/// Update `k` of a fan-in child: TAKEN and AVAIL in turn where every
/// update is promised (each one is checked to alternate); where a subject
/// keeps each child's latest state, sequence numbers from 2, so that the
/// master can check that what it sees only moves forward and ends with the
/// child's last.
fn fan_in_status(every_update: bool, k: u64) -> Status {
    if every_update { status_of(k) } else { Status(i32::try_from(k + 2).unwrap_or(i32::MAX)) }
}

fn err(what: impl std::fmt::Display) -> io::Error {
    io::Error::other(what.to_string())
}

// ---------------------------------------------------------------- children

/// Runs a child role and exits the process.
pub(crate) fn child_main(args: &RoleArgs) -> io::Result<()> {
    if let Some(cpu) = args.child_cpu {
        sys::pin(cpu)?;
    }
    let mut sender = (args.subject.sender)()?;
    let mut out = io::stdout().lock();
    match args.workload {
        Workload::NotifyCost | Workload::NotifyStopped => {
            if args.workload == Workload::NotifyStopped {
                // Go once the master has stopped reading.
                let mut byte = [0u8; 1];
                io::stdin().lock().read_exact(&mut byte).map_err(|e| err(format!("waiting for the go-ahead: {e}")))?;
            }
            let start = Instant::now();
            for k in 0..args.count {
                sender.send(status_of(k))?;
            }
            let ns = start.elapsed().as_nanos();
            #[allow(clippy::cast_precision_loss, reason = "a mean in ns: f64 precision is plenty")]
            let per = ns as f64 / args.count.max(1) as f64;
            writeln!(out, "{per}")?;
        }
        Workload::WakeLatency => {
            let mut stdin = io::stdin().lock();
            let mut sent = Vec::with_capacity(usize::try_from(args.count).unwrap_or(0));
            let mut byte = [0u8; 1];
            for k in 0..args.count {
                stdin.read_exact(&mut byte).map_err(|e| err(format!("waiting for the go-ahead of sample {k}: {e}")))?;
                std::thread::sleep(SPACING);
                sent.push(sys::mono_ns());
                sender.send(status_of(k))?;
            }
            let line: Vec<String> = sent.iter().map(u64::to_string).collect();
            writeln!(out, "{}", line.join(" "))?;
        }
        Workload::FanIn => {
            // Ready (stdout is a pipe shared by all children), then the start
            // signal: end of file on stdin, for all children at once.
            out.write_all(b"r")?;
            out.flush()?;
            let mut sink = Vec::new();
            io::stdin().lock().read_to_end(&mut sink)?;
            for k in 0..args.count {
                sender.send(fan_in_status(args.subject.every_update, k))?;
            }
        }
        Workload::Sparse => {
            // Ready, then the start signal (end of file on stdin) for the
            // active child, the end of the run for an idle one (count 0).
            out.write_all(b"r")?;
            out.flush()?;
            let mut sink = Vec::new();
            io::stdin().lock().read_to_end(&mut sink)?;
            let mut sent = Vec::with_capacity(usize::try_from(args.count).unwrap_or(0));
            let start = Instant::now();
            for k in 0..args.count {
                // On a schedule, not a pause after each send: a slow send
                // does not stretch the period.
                let at = start + SPARSE_PERIOD * u32::try_from(k + 1).unwrap_or(u32::MAX);
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                sent.push(sys::mono_ns());
                sender.send(fan_in_status(args.subject.every_update, k))?;
            }
            if args.count > 0 {
                let line: Vec<String> = sent.iter().map(u64::to_string).collect();
                writeln!(out, "{}", line.join(" "))?;
            }
        }
        Workload::DeathMasterToChild => {
            let fd = sender.disconnect_fd().ok_or_else(|| err("this subject has no disconnect fd"))?;
            writeln!(out, "ready")?;
            out.flush()?;
            let deadline = Instant::now() + WAIT;
            while !sys::wait_readable(fd, deadline.saturating_duration_since(Instant::now()))? {
                if Instant::now() >= deadline {
                    return Err(err(format!("waited {WAIT:?} for the disconnect fd to fire")));
                }
            }
            writeln!(out, "{}", sys::mono_ns())?;
        }
        Workload::DeathChildToMaster => {
            writeln!(out, "ready")?;
            out.flush()?;
            // Killed here; end of file on stdin (the master gone) also ends it.
            let deadline = Instant::now() + WAIT;
            while !sys::wait_readable(io::stdin().as_fd(), deadline.saturating_duration_since(Instant::now()))? {
                if Instant::now() >= deadline {
                    return Err(err(format!("waited {WAIT:?} to be killed")));
                }
            }
        }
    }
    out.flush()
}

// ---------------------------------------------------------------- master

/// Spawns one child role for `args`, with generation `generation`.
fn spawn(master: &mut dyn Master, args: &RoleArgs, generation: u32, stdin: Stdio, stdout: Stdio) -> io::Result<Child> {
    let setup = master.child(generation)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["bench", "--role", "child", "--workload", args.workload.name(), "--subject", args.subject.name]);
    cmd.args(["--count", &args.count.to_string()]);
    if let Some(cpu) = args.child_cpu {
        cmd.args(["--child-cpu", &cpu.to_string()]);
    }
    cmd.envs(setup.env).stdin(stdin).stdout(stdout).stderr(Stdio::inherit());
    match setup.end {
        Some(end) => ChildFds::new(end, generation).install(&mut cmd).map_err(io::Error::other)?,
        None => {
            cmd.env(GENERATION_VAR, format!("{generation:o}"));
        }
    }
    let mut child = cmd.spawn()?;
    // The command holds the child's descriptors until it is dropped: drop
    // it now, so the master keeps no copy of the child's end.
    drop(cmd);
    if let Err(e) = master.spawned(generation, pid_of(&child)?) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok(child)
}

fn pid_of(child: &Child) -> io::Result<i32> {
    i32::try_from(child.id()).map_err(|_| err("pid out of range"))
}

/// Waits for `child` to exit successfully, at most [`WAIT`].
fn reap(child: &mut Child, what: &str) -> io::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait()? {
            return if status.success() { Ok(()) } else { Err(err(format!("{what} exited with {status}"))) };
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err(format!("waited {WAIT:?} for {what} to exit")));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn read_line(reader: &mut impl BufRead, what: &str) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(err(format!("the child closed its stdout before {what}")));
    }
    Ok(line.trim().to_owned())
}

/// Runs a master role: returns its metrics.
pub(crate) fn master_main(args: &RoleArgs) -> io::Result<Map<String, Value>> {
    match args.workload {
        Workload::NotifyCost => notify_cost(args),
        Workload::NotifyStopped => notify_stopped(args),
        Workload::WakeLatency => wake_latency(args),
        Workload::FanIn => fan_in(args),
        Workload::DeathMasterToChild => death_master_to_child(args),
        Workload::DeathChildToMaster => death_child_to_master(args),
        Workload::Sparse => sparse(args),
    }
}

fn items(item: Item) -> u64 {
    match item {
        Item::Update(_) => 1,
        Item::Count(n) => n,
        Item::Malformed => 0,
    }
}

/// The shortest span a `notify_cost` or `fan_in` figure is measured over.
/// A run that ends sooner is measured again with ten times the updates (at
/// most [`GROWTH`] times), so that a subject whose notify makes no system
/// call is measured over milliseconds of steady state, not over its first
/// page faults and wake-ups.
const SPAN: Duration = Duration::from_millis(50);

/// How many times a run is measured again with ten times the updates at
/// most.
const GROWTH: u32 = 2;

/// Runs `round` with `count` updates, then with ten times as many, until
/// a round lasts [`SPAN`] (the span it returns) or has grown [`GROWTH`]
/// times; the last round's metrics.
fn long_enough(
    mut count: u64,
    mut round: impl FnMut(u64) -> io::Result<(Map<String, Value>, Duration)>,
) -> io::Result<Map<String, Value>> {
    for grown in 0.. {
        let (out, span) = round(count)?;
        if span >= SPAN || grown == GROWTH {
            return Ok(out);
        }
        count = count.saturating_mul(10);
    }
    unreachable!("the loop returns by its last round")
}

fn notify_cost(args: &RoleArgs) -> io::Result<Map<String, Value>> {
    long_enough(args.count, |count| {
        let out = notify_cost_round(args, count)?;
        let ns = out.get("ns_per_notify").and_then(Value::as_f64).unwrap_or(f64::INFINITY);
        #[allow(clippy::cast_precision_loss, reason = "a duration in ns: f64 precision is plenty")]
        let span = Duration::try_from_secs_f64(ns * count as f64 / 1e9).unwrap_or(Duration::MAX);
        Ok((out, span))
    })
}

/// One `notify_cost` run of `count` notifies.
fn notify_cost_round(args: &RoleArgs, count: u64) -> io::Result<Map<String, Value>> {
    let args = &RoleArgs { count, ..args.clone() };
    let mut master = (args.subject.open)()?;
    let mut child = spawn(master.as_mut(), args, 1, Stdio::null(), Stdio::piped())?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or_else(|| err("no stdout"))?);
    let deadline = Instant::now() + WAIT;
    let (mut received, mut torn) = (0u64, 0u64);
    let count = |received: &mut u64, torn: &mut u64, item: Item| {
        *received += items(item);
        *torn += u64::from(item == Item::Malformed);
    };
    let has_channel = args.subject.name != "floor:syscall";
    loop {
        master.wait(Duration::from_millis(10))?;
        master.drain(&mut |batch| batch.iter().for_each(|&item| count(&mut received, &mut torn, item)))?;
        if has_channel && received >= args.count {
            break;
        }
        if child.try_wait()?.is_some() {
            master.drain(&mut |batch| batch.iter().for_each(|&item| count(&mut received, &mut torn, item)))?;
            break;
        }
        if Instant::now() >= deadline {
            return Err(err(format!("waited {WAIT:?} for {} updates, got {received}", args.count)));
        }
    }
    let ns = read_line(&mut stdout, "its timing")?;
    reap(&mut child, "the notifying child")?;
    let ns: f64 = ns.parse().map_err(|_| err(format!("the child reported {ns:?}, not a number")))?;
    let mut out = Map::new();
    out.insert("ns_per_notify".into(), json!(ns));
    if has_channel {
        out.insert("sent".into(), json!(args.count));
        out.insert("received".into(), json!(received));
        out.insert("torn".into(), json!(torn));
    }
    Ok(out)
}

fn notify_stopped(args: &RoleArgs) -> io::Result<Map<String, Value>> {
    long_enough(args.count, |count| {
        let out = notify_stopped_round(args, count)?;
        let ns = out.get("ns_per_notify").and_then(Value::as_f64).unwrap_or(f64::INFINITY);
        #[allow(clippy::cast_precision_loss, reason = "a duration in ns: f64 precision is plenty")]
        let span = Duration::try_from_secs_f64(ns * count as f64 / 1e9).unwrap_or(Duration::MAX);
        Ok((out, span))
    })
}

/// One `notify_stopped` run of `count` notifies: the master takes what the
/// child's spawn left (so that it sleeps on the channel, as a master that
/// hung while idle does), tells the child to go, and reads nothing more
/// until the child has finished. Only for subjects whose notify never
/// waits: any other would block the child for ever.
fn notify_stopped_round(args: &RoleArgs, count: u64) -> io::Result<Map<String, Value>> {
    let args = &RoleArgs { count, ..args.clone() };
    let mut master = (args.subject.open)()?;
    let mut child = spawn(master.as_mut(), args, 1, Stdio::piped(), Stdio::piped())?;
    let mut stdin = child.stdin.take().ok_or_else(|| err("no stdin"))?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or_else(|| err("no stdout"))?);
    // A few empty drains: a master that watches a channel it hears nothing
    // on goes to sleep on it (scoreboard sleeps on a slot after two).
    for _ in 0..4 {
        master.wait(Duration::from_millis(1))?;
        master.drain(&mut |_| {})?;
    }
    stdin.write_all(b".")?;
    // Stopped: the child's report is the only thing read.
    let ns = read_line(&mut stdout, "its timing")?;
    reap(&mut child, "the notifying child")?;
    let ns: f64 = ns.parse().map_err(|_| err(format!("the child reported {ns:?}, not a number")))?;
    let mut received = 0u64;
    master.drain(&mut |batch| received += batch.iter().map(|&item| items(item)).sum::<u64>())?;
    let mut out = Map::new();
    out.insert("ns_per_notify".into(), json!(ns));
    out.insert("sent".into(), json!(args.count));
    out.insert("received".into(), json!(received));
    Ok(out)
}

/// The quantiles written out for the distribution plot.
fn plot_quantiles() -> Vec<f64> {
    // 0 to 3.5 "nines": p0, p90, p99, p99.9, p99.95.
    (0..=70).map(|i| 1.0 - 10f64.powf(-f64::from(i) / 20.0)).map(|q| q.clamp(0.0, 1.0)).collect()
}

/// One child sends one update at a time, each after the master's
/// go-ahead; the latency of each is from the child's send (its clock) to
/// the update in the master's hands (the drain handing it over), so that a
/// master that reads inside its wait (tokio's `recv`) and one that reads
/// after it (poll(2), then drain) are timed alike.
fn wake_latency(args: &RoleArgs) -> io::Result<Map<String, Value>> {
    let mut master = (args.subject.open)()?;
    let mut child = spawn(master.as_mut(), args, 1, Stdio::piped(), Stdio::piped())?;
    let mut stdin = child.stdin.take().ok_or_else(|| err("no stdin"))?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or_else(|| err("no stdout"))?);
    let mut woke = Vec::with_capacity(usize::try_from(args.count).unwrap_or(0));
    for k in 0..args.count {
        stdin.write_all(b".")?;
        let deadline = Instant::now() + WAIT;
        loop {
            if master.wait(deadline.saturating_duration_since(Instant::now()))? {
                // Woken when the update is in the master's hands: the wait
                // and the read it takes (a tokio master reads inside its
                // wait, a poll(2) master after it).
                let (mut got, mut at) = (0, 0);
                master.drain(&mut |batch| {
                    let n = batch.iter().map(|&item| items(item)).sum::<u64>();
                    if n > 0 && got == 0 {
                        at = sys::mono_ns();
                    }
                    got += n;
                })?;
                if got > 0 {
                    woke.push(at);
                    break;
                }
            }
            if Instant::now() >= deadline {
                return Err(err(format!("waited {WAIT:?} for update {k}")));
            }
        }
    }
    drop(stdin);
    let sent = read_line(&mut stdout, "its send times")?;
    reap(&mut child, "the sending child")?;
    let sent: Vec<u64> = sent.split_whitespace().filter_map(|t| t.parse().ok()).collect();
    if sent.len() != woke.len() {
        return Err(err(format!("{} send times for {} wake-ups", sent.len(), woke.len())));
    }
    let latencies: Vec<u64> = woke.iter().zip(&sent).map(|(w, s)| w.saturating_sub(*s)).collect();
    let h = histogram(&latencies)?;
    let cdf: Vec<Value> = plot_quantiles().into_iter().map(|q| json!([q, h.value_at_quantile(q)])).collect();
    let mut out = Map::new();
    out.insert("p50_ns".into(), json!(h.value_at_quantile(0.5)));
    out.insert("p99_ns".into(), json!(h.value_at_quantile(0.99)));
    out.insert("p999_ns".into(), json!(h.value_at_quantile(0.999)));
    out.insert("samples".into(), json!(latencies.len()));
    out.insert("cdf".into(), Value::Array(cdf));
    Ok(out)
}

/// One expected child of a fan-in run.
#[derive(Debug)]
struct Expected {
    pid: i32,
    generation: u32,
    /// Updates accepted.
    accepted: u64,
    /// The last status accepted.
    last: Option<Status>,
}

/// Delivery bookkeeping of a fan-in run.
///
/// Where every update is promised, each child's updates must alternate
/// TAKEN, AVAIL, TAKEN, ... from TAKEN: one that repeats its child's
/// previous status is duplicated, one never accepted is lost. Where a
/// subject keeps each child's latest state, a child sends sequence numbers
/// from 2 ([`fan_in_status`]): each one that arrives must be later than
/// the child's previous (else it is duplicated: stale or repeated), the
/// ones that never arrive were coalesced, and a child whose last one never
/// arrived lost its final state.
#[derive(Debug, Default)]
pub(crate) struct Delivery {
    /// The children, in the order they were expected: a fan-in run gives
    /// the k-th child generation k, so an update's generation finds its
    /// child without a search (any other order still works, by search).
    children: Vec<Expected>,
    /// For a latest-state subject, each child's last status; `None` where
    /// every update is promised.
    final_state: Option<Status>,
    /// Updates accepted (in per-child alternation, or moving forward).
    pub(crate) accepted: u64,
    /// Everything that arrived (updates and counted wake-ups).
    pub(crate) received: u64,
    /// Malformed input, and updates naming no child of this run.
    pub(crate) torn: u64,
    /// Updates repeating their child's previous status (or, for a
    /// latest-state subject, not later than its previous one).
    pub(crate) duplicated: u64,
}

impl Delivery {
    /// Bookkeeping for a subject that keeps each child's latest state,
    /// whose children each send `count` updates.
    pub(crate) fn latest_state(count: u64) -> Delivery {
        Delivery { final_state: Some(fan_in_status(false, count.saturating_sub(1))), ..Delivery::default() }
    }

    /// Expects updates from `pid` with `generation`.
    pub(crate) fn expect(&mut self, pid: i32, generation: u32) {
        self.children.push(Expected { pid, generation, accepted: 0, last: None });
    }

    /// The child that sent `u`, if it is one of this run's.
    fn child(&mut self, u: StatusUpdate) -> Option<&mut Expected> {
        let is = |c: &Expected| c.pid == u.pid && c.generation == u.generation;
        let at = usize::try_from(u.generation).ok().and_then(|g| g.checked_sub(1));
        match at {
            Some(at) if self.children.get(at).is_some_and(is) => self.children.get_mut(at),
            _ => self.children.iter_mut().find(|c| is(c)),
        }
    }

    /// Takes one item into account.
    pub(crate) fn take(&mut self, item: Item) {
        match item {
            Item::Count(n) => {
                self.received += n;
                self.accepted += n;
            }
            Item::Malformed => {
                self.received += 1;
                self.torn += 1;
            }
            Item::Update(u) => {
                self.received += 1;
                let latest = self.final_state;
                match (self.child(u), latest) {
                    (Some(child), Some(last)) if (2..=last.0).contains(&u.status.0) => {
                        if child.last.is_some_and(|seen| seen >= u.status) {
                            self.duplicated += 1;
                        } else {
                            child.accepted += 1;
                            child.last = Some(u.status);
                            self.accepted += 1;
                        }
                    }
                    (Some(child), None) if u.status.is_known() => {
                        // Each child alternates TAKEN, AVAIL, TAKEN, ...
                        if child.last == Some(u.status) || child.last.is_none() && u.status != Status::TAKEN {
                            self.duplicated += 1;
                        } else {
                            child.accepted += 1;
                            child.last = Some(u.status);
                            self.accepted += 1;
                        }
                    }
                    _ => self.torn += 1,
                }
            }
        }
    }

    /// Whether every child's last update has arrived (for a latest-state
    /// subject: its final state; where every update is promised, all
    /// `sent` of them).
    pub(crate) fn complete(&self, sent: u64) -> bool {
        match self.final_state {
            Some(last) => self.children.iter().all(|c| c.last == Some(last)),
            None => self.accepted >= sent,
        }
    }

    /// What was lost of `sent` updates: updates never accepted where every
    /// update is promised; for a latest-state subject, children whose
    /// final state never arrived.
    pub(crate) fn lost(&self, sent: u64) -> u64 {
        match self.final_state {
            Some(last) => self.children.iter().filter(|c| c.last != Some(last)).count() as u64,
            None => sent.saturating_sub(self.accepted),
        }
    }

    /// For a latest-state subject, updates sent but never seen (each
    /// overwritten by a newer state of its child, by design).
    pub(crate) fn coalesced(&self, sent: u64) -> Option<u64> {
        self.final_state.map(|_| sent.saturating_sub(self.accepted))
    }
}

/// Children that are killed and reaped if the measurement ends early, so
/// none outlives its master and disturbs the next measurement.
struct Reaper(Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for child in &mut self.0 {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Waits until `children` children have each written one byte to the
/// pipe `ready` reads, at most [`WAIT`].
fn await_ready(ready: &OwnedFd, children: usize) -> io::Result<()> {
    let deadline = Instant::now() + WAIT;
    let (mut seen, mut buf) = (0, [0u8; 512]);
    while seen < children {
        if !sys::wait_readable(ready.as_fd(), deadline.saturating_duration_since(Instant::now()))? {
            return Err(err(format!("waited {WAIT:?} for {children} children to be ready, {seen} are")));
        }
        match nix::unistd::read(ready, &mut buf) {
            Ok(0) => return Err(err(format!("{} children exited before they were ready", children - seen))),
            Ok(n) => seen += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn fan_in(args: &RoleArgs) -> io::Result<Map<String, Value>> {
    long_enough(args.count, |count| fan_in_round(args, count))
}

/// One fan-in run with `count` updates per child: its metrics, and the
/// span the rate was measured over.
fn fan_in_round(args: &RoleArgs, count: u64) -> io::Result<(Map<String, Value>, Duration)> {
    let args = &RoleArgs { count, ..args.clone() };
    let mut master = (args.subject.open)()?;
    let (go_read, go_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (ready_read, ready_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let mut delivery = if args.subject.every_update { Delivery::default() } else { Delivery::latest_state(args.count) };
    let mut children = Reaper(Vec::with_capacity(args.children));
    for i in 0..args.children {
        let generation = u32::try_from(i + 1).map_err(err)?;
        let stdin = Stdio::from(go_read.try_clone()?);
        let stdout = Stdio::from(ready_write.try_clone()?);
        let child = spawn(master.as_mut(), args, generation, stdin, stdout)?;
        delivery.expect(pid_of(&child)?, generation);
        children.0.push(child);
    }
    drop(go_read);
    drop(ready_write);
    // Every child has built its sender before any starts: a subject whose
    // set-up is slow is not measured while others already send.
    await_ready(&ready_read, args.children)?;
    let sent = args.count * u64::try_from(args.children).map_err(err)?;
    let go = Instant::now();
    drop::<OwnedFd>(go_write);
    // The rate counts from the first arrival to the last: the children's
    // wake-up from the start signal is not part of it.
    let mut first: Option<(Instant, u64)> = None;
    let mut last = go;
    let mut exited = vec![false; children.0.len()];
    let deadline = go + WAIT * 2;
    loop {
        master.wait(Duration::from_millis(20))?;
        let before = delivery.received;
        let before_accepted = delivery.accepted;
        master.drain(&mut |batch| batch.iter().for_each(|&item| delivery.take(item)))?;
        if delivery.received > before {
            last = Instant::now();
            first.get_or_insert((last, delivery.accepted - before_accepted));
        }
        // Every update in, or (latest state) every child's final state:
        // nothing more is owed.
        if delivery.complete(sent) {
            break;
        }
        if delivery.received == before {
            // Quiet: have all children exited? Then one last drain ends it.
            for (child, done) in children.0.iter_mut().zip(exited.iter_mut()) {
                if !*done && child.try_wait()?.is_some() {
                    *done = true;
                }
            }
            if exited.iter().all(|d| *d) {
                let before = delivery.received;
                master.drain(&mut |batch| batch.iter().for_each(|&item| delivery.take(item)))?;
                if delivery.received == before {
                    break;
                }
                last = Instant::now();
            }
        }
        if Instant::now() >= deadline {
            return Err(err(format!(
                "waited {:?} for {sent} updates from {} children, {} arrived",
                WAIT * 2,
                args.children,
                delivery.accepted
            )));
        }
    }
    let (start, in_first_drain) = first.ok_or_else(|| err("no update arrived"))?;
    for child in &mut children.0 {
        let pid = pid_of(child)?;
        reap(child, "a fan-in child")?;
        master.reaped(pid);
    }
    let span = last.duration_since(start);
    #[allow(clippy::cast_precision_loss, reason = "a rate: f64 precision is plenty")]
    let rate = if last > start {
        // What arrived after the first drain, over the time it took.
        (delivery.accepted - in_first_drain) as f64 / last.duration_since(start).as_secs_f64()
    } else {
        // Everything in one drain: the best bound is the time since the go.
        delivery.accepted as f64 / last.duration_since(go).as_secs_f64().max(1e-9)
    };
    let mut out = Map::new();
    out.insert("updates_per_sec".into(), json!(rate));
    out.insert("master_peak_rss_kib".into(), json!(sys::peak_rss_kib()?));
    out.insert("sent".into(), json!(sent));
    out.insert("received".into(), json!(delivery.received));
    out.insert("lost".into(), json!(delivery.lost(sent)));
    if args.subject.carries_updates {
        out.insert("torn".into(), json!(delivery.torn));
        out.insert("duplicated".into(), json!(delivery.duplicated));
    }
    if let Some(coalesced) = delivery.coalesced(sent) {
        out.insert("coalesced".into(), json!(coalesced));
    }
    Ok((out, span))
}

/// How long the master of a sparse run may hear nothing before it looks
/// whether the active child is done.
const QUIET: Duration = Duration::from_millis(50);

/// A sparse run: `args.children` children, all idle (they send nothing)
/// but the first, which sends `args.count` updates, one every
/// [`SPARSE_PERIOD`]. The master does what a real one does: it sleeps in
/// poll(2) on the subject's descriptor and drains it when it fires.
/// Metrics: the master's CPU time (user and system, `getrusage`) from the
/// start signal to the last update, per update received; and each update's
/// wake latency, from the active child's send to the update in the
/// master's hands (as in `wake_latency`).
fn sparse(args: &RoleArgs) -> io::Result<Map<String, Value>> {
    let mut master = (args.subject.open)()?;
    let (go_read, go_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (end_read, end_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (ready_read, ready_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let mut children = Reaper(Vec::with_capacity(args.children));
    // The active child: generation 1, started by `go`, its send times on
    // a stdout of its own.
    let mut active = spawn(master.as_mut(), args, 1, Stdio::from(go_read), Stdio::piped())?;
    let active_pid = pid_of(&active)?;
    let mut times = BufReader::new(active.stdout.take().ok_or_else(|| err("no stdout"))?);
    children.0.push(active);
    // The idle ones: they send nothing and exit at the end of the run.
    let idle = RoleArgs { count: 0, ..args.clone() };
    for i in 1..args.children {
        let generation = u32::try_from(i + 1).map_err(err)?;
        let stdin = Stdio::from(end_read.try_clone()?);
        let stdout = Stdio::from(ready_write.try_clone()?);
        children.0.push(spawn(master.as_mut(), &idle, generation, stdin, stdout)?);
    }
    drop(end_read);
    drop(ready_write);
    let mut byte = [0u8; 1];
    times.read_exact(&mut byte).map_err(|e| err(format!("waiting for the active child to be ready: {e}")))?;
    await_ready(&ready_read, args.children.saturating_sub(1))?;
    let mut delivery = if args.subject.every_update { Delivery::default() } else { Delivery::latest_state(args.count) };
    delivery.expect(active_pid, 1);
    // When each accepted update was received.
    let mut woke: Vec<u64> = Vec::with_capacity(usize::try_from(args.count).unwrap_or(0));
    let deadline = Instant::now() + SPARSE_PERIOD * u32::try_from(args.count).unwrap_or(u32::MAX) + WAIT;
    let cpu_before = sys::cpu_ns()?;
    drop::<OwnedFd>(go_write);
    loop {
        let fired = master.wait(QUIET)?;
        // Quiet: once the active child is done, one last drain ends it.
        let done = !fired && children.0.first_mut().map(Child::try_wait).transpose()?.flatten().is_some();
        if fired || done {
            // As in `wake_latency`: woken when the update is in hand.
            let before = delivery.accepted;
            let mut at = None;
            master.drain(&mut |batch| {
                if !batch.is_empty() {
                    at.get_or_insert_with(sys::mono_ns);
                }
                batch.iter().for_each(|&item| delivery.take(item));
            })?;
            let new = usize::try_from(delivery.accepted - before).map_err(err)?;
            woke.extend(std::iter::repeat_n(at.unwrap_or(0), new));
        }
        if done || args.subject.every_update && delivery.accepted >= args.count {
            break;
        }
        if Instant::now() >= deadline {
            return Err(err(format!("waited for {} updates, {} arrived", args.count, delivery.accepted)));
        }
    }
    let cpu = sys::cpu_ns()?.saturating_sub(cpu_before);
    let sent = read_line(&mut times, "its send times")?;
    let sent: Vec<u64> = sent.split_whitespace().filter_map(|t| t.parse().ok()).collect();
    if let Some(active) = children.0.first_mut() {
        reap(active, "the active child")?;
    }
    drop::<OwnedFd>(end_write);
    for child in &mut children.0 {
        let pid = pid_of(child)?;
        reap(child, "a sparse child")?;
        master.reaped(pid);
    }
    let latencies = match_sends(&sent, &woke, args.subject.every_update);
    let mut out = percentiles(&latencies)?;
    #[allow(clippy::cast_precision_loss, reason = "a mean in ns: f64 precision is plenty")]
    let per = cpu as f64 / delivery.received.max(1) as f64;
    out.insert("cpu_ns_per_update".into(), json!(per));
    out.insert("sent".into(), json!(args.count));
    out.insert("received".into(), json!(delivery.received));
    out.insert("lost".into(), json!(delivery.lost(args.count)));
    if let Some(coalesced) = delivery.coalesced(args.count) {
        out.insert("coalesced".into(), json!(coalesced));
    }
    if args.subject.carries_updates {
        out.insert("torn".into(), json!(delivery.torn));
        out.insert("duplicated".into(), json!(delivery.duplicated));
    }
    Ok(out)
}

/// The wake latency of each update received at the times `woke`, from the
/// send times `sent`: the k-th update received is the k-th sent where
/// every update arrives (`in_order`) and none was lost; else an update
/// received is taken to be the last one sent before it was received (what
/// a transport that keeps each child's latest state delivers).
fn match_sends(sent: &[u64], woke: &[u64], in_order: bool) -> Vec<u64> {
    if in_order && sent.len() == woke.len() {
        return woke.iter().zip(sent).map(|(w, s)| w.saturating_sub(*s)).collect();
    }
    woke.iter()
        .filter_map(|&w| {
            let last = sent.partition_point(|&s| s <= w).checked_sub(1)?;
            Some(w.saturating_sub(*sent.get(last)?))
        })
        .collect()
}

fn percentiles(samples: &[u64]) -> io::Result<Map<String, Value>> {
    let h = histogram(samples)?;
    let mut out = Map::new();
    out.insert("p50_ns".into(), json!(h.value_at_quantile(0.5)));
    out.insert("p99_ns".into(), json!(h.value_at_quantile(0.99)));
    out.insert("samples".into(), json!(samples.len()));
    Ok(out)
}

/// Runs a victim role: a master that opens the channel, spawns one child
/// (whose stdout is this process's, so its lines reach the role master
/// that spawned this one), says the child's pid, and waits to be killed.
pub(crate) fn victim_main(args: &RoleArgs) -> io::Result<()> {
    let mut master = (args.subject.open)()?;
    let child = spawn(master.as_mut(), args, 1, Stdio::null(), Stdio::inherit())?;
    let mut out = io::stdout().lock();
    writeln!(out, "child {}", child.id())?;
    out.flush()?;
    let deadline = Instant::now() + WAIT;
    while !sys::wait_readable(io::stdin().as_fd(), deadline.saturating_duration_since(Instant::now()))? {
        if Instant::now() >= deadline {
            return Err(err(format!("waited {WAIT:?} to be killed")));
        }
    }
    Ok(())
}

/// Master -> child when the master is SIGKILLed: a victim master process
/// per sample; its child's timestamp against the moment of the kill.
fn death_master_killed(args: &RoleArgs) -> io::Result<Vec<u64>> {
    // The victim's child outlives it: as a subreaper this process inherits
    // and reaps it.
    nix::sys::prctl::set_child_subreaper(true)?;
    let mut samples = Vec::new();
    for _ in 0..args.count {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["bench", "--role", "victim", "--workload", args.workload.name(), "--subject", args.subject.name]);
        if let Some(cpu) = args.child_cpu {
            cmd.args(["--child-cpu", &cpu.to_string()]);
        }
        let mut victim = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
        let mut stdout = BufReader::new(victim.stdout.take().ok_or_else(|| err("no stdout"))?);
        let (mut child, mut ready) = (None, false);
        while child.is_none() || !ready {
            let line = read_line(&mut stdout, "the victim's child is ready")?;
            match line.strip_prefix("child ") {
                Some(pid) => child = Some(pid.parse::<i32>().map_err(|_| err(format!("bad pid line {line:?}")))?),
                None if line == "ready" => ready = true,
                None => return Err(err(format!("unexpected line {line:?}"))),
            }
        }
        let killed = sys::mono_ns();
        victim.kill()?;
        victim.wait()?;
        let fired = read_line(&mut stdout, "its disconnect time")?;
        let fired: u64 = fired.parse().map_err(|_| err(format!("the child reported {fired:?}, not a time")))?;
        if let Some(pid) = child {
            // The child exits right after its report (or at its own bound).
            match waitpid(Pid::from_raw(pid), None)? {
                WaitStatus::Exited(_, 0) => {}
                other => return Err(err(format!("the orphaned child ended with {other:?}"))),
            }
        }
        samples.push(fired.saturating_sub(killed));
    }
    Ok(samples)
}

fn death_master_to_child(args: &RoleArgs) -> io::Result<Map<String, Value>> {
    let mut samples = Vec::new();
    for _ in 0..args.count {
        let mut master = (args.subject.open)()?;
        let mut child = spawn(master.as_mut(), args, 1, Stdio::null(), Stdio::piped())?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or_else(|| err("no stdout"))?);
        let ready = read_line(&mut stdout, "saying it is ready")?;
        if ready != "ready" {
            return Err(err(format!("the child said {ready:?}, not ready")));
        }
        let closed = sys::mono_ns();
        drop(master);
        let fired = read_line(&mut stdout, "its disconnect time")?;
        let fired: u64 = fired.parse().map_err(|_| err(format!("the child reported {fired:?}, not a time")))?;
        reap(&mut child, "the disconnected child")?;
        samples.push(fired.saturating_sub(closed));
    }
    let mut out = percentiles(&samples)?;
    let killed = histogram(&death_master_killed(args)?)?;
    out.insert("kill_p50_ns".into(), json!(killed.value_at_quantile(0.5)));
    out.insert("kill_p99_ns".into(), json!(killed.value_at_quantile(0.99)));
    Ok(out)
}

fn death_child_to_master(args: &RoleArgs) -> io::Result<Map<String, Value>> {
    // What a master with an event loop does: SIGCHLD through a signalfd,
    // then waitpid. This role process is single-threaded, so blocking the
    // signal here blocks it for the process; children start with an empty
    // mask (std resets it before exec). The floor, `floor:kill_pidfd`,
    // learns it by the child's pidfd instead (see `kill_by_pidfd`).
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block()?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    let mut master = (args.subject.open)()?;
    let mut samples = Vec::new();
    for k in 0..args.count {
        let generation = u32::try_from(k + 1).map_err(err)?;
        let mut child = spawn(master.as_mut(), args, generation, Stdio::piped(), Stdio::piped())?;
        let pid = pid_of(&child)?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or_else(|| err("no stdout"))?);
        let ready = read_line(&mut stdout, "saying it is ready")?;
        if ready != "ready" {
            return Err(err(format!("the child said {ready:?}, not ready")));
        }
        if args.subject.name == KILL_PIDFD {
            samples.push(kill_by_pidfd(pid)?);
            master.reaped(pid);
            drop(child);
            continue;
        }
        let killed = sys::mono_ns();
        kill(Pid::from_raw(pid), Signal::SIGKILL)?;
        let deadline = Instant::now() + WAIT;
        let learned = 'learn: loop {
            if sys::wait_readable(signals.as_fd(), deadline.saturating_duration_since(Instant::now()))? {
                while signals.read_signal()?.is_some() {}
                // The only child alive is the one killed: one SIGCHLD, one
                // reap.
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG))? {
                    WaitStatus::Signaled(p, Signal::SIGKILL, _) if p.as_raw() == pid => break 'learn sys::mono_ns(),
                    WaitStatus::StillAlive => {}
                    other => return Err(err(format!("unexpected child status {other:?}"))),
                }
            }
            if Instant::now() >= deadline {
                return Err(err(format!("waited {WAIT:?} to learn that child {pid} died")));
            }
        };
        master.reaped(pid);
        samples.push(learned.saturating_sub(killed));
        // The child is reaped already: dropping `child` does not wait.
        drop(child);
    }
    percentiles(&samples)
}

/// The floor of `death_child_to_master` for one child `pid`, alive and
/// not reaped: from `kill(2)` to the return of the poll(2) that sees its
/// pidfd readable; then reaps it.
fn kill_by_pidfd(pid: i32) -> io::Result<u64> {
    let pidfd = sys::pidfd_open(pid)?;
    let killed = sys::mono_ns();
    kill(Pid::from_raw(pid), Signal::SIGKILL)?;
    if !sys::wait_readable(pidfd.as_fd(), WAIT)? {
        return Err(err(format!("waited {WAIT:?} for the pidfd of child {pid}")));
    }
    let learned = sys::mono_ns();
    match waitpid(Pid::from_raw(pid), None)? {
        WaitStatus::Signaled(_, Signal::SIGKILL, _) => Ok(learned.saturating_sub(killed)),
        other => Err(err(format!("unexpected child status {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(pid: i32, generation: u32, status: Status) -> Item {
        Item::Update(StatusUpdate { pid, generation, status })
    }

    #[test]
    fn delivery_counts_whole_alternating_updates() {
        let mut d = Delivery::default();
        d.expect(10, 1);
        d.expect(11, 2);
        for item in [
            update(10, 1, Status::TAKEN),
            update(11, 2, Status::TAKEN),
            update(10, 1, Status::AVAIL),
            update(11, 2, Status::AVAIL),
        ] {
            d.take(item);
        }
        assert_eq!((d.accepted, d.received, d.torn, d.duplicated, d.lost(4)), (4, 4, 0, 0, 0));
    }

    #[test]
    fn delivery_flags_torn_duplicated_and_lost() {
        let mut d = Delivery::default();
        d.expect(10, 1);
        d.take(update(10, 1, Status::TAKEN));
        d.take(update(10, 1, Status::TAKEN)); // a repeat
        d.take(update(10, 2, Status::AVAIL)); // wrong generation
        d.take(update(99, 1, Status::AVAIL)); // no such child
        d.take(update(10, 1, Status(7))); // no such status
        d.take(Item::Malformed);
        assert_eq!(d.accepted, 1);
        assert_eq!(d.duplicated, 1);
        assert_eq!(d.torn, 4);
        assert_eq!(d.received, 6);
        assert_eq!(d.lost(4), 3);
    }

    #[test]
    fn latest_state_delivery_wants_each_childs_last_and_nothing_stale() {
        // Two children of four updates each: sequence numbers 2..=5.
        let mut d = Delivery::latest_state(4);
        d.expect(10, 1);
        d.expect(11, 2);
        for item in [update(10, 1, Status(3)), update(11, 2, Status(5)), update(10, 1, Status(2))] {
            d.take(item);
        }
        assert_eq!((d.accepted, d.duplicated, d.torn), (2, 1, 0), "2 after 3 is stale");
        assert!(!d.complete(8));
        assert_eq!(d.lost(8), 1, "child 10's final state has not arrived");
        d.take(update(10, 1, Status(5)));
        d.take(update(10, 1, Status(9)));
        assert_eq!(d.torn, 1, "9 was never sent");
        assert!(d.complete(8));
        assert_eq!((d.lost(8), d.coalesced(8)), (0, Some(5)));
        assert_eq!(Delivery::default().coalesced(8), None);
    }

    #[test]
    fn a_first_update_must_be_taken() {
        let mut d = Delivery::default();
        d.expect(10, 1);
        d.take(update(10, 1, Status::AVAIL));
        assert_eq!((d.accepted, d.duplicated), (0, 1));
    }

    #[test]
    fn sends_match_receipts_in_order_or_by_the_last_send_before() {
        // Every update arrived: the k-th receipt is the k-th send, even
        // one received after the next was sent.
        assert_eq!(match_sends(&[100, 200, 300], &[150, 260, 340], true), [50, 60, 40]);
        // One coalesced away: each receipt is the last send before it.
        assert_eq!(match_sends(&[100, 200, 300], &[150, 340], false), [50, 40]);
        assert_eq!(match_sends(&[100, 200, 300], &[150, 340], true), [50, 40]);
        // A receipt before any send names none.
        assert_eq!(match_sends(&[100], &[50, 120], false), [20]);
    }

    #[test]
    fn plot_quantiles_rise_from_zero_to_three_and_a_half_nines() {
        let q = plot_quantiles();
        assert_eq!(q.first().copied(), Some(0.0));
        assert!(q.windows(2).all(|w| w[0] < w[1]));
        assert!((q.last().copied().unwrap_or(0.0) - 0.999_683).abs() < 1e-4);
    }
}
