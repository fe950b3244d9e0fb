//! `cargo xtask soak`: a long run over every transport in the facade's
//! list, at production-like volume, with a flooding neighbour and masters
//! killed under load; figures as Markdown tables and JSON.
//!
//! Phases, each run on every transport of
//! [`AnyTransport::all`](master_proto_transports::AnyTransport::all):
//!
//! - [`volume`]: many children, millions of updates, checked update by
//!   update (lost, torn, duplicated; of a transport that keeps each
//!   child's latest state, every state that arrives in the child's order
//!   and its last one, the others counted as coalesced);
//! - [`churn`]: children SIGKILLed at random moments mid-notify while
//!   survivors report (no wedge, the master's table exact after every
//!   reap);
//! - [`death`]: masters SIGKILLed under load, a new one started each time
//!   (every orphan exits by itself within a bound);
//! - [`flood`]: honest children's delivery latency without a flooding
//!   neighbour, with one, and with one at nice 19 (which tells what the
//!   channel does from what the CPU does);
//!
//! and, for every phase, the resources of its master: descriptors and
//! memory before and after (no growth once its children are reaped), and
//! no zombie left.
//!
//! Every phase's master is a process of its own (this binary re-executed
//! with a hidden `--role master`), so its descriptors and RSS are its own
//! and it can be SIGKILLed; its children (`--role child`) get the standard
//! environment through [`master_proto::ChildFds`] and build their sink
//! with [`master_proto_transports::sink_from_env`]. The driver, the
//! process `cargo xtask soak` starts, is a child subreaper (see
//! [`driver`]). A debug build re-runs itself as a release build first.
//!
//! # Errors
//!
//! Each phase has its own rules (in its module's docs), those of a
//! latest-state transport
//! ([`Delivery::LatestState`](master_proto::Delivery)) decided by its
//! capabilities, never by its name; a row that breaks
//! one lists it under `problems`, and the run then exits with failure. A
//! phase that cannot run at all has an `error` instead.

use std::ffi::OsString;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use master_proto::Identity;
use master_proto_transports::AnyTransport;
use serde_json::{Map, Value, json};

mod child;
mod churn;
mod death;
mod driver;
mod flood;
mod report;
mod service;
mod volume;

use crate::sys;
use driver::Driver;

const HELP: &str = "\
usage: cargo xtask soak [--quick] [--json PATH] [--seed N]
                        [--transport NAME]... [--phase NAME]...
       cargo xtask soak --check-json PATH

A long run over every transport built here, in real processes, on a
release build: volume, churn (children SIGKILLed mid-notify), master
death (masters SIGKILLed under load), a flooding child, and each phase's
resources. Prints one Markdown table per phase; exits with failure if any
phase breaks one of its rules.

  --quick            the CI size (seconds, where a full run takes minutes)
  --json PATH        also write the results as JSON
  --seed N           the seed of the random kill moments (default: the clock)
  --transport NAME   run only this transport (repeatable)
  --phase NAME       run only this phase (repeatable): volume, churn,
                     master_death, flood
  --check-json PATH  check a JSON file written by --json: every transport
                     has a row for every phase, with the delivery it
                     declares; no errors or problems, nothing lost, torn
                     or duplicated (of a latest-state transport: each
                     child's states in order and its last one arrived;
                     elsewhere none coalesced), no wedge, no orphan or
                     zombie left, no descriptor left open
";

/// One phase of the soak. The names are the `phase` field of the JSON
/// rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Millions of updates from many children.
    Volume,
    /// Children killed mid-notify.
    Churn,
    /// Masters killed under load.
    MasterDeath,
    /// A flooding child beside honest ones.
    Flood,
}

impl Phase {
    /// Every phase, in the order they run and are reported.
    pub(crate) const ALL: [Phase; 4] = [Phase::Volume, Phase::Churn, Phase::MasterDeath, Phase::Flood];

