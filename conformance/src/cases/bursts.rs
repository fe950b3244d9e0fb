//! Bursts for the edge-triggered cases: a child that sends a burst of 1 to
//! 300 records, at varying spacing, each time the master pokes it; quiet
//! children beside it; and the master's account of what each burst must
//! bring and which of its waits stalled.
//!
//! An edge-triggered master (tokio, mio, `EPOLLET`) drains until the source
//! says nothing is pending, then waits for the next readiness edge. A
//! transport that ends a drain while records are pending and makes no new
//! edge leaves such a master asleep on them: a *stall*. Every wait here is
//! bounded ([`BOUND`]). A wait that ends by its bound is judged, not failed
//! outright, since a loaded machine may simply have kept the child from
//! running:
//!
//! first the master waits (at most [`JUDGE`]) until every edge the
//! transport makes for what the child sent exists: the child said it sent
//! the whole burst, or it sleeps in a system call (blocked on a full
//! channel). Then:
//!
//! - an edge now came after the bound: the child was slow;
//! - else nothing pending: the child has not sent yet (a burst that never
//!   arrives whole fails the case after [`WAIT`], or at once if the child
//!   has said it sent it all: records lost);
//! - else a record is pending and no edge came: the wait stalled.
//!
//! A stall is a race between the master draining and the child sending at
//! the same moment, so runs take turns ([`ONE_AT_A_TIME`]) and pin the
//! master's thread and the bursting child to two CPUs ([`Apart`]); on one
//! CPU the two mostly take turns, and the race hardly ever happens.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use master_proto::{Received, Status, StatusSink, StatusSource, Transport};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

use crate::harness::{
    Bound, Ctx, Kid, Rng, Script, Spawn, Tracker, WAIT, asleep_in_syscall, await_poke, child_sink, fail, poll_until,
    receive, say, update_of,
};

/// The bound on one wait of an edge-triggered master: short, so that a
/// transport that stalls costs little time per stall.
pub(crate) const BOUND: Duration = Duration::from_millis(50);

/// How long a wait that ended by its bound waits for the child to have sent
/// what it will send (it said it sent its whole burst, or it is blocked),
/// before it is judged anyway.
pub(crate) const JUDGE: Duration = Duration::from_secs(1);

/// A run stops after this many stalls: enough to see which burst sizes
/// stall, few enough that a broken transport fails in seconds.
pub(crate) const MAX_STALLS: usize = 20;

/// A run makes no new burst after this long: a run takes 1-3 s on an idle
/// 2-core machine, but on one loaded by other work every wait the child
/// is kept from answering costs up to [`JUDGE`], and the run does fewer
/// bursts rather than take minutes. The report says so.
const BUDGET: Duration = Duration::from_secs(15);

/// How many quiet children sit beside the bursting one (each with a
/// channel or ring of its own where the transport makes one per child).
const QUIET: usize = 3;

/// The generation of every child of these cases.
const GENERATION: u32 = 5;

/// Held by every run of bursts, so that the test harness's threads run
/// them one at a time: a stall is a race between the master draining and
/// the child sending, which shows only while both have a CPU; a second run
/// beside it on a small machine hides it.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The master's thread and the bursting child on two CPUs of their own,
/// while this lives. A stall is a race between the master draining and the
/// child sending at the same time; on one CPU they take turns (the poke
/// that starts a burst wakes the child where the master runs), and most
/// races never happen. Where fewer than two CPUs are allowed, or the
/// kernel refuses, nothing is pinned.
#[derive(Debug)]
struct Apart {
    restore: Option<CpuSet>,
}

