//! The churn phase: children SIGKILLed at random moments in the middle of
//! notifying, over and over, while survivors keep reporting.
//!
//! A pool of victims floods the channel (each in a tight notify loop, so
//! a kill lands inside a notify or between two); each victim is killed a
//! random time (0 to [`KILL_SPREAD`]) after its first update arrived,
//! reaped on its SIGCHLD, and replaced, until the phase's number of kills
//! is reached. Survivors send one update every [`SURVIVOR_PACE`] the whole
//! time. The rules:
//!
//! - no wedge: each survivor's updates keep arriving; a gap of more than
//!   [`WEDGE_BOUND`] between two of them (or since the last, while it
//!   runs) is a wedge;
//! - the master's table and counters are exact after every reap (the
//!   book's check, see [`super::service`]);
//! - every survivor update arrives (lost, torn and duplicated 0); a victim
//!   update still in the channel when its victim is reaped is *late*: the
//!   master ignores it as Postfix does, and it is counted, not a fault.
//!   A record a victim died writing may be reported once, as
//!   `Malformed::Torn`, when it is forgotten (memfd does: nothing of the
//!   record is delivered); it is counted (`died_writing`, at most one per
//!   kill), not a fault.
//!
//! Of a transport that keeps each child's latest state the master sees
//! fewer updates, and the book's table follows the ones that arrive (see
//! [`super::service::Book`]); every child's states arrive in its order
//! (a victim's last, delivered at `forget_child` after its reap, is late
//! and in order too), and each survivor's last state arrives (lost 0); the
//! survivors' states skipped are counted (`coalesced`).

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use master_proto::master::Exit;
use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use super::Rng;
use super::child::{Behaviour, ChildArgs};
use super::service::{self, Event, Kind, Report, Service, WAIT};

/// The longest a survivor's updates may stop arriving before it counts
/// as wedged. A survivor sends every [`SURVIVOR_PACE`]; on a shared
/// channel its update waits behind the victims' flood, a few thousand
/// records at most (a pipe's 64 KiB), which the master reads in tens of
/// milliseconds.
pub(super) const WEDGE_BOUND: Duration = Duration::from_secs(1);

/// How often a survivor sends.
const SURVIVOR_PACE: Duration = Duration::from_millis(2);

/// A victim is killed this long at most after its first update arrived.
const KILL_SPREAD: Duration = Duration::from_millis(20);

/// How often the master looks for wedges when nothing else wakes it.
const LOOK: Duration = Duration::from_millis(50);

/// One victim.
struct Victim {
    /// When to kill it, once its first update has arrived.
    kill_at: Option<Instant>,
    killed: bool,
}

/// One survivor.
struct Survivor {
    stdout: OwnedFd,
    last: Option<Instant>,
    max_gap: Duration,
    wedged: bool,
}

