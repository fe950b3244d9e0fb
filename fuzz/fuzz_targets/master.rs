//! Fuzz target `master`: the sans-IO bookkeeping `master_proto::master::Master`
//! driven by arbitrary sequences of spawns, status inputs, reaps, reloads and
//! clock steps, beside a plain model of Postfix's rules.
//!
//! The model is written from the rules in the `master` module's docs (and
//! DESIGN.md §1), not from the code: a sorted table, a list of pending
//! spawns, a generation counter, an epoch, the throttle's start and the
//! counters. After every step the machine must agree with it:
//! - every call's result (outcome, error, reaped child) is the model's;
//! - the table is the model's, child by child (generation, status, use
//!   count, retired), and so are `available`, `total`, `pending_spawns`,
//!   `epoch`, `should_listen` and `throttled_until`;
//! - `available <= total`, `total + pending <= limit` (when there is a
//!   limit), a recorded status is only ever `TAKEN` or `AVAIL`;
//! - the counters only grow, by exactly what the step did, and the
//!   per-outcome ones add up to the inputs received;
//! - and nothing a child sends (forged pids, wrong generations, odd
//!   statuses, malformed input) panics.

#![no_main]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use master_proto::master::{
    ChildInfo, Config, Counters, Exit, Master, Outcome, ReapOutcome, RegisterError, SpawnError,
};
use master_proto::{Malformed, Received, Sender, Status, StatusUpdate};

