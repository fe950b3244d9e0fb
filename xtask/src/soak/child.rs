//! The soak's children: this binary re-executed as `soak --role child`,
//! each building its sink from the standard environment with
//! [`sink_from_env`], whichever transport the master chose.
//!
//! Every child alternates `TAKEN`, `AVAIL`, `TAKEN`, ... (its k-th update
//! is `TAKEN` for even k), so the master can check each child's updates
//! one by one: a repeat is a duplicate (or a loss), and the count says the
//! rest. How each one runs is its [`Behaviour`]:
//!
//! - [`Steady`](Behaviour::Steady): says it is ready (one byte on stdout),
//!   waits for the go (end of file on stdin), sends its count as fast as it
//!   can and exits;
//! - [`Flood`](Behaviour::Flood): sends as fast as it can until stopped;
//! - [`Paced`](Behaviour::Paced): sends one update every `pace`, on a fixed
//!   schedule (the k-th at start + k × pace), until its count is sent or it
//!   is stopped; it may report the CLOCK_MONOTONIC time it took right
//!   before each notify.
//!
//! With `go`, a flooding or paced child first waits for end of file on
//! stdin, so that a master can start its children together once it has
//! spawned them all. With `stop_on_eof` instead, end of file on stdin stops
//! it; it then prints how many updates it sent (and the send times, if
//! asked) on stdout and exits 0, as it does after its count. With
//! neither, stdin is never looked at: only the master's death stops the
//! child (the master-death phase's orphans, churn's victims, which are
//! killed first). With a `nice` value, the child lowers its own priority
//! to it first (the flood phase's niced flooder).
//!
//! # Errors
//!
//! The exit code says how a child ended: 0 when stopped or done,
//! [`EXIT_NOTIFY_DISCONNECTED`] when `notify` said the master was gone,
//! [`EXIT_FD_DISCONNECTED`] when its disconnect fd fired while it waited
//! between updates, 1 for anything else (with the reason on stderr).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use master_proto::{ChildEnv, NotifyError, Status, StatusSink};
use master_proto_transports::{AnySink, sink_from_env};

use crate::sys;

/// The exit code of a child whose `notify` returned `Disconnected`.
pub(super) const EXIT_NOTIFY_DISCONNECTED: i32 = 10;

/// The exit code of a child whose disconnect fd fired while it waited
/// between updates.
pub(super) const EXIT_FD_DISCONNECTED: i32 = 11;

/// How often a flooding child looks at stdin: every this many notifies
/// (one zero-timeout poll(2)), so that stopping costs it almost nothing.
const FLOOD_CHECK: u64 = 1024;

/// How a child sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Behaviour {
    /// Ready, go, then `count` updates at full speed.
    Steady {
        /// Updates to send.
        count: u64,
    },
    /// Full speed until stopped (or the master is gone).
    Flood,
    /// One update every `pace` until `count` are sent (0: no limit) or
    /// it is stopped.
    Paced {
        /// The interval between two updates.
        pace: Duration,
        /// Updates to send; 0 for no limit.
        count: u64,
        /// Whether to print the send times when done.
        times: bool,
    },
}

/// What one child is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ChildArgs {
    /// How it sends.
    pub(super) behaviour: Behaviour,
    /// Whether end of file on stdin stops it.
    pub(super) stop_on_eof: bool,
    /// Whether it waits for end of file on stdin before it starts.
    pub(super) go: bool,
    /// The nice value it runs at (0: as its master).
    pub(super) nice: i32,
}

impl ChildArgs {
    /// The command-line arguments that make a child role of `self`, after
    /// `soak --role child`.
    pub(super) fn to_args(self) -> Vec<String> {
        let mut a = Vec::new();
        match self.behaviour {
            Behaviour::Steady { count } => {
                a.extend(["--child".into(), "steady".into(), "--count".into(), count.to_string()])
            }
            Behaviour::Flood => a.extend(["--child".into(), "flood".into()]),
            Behaviour::Paced { pace, count, times } => {
                a.extend(["--child".into(), "paced".into(), "--count".into(), count.to_string()]);
                a.extend(["--pace-us".into(), pace.as_micros().to_string()]);
                if times {
                    a.push("--times".into());
                }
            }
        }
        if self.stop_on_eof {
            a.push("--stop-on-eof".into());
        }
        if self.go {
            a.push("--go".into());
        }
        if self.nice != 0 {
            a.extend(["--nice".into(), self.nice.to_string()]);
        }
        a
    }

    /// The child described by the parsed options of a child role.
    pub(super) fn from_parts(
        name: &str,
        count: u64,
        pace_us: u64,
        times: bool,
        stop_on_eof: bool,
        go: bool,
        nice: i32,
    ) -> io::Result<ChildArgs> {
        let behaviour = match name {
            "steady" => Behaviour::Steady { count },
            "flood" => Behaviour::Flood,
            "paced" => Behaviour::Paced { pace: Duration::from_micros(pace_us), count, times },
            other => return Err(io::Error::other(format!("no child behaviour {other:?}"))),
        };
        Ok(ChildArgs { behaviour, stop_on_eof, go, nice })
    }
}

/// The k-th update of every child.
pub(super) fn status_of(k: u64) -> Status {
    if k.is_multiple_of(2) { Status::TAKEN } else { Status::AVAIL }
}

