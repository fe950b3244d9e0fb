//! `cargo xtask bench`: every transport side by side, against the raw floor
//! of its mechanism and (feature `peers`) other IPC crates, in real
//! processes.
//!
//! Workloads (see [`subjects::Workload`]): notify cost (and, for the
//! transports whose notify never waits, the same with the master stopped),
//! wake latency, fan-in with 1, 4, 64 and 512 children (delivery verified),
//! death detection both ways, and a sparse service (1, 64 and 512 children,
//! one of them sending an update every millisecond: the master's CPU time
//! per update). Every measurement is a master process of its own,
//! this binary re-executed with a hidden `--role master`, which spawns its
//! children (`--role child`) through the standard environment, so a
//! master's peak RSS is its own. Measurements are interleaved across
//! repetitions; each table shows the median, the min–max over repetitions
//! and the ratio to the subject's floor and to the `pipe` transport: the
//! median of each repetition's ratio, the two measured seconds apart.
//!
//! A debug build re-runs itself as a release build (`cargo run --release`)
//! before measuring. With two CPUs or more, masters are pinned to CPU 0 and
//! children to CPU 1.

use std::ffi::OsString;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use serde_json::{Map, Value};

mod plot;
mod report;
mod roles;
mod subjects;

#[cfg(feature = "peers")]
mod peers;

use crate::sys;
use report::{RunInfo, Runs};
use roles::RoleArgs;
use subjects::{Subject, Workload};

const HELP: &str = "\
usage: cargo xtask bench [--quick] [--json PATH] [--reps N] [--no-pin]
                         [--subject NAME]... [--workload NAME]...
       cargo xtask bench --check-json PATH

Measures every transport, the floor of each mechanism and (cargo feature
`peers` of xtask) other IPC crates, in real processes, on a release build.
Prints one Markdown table per workload.

  --quick            a smoke run (under a minute): 1 repetition, small sizes
  --json PATH        also write the results as JSON, and SVG plots beside it
                     (PATH-wake_latency.svg, PATH-fan_in.svg, extension dropped)
  --reps N           repetitions of every measurement (default 3, quick 1)
  --no-pin           do not pin masters and children to separate CPUs
  --subject NAME     measure only this subject (repeatable)
  --workload NAME    run only this workload (repeatable): notify_cost,
                     notify_stopped (transports whose notify never waits),
                     wake_latency, fan_in, death_master_to_child,
                     death_child_to_master, sparse
  --check-json PATH  check a JSON file written by --json: every transport
                     has a row for every workload, no errors, and nothing
                     lost, torn or duplicated where every update is promised
";

/// The sizes of one run.
#[derive(Clone, Debug)]
struct Sizes {
    notifies: u64,
    wake_samples: u64,
    fan_in_children: &'static [usize],
    /// Updates per fan-in run, shared out among the children...
    fan_in_total: u64,
    /// ...but at least this many per child.
    fan_in_min: u64,
    death_samples: u64,
    sparse_children: &'static [usize],
    /// Updates the one active child of a sparse run sends, one a
    /// millisecond.
    sparse_updates: u64,
}

const FULL: Sizes = Sizes {
    notifies: 100_000,
    wake_samples: 1_000,
    fan_in_children: &[1, 4, 64, 512],
    fan_in_total: 100_000,
    fan_in_min: 100,
    death_samples: 50,
    sparse_children: &[1, 64, 512],
    sparse_updates: 2_000,
};

const QUICK: Sizes = Sizes {
    notifies: 20_000,
    wake_samples: 200,
    fan_in_children: &[1, 4, 64, 512],
    fan_in_total: 10_000,
    fan_in_min: 20,
    death_samples: 10,
    sparse_children: &[1, 512],
    sparse_updates: 300,
};

