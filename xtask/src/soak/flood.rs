//! The flooding-child phase: one child notifies as fast as it can while
//! honest children report every few milliseconds; the honest children's
//! delivery latency, with the flooder and without.
//!
//! A master role runs one [`Variant`]: without a flooder (`quiet`), with
//! one (`flooded`), or with one that runs at nice [`NICE`] (`niced`): it
//! spawns the flooder first and waits for its first update (the channel is
//! flooded from then on), then the honest children, which start together
//! once all are spawned. The niced run tells the channel's share of the
//! flooder's effect from the CPU's: a flooder that cannot take CPU time
//! from the master and the honest children still fills whatever it shares
//! with them. Each honest child sends `count` updates, one
//! every `pace`, taking CLOCK_MONOTONIC right before each notify; it
//! reports those times on stdout when done. The master takes the clock when
//! it reads each honest update, and the book says which of the child's
//! updates it is (on a transport that delivers every update, the k-th
//! received is the k-th sent; on one that keeps each child's latest
//! state, the transport says how many it skipped, see
//! [`super::service::Book`]): the difference is that update's delivery
//! latency (time blocked in notify included). An honest update later than
//! [`DELAY_BOUND`] is *delayed*. Nothing may be lost: every honest update
//! arrives, in order; of a latest-state transport, the honest updates
//! that arrive are in order and each child's last arrives, and those it
//! skipped are counted (`coalesced`; at one update every few
//! milliseconds, few are).
//! The driver puts the two runs side by side and holds them to the
//! latency rules (see [`super::report::flood_row`]).
//!
//! Beside the latencies, each run reports how the master itself was
//! scheduled while the honest children ran (share of the time on a CPU,
//! time runnable but waiting for one, sleeps, preemptions), and how many
//! flood updates it read while the worst honest update waited: few means
//! the master was not running then, many that it ran and read the flood.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use serde_json::json;

use super::child::{Behaviour, ChildArgs};
use super::service::{self, Event, Kind, Report, WAIT};
use crate::stats::histogram;
use crate::sys;

/// An honest update that takes longer than this from its child's clock
/// reading to the master's is delayed. On a shared channel it waits behind
/// the flooder's records (a pipe holds 5,461 of them), which the master
/// reads at hundreds of thousands a second: a few tens of milliseconds.
pub(super) const DELAY_BOUND: Duration = Duration::from_millis(100);

/// The nice value of the niced flooder: the lowest priority.
pub(super) const NICE: i32 = 19;

/// One run of the phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Variant {
    /// No flooder.
    Quiet,
    /// A flooder at the priority of the others.
    Flooded,
    /// A flooder at nice [`NICE`].
    Niced,
}

impl Variant {
    /// The runs of one repetition, in the order they run.
    pub(super) const ALL: [Variant; 3] = [Variant::Quiet, Variant::Flooded, Variant::Niced];

    /// The variant's name (`--flooder NAME`).
    pub(super) const fn name(self) -> &'static str {
        match self {
            Variant::Quiet => "quiet",
            Variant::Flooded => "flooded",
            Variant::Niced => "niced",
        }
    }

    /// The variant called `name`.
    pub(super) fn from_name(name: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == name)
    }
}

