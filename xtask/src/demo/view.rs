//! What the demo shows: one line per event (`--plain`), or a live terminal view.
//!
//! The master's loop reports every event here. In plain mode each event is
//! one line on standard output, in the shapes listed in `--help`, for
//! scripts and tests. In live mode the screen is redrawn (ANSI escapes, at
//! most every [`REDRAW`]) with the process table (pid, generation, state,
//! use count), the load generator's counters and the master's latest
//! decisions.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use master_proto::master::{Counters, Exit, Master, Outcome, ReapOutcome};
use master_proto::{Received, Status};

use super::load::LoadStats;

/// The shortest time between two redraws of the live view.
pub(super) const REDRAW: Duration = Duration::from_millis(100);

/// The longest time between two redraws of the live view.
const TICK: Duration = Duration::from_secs(1);

/// How many of the master's latest decisions the live view shows.
const DECISIONS: usize = 14;

/// The demo's output.
pub(super) struct View {
    plain: bool,
    started: Instant,
    /// Live mode: the latest decisions, newest last.
    decisions: VecDeque<String>,
    /// Live mode: the header (what runs where).
    header: String,
    /// Live mode: something changed since the last redraw.
    dirty: bool,
    last_redraw: Option<Instant>,
}

impl View {
    /// A view, plain or live.
    pub(super) fn new(plain: bool) -> View {
        View {
            plain,
            started: Instant::now(),
            decisions: VecDeque::new(),
            header: String::new(),
            dirty: true,
            last_redraw: None,
        }
    }

    /// Prints a line in plain mode; records a decision in live mode.
    fn event(&mut self, line: String) {
        if self.plain {
            println!("{line}");
        } else {
            let at = self.started.elapsed().as_secs_f64();
            self.decisions.push_back(format!("{at:7.2}s  {line}"));
            while self.decisions.len() > DECISIONS {
                self.decisions.pop_front();
            }
            self.dirty = true;
        }
    }

    /// The service is up: where it listens and with what.
    pub(super) fn started(&mut self, listen: &str, transport: &str, limit: usize, service: &str) {
        let line = format!("listen {listen} transport={transport}");
        self.header = format!("{line} max-children={limit} service={service}");
        if self.plain {
            println!("{line}");
        } else {
            // The live view takes the screen; the address stays in its header.
            self.decisions.push_back(format!("{:7.2}s  {line}", 0.0));
        }
    }

    /// A child was spawned.
    pub(super) fn spawned(&mut self, pid: i32, generation: u32, children: usize) {
        self.event(format!("spawn pid={pid} gen={generation} children={children}"));
    }

    /// A spawn failed (the command could not be run).
    pub(super) fn spawn_failed(&mut self, generation: u32, why: &str) {
        self.event(format!("spawn-failed gen={generation} error={why:?}"));
    }

    /// One item from the status channel and what the master made of it.
    pub(super) fn update(&mut self, item: &Received, outcome: Outcome) {
        match item {
            Received::Update { update, .. } => {
                let line =
                    format!("pid={} gen={} status={} outcome={outcome}", update.pid, update.generation, update.status);
                if self.plain {
                    println!("{line}");
                } else if !outcome.is_applied() {
                    // TAKEN/AVAIL show in the table; the rest is news.
                    self.event(line);
                } else {
                    self.dirty = true;
                }
            }
            Received::Malformed(what) => self.event(format!("malformed what={:?} outcome={outcome}", what.to_string())),
        }
    }

    /// A child was reaped.
    pub(super) fn reaped(&mut self, pid: i32, exit: Exit, outcome: ReapOutcome) {
        let line = match outcome {
            ReapOutcome::Reaped { child, .. } => format!(
                "reap pid={pid} gen={} exit={:?} uses={} outcome={outcome}",
                child.generation,
                exit.to_string(),
                child.use_count
            ),
            _ => format!("reap pid={pid} exit={:?} outcome={outcome}", exit.to_string()),
        };
        self.event(line);
    }

    /// Spawning stopped for a while.
    pub(super) fn throttled(&mut self, delay: Duration) {
        self.event(format!("throttle seconds={}", delay.as_secs_f64()));
    }