/// How a child's loop ended.
enum End {
    /// Its count was sent, or it was stopped.
    Done,
    /// `notify` said the master is gone.
    NotifyDisconnected,
    /// The disconnect fd fired.
    FdDisconnected,
}

/// Whether `fd` is readable (or hung up) right now.
fn ready_now(fd: BorrowedFd<'_>) -> io::Result<bool> {
    sys::wait_readable(fd, Duration::ZERO)
}

/// Sends the k-th update: `Ok(false)` once the master is gone.
fn send(sink: &AnySink, k: u64) -> io::Result<bool> {
    match sink.notify(status_of(k)) {
        Ok(()) => Ok(true),
        Err(NotifyError::Disconnected) => Ok(false),
        Err(e) => Err(io::Error::other(format!("notify {k}: {e}"))),
    }
}

/// Runs a child role; returns the process's exit code.
pub(super) fn main(args: ChildArgs) -> io::Result<i32> {
    if args.nice != 0 {
        sys::nice(args.nice)?;
    }
    let mut env = ChildEnv::from_process().map_err(io::Error::other)?;
    let sink = sink_from_env(&mut env).map_err(io::Error::other)?;
    let stdin = io::stdin();
    let mut sent = 0u64;
    let mut times = Vec::new();
    if args.go {
        io::stdin().lock().read_to_end(&mut Vec::new())?;
    }
    let end = match args.behaviour {
        Behaviour::Steady { count } => {
            let mut out = io::stdout().lock();
            out.write_all(b"r")?;
            out.flush()?;
            drop(out);
            io::stdin().lock().read_to_end(&mut Vec::new())?;
            loop {
                if sent == count {
                    break End::Done;
                }
                if !send(&sink, sent)? {
                    break End::NotifyDisconnected;
                }
                sent += 1;
            }
        }
        Behaviour::Flood => loop {
            if args.stop_on_eof && sent.is_multiple_of(FLOOD_CHECK) && ready_now(stdin.as_fd())? {
                break End::Done;
            }
            if !send(&sink, sent)? {
                break End::NotifyDisconnected;
            }
            sent += 1;
        },
        Behaviour::Paced { pace, count, times: keep } => {
            let start = Instant::now();
            let watch: Vec<BorrowedFd<'_>> =
                if args.stop_on_eof { vec![sink.disconnect_fd(), stdin.as_fd()] } else { vec![sink.disconnect_fd()] };
            'run: loop {
                if count != 0 && sent == count {
                    break End::Done;
                }
                // The schedule is absolute, so a late wake-up does not
                // slow the rate down.
                let at = start + pace * u32::try_from(sent).unwrap_or(u32::MAX);
                loop {
                    let left = at.saturating_duration_since(Instant::now());
                    let fired = sys::wait_any(&watch, left)?;
                    if fired[0] {
                        break 'run End::FdDisconnected;
                    }
                    if fired.get(1) == Some(&true) {
                        break 'run End::Done;
                    }
                    if left.is_zero() || Instant::now() >= at {
                        break;
                    }
                }
                if keep {
                    times.push(sys::mono_ns());
                }
                if !send(&sink, sent)? {
                    break End::NotifyDisconnected;
                }
                sent += 1;
            }
        }
    };
    match end {
        End::Done => {
            if args.stop_on_eof || !times.is_empty() {
                let mut out = io::stdout().lock();
                writeln!(out, "{sent}")?;
                if !times.is_empty() {
                    let line: Vec<String> = times.iter().map(u64::to_string).collect();
                    writeln!(out, "{}", line.join(" "))?;
                }
                out.flush()?;
            }
            Ok(0)
        }
        End::NotifyDisconnected => Ok(EXIT_NOTIFY_DISCONNECTED),
        End::FdDisconnected => Ok(EXIT_FD_DISCONNECTED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_args_round_trip_through_the_command_line() {
        for args in [
            ChildArgs { behaviour: Behaviour::Steady { count: 7 }, stop_on_eof: false, go: false, nice: 0 },
            ChildArgs { behaviour: Behaviour::Flood, stop_on_eof: true, go: false, nice: 19 },
            ChildArgs {
                behaviour: Behaviour::Paced { pace: Duration::from_micros(2500), count: 0, times: true },
                stop_on_eof: false,
                go: true,
                nice: 0,
            },
        ] {
            let line = args.to_args();
            let get = |flag: &str| line.iter().position(|a| a == flag).map(|i| line[i + 1].clone());
            let parsed = ChildArgs::from_parts(
                &get("--child").expect("--child"),
                get("--count").map_or(0, |c| c.parse().expect("count")),
                get("--pace-us").map_or(0, |c| c.parse().expect("pace")),
                line.iter().any(|a| a == "--times"),
                line.iter().any(|a| a == "--stop-on-eof"),
                line.iter().any(|a| a == "--go"),
                get("--nice").map_or(0, |n| n.parse().expect("nice")),
            )
            .expect("parse");
            assert_eq!(parsed, args);
        }
    }

    #[test]
    fn updates_alternate_from_taken() {
        let s: Vec<Status> = (0..4).map(status_of).collect();
        assert_eq!(s, [Status::TAKEN, Status::AVAIL, Status::TAKEN, Status::AVAIL]);
    }
}