    /// The phase's fixed name.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Phase::Volume => "volume",
            Phase::Churn => "churn",
            Phase::MasterDeath => "master_death",
            Phase::Flood => "flood",
        }
    }

    /// The phase with this name.
    pub(crate) fn from_name(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// The sizes of one run.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    volume_children: usize,
    /// Updates per volume run, shared out evenly among the children.
    volume_updates: u64,
    churn_kills: u64,
    /// Victims alive at once.
    churn_victims: usize,
    churn_survivors: usize,
    death_cycles: u64,
    /// Loaders per victim master.
    death_children: usize,
    flood_honest: usize,
    /// Updates per honest child (at most a few thousand: a child reports
    /// its send times in one line on a pipe).
    flood_updates: u64,
    flood_pace: Duration,
    /// Runs without the flooder, with it, and with it niced, interleaved.
    flood_reps: usize,
}

const FULL: Sizes = Sizes {
    volume_children: 64,
    volume_updates: 10_000_000,
    churn_kills: 1_000,
    churn_victims: 16,
    churn_survivors: 8,
    death_cycles: 100,
    death_children: 8,
    flood_honest: 16,
    flood_updates: 1_000,
    flood_pace: Duration::from_millis(2),
    flood_reps: 3,
};

const QUICK: Sizes = Sizes {
    volume_children: 64,
    volume_updates: 200_000,
    churn_kills: 100,
    churn_victims: 16,
    churn_survivors: 8,
    death_cycles: 10,
    death_children: 8,
    flood_honest: 16,
    flood_updates: 250,
    flood_pace: Duration::from_millis(2),
    flood_reps: 1,
};

impl Sizes {
    fn per_child(&self) -> u64 {
        self.volume_updates / u64::try_from(self.volume_children).unwrap_or(1).max(1)
    }

    fn to_json(self) -> Value {
        json!({
            "volume_children": self.volume_children,
            "volume_updates_per_child": self.per_child(),
            "churn_kills": self.churn_kills,
            "churn_victims_at_once": self.churn_victims,
            "churn_survivors": self.churn_survivors,
            "death_cycles": self.death_cycles,
            "death_children_per_master": self.death_children,
            "flood_honest": self.flood_honest,
            "flood_updates_per_child": self.flood_updates,
            "flood_pace_ms": self.flood_pace.as_secs_f64() * 1e3,
            "flood_repetitions": self.flood_reps,
        })
    }

    fn describe(&self) -> String {
        format!(
            "volume {} children × {} updates; churn {} kills, {} victims at a time, {} survivors every 2 ms; \
             master death {} cycles × {} children; flood {} honest children × {} updates every {} ms, \
             {} repetition(s) without the flooder, with it, and with it at nice 19, interleaved (medians)",
            self.volume_children,
            self.per_child(),
            self.churn_kills,
            self.churn_victims,
            self.churn_survivors,
            self.death_cycles,
            self.death_children,
            self.flood_honest,
            self.flood_updates,
            self.flood_pace.as_millis(),
            self.flood_reps
        )
    }
}

/// The bounds the rules use, stated in every output.
fn bounds() -> Value {
    json!({
        "wedge_ms": churn::WEDGE_BOUND.as_millis(),
        "orphan_ms": death::ORPHAN_BOUND.as_millis(),
        "delay_ms": flood::DELAY_BOUND.as_millis(),
        "rss_growth_kib": service::RSS_GROWTH_BOUND_KIB,
        "flood_p99_ratio": report::FLOOD_RATIO_BOUND,
    })
}

/// A small random generator (splitmix64): the kill moments, reproducible
/// from the run's seed.
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A random duration in `[0, max)`.
    pub(crate) fn below(&mut self, max: Duration) -> Duration {
        let ns = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX).max(1);
        Duration::from_nanos(self.next() % ns)
    }
}