impl Sizes {
    fn describe(&self) -> String {
        format!(
            "notify_cost and notify_stopped {} notifies; wake_latency {} samples; fan_in {} updates per run shared by the children \
             (at least {} each); death {} samples each way; sparse {} updates, one a millisecond, from one child \
             of {:?}. A notify_cost or fan_in run shorter than 50 ms is measured again with 10x, then 100x the \
             updates",
            self.notifies,
            self.wake_samples,
            self.fan_in_total,
            self.fan_in_min,
            self.death_samples,
            self.sparse_updates,
            self.sparse_children,
        )
    }
}

#[derive(Debug, Default)]
struct Options {
    quick: bool,
    json: Option<PathBuf>,
    reps: Option<usize>,
    no_pin: bool,
    subjects: Vec<String>,
    workloads: Vec<Workload>,
    check_json: Option<PathBuf>,
    role: Option<String>,
    children: usize,
    count: u64,
    master_cpu: Option<usize>,
    child_cpu: Option<usize>,
}

fn parse(args: Vec<OsString>) -> Result<Options, lexopt::Error> {
    use lexopt::prelude::*;
    let mut o = Options { children: 1, ..Options::default() };
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next()? {
        match arg {
            Long("quick") => o.quick = true,
            Long("json") => o.json = Some(p.value()?.into()),
            Long("reps") => o.reps = Some(p.value()?.parse()?),
            Long("no-pin") => o.no_pin = true,
            Long("subject") => o.subjects.push(p.value()?.string()?),
            Long("workload") => {
                let name = p.value()?.string()?;
                let w = Workload::from_name(&name).ok_or_else(|| format!("no workload {name:?}"))?;
                o.workloads.push(w);
            }
            Long("check-json") => o.check_json = Some(p.value()?.into()),
            Long("role") => o.role = Some(p.value()?.string()?),
            Long("children") => o.children = p.value()?.parse()?,
            Long("count") => o.count = p.value()?.parse()?,
            Long("master-cpu") => o.master_cpu = Some(p.value()?.parse()?),
            Long("child-cpu") => o.child_cpu = Some(p.value()?.parse()?),
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
            eprintln!("cargo xtask bench: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &o.check_json {
        return check(path);
    }
    match o.role.as_deref() {
        Some(role) => role_main(role, &o),
        None if cfg!(debug_assertions) => {
            let features: &[&str] = if cfg!(feature = "peers") { &["peers"] } else { &[] };
            crate::release::rerun("bench", &args, features)
        }
        None => match run(&o) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("cargo xtask bench: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn check(path: &Path) -> ExitCode {
    crate::checked::check_json_file(
        "bench",
        path,
        report::check_json,
        "every transport and floor measured on every workload",
    )
}

/// A role process: a master measuring one thing, or one of its children.
fn role_main(role: &str, o: &Options) -> ExitCode {
    let result = (|| -> io::Result<()> {
        let subject_name = o.subjects.first().ok_or_else(|| io::Error::other("no --subject"))?;
        let subject =
            subjects::find(subject_name).ok_or_else(|| io::Error::other(format!("no subject {subject_name}")))?;
        let workload = *o.workloads.first().ok_or_else(|| io::Error::other("no --workload"))?;
        let args = RoleArgs { workload, subject, children: o.children, count: o.count, child_cpu: o.child_cpu };
        match role {
            "master" => {
                if let Some(cpu) = o.master_cpu {
                    sys::pin(cpu)?;
                }
                let metrics = roles::master_main(&args)?;
                let mut out = io::stdout().lock();
                writeln!(out, "{}", Value::Object(metrics))?;
                out.flush()
            }
            "child" => roles::child_main(&args),
            "victim" => roles::victim_main(&args),
            other => Err(io::Error::other(format!("no role {other}"))),
        }
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench {role}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One measurement to make.
struct Job {
    workload: Workload,
    subject: Subject,
    children: usize,
    count: u64,
}

fn plan(o: &Options, sizes: &Sizes, all: &[Subject]) -> Vec<Job> {
    let mut jobs = Vec::new();
    for w in Workload::ALL {
        if !o.workloads.is_empty() && !o.workloads.contains(&w) {
            continue;
        }
        for s in all {
            if !s.workloads.contains(&w) || (!o.subjects.is_empty() && !o.subjects.iter().any(|n| n == s.name)) {
                continue;
            }
            let (children, count): (&[usize], u64) = match w {
                Workload::NotifyCost | Workload::NotifyStopped => (&[1], sizes.notifies),
                Workload::WakeLatency => (&[1], sizes.wake_samples),
                Workload::FanIn => (sizes.fan_in_children, 0),
                Workload::DeathMasterToChild | Workload::DeathChildToMaster => (&[1], sizes.death_samples),
                Workload::Sparse => (sizes.sparse_children, sizes.sparse_updates),
            };
            for &n in children {
                let count = if w == Workload::FanIn {
                    (sizes.fan_in_total / u64::try_from(n).unwrap_or(u64::MAX).max(1)).max(sizes.fan_in_min)
                } else {
                    count
                };
                jobs.push(Job { workload: w, subject: *s, children: n, count });
            }
        }
    }
    // A fan-in row is compared with another subject with as many children
    // (its floor, its concrete transport): those run one after the other,
    // every subject at 1 child, then at 4, and so on. A sparse row is
    // compared with the same subject at one child: its sizes stay
    // together. The sort is stable: subjects keep their order.
    jobs.sort_by_key(|j| (j.workload, if j.workload == Workload::FanIn { j.children } else { 0 }));
    jobs
}

/// The bound on one master role process.
const MASTER_BOUND: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs one master role process and collects its metrics.
fn measure(job: &Job, pin: Option<(usize, usize)>) -> Result<Map<String, Value>, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.args(["bench", "--role", "master", "--workload", job.workload.name(), "--subject", job.subject.name]);
    cmd.args(["--children", &job.children.to_string(), "--count", &job.count.to_string()]);
    if let Some((master, child)) = pin {
        cmd.args(["--master-cpu", &master.to_string(), "--child-cpu", &child.to_string()]);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().map_err(|e| format!("cannot run the master: {e}"))?;
    let pid = child.id();
    // The master bounds its own waits; this bound catches a master stuck in
    // a call that has none (a peer's blocking accept, say).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let out = match rx.recv_timeout(MASTER_BOUND) {
        Ok(out) => out.map_err(|e| format!("waiting for the master: {e}"))?,
        Err(_) => {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = rx.recv_timeout(roles::WAIT);
            return Err(format!("the master did not finish within {MASTER_BOUND:?}; killed"));
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let last: Vec<&str> = stderr.lines().rev().take(3).collect();
        let why: Vec<&str> = last.into_iter().rev().collect();
        return Err(format!("{} ({})", why.join(" / "), out.status));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(format!("the master printed {line:?}, not metrics")),
    }
}

fn run(o: &Options) -> io::Result<ExitCode> {
    let sizes = if o.quick { QUICK } else { FULL };
    let reps = o.reps.unwrap_or(if o.quick { 1 } else { 3 }).max(1);
    let machine = sys::Machine::here();
    let pin = (!o.no_pin && machine.cores >= 2).then_some((0, 1));
    let pinning = match pin {
        Some((m, c)) => format!("masters pinned to CPU {m}, children to CPU {c}"),
        None if o.no_pin => "not pinned (--no-pin)".to_owned(),
        None => "not pinned (one CPU)".to_owned(),
    };
    let all = subjects::all();
    for s in &o.subjects {
        if !all.iter().any(|x| x.name == s) {
            return Err(io::Error::other(format!("no subject {s}")));
        }
    }
    let jobs = plan(o, &sizes, &all);
    let info = RunInfo {
        machine,
        repetitions: reps,
        pinning,
        quick: o.quick,
        sizes: sizes.describe(),
        // A peer that fails at run time gets an error row of its own.
        peer_notes: if cfg!(feature = "peers") {
            Vec::new()
        } else {
            vec!["peers are not built (cargo feature `peers` of xtask is off)".to_owned()]
        },
    };
    eprintln!(
        "cargo xtask bench: {} measurements × {reps} repetitions on {}, {} cores, {}; {}",
        jobs.len(),
        info.machine.cpu_model,
        info.machine.cores,
        info.machine.kernel,
        info.pinning
    );
    let bar = indicatif::ProgressBar::new(u64::try_from(jobs.len() * reps).unwrap_or(u64::MAX));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut results: Vec<Runs> = jobs
        .iter()
        .map(|j| Runs { workload: j.workload, subject: j.subject, children: j.children, reps: Vec::new() })
        .collect();
    // Interleaved: every measurement once, then again, so a slow phase of
    // the machine spreads over all subjects instead of hitting one.
    for rep in 0..reps {
        for (job, runs) in jobs.iter().zip(&mut results) {
            bar.set_message(format!(
                "rep {}/{reps} {} {} ×{}",
                rep + 1,
                job.workload.name(),
                job.subject.name,
                job.children
            ));
            let r = measure(job, pin);
            if let Err(e) = &r {
                bar.suspend(|| eprintln!("{} {} ×{}: {e}", job.workload.name(), job.subject.name, job.children));
            }
            runs.reps.push(r);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    print!("{}", report::to_markdown(&info, &results));
    if let Some(path) = &o.json {
        let doc = report::to_json(&info, &results);
        let text = serde_json::to_string_pretty(&doc).map_err(io::Error::other)?;
        std::fs::write(path, text + "\n")?;
        eprintln!("cargo xtask bench: wrote {}", path.display());
        let stem = path.with_extension("");
        for (name, draw) in [
            ("wake_latency", plot::wake_latency as fn(&Path, &[Runs]) -> _),
            ("fan_in", plot::fan_in as fn(&Path, &[Runs]) -> _),
        ] {
            let mut svg = stem.clone().into_os_string();
            svg.push(format!("-{name}.svg"));
            let svg = PathBuf::from(svg);
            match draw(&svg, &results) {
                Ok(()) => eprintln!("cargo xtask bench: wrote {}", svg.display()),
                Err(e) => return Err(io::Error::other(format!("plotting {}: {e}", svg.display()))),
            }
        }
    }
    let failed = results.iter().filter(|r| r.subject.kind != subjects::Kind::Peer && r.error().is_some()).count();
    if failed > 0 {
        eprintln!("cargo xtask bench: {failed} measurements failed (see the tables)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows that are compared run close together: every fan-in subject
    /// with as many children one after the other (children ascending);
    /// each sparse subject's sizes together; workloads in their order.
    #[test]
    fn the_plan_runs_what_is_compared_side_by_side() {
        let all = subjects::all();
        let jobs = plan(&Options::default(), &FULL, &all);
        let fan_in: Vec<usize> = jobs.iter().filter(|j| j.workload == Workload::FanIn).map(|j| j.children).collect();
        assert!(fan_in.is_sorted(), "{fan_in:?}");
        assert!(fan_in.len() > FULL.fan_in_children.len(), "more than one fan-in subject");
        let sparse: Vec<(&str, usize)> =
            jobs.iter().filter(|j| j.workload == Workload::Sparse).map(|j| (j.subject.name, j.children)).collect();
        assert_eq!(sparse[..FULL.sparse_children.len()].iter().map(|s| s.1).collect::<Vec<_>>(), FULL.sparse_children);
        assert!(sparse[..FULL.sparse_children.len()].iter().all(|s| s.0 == sparse[0].0), "{sparse:?}");
        assert!(jobs.is_sorted_by_key(|j| j.workload));
        // A tokio master's row runs right after its transport's, with as
        // many children.
        let mut tokio = 0;
        for pair in jobs.windows(2) {
            if let Some(concrete) = pair[1].subject.name.strip_suffix(subjects::TOKIO_SUFFIX) {
                assert_eq!((pair[0].subject.name, pair[0].children), (concrete, pair[1].children));
                tokio += 1;
            }
        }
        assert!(tokio > 0);
    }
}