    /// A reload: a new channel, old children retired.
    pub(super) fn reload(&mut self, epoch: u64, retired: &[i32], why: &str) {
        let retired: Vec<String> = retired.iter().map(i32::to_string).collect();
        self.event(format!("reload epoch={epoch} retired={} reason={why}", retired.join(",")));
    }

    /// The load generator was told to stop.
    pub(super) fn stopping(&mut self, why: &str) {
        self.event(format!("stop reason={why}"));
    }

    /// The shutdown began.
    pub(super) fn shutdown(&mut self, why: &str) {
        self.event(format!("shutdown reason={why}"));
    }

    /// Something worth a decision line in the live view, and no line in
    /// plain mode (whose lines are the fixed set `--help` lists).
    pub(super) fn note(&mut self, what: &str) {
        if !self.plain {
            self.event(what.to_owned());
        }
    }

    /// Something went wrong that the master survives.
    pub(super) fn error(&mut self, what: &str) {
        if self.plain {
            println!("error {what}");
        } else {
            self.event(format!("error {what}"));
        }
    }

    /// When the live view wants to be redrawn next: [`REDRAW`] after the
    /// last time if something changed, else [`TICK`] after it, for the
    /// clock and the clients' counters.
    pub(super) fn redraw_due(&self) -> Option<Instant> {
        if self.plain {
            return None;
        }
        let Some(last) = self.last_redraw else { return Some(Instant::now()) };
        Some(last + if self.dirty { REDRAW } else { TICK })
    }

    /// Redraws the live view if it is due.
    pub(super) fn redraw(&mut self, master: &Master, load: Option<&LoadStats>, busy_max: usize) {
        if let Some(frame) = self.frame(master, load, busy_max) {
            let _ = io::stdout().lock().write_all(frame.as_bytes());
        }
    }

    /// The live view's next frame, if one is due.
    fn frame(&mut self, master: &Master, load: Option<&LoadStats>, busy_max: usize) -> Option<String> {
        if self.plain {
            return None;
        }
        let now = Instant::now();
        if let Some(last) = self.last_redraw
            && now < last + if self.dirty { REDRAW } else { TICK }
        {
            return None;
        }
        self.last_redraw = Some(now);
        self.dirty = false;
        Some(self.screen(master, load, busy_max))
    }

    /// The live view, as bytes for the terminal.
    fn screen(&self, master: &Master, load: Option<&LoadStats>, busy_max: usize) -> String {
        let mut s = String::from("\x1b[H\x1b[2J");
        let _ = writeln!(
            s,
            "cargo xtask demo  {:.1}s  (Ctrl-C to stop, SIGHUP to reload)",
            self.started.elapsed().as_secs_f64()
        );
        let _ = writeln!(s, "{}", self.header);
        if let Some(load) = load {
            let _ = writeln!(s, "{}", load_line(load));
        }
        let _ = writeln!(
            s,
            "children {} (available {}, busy most {}), epoch {}\n",
            master.total(),
            master.available(),
            busy_max,
            master.epoch()
        );
        let _ = writeln!(s, "  {:>8}  {:>6}  {:<9}  {:>5}", "pid", "gen", "state", "uses");
        let mut children: Vec<_> = master.children().collect();
        children.sort_by_key(|c| (c.retired, c.pid));
        for child in children {
            let state = match child.status {
                Status::TAKEN => "\x1b[1;33mTAKEN\x1b[0m    ".to_owned(),
                Status::AVAIL => "\x1b[32mAVAIL\x1b[0m    ".to_owned(),
                other => format!("{:<9}", other.to_string()),
            };
            let retired = if child.retired { "  retired (reload): exits after its client" } else { "" };
            let _ =
                writeln!(s, "  {:>8}  {:>6}  {state}  {:>5}{retired}", child.pid, child.generation, child.use_count);
        }
        let _ = writeln!(s, "\nupdates: {}", counters_line(master.counters()));
        let _ = writeln!(s, "\nmaster's decisions:");
        for line in &self.decisions {
            let _ = writeln!(s, "  {line}");
        }
        s
    }