#[derive(Debug, Default)]
struct Options {
    quick: bool,
    json: Option<PathBuf>,
    seed: Option<u64>,
    transports: Vec<String>,
    phases: Vec<Phase>,
    check_json: Option<PathBuf>,
    // The roles' own options.
    role: Option<String>,
    child: Option<String>,
    children: usize,
    count: u64,
    kills: u64,
    survivors: usize,
    flooder: Option<String>,
    pace_us: u64,
    times: bool,
    stop_on_eof: bool,
    go: bool,
    nice: i32,
}

fn parse(args: Vec<OsString>) -> Result<Options, lexopt::Error> {
    use lexopt::prelude::*;
    let mut o = Options::default();
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next()? {
        match arg {
            Long("quick") => o.quick = true,
            Long("json") => o.json = Some(p.value()?.into()),
            Long("seed") => o.seed = Some(p.value()?.parse()?),
            Long("transport") => o.transports.push(p.value()?.string()?),
            Long("phase") => {
                let name = p.value()?.string()?;
                o.phases.push(Phase::from_name(&name).ok_or_else(|| format!("no phase {name:?}"))?);
            }
            Long("check-json") => o.check_json = Some(p.value()?.into()),
            Long("role") => o.role = Some(p.value()?.string()?),
            Long("child") => o.child = Some(p.value()?.string()?),
            Long("children") => o.children = p.value()?.parse()?,
            Long("count") => o.count = p.value()?.parse()?,
            Long("kills") => o.kills = p.value()?.parse()?,
            Long("survivors") => o.survivors = p.value()?.parse()?,
            Long("flooder") => o.flooder = Some(p.value()?.string()?),
            Long("nice") => o.nice = p.value()?.parse()?,
            Long("pace-us") => o.pace_us = p.value()?.parse()?,
            Long("times") => o.times = true,
            Long("stop-on-eof") => o.stop_on_eof = true,
            Long("go") => o.go = true,
            Short('h') | Long("help") => {
                print!("{HELP}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(o)
}

/// Runs the task with its arguments.
pub(crate) fn main(args: Vec<OsString>) -> ExitCode {
    let o = match parse(args.clone()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cargo xtask soak: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &o.check_json {
        return check(path);
    }
    match o.role.as_deref() {
        Some(role) => role_main(role, &o),
        None if cfg!(debug_assertions) => crate::release::rerun("soak", &args, &[]),
        None => match run(&o) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("cargo xtask soak: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn check(path: &Path) -> ExitCode {
    crate::checked::check_json_file(
        "soak",
        path,
        report::check_json,
        "every transport soaked in every phase, every rule kept",
    )
}

/// A role process: a phase's master, or one of its children.
fn role_main(role: &str, o: &Options) -> ExitCode {
    let result = (|| -> io::Result<i32> {
        if role == "child" {
            let name = o.child.as_deref().ok_or_else(|| io::Error::other("no --child"))?;
            return child::main(child::ChildArgs::from_parts(
                name,
                o.count,
                o.pace_us,
                o.times,
                o.stop_on_eof,
                o.go,
                o.nice,
            )?);
        }
        if role != "master" {
            return Err(io::Error::other(format!("no role {role}")));
        }
        let name = o.transports.first().ok_or_else(|| io::Error::other("no --transport"))?;
        let phase = *o.phases.first().ok_or_else(|| io::Error::other("no --phase"))?;
        let seed = o.seed.unwrap_or(0);
        let report = match phase {
            Phase::Volume => volume::master(name, o.children, o.count)?,
            Phase::Churn => churn::master(name, o.kills, o.children, o.survivors, seed)?,
            Phase::MasterDeath => {
                death::victim(name, o.children)?;
                return Ok(1);
            }
            Phase::Flood => {
                let v = o.flooder.as_deref().unwrap_or("quiet");
                let variant =
                    flood::Variant::from_name(v).ok_or_else(|| io::Error::other(format!("no flooder {v:?}")))?;
                flood::master(name, o.children, o.count, Duration::from_micros(o.pace_us), variant)?
            }
        };
        let mut out = io::stdout().lock();
        writeln!(out, "{}", report.into_json())?;
        out.flush()?;
        Ok(0)
    })();
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("soak {role}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The arguments of the master role(s) of `phase` on transport `name`.
fn role_args(phase: Phase, name: &str, sizes: &Sizes, seed: u64) -> Vec<Vec<String>> {
    let base = |extra: Vec<String>| {
        let mut a = vec!["--phase".to_owned(), phase.name().to_owned(), "--transport".to_owned(), name.to_owned()];
        a.extend(["--seed".to_owned(), seed.to_string()]);
        a.extend(extra);
        a
    };
    let s = |x: &dyn ToString| x.to_string();
    match phase {
        Phase::Volume => {
            vec![base(vec!["--children".into(), s(&sizes.volume_children), "--count".into(), s(&sizes.per_child())])]
        }
        Phase::Churn => vec![base(vec![
            "--kills".into(),
            s(&sizes.churn_kills),
            "--children".into(),
            s(&sizes.churn_victims),
            "--survivors".into(),
            s(&sizes.churn_survivors),
        ])],
        Phase::MasterDeath => Vec::new(),
        Phase::Flood => flood::Variant::ALL
            .repeat(sizes.flood_reps)
            .into_iter()
            .map(|variant| {
                base(vec![
                    "--children".into(),
                    s(&sizes.flood_honest),
                    "--count".into(),
                    s(&sizes.flood_updates),
                    "--pace-us".into(),
                    s(&sizes.flood_pace.as_micros()),
                    "--flooder".into(),
                    variant.name().into(),
                ])
            })
            .collect(),
    }
}

/// A JSON object's fields, or none.
fn fields(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Runs one phase on one transport: its row.
fn soak_one(
    driver: &mut Driver,
    phase: Phase,
    transport: AnyTransport,
    sizes: &Sizes,
    seed: u64,
    quick: bool,
) -> Map<String, Value> {
    let name = transport.name();
    let started = Instant::now();
    let mut row = Map::new();
    row.insert("transport".into(), json!(name));
    row.insert("phase".into(), json!(phase.name()));
    row.insert("delivery".into(), json!(report::delivery_name(transport.caps().delivery)));
    let mut error = None;
    match phase {
        Phase::MasterDeath => match driver.master_death(name, sizes.death_cycles, sizes.death_children) {
            Ok(r) => row.extend(fields(r.into_json())),
            Err(e) => error = Some(e.to_string()),
        },
        Phase::Volume | Phase::Churn => match driver.role(&role_args(phase, name, sizes, seed)[0]) {
            Ok(v) => row.extend(fields(v)),
            Err(e) => error = Some(e),
        },
        Phase::Flood => {
            // The variants in turn, repetition after repetition.
            let runs: Result<Vec<Value>, String> =
                role_args(phase, name, sizes, seed).iter().map(|a| driver.role(a)).collect();
            match runs {
                Ok(runs) => {
                    let n = flood::Variant::ALL.len();
                    let of = |k: usize| runs.iter().skip(k).step_by(n).cloned().collect::<Vec<_>>();
                    let per_child = transport.caps().identity == Identity::Channel;
                    row.extend(report::flood_row(&of(0), &of(1), &of(2), per_child, !quick));
                }
                Err(e) => error = Some(e),
            }
        }
    }
    match driver.leftovers() {
        Ok(left) => {
            row.insert("driver_orphans".into(), json!(left.len()));
            if !left.is_empty() {
                let problems = row.entry("problems").or_insert_with(|| json!([]));
                if let Some(p) = problems.as_array_mut() {
                    p.push(json!(format!("children left to the driver after the phase (killed, reaped): {left:?}")));
                }
            }
        }
        Err(e) => error = error.or(Some(format!("listing the driver's children: {e}"))),
    }
    if let Some(e) = error {
        row.insert("error".into(), json!(e));
    }
    row.insert("seconds".into(), json!(started.elapsed().as_secs_f64()));
    row
}

/// The transports soaked: every one in the facade's list. Each phase
/// checks a transport by the delivery it declares: every update one by
/// one, or, of one that keeps each child's latest state, the states that
/// arrive in order and each child's last.
pub(crate) fn soaked() -> impl Iterator<Item = AnyTransport> {
    AnyTransport::all()
}

fn run(o: &Options) -> io::Result<ExitCode> {
    let seed = o.seed.unwrap_or_else(sys::mono_ns);
    // First, before any thread exists: subreaper, SIGCHLD on a signalfd.
    let mut driver = Driver::new(seed)?;
    let sizes = if o.quick { QUICK } else { FULL };
    let machine = sys::Machine::here();
    let transports: Vec<AnyTransport> =
        soaked().filter(|t| o.transports.is_empty() || o.transports.iter().any(|n| n == t.name())).collect();
    for n in &o.transports {
        AnyTransport::from_name(n).map_err(io::Error::other)?;
    }
    let phases: Vec<Phase> = Phase::ALL.into_iter().filter(|p| o.phases.is_empty() || o.phases.contains(p)).collect();
    eprintln!(
        "cargo xtask soak: {} phases × {} transports on {}, {} cores, {}; seed {seed}",
        phases.len(),
        transports.len(),
        machine.cpu_model,
        machine.cores,
        machine.kernel
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    for &phase in &phases {
        for &t in &transports {
            let role_seed = driver.rng.next();
            let row = soak_one(&mut driver, phase, t, &sizes, role_seed, o.quick);
            let verdict = match (row.get("error"), row.get("problems").and_then(Value::as_array)) {
                (Some(e), _) => format!("error: {e}"),
                (None, Some(p)) if !p.is_empty() => format!("{} problems", p.len()),
                _ => "ok".to_owned(),
            };
            eprintln!(
                "cargo xtask soak: {} {}: {verdict} ({:.1} s)",
                phase.name(),
                t.name(),
                row.get("seconds").and_then(Value::as_f64).unwrap_or(0.0)
            );
            rows.push(Value::Object(row));
        }
    }
    let left = driver.leftovers()?;
    let doc = json!({
        "machine": { "cpu_model": machine.cpu_model, "cores": machine.cores, "kernel": machine.kernel },
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "quick": o.quick,
        "seed": seed,
        "sizes": sizes.to_json(),
        "sizes_text": sizes.describe(),
        "bounds": bounds(),
        "transports": transports.iter().map(|t| t.name()).collect::<Vec<_>>(),
        "phases": phases.iter().map(|p| p.name()).collect::<Vec<_>>(),
        "rows": rows,
        "driver": { "children_left": left.len() },
        "seconds": started.elapsed().as_secs_f64(),
    });
    print!("{}", report::to_markdown(&doc));
    if let Some(path) = &o.json {
        let text = serde_json::to_string_pretty(&doc).map_err(io::Error::other)?;
        std::fs::write(path, text + "\n")?;
        eprintln!("cargo xtask soak: wrote {}", path.display());
    }
    // A partial run (some transports or phases) is checked as far as it
    // goes.
    match report::check_rows(&doc) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(problems) => {
            for p in &problems {
                eprintln!("cargo xtask soak: {p}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_round_trip() {
        for p in Phase::ALL {
            assert_eq!(Phase::from_name(p.name()), Some(p));
        }
        assert_eq!(Phase::from_name("resources"), None);
    }

    #[test]
    fn rng_below_stays_below_and_is_reproducible() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let d = a.below(Duration::from_millis(5));
            assert!(d < Duration::from_millis(5));
            assert_eq!(d, b.below(Duration::from_millis(5)));
        }
    }

    #[test]
    fn every_phase_has_its_master_roles() {
        for p in Phase::ALL {
            let roles = role_args(p, "x", &QUICK, 1);
            let expected = match p {
                Phase::MasterDeath => 0,              // the driver runs the cycles itself
                Phase::Flood => 3 * QUICK.flood_reps, // quiet, flooded, niced
                Phase::Volume | Phase::Churn => 1,
            };
            assert_eq!(roles.len(), expected, "{p:?}");
        }
    }
}