impl Apart {
    fn pin(child: i32) -> Apart {
        let none = Apart { restore: None };
        let Ok(mine) = sched_getaffinity(Pid::from_raw(0)) else { return none };
        let cpus: Vec<usize> = (0..CpuSet::count()).filter(|&c| mine.is_set(c).unwrap_or(false)).take(2).collect();
        let &[master, kid] = cpus.as_slice() else { return none };
        let only = |cpu: usize| {
            let mut set = CpuSet::new();
            set.set(cpu).map(|()| set)
        };
        let (Ok(master), Ok(kid)) = (only(master), only(kid)) else { return none };
        if sched_setaffinity(Pid::from_raw(child), &kid).is_err()
            || sched_setaffinity(Pid::from_raw(0), &master).is_err()
        {
            return none;
        }
        Apart { restore: Some(mine) }
    }
}

impl Drop for Apart {
    fn drop(&mut self) {
        if let Some(mine) = &self.restore {
            let _ = sched_setaffinity(Pid::from_raw(0), mine);
        }
    }
}

/// One burst: how many records, the pause before it, and the pause between
/// two of its records.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Burst {
    size: usize,
    before: Duration,
    between: Duration,
    /// The master waits until the child has sent the whole burst, then
    /// waits for readiness without draining first.
    lockstep: bool,
}

/// The largest lockstep burst: below what a socket's default buffer holds
/// (278 records of 12 bytes on Linux with the default `wmem`), so that the
/// child, whom the master does not read while it waits for it to finish,
/// is not blocked on a full channel.
const LOCKSTEP_MAX: usize = 200;

/// The burst in progress: its number, whether the child said it sent it,
/// and when it must have arrived.
#[derive(Clone, Copy, Debug)]
struct Current {
    k: usize,
    burst: Burst,
    said: bool,
    deadline: Instant,
}

/// The bursts of one run, the same in the master and in the child: both
/// draw them from the run's seed.
#[derive(Clone, Debug)]
struct Plan(Rng);

impl Plan {
    fn new(seed: u64) -> Plan {
        Plan(Rng::new(seed))
    }

    /// The next burst: its size from one of four ranges up to 300 (one
    /// record or a few, about a fairness round of the transports that have
    /// one, a few rounds, a few hundred); before it a pause of none to
    /// 1.5 ms; within it, half the time, 0.5 to 20 µs between records, so
    /// that the burst lasts about as long as the master's wake-ups and the
    /// master drains while the child still sends.
    ///
    /// Half the bursts (at most [`LOCKSTEP_MAX`] records) are in lockstep:
    /// the master waits until the child has sent the burst, then waits for
    /// readiness. Those need no luck: the records are sent after the
    /// master's last `None` and before its wait, the very case contract
    /// item 7 is about, whichever CPU runs what when. The others race the
    /// master's drain against the child's sending, which needs both to run
    /// at the same time.
    fn next_burst(&mut self) -> Burst {
        let r = &mut self.0;
        let size = match r.below(4) {
            0 => 1 + r.below(4),
            1 => 5 + r.below(28),
            2 => 33 + r.below(96),
            _ => 129 + r.below(172),
        };
        let micros = |n: usize| Duration::from_micros(u64::try_from(n).unwrap_or(0));
        let before = match r.below(4) {
            0 => Duration::ZERO,
            1 => micros(1 + r.below(20)),
            2 => micros(50 + r.below(450)),
            _ => micros(500 + r.below(1000)),
        };
        let between = match r.below(4) {
            0 | 1 => Duration::ZERO,
            2 => micros(1 + r.below(6)) / 2,
            _ => micros(3 + r.below(18)),
        };
        let lockstep = r.below(2) == 0;
        let size = if lockstep { size.min(LOCKSTEP_MAX) } else { size };
        Burst { size, before, between, lockstep }
    }
}

/// Pauses for `d`. The spacing of the bursts is the workload itself, not a
/// wait for a condition: short pauses spin (a sleep would last far longer
/// than asked), longer ones sleep.
fn pause(d: Duration) {
    if d.is_zero() {
        return;
    }
    if d < Duration::from_micros(50) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    } else {
        std::thread::sleep(d);
    }
}

