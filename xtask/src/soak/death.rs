//! The master-death phase: a master SIGKILLed under load, over and over,
//! a new one started each time; every orphan must exit by itself.
//!
//! Each cycle the driver starts a *victim* master (this binary as
//! `soak --role master --phase master_death`), which opens a channel,
//! spawns its loaders (half flood the channel, half send every
//! millisecond and wait on their disconnect fd in between), names them on
//! stdout, and says `loaded` once every loader's first update has
//! arrived. The driver waits a random 0 to [`KILL_SPREAD`], SIGKILLs the
//! victim, reaps it, and starts the next cycle at once. The driver is a
//! child subreaper (`PR_SET_CHILD_SUBREAPER`), so the orphans become its
//! children: it reaps each as it exits and reads how from its exit code
//! ([`EXIT_NOTIFY_DISCONNECTED`]: its notify said the master was gone;
//! [`EXIT_FD_DISCONNECTED`]: its disconnect fd fired). An orphan still
//! alive [`ORPHAN_BOUND`] after its master's kill is *left*: killed, reaped
//! and reported.
//!
//! The victim masters die, so the resource figures of this phase are the
//! driver's own, before and after all the cycles.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write as _};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde_json::json;

use super::child::{Behaviour, ChildArgs, EXIT_FD_DISCONNECTED, EXIT_NOTIFY_DISCONNECTED};
use super::driver::Driver;
use super::service::{Event, Kind, Report, Service, WAIT};
use crate::stats::histogram;
use crate::sys;

/// The longest an orphan may outlive its master's SIGKILL. It learns of
/// the death within a millisecond or so (the bench's death_master_to_child
/// figures); the bound leaves room for a loaded machine.
pub(super) const ORPHAN_BOUND: Duration = Duration::from_secs(5);

/// The victim is killed this long at most after it said `loaded`.
const KILL_SPREAD: Duration = Duration::from_millis(5);

/// How often a pacing loader sends.
const LOADER_PACE: Duration = Duration::from_millis(1);

/// Runs a victim master: never returns unless something is wrong (it is
/// meant to be killed).
pub(super) fn victim(name: &str, children: usize) -> io::Result<()> {
    let mut svc = Service::open(name)?;
    let mut out = io::stdout().lock();
    let mut waiting = HashSet::new();
    for i in 0..children {
        let behaviour =
            if i % 2 == 0 { Behaviour::Flood } else { Behaviour::Paced { pace: LOADER_PACE, count: 0, times: false } };
        let args = ChildArgs { behaviour, stop_on_eof: false, go: false, nice: 0 };
        let child = svc.spawn(args, Kind::Loader, Stdio::null(), Stdio::null())?;
        writeln!(out, "child {}", child.id())?;
        waiting.insert(i32::try_from(child.id()).map_err(io::Error::other)?);
    }
    out.flush()?;
    let deadline = Instant::now() + WAIT;
    let mut loaded = false;
    while Instant::now() < deadline {
        svc.wait(deadline.saturating_duration_since(Instant::now()), false)?;
        svc.drain(|e| {
            if let Event::Arrived { pid, .. } = e {
                waiting.remove(&pid);
            }
        })?;
        if waiting.is_empty() && !loaded {
            loaded = true;
            writeln!(out, "loaded")?;
            out.flush()?;
        }
    }
    Err(io::Error::other(format!("the victim master was not killed within {WAIT:?}")))
}

/// How one orphan ended.
#[derive(Default)]
struct Ends {
    by_notify: u64,
    by_fd: u64,
    failed: Vec<String>,
    left: u64,
    /// Nanoseconds from its master's kill to its reap.
    exit_ns: Vec<u64>,
}