/// Runs the phase on transport `name`: `kills` victims killed, `victims`
/// of them at a time, beside `survivors` survivors.
pub(super) fn master(name: &str, kills: u64, victims: usize, survivors: usize, seed: u64) -> io::Result<Report> {
    service::run(name, |svc, report| {
        let mut rng = Rng::new(seed);
        let start = Instant::now();
        // Victims first: a survivor's gaps count from its first update, and
        // the master reads nothing while it spawns.
        let flood = ChildArgs { behaviour: Behaviour::Flood, stop_on_eof: false, go: false, nice: 0 };
        let mut pool: HashMap<i32, Victim> = HashMap::new();
        let mut spawned = 0u64;
        let spawn_victim = |svc: &mut Service, pool: &mut HashMap<i32, Victim>, spawned: &mut u64| {
            let child = svc.spawn(flood, Kind::Victim, Stdio::null(), Stdio::null())?;
            *spawned += 1;
            pool.insert(i32::try_from(child.id()).map_err(io::Error::other)?, Victim { kill_at: None, killed: false });
            io::Result::Ok(())
        };
        for _ in 0..victims.min(usize::try_from(kills).unwrap_or(usize::MAX)) {
            spawn_victim(svc, &mut pool, &mut spawned)?;
        }

        let (stop_read, stop_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let paced = ChildArgs {
            behaviour: Behaviour::Paced { pace: SURVIVOR_PACE, count: 0, times: false },
            stop_on_eof: true,
            go: false,
            nice: 0,
        };
        let mut alive: HashMap<i32, Survivor> = HashMap::new();
        for _ in 0..survivors {
            let mut child = svc.spawn(paced, Kind::Survivor, Stdio::from(stop_read.try_clone()?), Stdio::piped())?;
            let stdout = OwnedFd::from(child.stdout.take().ok_or_else(|| io::Error::other("no stdout"))?);
            nix::fcntl::fcntl(&stdout, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
            let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
            alive.insert(pid, Survivor { stdout, last: None, max_gap: Duration::ZERO, wedged: false });
        }
        drop(stop_read);
        let (mut killed, mut wedges) = (0u64, 0u64);
        let deadline = start + WAIT * 4;
        while !pool.is_empty() {
            let next_kill = pool.values().filter(|v| !v.killed).filter_map(|v| v.kill_at).min();
            let now = Instant::now();
            let timeout = next_kill.map_or(LOOK, |at| at.saturating_duration_since(now).min(LOOK));
            let (_, died) = svc.wait(timeout, true)?;
            let mut first = Vec::new();
            svc.drain(|e| match e {
                Event::Arrived { pid, kind: Kind::Survivor, .. } => {
                    if let Some(s) = alive.get_mut(&pid) {
                        let now = Instant::now();
                        if let Some(last) = s.last {
                            s.max_gap = s.max_gap.max(now - last);
                        }
                        s.last = Some(now);
                    }
                }
                Event::Arrived { pid, kind: Kind::Victim, .. } => first.push(pid),
                _ => {}
            })?;
            let now = Instant::now();
            for pid in first {
                if let Some(v) = pool.get_mut(&pid)
                    && v.kill_at.is_none()
                {
                    v.kill_at = Some(now + rng.below(KILL_SPREAD));
                }
            }
            for (&pid, v) in &mut pool {
                if !v.killed && v.kill_at.is_some_and(|at| at <= now) {
                    kill(Pid::from_raw(pid), Signal::SIGKILL)?;
                    v.killed = true;
                    killed += 1;
                }
            }
            if died {
                svc.clear_signals()?;
                let dead: Vec<i32> = pool.keys().copied().collect();
                for pid in dead {
                    let Some(exit) = svc.reap(pid)? else { continue };
                    let was_killed = pool.remove(&pid).is_some_and(|v| v.killed);
                    if !(was_killed && exit == Exit::Signal(Signal::SIGKILL as i32)) {
                        report.problem(format!("victim {pid} ended by itself with {exit}"));
                    }
                    if spawned < kills {
                        spawn_victim(svc, &mut pool, &mut spawned)?;
                    }
                }
            }
            for s in alive.values_mut() {
                let gap = s.last.map_or(Duration::ZERO, |last| now.saturating_duration_since(last));
                s.max_gap = s.max_gap.max(gap);
                if gap > WEDGE_BOUND && !s.wedged {
                    s.wedged = true;
                    wedges += 1;
                }
            }
            if now >= deadline {
                report.problem(format!("waited {:?} for {kills} kills, made {killed}", WAIT * 4));
                for &pid in pool.keys() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                for pid in pool.drain().map(|(pid, _)| pid).collect::<Vec<_>>() {
                    let _ = svc.reap_by(pid, Instant::now() + WAIT);
                }
            }
        }
        let churn_span = start.elapsed();

        // Stop the survivors; each says how many it sent, and every one of
        // those must arrive (of a latest-state transport: the last).
        drop::<OwnedFd>(stop_write);
        let (mut sent, mut max_gap) = (0u64, Duration::ZERO);
        let (mut survivor_reached, mut survivor_arrived) = (0u64, 0u64);
        for (pid, s) in alive {
            let deadline = Instant::now() + WAIT;
            let out = svc.read_output(&s.stdout, deadline)?;
            let count: u64 = out.trim().parse().map_err(|_| io::Error::other(format!("survivor said {out:?}")))?;
            sent += count;
            if !svc.await_reached(pid, count, deadline)? {
                report.problem(format!(
                    "survivor {pid} sent {count}; {:?} of them arrived, or were skipped before one that did",
                    svc.book.reached(pid)
                ));
            }
            survivor_reached += svc.book.reached(pid).unwrap_or(0).min(count);
            survivor_arrived += svc.book.arrived(pid).unwrap_or(0);
            max_gap = max_gap.max(s.max_gap);
            let exit = svc.reap_by(pid, deadline)?;
            if !exit.is_normal() {
                report.problem(format!("survivor {pid} ended with {exit}"));
            }
        }
        let lost = sent.saturating_sub(survivor_reached);
        if lost > 0 {
            report.problem(format!("{lost} of the survivors' {sent} updates were lost"));
        }
        if wedges > 0 {
            report.problem(format!("{wedges} survivors went more than {WEDGE_BOUND:?} without an update arriving"));
        }
        if killed < kills {
            report.problem(format!("{killed} kills of {kills}"));
        }
        report.set("kills", json!(killed));
        report.set("victims_at_once", json!(victims));
        report.set("survivors", json!(survivors));
        report.set("sent", json!(sent));
        report.set("received", json!(survivor_arrived));
        report.set("survivors_coalesced", json!(survivor_reached.saturating_sub(survivor_arrived)));
        report.set("lost", json!(lost));
        report.set("wedges", json!(wedges));
        report.set("max_gap_ms", json!(max_gap.as_secs_f64() * 1e3));
        report.set("churn_seconds", json!(churn_span.as_secs_f64()));
        Ok(())
    })
}