/// Runs one variant of the phase on transport `name`: `honest` children,
/// `count` updates each, one every `pace`.
pub(super) fn master(name: &str, honest: usize, count: u64, pace: Duration, variant: Variant) -> io::Result<Report> {
    service::run(name, |svc, report| {
        let mut flooder = None;
        if variant != Variant::Quiet {
            let (stop_read, stop_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
            let nice = if variant == Variant::Niced { NICE } else { 0 };
            let args = ChildArgs { behaviour: Behaviour::Flood, stop_on_eof: true, go: false, nice };
            let mut child = svc.spawn(args, Kind::Flooder, Stdio::from(stop_read), Stdio::piped())?;
            let stdout = OwnedFd::from(child.stdout.take().ok_or_else(|| io::Error::other("no stdout"))?);
            let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
            if !svc.await_reached(pid, 1, Instant::now() + WAIT)? {
                return Err(io::Error::other("the flooder sent nothing"));
            }
            flooder = Some((pid, stdout, stop_write, Instant::now()));
        }
        // The honest children start together once all are spawned: the
        // master reads nothing while it spawns.
        let (go_read, go_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let args = ChildArgs {
            behaviour: Behaviour::Paced { pace, count, times: true },
            stop_on_eof: false,
            go: true,
            nice: 0,
        };
        let mut children = Vec::with_capacity(honest);
        // Each honest update's arrival: when, how many flood updates the
        // master had read by then, and which of its child's updates it is.
        let mut arrivals: HashMap<i32, Vec<(u64, u64, u64)>> = HashMap::new();
        for _ in 0..honest {
            let mut child = svc.spawn(args, Kind::Honest, Stdio::from(go_read.try_clone()?), Stdio::piped())?;
            let stdout = OwnedFd::from(child.stdout.take().ok_or_else(|| io::Error::other("no stdout"))?);
            nix::fcntl::fcntl(&stdout, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
            let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
            arrivals.insert(pid, Vec::with_capacity(usize::try_from(count).unwrap_or(0)));
            children.push((pid, stdout));
        }
        let sched_start = sys::sched()?;
        let honest_start = Instant::now();
        drop((go_read, go_write));
        // Every honest update, stamped as it is read, until each child's
        // last has arrived.
        let (mut arrived, mut flood_read, mut complete) = (0u64, 0u64, 0usize);
        let deadline = Instant::now() + WAIT + pace * u32::try_from(count).unwrap_or(u32::MAX);
        let honest_pids: Vec<i32> = children.iter().map(|(pid, _)| *pid).collect();
        let mut deadline = deadline;
        while complete < honest && Instant::now() < deadline {
            let (_, died) = svc.wait(deadline.saturating_duration_since(Instant::now()), true)?;
            if died {
                svc.clear_signals()?;
                // Every honest child gone: what has not arrived within
                // ten delay bounds (the flooder may keep the channel from
                // ever being empty) never will.
                if service::exited(&honest_pids)? {
                    deadline = deadline.min(Instant::now() + DELAY_BOUND * 10);
                }
            }
            svc.drain(|e| match e {
                Event::Arrived { pid, kind: Kind::Honest, index } => {
                    if let Some(a) = arrivals.get_mut(&pid) {
                        a.push((sys::mono_ns(), flood_read, index));
                        arrived += 1;
                        if index + 1 == count {
                            complete += 1;
                        }
                    }
                }
                Event::Arrived { kind: Kind::Flooder, .. } => flood_read += 1,
                _ => {}
            })?;
        }
        // How the master itself was scheduled while the honest children
        // ran: a master that never sleeps (it always has flood to read)
        // waits for a CPU like any busy process.
        let sched = sys::sched()?;
        let span_ms = honest_start.elapsed().as_secs_f64() * 1e3;
        #[allow(clippy::cast_precision_loss, reason = "milliseconds for a table")]
        let ms = |ns: u64| ns as f64 / 1e6;
        report.set("master_busy_pct", json!(100.0 * ms(sched.on_cpu_ns - sched_start.on_cpu_ns) / span_ms.max(1e-9)));
        report.set("master_runq_wait_ms", json!(ms(sched.waiting_ns - sched_start.waiting_ns)));
        report.set("master_sleeps", json!(sched.voluntary - sched_start.voluntary));
        report.set("master_preempted", json!(sched.involuntary - sched_start.involuntary));
        let mut latencies = Vec::with_capacity(usize::try_from(arrived).unwrap_or(0));
        // (latency, send time, flood read by its arrival) of the worst.
        let mut worst = (0u64, 0u64, 0u64);
        let (mut sent, mut reached) = (0u64, 0u64);
        for (pid, stdout) in children {
            let out = svc.read_output(&stdout, Instant::now() + WAIT)?;
            let mut lines = out.lines();
            let n: u64 = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0);
            let times: Vec<u64> =
                lines.next().unwrap_or("").split_whitespace().filter_map(|t| t.parse().ok()).collect();
            if n != count || times.len() != usize::try_from(count).unwrap_or(0) {
                report
                    .problem(format!("honest child {pid} reported {n} updates and {} times, not {count}", times.len()));
            }
            sent += n;
            reached += svc.book.reached(pid).unwrap_or(0).min(n);
            let got = arrivals.get(&pid).map_or(&[][..], Vec::as_slice);
            for &(at, flood, index) in got {
                let Some(&t) = usize::try_from(index).ok().and_then(|i| times.get(i)) else { continue };
                let latency = at.saturating_sub(t);
                latencies.push(latency);
                if latency > worst.0 {
                    worst = (latency, t, flood);
                }
            }
            let exit = svc.reap_by(pid, Instant::now() + WAIT)?;
            if !exit.is_normal() {
                report.problem(format!("honest child {pid} ended with {exit}"));
            }
        }
        if let Some((pid, stdout, stop, since)) = flooder {
            let span = since.elapsed();
            drop::<OwnedFd>(stop);
            let deadline = Instant::now() + WAIT;
            let out = svc.read_output(&stdout, deadline)?;
            let n: u64 = out.trim().parse().map_err(|_| io::Error::other(format!("the flooder said {out:?}")))?;
            if !svc.await_reached(pid, n, deadline)? {
                report.problem(format!(
                    "the flooder sent {n}; {:?} of them arrived, or were skipped before one that did",
                    svc.book.reached(pid)
                ));
            }
            let exit = svc.reap_by(pid, deadline)?;
            if !exit.is_normal() {
                report.problem(format!("the flooder ended with {exit}"));
            }
            report.set("flooder_updates", json!(n));
            #[allow(clippy::cast_precision_loss, reason = "a rate: f64 precision is plenty")]
            let rate = n as f64 / span.as_secs_f64().max(1e-9);
            report.set("flooder_per_sec", json!(rate));
        }
        // What the master was doing while the worst honest update waited:
        // the flood updates it read between the honest arrival just before
        // that update was sent and the update's own arrival (to within one
        // honest interval). Many means the master ran but read the flood
        // instead; none means the master did not run.
        let before =
            arrivals.values().flatten().filter(|(at, ..)| *at <= worst.1).map(|&(_, f, _)| f).max().unwrap_or(0);
        report.set("flood_read_during_worst", json!(worst.2.saturating_sub(before)));
        // Lost: what neither arrived nor was skipped before an update that
        // did (the updates after a child's last to arrive).
        let lost = sent.saturating_sub(reached);
        let bound = u64::try_from(DELAY_BOUND.as_nanos()).unwrap_or(u64::MAX);
        let delayed = latencies.iter().filter(|&&l| l > bound).count();
        let h = histogram(&latencies)?;
        #[allow(clippy::cast_precision_loss, reason = "microseconds for a table")]
        let us = |ns: u64| ns as f64 / 1e3;
        report.set("honest", json!(honest));
        report.set("sent", json!(sent));
        report.set("received", json!(arrived));
        report.set("honest_coalesced", json!(reached.saturating_sub(arrived)));
        report.set("lost", json!(lost));
        report.set("delayed", json!(delayed));
        report.set("p50_us", json!(us(h.value_at_quantile(0.5))));
        report.set("p99_us", json!(us(h.value_at_quantile(0.99))));
        report.set("max_us", json!(us(h.max())));
        if lost > 0 {
            report.problem(format!("{lost} of the honest children's {sent} updates were lost"));
        }
        Ok(())
    })
}