impl Driver {
    /// Runs `cycles` cycles on transport `name`, `children` loaders each.
    pub(super) fn master_death(&mut self, name: &str, cycles: u64, children: usize) -> io::Result<Report> {
        let mut report = Report::default();
        let before_fds = sys::open_fds()?;
        let before_rss = sys::rss_kib()?;
        let mut orphans: HashMap<i32, Instant> = HashMap::new();
        let mut ends = Ends::default();
        for cycle in 0..cycles {
            let mut cmd = Command::new(&self.exe);
            cmd.args(["soak", "--role", "master", "--phase", "master_death", "--transport", name]);
            cmd.args(["--children", &children.to_string()]);
            let mut victim = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
            let stdout = OwnedFd::from(victim.stdout.take().ok_or_else(|| io::Error::other("no stdout"))?);
            let loaders = match self.await_loaded(&stdout, &mut orphans, &mut ends) {
                Ok(pids) => pids,
                Err(e) => {
                    let _ = victim.kill();
                    let _ = victim.wait();
                    return Err(io::Error::other(format!("cycle {cycle}: {e}")));
                }
            };
            // Under load, at a random moment: orphans of earlier cycles are
            // reaped meanwhile.
            let at = Instant::now() + self.rng.below(KILL_SPREAD);
            while Instant::now() < at {
                if sys::wait_readable(self.signals.as_fd(), at.saturating_duration_since(Instant::now()))? {
                    self.reap_orphans(&mut orphans, &mut ends)?;
                }
            }
            victim.kill()?;
            let killed = Instant::now();
            // Once the victim is reaped, its children are the driver's.
            victim.wait()?;
            for pid in loaders {
                orphans.insert(pid, killed);
            }
            self.reap_orphans(&mut orphans, &mut ends)?;
        }
        while !orphans.is_empty() {
            let Some(&first) = orphans.values().min() else { break };
            let bound = first + ORPHAN_BOUND;
            if sys::wait_readable(self.signals.as_fd(), bound.saturating_duration_since(Instant::now()))? {
                self.reap_orphans(&mut orphans, &mut ends)?;
            }
            if Instant::now() >= bound {
                self.reap_orphans(&mut orphans, &mut ends)?;
                let late: Vec<i32> =
                    orphans.iter().filter(|&(_, &k)| k + ORPHAN_BOUND <= Instant::now()).map(|(&p, _)| p).collect();
                for pid in late {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    let _ = waitpid(Pid::from_raw(pid), None);
                    orphans.remove(&pid);
                    ends.left += 1;
                }
            }
        }
        let total = ends.by_notify + ends.by_fd + ends.left + u64::try_from(ends.failed.len()).unwrap_or(u64::MAX);
        report.set("cycles", json!(cycles));
        report.set("orphans", json!(total));
        report.set("by_notify", json!(ends.by_notify));
        report.set("by_fd", json!(ends.by_fd));
        report.set("orphans_failed", json!(ends.failed.len()));
        report.set("orphans_left", json!(ends.left));
        let h = histogram(&ends.exit_ns)?;
        #[allow(clippy::cast_precision_loss, reason = "milliseconds for a table")]
        let ms = |ns: u64| ns as f64 / 1e6;
        report.set("exit_p50_ms", json!(ms(h.value_at_quantile(0.5))));
        report.set("exit_p99_ms", json!(ms(h.value_at_quantile(0.99))));
        report.set("exit_max_ms", json!(ms(h.max())));
        for f in ends.failed.iter().take(5) {
            report.problem(format!("an orphan did not exit cleanly: {f}"));
        }
        if ends.left > 0 {
            report
                .problem(format!("{} orphans were still alive {ORPHAN_BOUND:?} after their master's kill", ends.left));
        }
        let expected = cycles * u64::try_from(children).map_err(io::Error::other)?;
        if total != expected {
            report.problem(format!("{total} orphans accounted for, {expected} spawned"));
        }
        let after_fds = sys::open_fds()?;
        report.set("fds_start", json!(before_fds.len()));
        report.set("fds_end", json!(after_fds.len()));
        report.set("rss_open_kib", json!(before_rss));
        report.set("rss_reaped_kib", json!(sys::rss_kib()?));
        report.set("hwm_kib", json!(sys::peak_rss_kib()?));
        let grown: Vec<String> = after_fds
            .iter()
            .filter(|(fd, what)| before_fds.get(fd) != Some(what))
            .map(|(fd, w)| format!("{fd}:{w}"))
            .collect();
        if !grown.is_empty() {
            report.problem(format!("the driver's descriptors grew over the phase: {grown:?}"));
        }
        Ok(report)
    }

    /// Reads the victim's lines until `loaded`: the pids of its loaders.
    /// Orphans of earlier cycles are reaped meanwhile.
    fn await_loaded(
        &mut self,
        stdout: &OwnedFd,
        orphans: &mut HashMap<i32, Instant>,
        ends: &mut Ends,
    ) -> io::Result<Vec<i32>> {
        let deadline = Instant::now() + WAIT;
        let (mut text, mut buf) = (String::new(), [0u8; 4096]);
        let mut pids = Vec::new();
        loop {
            while let Some((line, rest)) = text.split_once('\n') {
                if line == "loaded" {
                    return Ok(pids);
                }
                let pid = line.strip_prefix("child ").and_then(|p| p.parse::<i32>().ok());
                pids.push(pid.ok_or_else(|| io::Error::other(format!("the victim said {line:?}")))?);
                text = rest.to_owned();
            }
            let fds: [BorrowedFd<'_>; 2] = [stdout.as_fd(), self.signals.as_fd()];
            let fired = sys::wait_any(&fds, deadline.saturating_duration_since(Instant::now()))?;
            if fired[1] {
                self.reap_orphans(orphans, ends)?;
            }
            if fired[0] {
                match nix::unistd::read(stdout, &mut buf) {
                    Ok(0) => return Err(io::Error::other("the victim master exited before it was loaded")),
                    Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
                    Err(Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!("the victim master was not loaded within {WAIT:?}")));
            }
        }
    }

    /// Reaps every orphan that has exited.
    fn reap_orphans(&mut self, orphans: &mut HashMap<i32, Instant>, ends: &mut Ends) -> io::Result<()> {
        while self.signals.read_signal()?.is_some() {}
        let pids: Vec<i32> = orphans.keys().copied().collect();
        for pid in pids {
            let status = match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => continue,
                Ok(status) => status,
                Err(e) => return Err(io::Error::other(format!("waitpid({pid}) for an orphan: {e}"))),
            };
            let killed = orphans.remove(&pid).unwrap_or_else(Instant::now);
            ends.exit_ns.push(u64::try_from(killed.elapsed().as_nanos()).unwrap_or(u64::MAX));
            match status {
                WaitStatus::Exited(_, EXIT_NOTIFY_DISCONNECTED) => ends.by_notify += 1,
                WaitStatus::Exited(_, EXIT_FD_DISCONNECTED) => ends.by_fd += 1,
                other => ends.failed.push(format!("{pid}: {other:?}")),
            }
        }
        Ok(())
    }
}
