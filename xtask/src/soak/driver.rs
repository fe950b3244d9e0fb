//! The soak's driver: the process `cargo xtask soak` runs (as a release
//! build), which starts every phase's master as a process of its own and
//! collects what it reports.
//!
//! The driver is a child subreaper (`PR_SET_CHILD_SUBREAPER`): a child
//! whose master dies (the master-death phase kills its masters on
//! purpose; a master that fails leaves its children too) becomes the
//! driver's, so it can be counted and reaped. SIGCHLD is blocked from the
//! start, before any thread exists, and read from a signalfd; children
//! start with an empty mask, as `std::process` gives them.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use serde_json::Value;

use super::Rng;
use crate::sys;

/// The bound on one master role process: far beyond what a phase takes
/// (the full volume phase of the slowest transport takes under a minute),
/// so it only ends a master that hangs.
const MASTER_BOUND: Duration = Duration::from_secs(900);

/// The driver's state.
pub(super) struct Driver {
    /// SIGCHLD, blocked and read here.
    pub(super) signals: SignalFd,
    /// This binary, re-executed for every role.
    pub(super) exe: PathBuf,
    /// Random kill moments.
    pub(super) rng: Rng,
}

impl Driver {
    /// Makes this process the driver: a child subreaper with SIGCHLD on a
    /// signalfd. Call before any thread is started.
    pub(super) fn new(seed: u64) -> io::Result<Driver> {
        nix::sys::prctl::set_child_subreaper(true)?;
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.thread_block()?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Driver { signals, exe: std::env::current_exe()?, rng: Rng::new(seed) })
    }

    /// Runs one master role (`soak --role master ARGS...`) and returns the
    /// JSON object it printed last, or why there is none.
    pub(super) fn role(&mut self, args: &[String]) -> Result<Value, String> {
        let mut cmd = Command::new(&self.exe);
        cmd.args(["soak", "--role", "master"]).args(args);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("cannot run the master: {e}"))?;
        let take = |o: Option<OwnedFd>| o.ok_or_else(|| "no pipe".to_owned());
        let stdout = take(child.stdout.take().map(OwnedFd::from))?;
        let stderr = take(child.stderr.take().map(OwnedFd::from))?;
        let deadline = Instant::now() + MASTER_BOUND;
        let mut out = [(stdout, Vec::new(), false), (stderr, Vec::new(), false)];
        let mut buf = [0u8; 16 * 1024];
        while !out.iter().all(|(_, _, done)| *done) {
            let open: Vec<usize> = (0..2).filter(|&i| !out[i].2).collect();
            let fds: Vec<_> = open.iter().map(|&i| out[i].0.as_fd()).collect();
            let fired =
                sys::wait_any(&fds, deadline.saturating_duration_since(Instant::now())).map_err(|e| e.to_string())?;
            for (k, &i) in open.iter().enumerate() {
                if !fired[k] {
                    continue;
                }
                match nix::unistd::read(&out[i].0, &mut buf) {
                    Ok(0) => out[i].2 = true,
                    Ok(n) => out[i].1.extend_from_slice(&buf[..n]),
                    Err(Errno::EINTR) => {}
                    Err(e) => return Err(format!("reading the master's output: {e}")),
                }
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the master did not finish within {MASTER_BOUND:?}; killed"));
            }
        }
        let status = child.wait().map_err(|e| format!("waiting for the master: {e}"))?;
        let stderr = String::from_utf8_lossy(&out[1].1);
        if !status.success() {
            let last: Vec<&str> = stderr.lines().rev().take(3).collect();
            let why: Vec<&str> = last.into_iter().rev().collect();
            return Err(format!("{} ({status})", why.join(" / ")));
        }
        let stdout = String::from_utf8_lossy(&out[0].1);
        let line = stdout.lines().last().unwrap_or("");
        match serde_json::from_str::<Value>(line) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(format!("the master printed {line:?}, not its report")),
        }
    }

    /// The driver's children now (there should be none between phases):
    /// each is killed and reaped, and returned with the state it was in
    /// (`Z` for a zombie).
    pub(super) fn leftovers(&mut self) -> io::Result<Vec<(i32, char)>> {
        let me = i32::try_from(std::process::id()).map_err(io::Error::other)?;
        let left = sys::children_of(me)?;
        for &(pid, _) in &left {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        while self.signals.read_signal()?.is_some() {}
        Ok(left)
    }
}