    /// The closing summary, in either mode.
    pub(super) fn summary(&mut self, master: &Master, load: Option<&LoadStats>, busy_max: usize, children_left: &str) {
        if !self.plain {
            let _ = io::stdout().lock().write_all(self.screen(master, load, busy_max).as_bytes());
        }
        let c = master.counters();
        let (served, failed, max_clients) = load.map_or((0, 0, 0), |l| {
            (
                l.served.load(std::sync::atomic::Ordering::Relaxed),
                l.failed.load(std::sync::atomic::Ordering::Relaxed),
                l.max_active.load(std::sync::atomic::Ordering::Relaxed),
            )
        });
        println!(
            "summary spawned={} spawn-failed={} reaped={} children-left={children_left} reloads={} throttled={} connections={served} \
             failed-connections={failed} max-concurrent-clients={max_clients} max-busy-children={busy_max} \
             updates={} {}",
            c.spawned,
            c.spawn_failed,
            c.reaped,
            c.reloads,
            c.throttled,
            c.received(),
            counters_line(c)
        );
        if !self.plain
            && let Some(Some(e)) = load.map(|l| l.last_error.lock().ok().and_then(|e| e.clone()))
        {
            println!("last client failure: {e}");
        }
    }
}

/// The load generator's counters, for the live view.
fn load_line(load: &LoadStats) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    format!(
        "clients: {} connected (most {}), {} served, {} failed",
        load.active.load(Relaxed),
        load.max_active.load(Relaxed),
        load.served.load(Relaxed),
        load.failed.load(Relaxed)
    )
}

/// Every update counter, by outcome name, as `name=count` pairs.
pub(super) fn counters_line(c: &Counters) -> String {
    [
        ("taken", c.taken),
        ("avail", c.avail),
        ("redundant", c.redundant),
        ("unknown-pid", c.unknown_pid),
        ("wrong-generation", c.wrong_generation),
        ("unknown-status", c.unknown_status),
        ("forged-pid", c.forged_pid),
        ("retired", c.retired),
        ("malformed", c.malformed),
    ]
    .iter()
    .map(|(name, n)| format!("{name}={n}"))
    .collect::<Vec<_>>()
    .join(" ")
}

#[cfg(test)]
mod tests {
    use master_proto::master::Config;
    use master_proto::{Sender, StatusUpdate};

    use super::*;

    #[test]
    fn the_live_view_draws_at_once_then_waits_and_shows_each_child() {
        let now = Instant::now();
        let mut master = Master::new(Config::default());
        let mut view = View::new(false);
        view.started("tcp 127.0.0.1:1", "duplex", 4, "built-in echo");
        for pid in [100, 101] {
            let generation = master.begin_spawn(now).unwrap();
            master.spawned(pid, generation).unwrap();
            view.spawned(pid, generation, master.total());
        }
        let taken = Received::Update {
            update: StatusUpdate { pid: 101, generation: 2, status: Status::TAKEN },
            sender: Sender::Claimed,
        };
        let outcome = master.receive(&taken);
        view.update(&taken, outcome);
        let gossip = Received::Update {
            update: StatusUpdate { pid: 100, generation: 1, status: Status(7) },
            sender: Sender::Claimed,
        };
        let outcome = master.receive(&gossip);
        view.update(&gossip, outcome);

        let frame = view.frame(&master, None, 1).expect("the first frame is drawn at once");
        assert!(frame.starts_with("\x1b[H\x1b[2J"), "a frame clears the screen");
        let rows: Vec<&str> = frame.lines().filter(|l| l.trim_start().starts_with("10")).collect();
        assert_eq!(rows.len(), 2, "one row per child: {frame}");
        assert!(rows[0].contains("100") && rows[0].contains("AVAIL") && rows[0].trim_end().ends_with('0'), "{frame}");
        assert!(rows[1].contains("101") && rows[1].contains("TAKEN"), "{frame}");
        assert!(frame.contains("spawn pid=101 gen=2 children=2"), "decisions are shown: {frame}");
        assert!(frame.contains("pid=100 gen=1 status=other(7) outcome=unknown-status"), "gossip is shown: {frame}");
        assert!(frame.contains("unknown-status=1"), "and counted: {frame}");
        assert!(view.frame(&master, None, 1).is_none(), "no second frame right away");

        master.reload();
        let frame = view.screen(&master, None, 1);
        assert_eq!(frame.matches("retired (reload)").count(), 2, "{frame}");
        assert!(View::new(true).frame(&master, None, 1).is_none(), "the plain view draws no frames");
    }
}