/// Plays the child role of the burst cases if `role` is one (and then
/// exits): `quiet` sends AVAIL, then nothing until its stdin closes;
/// `burster` (arg: the seed) sends one burst per poke, its records numbered
/// from 2, and says `sent <k>;` after burst `k`.
pub(crate) fn burst_roles<T: Transport + Default>(ctx: &Ctx, role: &str) {
    match role {
        "quiet" => {
            let sink = child_sink::<T>();
            sink.notify(Status::AVAIL).unwrap_or_else(|e| fail(format_args!("notify: {e}")));
            while await_poke() {}
            std::process::exit(0);
        }
        "burster" => {
            let mut plan = Plan::new(ctx.arg_u64());
            let sink = child_sink::<T>();
            let mut next = 2i32;
            let mut k = 0u64;
            while await_poke() {
                let burst = plan.next_burst();
                pause(burst.before);
                for i in 0..burst.size {
                    if i > 0 {
                        pause(burst.between);
                    }
                    sink.notify(Status(next)).unwrap_or_else(|e| fail(format_args!("burst {k}, record {i}: {e}")));
                    next += 1;
                }
                say(format_args!("sent {k};"));
                k += 1;
            }
            std::process::exit(0);
        }
        _ => {}
    }
}

/// What a run saw.
#[derive(Clone, Debug)]
pub(crate) struct Report {
    seed: u64,
    planned: usize,
    /// Whether the run stopped at its time budget.
    out_of_time: bool,
    /// Waits for readiness the master made.
    pub(crate) waits: u64,
    /// Waits that ended by their bound and were judged not stalled (the
    /// child was slow, or an edge came right after the bound).
    pub(crate) late: u64,
    /// Each stalled wait's burst, with its number, in order.
    pub(crate) stalls: Vec<(usize, Burst)>,
    /// Bursts that arrived whole.
    pub(crate) bursts: usize,
    /// Records received from the bursting child.
    pub(crate) records: usize,
}

impl Report {
    /// Panics with the whole story if any wait stalled: the transport, the
    /// master (how it waits), how many waits stalled and the sizes of their
    /// bursts.
    pub(crate) fn assert_no_stall(&self, transport: &str, master: &str) {
        if self.stalls.is_empty() {
            return;
        }
        // The stalled bursts, each with how many of its waits stalled.
        let mut bursts: Vec<(usize, Burst, usize)> = Vec::new();
        for &(k, burst) in &self.stalls {
            match bursts.last_mut() {
                Some((last, _, n)) if *last == k => *n += 1,
                _ => bursts.push((k, burst, 1)),
            }
        }
        let by_range = [(1, 4), (5, 32), (33, 128), (129, 300)]
            .iter()
            .map(|&(lo, hi)| {
                format!("{lo}-{hi}: {}", bursts.iter().filter(|(_, b, _)| (lo..=hi).contains(&b.size)).count())
            })
            .collect::<Vec<_>>()
            .join(", ");
        let listed = bursts
            .iter()
            .map(|(k, b, n)| {
                let lockstep = if b.lockstep { ", lockstep" } else { "" };
                format!("#{k} ({} records {:?} apart{lockstep}): {n}", b.size, b.between)
            })
            .collect::<Vec<_>>()
            .join("; ");
        panic!(
            "{transport}, {master}: {} of {} waits stalled (ended by their {BOUND:?} bound with a record pending and \
             no new readiness edge){}; stalled waits by burst: {listed}; stalled bursts by size: {by_range}; {} of \
             {} bursts arrived whole, {} records; {} waits ended by their bound without a stall; seed {:#x}",
            self.stalls.len(),
            self.waits,
            if self.stalls.len() >= MAX_STALLS { " and the run stopped there" } else { "" },
            self.bursts,
            self.planned,
            self.records,
            self.late,
            self.seed,
        );
    }

