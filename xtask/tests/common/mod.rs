//! Helpers shared by the demo's integration tests: running `xtask demo --plain` with bounded waits, and reading its lines.

// Each test binary compiles its own copy of this module and uses only some
// of it.
#![allow(dead_code, reason = "each test binary uses only some of the shared helpers")]

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

/// The bound on every wait: generous, for a loaded machine.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// A running `xtask demo`, its standard output read line by line.
pub(crate) struct Demo {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
    args: Vec<String>,
}

impl Demo {
    pub(crate) fn start(args: &[&str]) -> Demo {
        Demo::start_with(args, |_| {})
    }

    /// As [`start`](Self::start), with `setup` applied to the command
    /// first (a working directory, an environment variable).
    pub(crate) fn start_with(args: &[&str], setup: impl FnOnce(&mut Command)) -> Demo {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        setup(&mut cmd);
        let mut child = cmd
            .arg("demo")
            .arg("--plain")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running xtask demo");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let collected = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                collected.lock().expect("stderr lock").push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Demo { child, lines, seen: Vec::new(), stderr, args: args.iter().map(|a| (*a).to_owned()).collect() }
    }

    pub(crate) fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits"))
    }

    /// The next line for which `pick` returns something, bounded by `WAIT`.
    pub(crate) fn await_line<R>(&mut self, what: &str, mut pick: impl FnMut(&str) -> Option<R>) -> R {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let picked = pick(&line);
                    self.seen.push(line);
                    if let Some(r) = picked {
                        return r;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!("{WAIT:?} without {what}; {}", self.report()),
                Err(RecvTimeoutError::Disconnected) => panic!("the demo ended without {what}; {}", self.report()),
            }
        }
    }

    /// Reads to the end of the output and reaps the demo, bounded by `WAIT`.
    pub(crate) fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("the demo did not end within {WAIT:?}; {}", self.report()),
            }
        }
        // Its standard output is closed: it is exiting. std offers nothing
        // to poll for a child's exit, so check between short pauses.
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "the demo closed its output but did not exit; {}", self.report());
            let _ = nix::poll::poll(&mut [], nix::poll::PollTimeout::from(5u8));
        };
        // The stderr thread ends at EOF, which follows the exit.
        let stderr_deadline = Instant::now() + WAIT;
        while Arc::strong_count(&self.stderr) > 1 && Instant::now() < stderr_deadline {
            let _ = nix::poll::poll(&mut [], nix::poll::PollTimeout::from(5u8));
        }
        let stderr = self.stderr.lock().expect("stderr lock").clone();
        (status, std::mem::take(&mut self.seen), stderr)
    }

    pub(crate) fn report(&self) -> String {
        let tail: Vec<&String> = self.seen.iter().rev().take(30).rev().collect();
        format!(
            "demo {:?}: last lines {tail:#?}, stderr {:?}",
            self.args,
            self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
        )
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `key=value` fields of a line, after its first word if that has no `=`.
pub(crate) fn fields(line: &str) -> HashMap<&str, &str> {
    line.split_whitespace().filter_map(|w| w.split_once('=')).collect()
}

pub(crate) fn num(fields: &HashMap<&str, &str>, key: &str) -> u64 {
    fields.get(key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no number {key}= in {fields:?}"))
}

/// The summary line's fields.
pub(crate) fn summary(lines: &[String]) -> HashMap<&str, &str> {
    let line = lines.iter().find(|l| l.starts_with("summary ")).unwrap_or_else(|| panic!("no summary in {lines:#?}"));
    fields(line)
}

/// Counts of what the lines say, checked line by line against the protocol.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) spawned: BTreeSet<i32>,
    pub(crate) reaped: BTreeSet<i32>,
    pub(crate) generations: HashMap<i32, u32>,
    pub(crate) outcomes: HashMap<String, u64>,
    /// Uses (applied AVAILs) seen per pid.
    pub(crate) uses: HashMap<i32, u64>,
    pub(crate) max_alive: usize,
    pub(crate) reloads: Vec<(usize, BTreeSet<i32>)>,
    /// The highest generation spawned before each reload, and the lowest after.
    pub(crate) gens_before_reload: u32,
    pub(crate) gens_after_reload: Vec<u32>,
}

pub(crate) fn tally(lines: &[String], limit: usize) -> Tally {
    let mut t = Tally::default();
    let mut alive: BTreeSet<i32> = BTreeSet::new();
    let mut state: HashMap<i32, &str> = HashMap::new();
    for line in lines {
        let f = fields(line);
        let pid = || -> i32 { f["pid"].parse().unwrap_or_else(|_| panic!("pid in {line:?}")) };
        let generation = || -> u32 { f["gen"].parse().unwrap_or_else(|_| panic!("gen in {line:?}")) };
        if line.starts_with("spawn ") {
            let (pid, generation) = (pid(), generation());
            assert!(t.spawned.insert(pid), "pid {pid} spawned twice: {line}");
            assert!(t.generations.values().all(|&g| g < generation), "generations grow: {line}");
            if t.reloads.is_empty() {
                t.gens_before_reload = generation;
            } else {
                t.gens_after_reload.push(generation);
            }
            t.generations.insert(pid, generation);
            alive.insert(pid);
            state.insert(pid, "AVAIL");
            t.max_alive = t.max_alive.max(alive.len());
            assert!(alive.len() <= limit, "more than {limit} children alive at {line}");
            assert_eq!(num(&f, "children"), alive.len() as u64, "{line}");
        } else if line.starts_with("pid=") {
            let (pid, generation) = (pid(), generation());
            assert!(alive.contains(&pid), "an update from a pid that is not alive: {line}");
            assert_eq!(t.generations[&pid], generation, "{line}");
            let (status, outcome) = (f["status"], f["outcome"]);
            *t.outcomes.entry(outcome.to_owned()).or_default() += 1;
            match (status, outcome) {
                ("TAKEN", "taken") | ("AVAIL", "avail") => {
                    assert_ne!(state[&pid], status, "an applied update changes the state: {line}");
                    state.insert(pid, status);
                    if status == "AVAIL" {
                        *t.uses.entry(pid).or_default() += 1;
                    }
                }
                // A transport that delivers only each child's latest state
                // may pass on a state the master has already.
                ("TAKEN" | "AVAIL", "redundant") => assert_eq!(state[&pid], status, "{line}"),
                ("other(7)", "unknown-status") => {}
                _ => panic!("unexpected status line {line}"),
            }
        } else if line.starts_with("reap ") {
            let pid = pid();
            assert!(alive.remove(&pid), "reaped a pid that is not alive: {line}");
            assert!(t.reaped.insert(pid));
            assert!(line.contains("exit=\"exit status 0\""), "a clean exit: {line}");
            assert_eq!(f["outcome"], "reaped", "{line}");
            assert_eq!(num(&f, "uses"), t.uses.get(&pid).copied().unwrap_or(0), "uses of {pid}: {line}");
        } else if line.starts_with("reload ") {
            let retired: BTreeSet<i32> =
                f["retired"].split(',').filter(|s| !s.is_empty()).map(|p| p.parse().expect("pid")).collect();
            assert_eq!(retired, alive, "a reload retires every child alive: {line}");
            t.reloads.push((t.spawned.len(), retired));
        } else {
            let known = ["listen ", "stop ", "shutdown ", "summary "];
            assert!(known.iter().any(|k| line.starts_with(k)), "an unexpected line (an error?): {line}");
        }
    }
    assert!(alive.is_empty(), "children never reaped: {alive:?}");
    t
}
