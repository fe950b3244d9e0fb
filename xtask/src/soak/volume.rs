//! The volume phase: many children send a fixed number of updates each,
//! all at once, as fast as they can; every update must arrive, whole,
//! once, in per-child order. Of a transport that keeps each child's latest
//! state, the states that arrive must be in the child's order, none twice
//! and none older after newer, and each child's last state must arrive;
//! the states it skipped are counted (`coalesced`), not a fault.
//!
//! The children are spawned first, say they are ready, and are started
//! together (end of file on the stdin they share). The master drains and
//! feeds every item to proto's [`Master`](master_proto::master::Master).
//! On a transport that delivers every update, a child is reaped once it
//! has exited and every one of its updates has arrived, so none of them
//! comes in after its reap and is ignored. On a latest-state transport, a
//! child is reaped as soon as it has exited, whatever has arrived, as
//! Postfix's master reaps: its last state must then arrive before the reap
//! or at `forget_child` after it (late, ignored by the master, and
//! checked in order all the same). The book checks each update against
//! the child's alternation (see [`super::child`] and
//! [`super::service::Book`]); lost is what was sent and neither arrived
//! nor was skipped before a state that did: the updates after the last
//! that arrived.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::time::Instant;

use master_proto::Delivery;
use nix::fcntl::OFlag;
use serde_json::json;

use super::child::{Behaviour, ChildArgs};
use super::service::{self, Event, Kind, Report, SETTLE, WAIT};
use crate::sys;

/// Runs the phase on transport `name`: `children` children, `count`
/// updates each.
pub(super) fn master(name: &str, children: usize, count: u64) -> io::Result<Report> {
    service::run(name, |svc, report| {
        let (go_read, go_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let (ready_read, ready_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let args = ChildArgs { behaviour: Behaviour::Steady { count }, stop_on_eof: false, go: false, nice: 0 };
        let mut pids = Vec::with_capacity(children);
        for _ in 0..children {
            let stdin = Stdio::from(go_read.try_clone()?);
            let stdout = Stdio::from(ready_write.try_clone()?);
            let child = svc.spawn(args, Kind::Steady, stdin, stdout)?;
            pids.push(i32::try_from(child.id()).map_err(io::Error::other)?);
        }
        drop((go_read, ready_write));
        await_ready(&ready_read, children)?;
        let sent = count * u64::try_from(children).map_err(io::Error::other)?;
        let start = Instant::now();
        drop::<OwnedFd>(go_write);

        let mut done = Vec::new();
        let mut reaped: Vec<i32> = Vec::new();
        let mut last = start;
        let deadline = start + WAIT * 4;
        // Set once a child has died: from then on the master looks every
        // SETTLE whether the children short of their count have all
        // exited with the channel empty (nothing signals that).
        let mut settling = false;
        let latest = svc.transport.caps().delivery == Delivery::LatestState;
        while reaped.len() < children {
            let left = deadline.saturating_duration_since(Instant::now());
            let (_, died) = svc.wait(if settling { left.min(SETTLE) } else { left }, true)?;
            if died {
                svc.clear_signals()?;
                settling = true;
                if latest {
                    let running: Vec<i32> = pids.iter().copied().filter(|p| !reaped.contains(p)).collect();
                    for pid in running {
                        if let Some(exit) = svc.reap(pid)? {
                            reaped.push(pid);
                            if !exit.is_normal() {
                                report.problem(format!("child {pid} ended with {exit}"));
                            }
                        }
                    }
                }
            }
            let n = svc.drain(|e| done.extend(completed(e, count)))?;
            if n > 0 {
                last = Instant::now();
            } else {
                // Quiet: if every child still short of its count has
                // exited and nothing is left in the channel, what is
                // missing is lost; stop waiting for it.
                let short: Vec<i32> =
                    pids.iter().copied().filter(|p| !reaped.contains(p) && !done.contains(p)).collect();
                if !short.is_empty() && svc.settled(&short, |e| done.extend(completed(e, count)))? {
                    break;
                }
            }
            // A child whose every update has arrived is reaped as soon as
            // it has exited (it may still be on its way out).
            let mut still = Vec::new();
            let ready: Vec<i32> = done.drain(..).filter(|p| !reaped.contains(p)).collect();
            for pid in ready {
                match svc.reap(pid)? {
                    Some(exit) => {
                        reaped.push(pid);
                        if !exit.is_normal() {
                            report.problem(format!("child {pid} ended with {exit}"));
                        }
                    }
                    None => still.push(pid),
                }
            }
            done = still;
            if Instant::now() >= deadline {
                let left = children - reaped.len();
                report.problem(format!("waited {:?}; {left} children still had updates to deliver", WAIT * 4));
                break;
            }
        }
        // What forget_child delivered of the children reaped last.
        while !svc.settled(&[], |_| {})? && Instant::now() < deadline {
            svc.wait(SETTLE, false)?;
        }
        let span = last.duration_since(start);
        // Children whose updates did not all arrive: reaped now, what
        // they lost counted below.
        for &pid in &pids {
            if !reaped.contains(&pid) {
                let exit = svc.reap_by(pid, Instant::now() + WAIT)?;
                if !exit.is_normal() {
                    report.problem(format!("child {pid} ended with {exit}"));
                }
            }
        }
        let t = svc.book.tally;
        let reached: u64 = pids.iter().map(|&pid| svc.book.reached(pid).unwrap_or(0).min(count)).sum();
        let lost = sent.saturating_sub(reached);
        report.set("children", json!(children));
        report.set("sent", json!(sent));
        report.set("received", json!(t.arrived + t.late));
        report.set("late", json!(t.late));
        report.set("lost", json!(lost));
        // Updates the children made per second, every one of them read or
        // skipped for a newer one.
        #[allow(clippy::cast_precision_loss, reason = "a rate: f64 precision is plenty")]
        let rate = reached as f64 / span.as_secs_f64().max(1e-9);
        report.set("updates_per_sec", json!(rate));
        if lost > 0 {
            report.problem(format!("{lost} of {sent} updates were lost (after the last that arrived)"));
        }
        Ok(())
    })
}

/// The child that `e` completed (its `count`-th update arrived), if any.
fn completed(e: Event, count: u64) -> Option<i32> {
    match e {
        Event::Arrived { pid, kind: Kind::Steady, index } if index + 1 == count => Some(pid),
        _ => None,
    }
}

/// Waits until `children` have each written their ready byte.
pub(super) fn await_ready(ready: &OwnedFd, children: usize) -> io::Result<()> {
    let deadline = Instant::now() + WAIT;
    let (mut seen, mut buf) = (0, [0u8; 512]);
    while seen < children {
        if !sys::wait_readable(ready.as_fd(), deadline.saturating_duration_since(Instant::now()))?
            && Instant::now() >= deadline
        {
            return Err(io::Error::other(format!("waited {WAIT:?} for {children} children to be ready, {seen} are")));
        }
        match nix::unistd::read(ready, &mut buf) {
            Ok(0) => {
                return Err(io::Error::other(format!("{} children exited before they were ready", children - seen)));
            }
            Ok(n) => seen += n,
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