    /// One line for a passing run.
    #[must_use]
    pub(crate) fn summary(&self) -> String {
        format!(
            "{} bursts{}, {} records, {} waits ({} ended by their bound, none stalled), seed {:#x}",
            self.bursts,
            if self.out_of_time {
                format!(" of {} (time budget {BUDGET:?} spent)", self.planned)
            } else {
                String::new()
            },
            self.records,
            self.waits,
            self.late,
            self.seed
        )
    }
}

/// What [`BurstRun::judge`] found after a wait ended by its bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing was pending, or an edge came after all: wait again.
    WaitAgain,
    /// A record was pending and no edge came: a stall (counted).
    Stalled,
}

/// One run of bursts: the children, the plan and what arrived.
#[derive(Debug)]
pub(crate) struct BurstRun {
    _alone: MutexGuard<'static, ()>,
    _apart: Apart,
    kids: Vec<Kid>,
    pid: i32,
    plan: Plan,
    tracker: Tracker,
    /// The master's own choices (drain or `try_recv`), from the seed too.
    rng: Rng,
    /// Records the bursting child has been asked for so far.
    asked: usize,
    /// The burst in progress.
    burst: Option<Current>,
    /// When the run makes no new burst ([`BUDGET`]).
    budget: Instant,
    pub(crate) report: Report,
}

impl BurstRun {
    /// Spawns the quiet children and the bursting one on `source`,
    /// registered, and receives the quiet ones' AVAIL; the run is to make
    /// `planned` bursts.
    pub(crate) fn start<T: Transport>(ctx: &Ctx, t: &T, source: &mut T::Source, planned: usize) -> BurstRun {
        // A run that failed only poisoned the lock; the next one is fine.
        let alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let seed = Rng::fresh_seed();
        let mut plan = Plan::new(seed);
        let total: usize = (0..planned).map(|_| plan.next_burst().size).sum();
        let mut tracker = Tracker::new(t.caps().delivery);
        let mut kids = Vec::new();
        for _ in 0..QUIET {
            let kid = Spawn::new(ctx, "quiet", GENERATION).stdin().spawn_registered(t, source);
            tracker.add(kid.pid(), GENERATION, Script::new(vec![Status::AVAIL.0]));
            kids.push(kid);
        }
        let burster = Spawn::new(ctx, "burster", GENERATION).stdin().stdout().arg(seed).spawn_registered(t, source);
        let pid = burster.pid();
        let apart = Apart::pin(pid);
        tracker.add(pid, GENERATION, Script::sequence(2, i32::try_from(total).expect("fits"), &[]));
        kids.push(burster);
        for item in receive(source, QUIET, "the quiet children's AVAIL") {
            tracker.take(&update_of(item, "a quiet child")).unwrap_or_else(|e| panic!("{e}"));
        }
        BurstRun {
            _alone: alone,
            _apart: apart,
            kids,
            pid,
            plan: Plan::new(seed),
            tracker,
            rng: Rng::new(seed ^ 0x5eed_5eed),
            asked: 0,
            burst: None,
            budget: Instant::now() + BUDGET,
            report: Report {
                seed,
                planned,
                out_of_time: false,
                waits: 0,
                late: 0,
                stalls: Vec::new(),
                bursts: 0,
                records: 0,
            },
        }
    }

    fn burster(&mut self) -> &mut Kid {
        self.kids.last_mut().expect("the bursting child")
    }

    /// Asks the child for the next burst; `false` once the plan is done or
    /// the run stopped for stalls.
    pub(crate) fn next_burst(&mut self) -> bool {
        if self.burst.is_some() && self.tracker.position(self.pid) >= self.asked {
            self.burst = None;
            self.report.bursts += 1;
        }
        // A burst still in progress here is one the run stopped in.
        if self.burst.is_some() || self.report.bursts >= self.report.planned || self.report.stalls.len() >= MAX_STALLS {
            return false;
        }
        if Instant::now() >= self.budget {
            self.report.out_of_time = true;
            return false;
        }
        let burst = self.plan.next_burst();
        self.asked += burst.size;
        self.burst = Some(Current { k: self.report.bursts, burst, said: false, deadline: Instant::now() + WAIT });
        self.burster().poke();
        if burst.lockstep {
            // A child slower than this (or blocked on a buffer smaller than
            // Linux's default) only makes the burst less of a lockstep.
            self.sent(JUDGE);
        }
        true
    }