/// The service's policy and where its generation counter starts.
#[derive(Arbitrary, Debug)]
struct Setup {
    /// 0 is no limit.
    limit: u8,
    delay: Delay,
    /// Where the generation counter stands (near `u32::MAX`, to wrap).
    first_generation: GenStart,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Delay {
    Zero,
    Millis(u16),
    Minute,
    /// So long that its end is not an `Instant`.
    Forever,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum GenStart {
    Zero,
    NearWrap(u8),
    Any(u32),
}

/// Which pid an operation names.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Pid {
    /// A child in the model's table (by index), or pid 1 when it is empty.
    Live(u8),
    /// A child reaped before (by index), or pid 2.
    Dead(u8),
    /// A pid never handed out by the driver (below 1000: the driver's start).
    Small(i16),
    Any(i32),
    /// A pid the driver has not used yet (only for `spawned`).
    Fresh,
}

/// Which generation an operation names.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Generation {
    /// A pending spawn's (by index), or the next one.
    Pending(u8),
    /// The one recorded for the pid the operation names (or 0).
    Recorded,
    /// One off the recorded one.
    Near(i8),
    Any(u32),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum StatusIn {
    Taken,
    Avail,
    Any(i32),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Who {
    Claimed,
    /// The kernel vouches for the pid the update claims.
    KernelSame,
    /// The channel names the pid the update claims.
    ChannelSame,
    /// The transport vouches for another pid.
    Kernel(Pid),
    Channel(Pid),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum ExitIn {
    Normal,
    Code(i32),
    Signal(i32),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum MalformedIn {
    Short(u8),
    Oversized(u16),
    Torn,
    Corrupt,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    BeginSpawn,
    Spawned {
        generation: Generation,
        pid: Pid,
    },
    SpawnFailed {
        generation: Generation,
    },
    /// `begin_spawn` and `spawned` with a fresh pid: the common case.
    Spawn,
    Receive {
        pid: Pid,
        generation: Generation,
        status: StatusIn,
        who: Who,
    },
    Malformed(MalformedIn),
    Reaped {
        pid: Pid,
        exit: ExitIn,
    },
    Reload,
    /// The clock moves on by this many milliseconds (times 2^shift).
    Tick {
        millis: u16,
        shift: u8,
    },
    /// The caller's clock goes back (out of order).
    Back(u16),
    /// The clock goes to the end of the current (or last) throttle, give
    /// or take a few milliseconds: the boundary, which random ticks rarely
    /// hit.
    ThrottleEnd(i8),
}

/// One child as the model has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Child {
    generation: u32,
    status: Status,
    use_count: u64,
    retired: bool,
}

impl Child {
    fn available(&self) -> bool {
        !self.retired && self.status == Status::AVAIL
    }
}

/// The rules, plainly.
#[derive(Debug)]
struct Model {
    limit: usize,
    delay: Duration,
    children: BTreeMap<i32, Child>,
    /// Pending spawns: generation to the epoch at `begin_spawn`.
    pending: BTreeMap<u32, u64>,
    generation: u32,
    epoch: u64,
    /// When the last throttle began, in milliseconds from the start.
    throttle_since: Option<u64>,
    counters: Counters,
}

impl Model {
    fn occupied(&self) -> usize {
        self.children.len() + self.pending.len()
    }

    fn room(&self) -> bool {
        self.limit == 0 || self.occupied() < self.limit
    }

    fn throttled(&self, now: u64) -> bool {
        self.throttle_since.is_some_and(|since| Duration::from_millis(now.saturating_sub(since)) < self.delay)
    }

    fn available(&self) -> usize {
        self.children.values().filter(|c| c.available()).count()
    }

    /// Begins a throttle unless one is on (or the delay is zero).
    fn throttle(&mut self, now: u64) -> bool {
        if self.delay.is_zero() || self.throttled(now) {
            return false;
        }
        self.throttle_since = Some(now);
        self.counters.throttled += 1;
        true
    }

    fn begin_spawn(&mut self, now: u64) -> Result<u32, SpawnError> {
        if !self.room() {
            return Err(SpawnError::AtLimit { limit: self.limit });
        }
        if self.throttled(now) {
            return Err(SpawnError::Throttled);
        }
        self.generation = self.generation.wrapping_add(1);
        self.pending.insert(self.generation, self.epoch);
        Ok(self.generation)
    }

    fn spawned(&mut self, pid: i32, generation: u32) -> Result<(), RegisterError> {
        if pid <= 0 {
            return Err(RegisterError::InvalidPid(pid));
        }
        let Some(&epoch) = self.pending.get(&generation) else {
            return Err(RegisterError::UnknownGeneration(generation));
        };
        if self.children.contains_key(&pid) {
            return Err(RegisterError::DuplicatePid(pid));
        }
        self.pending.remove(&generation);
        let retired = epoch != self.epoch;
        self.children.insert(pid, Child { generation, status: Status::AVAIL, use_count: 0, retired });
        self.counters.spawned += 1;
        Ok(())
    }

    fn spawn_failed(&mut self, generation: u32, now: u64) -> Result<(), RegisterError> {
        if self.pending.remove(&generation).is_none() {
            return Err(RegisterError::UnknownGeneration(generation));
        }
        self.counters.spawn_failed += 1;
        self.throttle(now);
        Ok(())
    }

    fn receive(&mut self, item: &Received) -> Outcome {
        let outcome = self.judge(item);
        let c = &mut self.counters;
        *match outcome {
            Outcome::Taken => &mut c.taken,
            Outcome::Avail => &mut c.avail,
            Outcome::Redundant => &mut c.redundant,
            Outcome::UnknownPid => &mut c.unknown_pid,
            Outcome::WrongGeneration { .. } => &mut c.wrong_generation,
            Outcome::UnknownStatus(_) => &mut c.unknown_status,
            Outcome::ForgedPid { .. } => &mut c.forged_pid,
            Outcome::Retired => &mut c.retired,
            Outcome::Malformed(_) => &mut c.malformed,
            other => panic!("an outcome the model does not know: {other:?}"),
        } += 1;
        outcome
    }

    fn judge(&mut self, item: &Received) -> Outcome {
        let (update, sender) = match *item {
            Received::Update { update, sender } => (update, sender),
            Received::Malformed(m) => return Outcome::Malformed(m),
        };
        let verified = match sender {
            Sender::Claimed => None,
            Sender::KernelPid(pid) | Sender::Channel(pid) => Some(pid),
        };
        if let Some(verified) = verified
            && verified != update.pid
        {
            return Outcome::ForgedPid { claimed: update.pid, verified };
        }
        let Some(child) = self.children.get_mut(&update.pid) else { return Outcome::UnknownPid };
        if child.generation != update.generation {
            return Outcome::WrongGeneration { expected: child.generation, got: update.generation };
        }
        if child.retired {
            return Outcome::Retired;
        }
        if child.status == update.status {
            return Outcome::Redundant;
        }
        match update.status {
            Status::AVAIL => {
                child.status = Status::AVAIL;
                child.use_count = child.use_count.saturating_add(1);
                Outcome::Avail
            }
            Status::TAKEN => {
                child.status = Status::TAKEN;
                Outcome::Taken
            }
            Status(other) => Outcome::UnknownStatus(other),
        }
    }

    /// The reaped child and whether a throttle began, or `None` for an
    /// unknown pid.
    fn reaped(&mut self, pid: i32, exit: Exit, now: u64) -> Option<(Child, bool)> {
        let Some(child) = self.children.remove(&pid) else {
            self.counters.reap_unknown_pid += 1;
            return None;
        };
        let throttle_began = exit != Exit::Code(0) && child.use_count == 0 && self.throttle(now);
        self.counters.reaped += 1;
        Some((child, throttle_began))
    }

    fn reload(&mut self) -> Vec<i32> {
        self.epoch += 1;
        let mut retired = Vec::new();
        for (pid, child) in self.children.iter_mut().filter(|(_, c)| !c.retired) {
            child.retired = true;
            retired.push(*pid);
        }
        self.counters.reloads += 1;
        retired
    }

    fn should_listen(&self, now: u64) -> bool {
        !self.throttled(now) && self.available() == 0 && self.pending.is_empty() && self.room()
    }
}

/// The machine, the model and the driver's own records.
struct Run {
    master: Master,
    model: Model,
    start: Instant,
    /// Now, in milliseconds from `start`.
    now: u64,
    next_pid: i32,
    dead: Vec<i32>,
    counters_before: Counters,
}

impl Run {
    fn instant(&self) -> Instant {
        self.start + Duration::from_millis(self.now)
    }

    fn pid(&mut self, pid: Pid) -> i32 {
        match pid {
            Pid::Live(i) => {
                let live: Vec<i32> = self.model.children.keys().copied().collect();
                if live.is_empty() { 1 } else { live[usize::from(i) % live.len()] }
            }
            Pid::Dead(i) => {
                if self.dead.is_empty() {
                    2
                } else {
                    self.dead[usize::from(i) % self.dead.len()]
                }
            }
            Pid::Small(pid) => i32::from(pid) % 1000,
            Pid::Any(pid) => pid,
            Pid::Fresh => loop {
                // Past any pid an input took with `Any` or `Small` too.
                self.next_pid += 1;
                if !self.model.children.contains_key(&self.next_pid) && !self.dead.contains(&self.next_pid) {
                    break self.next_pid;
                }
            },
        }
    }

    fn generation(&self, generation: Generation, pid: Option<i32>) -> u32 {
        let recorded = pid.and_then(|pid| self.model.children.get(&pid)).map_or(0, |c| c.generation);
        match generation {
            Generation::Pending(i) => {
                let pending: Vec<u32> = self.model.pending.keys().copied().collect();
                if pending.is_empty() {
                    self.model.generation.wrapping_add(1)
                } else {
                    pending[usize::from(i) % pending.len()]
                }
            }
            Generation::Recorded => recorded,
            Generation::Near(d) => recorded.wrapping_add_signed(i32::from(d)),
            Generation::Any(g) => g,
        }
    }

    fn step(&mut self, op: Op) {
        let now = self.instant();
        match op {
            Op::BeginSpawn => {
                let expected = self.model.begin_spawn(self.now);
                assert_eq!(self.master.begin_spawn(now), expected, "begin_spawn");
            }
            Op::Spawned { generation, pid } => {
                let pid = self.pid(pid);
                let generation = self.generation(generation, None);
                let expected = self.model.spawned(pid, generation);
                assert_eq!(self.master.spawned(pid, generation), expected, "spawned({pid}, {generation})");
                if expected.is_ok() {
                    self.dead.retain(|&p| p != pid);
                }
            }
            Op::SpawnFailed { generation } => {
                let generation = self.generation(generation, None);
                let expected = self.model.spawn_failed(generation, self.now);
                assert_eq!(self.master.spawn_failed(generation, now), expected, "spawn_failed({generation})");
            }
            Op::Spawn => {
                let expected = self.model.begin_spawn(self.now);
                assert_eq!(self.master.begin_spawn(now), expected, "begin_spawn");
                if let Ok(generation) = expected {
                    let pid = self.pid(Pid::Fresh);
                    assert_eq!(self.model.spawned(pid, generation), Ok(()));
                    assert_eq!(self.master.spawned(pid, generation), Ok(()), "spawned({pid}, {generation})");
                }
            }
            Op::Receive { pid, generation, status, who } => {
                let pid = self.pid(pid);
                let generation = self.generation(generation, Some(pid));
                let status = match status {
                    StatusIn::Taken => Status::TAKEN,
                    StatusIn::Avail => Status::AVAIL,
                    StatusIn::Any(n) => Status(n),
                };
                let sender = match who {
                    Who::Claimed => Sender::Claimed,
                    Who::KernelSame => Sender::KernelPid(pid),
                    Who::ChannelSame => Sender::Channel(pid),
                    Who::Kernel(other) => Sender::KernelPid(self.pid(other)),
                    Who::Channel(other) => Sender::Channel(self.pid(other)),
                };
                let item = Received::Update { update: StatusUpdate { pid, generation, status }, sender };
                let expected = self.model.receive(&item);
                assert_eq!(self.master.receive(&item), expected, "receive({item:?})");
            }
            Op::Malformed(m) => {
                let malformed = match m {
                    MalformedIn::Short(n) => Malformed::Short(usize::from(n)),
                    MalformedIn::Oversized(n) => Malformed::Oversized(usize::from(n)),
                    MalformedIn::Torn => Malformed::Torn,
                    MalformedIn::Corrupt => Malformed::Corrupt("fuzzed"),
                };
                let item = Received::Malformed(malformed);
                let expected = self.model.receive(&item);
                assert_eq!(self.master.receive(&item), expected);
            }
            Op::Reaped { pid, exit } => {
                let pid = self.pid(pid);
                let exit = match exit {
                    ExitIn::Normal => Exit::Code(0),
                    ExitIn::Code(code) => Exit::Code(code),
                    ExitIn::Signal(signal) => Exit::Signal(signal),
                };
                let expected = self.model.reaped(pid, exit, self.now);
                match (self.master.reaped(pid, exit, now), expected) {
                    (ReapOutcome::Reaped { child, throttle_began }, Some((model, began))) => {
                        assert_child(pid, &child, &model);
                        assert_eq!(throttle_began, began, "reaped({pid}, {exit}): throttle");
                        self.dead.push(pid);
                    }
                    (ReapOutcome::UnknownPid, None) => {}
                    (got, want) => panic!("reaped({pid}, {exit}) gave {got:?}, the model {want:?}"),
                }
            }
            Op::Reload => {
                let expected = self.model.reload();
                assert_eq!(self.master.reload(), expected, "reload: the retired pids");
            }
            Op::Tick { millis, shift } => {
                self.now = self.now.saturating_add(u64::from(millis) << (shift % 24)).min(1 << 42);
            }
            Op::Back(millis) => self.now = self.now.saturating_sub(u64::from(millis)),
            Op::ThrottleEnd(off) => {
                let delay = u64::try_from(self.model.delay.as_millis()).unwrap_or(u64::MAX);
                if let Some(since) = self.model.throttle_since {
                    let end = since.saturating_add(delay).saturating_add_signed(i64::from(off % 4)).min(1 << 42);
                    self.now = end;
                }
            }
        }
        self.check();
    }

    /// The machine agrees with the model, and the invariants hold.
    fn check(&mut self) {
        let (m, model) = (&self.master, &self.model);
        let now = self.instant();
        assert_eq!(m.total(), model.children.len(), "total");
        assert_eq!(m.available(), model.available(), "available");
        assert_eq!(m.pending_spawns(), model.pending.len(), "pending spawns");
        assert_eq!(m.epoch(), model.epoch, "epoch");
        assert!(m.available() <= m.total());
        if model.limit != 0 {
            assert!(m.total() + m.pending_spawns() <= model.limit, "over the process limit");
        }
        for (pid, child) in &model.children {
            let got = m.child(*pid).unwrap_or_else(|| panic!("pid {pid} missing from the table"));
            assert_child(*pid, got, child);
        }
        assert_eq!(m.children().count(), model.children.len());
        for child in m.children() {
            assert!(model.children.contains_key(&child.pid), "pid {} not in the model", child.pid);
            assert!(child.status == Status::TAKEN || child.status == Status::AVAIL);
            assert_eq!(child.is_available(), !child.retired && child.status == Status::AVAIL);
        }
        assert_eq!(m.should_listen(now), model.should_listen(self.now), "should_listen");
        let until = model
            .throttle_since
            .filter(|_| model.throttled(self.now))
            .and_then(|since| (self.start + Duration::from_millis(since)).checked_add(model.delay));
        assert_eq!(m.throttled_until(now), until, "throttled_until");
        let (c, before) = (*m.counters(), self.counters_before);
        assert_eq!(c, model.counters, "counters");
        let pairs = [
            (c.taken, before.taken),
            (c.avail, before.avail),
            (c.redundant, before.redundant),
            (c.unknown_pid, before.unknown_pid),
            (c.wrong_generation, before.wrong_generation),
            (c.unknown_status, before.unknown_status),
            (c.forged_pid, before.forged_pid),
            (c.retired, before.retired),
            (c.malformed, before.malformed),
            (c.spawned, before.spawned),
            (c.spawn_failed, before.spawn_failed),
            (c.reaped, before.reaped),
            (c.reap_unknown_pid, before.reap_unknown_pid),
            (c.throttled, before.throttled),
            (c.reloads, before.reloads),
        ];
        assert!(pairs.iter().all(|(after, before)| after >= before), "a counter went down: {before:?} -> {c:?}");
        assert_eq!(c.spawned - c.reaped, m.total() as u64);
        self.counters_before = c;
    }
}

fn assert_child(pid: i32, got: &ChildInfo, want: &Child) {
    assert_eq!(got.pid, pid);
    let got_fields = (got.generation, got.status, got.use_count, got.retired);
    let want_fields = (want.generation, want.status, want.use_count, want.retired);
    assert_eq!(got_fields, want_fields, "pid {pid}: (generation, status, use count, retired)");
}

fuzz_target!(|setup: Setup| {
    let delay = match setup.delay {
        Delay::Zero => Duration::ZERO,
        Delay::Millis(ms) => Duration::from_millis(u64::from(ms)),
        Delay::Minute => Duration::from_secs(60),
        Delay::Forever => Duration::MAX,
    };
    let limit = usize::from(setup.limit % 8);
    let last = match setup.first_generation {
        GenStart::Zero => 0,
        GenStart::NearWrap(d) => u32::MAX - u32::from(d % 8),
        GenStart::Any(g) => g,
    };
    let config = Config { process_limit: limit, throttle_delay: delay };
    let master = if last == 0 { Master::new(config) } else { Master::with_generation(config, last) };
    let model = Model {
        limit,
        delay,
        children: BTreeMap::new(),
        pending: BTreeMap::new(),
        generation: last,
        epoch: 0,
        throttle_since: None,
        counters: Counters::default(),
    };
    assert_eq!(*master.config(), config);
    let mut run = Run {
        master,
        model,
        start: Instant::now(),
        now: 0,
        next_pid: 1000,
        dead: Vec::new(),
        counters_before: Counters::default(),
    };
    run.check();
    for op in setup.ops.into_iter().take(2000) {
        run.step(op);
    }
});