    /// Whether the burst in progress is in lockstep: sent before the master
    /// looks, so the master waits for readiness first.
    pub(crate) fn lockstep(&self) -> bool {
        self.burst.as_ref().is_some_and(|now| now.burst.lockstep)
    }

    /// Whether the burst in progress has arrived whole.
    ///
    /// # Panics
    ///
    /// If it has not within [`WAIT`] of being asked for.
    pub(crate) fn burst_done(&self) -> bool {
        let done = self.tracker.position(self.pid) >= self.asked;
        if let Some(now) = &self.burst {
            assert!(
                done || Instant::now() < now.deadline,
                "burst {} ({} records) did not arrive whole within {WAIT:?}: {}; seed {:#x}",
                now.k,
                now.burst.size,
                self.tracker.incomplete(),
                self.report.seed
            );
        }
        done
    }

    /// Whether the master drains with `drain` this time (else with
    /// `try_recv` until `None`): each half the time, from the seed.
    pub(crate) fn use_drain(&mut self) -> bool {
        self.rng.below(2) == 0
    }

    /// Takes one received item.
    ///
    /// # Panics
    ///
    /// If it is malformed, or lost, duplicated or out of order.
    pub(crate) fn take(&mut self, item: Received) {
        let update = update_of(item, "an edge-triggered master");
        self.tracker.take(&update).unwrap_or_else(|e| panic!("{e} (seed {:#x})", self.report.seed));
        if update.pid == self.pid {
            self.report.records += 1;
        }
    }

    /// Drains `source` as an edge-triggered master does before it waits:
    /// one `drain`, or `try_recv` until `None`.
    pub(crate) fn drain(&mut self, source: &mut impl StatusSource) {
        if self.use_drain() {
            let mut got = Vec::new();
            source.drain(|item| got.push(item)).unwrap_or_else(|e| panic!("drain: {e}"));
            for item in got {
                self.take(item);
            }
        } else {
            while let Some(item) = source.try_recv().unwrap_or_else(|e| panic!("try_recv: {e}")) {
                self.take(item);
            }
        }
    }

    /// Whether the child has said it sent the burst in progress, waiting
    /// for that at most `within`.
    fn sent(&mut self, within: Duration) -> bool {
        let Some(now) = &mut self.burst else { return true };
        if !now.said {
            let line = format!("sent {};", now.k);
            let kid = self.kids.last_mut().expect("the bursting child");
            now.said = kid.line_within(&line, within).is_some();
        }
        now.said
    }

    /// Waits at most [`JUDGE`] until every edge the transport makes for
    /// what the child sent so far exists: the child said it sent the whole
    /// burst, or it sleeps in a system call (blocked on a full channel,
    /// after the edges of everything it published; or not started yet).
    pub(crate) fn settled(&mut self) {
        let Some(now) = &mut self.burst else { return };
        if now.said {
            return;
        }
        let line = format!("sent {};", now.k);
        let kid = self.kids.last_mut().expect("the bursting child");
        let pid = kid.pid();
        let mut said = false;
        poll_until(Instant::now() + JUDGE, || {
            said = said || kid.has_said(&line);
            said || asleep_in_syscall(pid)
        });
        now.said = said;
    }

    /// A wait on `source` ended by its bound: judges it (see the module
    /// docs). `edge_now` looks for a readiness edge without waiting.
    ///
    /// # Panics
    ///
    /// If records were lost ([`check_lost`](Self::check_lost)).
    pub(crate) fn judge(
        &mut self,
        source: &mut impl StatusSource,
        mut edge_now: impl FnMut() -> bool,
        who: &str,
    ) -> Verdict {
        // Look for the edge only once every edge for what the child sent
        // exists, and before taking anything: an edge for a record taken
        // since may no longer be reported (epoll finds the descriptor
        // unreadable again).
        self.settled();
        if edge_now() {
            self.report.late += 1;
            return Verdict::WaitAgain;
        }
        match self.pending(source) {
            Some(item) => {
                self.take(item);
                self.stalled();
                Verdict::Stalled
            }
            None => {
                self.check_lost(edge_now, who);
                self.report.late += 1;
                Verdict::WaitAgain
            }
        }
    }

    /// What is pending on `source`, without waiting: a fairness bound may
    /// end a drain with one `None` while records wait, so it looks twice.
    pub(crate) fn pending(&mut self, source: &mut impl StatusSource) -> Option<Received> {
        (0..2).find_map(|_| source.try_recv().unwrap_or_else(|e| panic!("try_recv: {e}")))
    }

    /// Counts the wait just judged as stalled.
    pub(crate) fn stalled(&mut self) {
        if let Some(now) = &self.burst {
            self.report.stalls.push((now.k, now.burst));
        }
    }

    /// Nothing is pending after a wait that ended by its bound: if the
    /// child has said it sent the whole burst and no edge came
    /// (`edge_now`), the burst is lost unless it arrived whole.
    ///
    /// # Panics
    ///
    /// If records were lost.
    pub(crate) fn check_lost(&mut self, edge_now: impl FnOnce() -> bool, who: &str) {
        if self.sent(Duration::ZERO) && !edge_now() && !self.burst_done() {
            let (k, size) = self.burst.as_ref().map_or((0, 0), |now| (now.k, now.burst.size));
            panic!(
                "{who}: burst {k} of {size} records was sent whole, but {} of them arrived, nothing is pending and \
                 no edge came: records lost ({}; seed {:#x})",
                size - (self.asked - self.tracker.position(self.pid)),
                self.tracker.incomplete(),
                self.report.seed,
            );
        }
    }

    /// Closes the children's stdin, checks that each exits 0, and returns
    /// the report. A run stopped for stalls first takes the rest of its
    /// last burst, waiting level-triggered (a child blocked on a full
    /// channel exits only once it has sent it).
    pub(crate) fn finish(mut self, source: &mut impl StatusSource) -> Report {
        if self.burst.is_some() {
            let bound = Bound::new(WAIT, BOUND);
            loop {
                self.drain(source);
                if self.tracker.position(self.pid) >= self.asked {
                    break;
                }
                bound.wait(source, || format!("the rest of the last burst ({})", self.tracker.incomplete()));
            }
        }
        if self.burst.take().is_some() {
            self.report.bursts += 1;
        }
        for kid in &mut self.kids {
            kid.close_stdin();
        }
        for kid in &mut self.kids {
            kid.expect_success("a child of the burst cases");
        }
        self.report
    }
}

/// The loop of a master that waits edge-triggered in a poll-style call:
/// for every burst, drain, and while the burst is incomplete wait for an
/// edge with `wait(bound)` (whether one came), judging each wait that ends
/// by its bound; a lockstep burst starts with the wait. Returns the report.
pub(crate) fn edge_triggered_master(
    mut run: BurstRun,
    source: &mut impl StatusSource,
    mut wait: impl FnMut(Duration) -> bool,
    who: &str,
) -> Report {
    while run.next_burst() {
        let mut look = !run.lockstep();
        loop {
            if look {
                run.drain(source);
                if run.burst_done() {
                    break;
                }
            }
            look = true;
            run.report.waits += 1;
            if !wait(BOUND)
                && run.judge(source, || wait(Duration::ZERO), who) == Verdict::Stalled
                && run.report.stalls.len() >= MAX_STALLS
            {
                break;
            }
        }
    }
    run.finish(source)
}
