//! Results: medians over repetitions, the tables (valid Markdown), the
//! JSON file and its check.
//!
//! A row is one (workload, subject, children). Each metric field holds the
//! median over the repetitions, `<metric>_min` and `<metric>_max` the
//! spread. The JSON's field names are fixed so scripts can read them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use super::subjects::{self, Kind, Subject, Workload};
use crate::stats::median;
use crate::sys::Machine;

/// The metrics a row may carry, in the order the JSON lists them.
pub(crate) const METRICS: &[&str] = &[
    "ns_per_notify",
    "p50_ns",
    "p99_ns",
    "p999_ns",
    "updates_per_sec",
    "master_peak_rss_kib",
    "sent",
    "received",
    "lost",
    "torn",
    "duplicated",
    "coalesced",
    "kill_p50_ns",
    "kill_p99_ns",
    "cpu_ns_per_update",
];

/// The metric a workload is compared on.
pub(crate) const fn main_metric(w: Workload) -> &'static str {
    match w {
        Workload::NotifyCost | Workload::NotifyStopped => "ns_per_notify",
        Workload::WakeLatency | Workload::DeathMasterToChild | Workload::DeathChildToMaster => "p50_ns",
        Workload::FanIn => "updates_per_sec",
        Workload::Sparse => "cpu_ns_per_update",
    }
}

/// The outcome of every repetition of one (workload, subject, children).
#[derive(Debug, Clone)]
pub(crate) struct Runs {
    /// The workload.
    pub(crate) workload: Workload,
    /// The subject.
    pub(crate) subject: Subject,
    /// Children (fan-in), else 1.
    pub(crate) children: usize,
    /// Each repetition's metrics, or why it failed.
    pub(crate) reps: Vec<Result<Map<String, Value>, String>>,
}

impl Runs {
    fn values(&self, metric: &str) -> Vec<f64> {
        self.reps.iter().filter_map(|r| r.as_ref().ok()?.get(metric)?.as_f64()).collect()
    }

    /// The median of a metric over the repetitions.
    pub(crate) fn median(&self, metric: &str) -> Option<f64> {
        median(&self.values(metric))
    }

    fn min_max(&self, metric: &str) -> Option<(f64, f64)> {
        let v = self.values(metric);
        let min = v.iter().copied().reduce(f64::min)?;
        let max = v.iter().copied().reduce(f64::max)?;
        Some((min, max))
    }

    /// The repetitions' errors, joined.
    pub(crate) fn error(&self) -> Option<String> {
        let errors: Vec<&str> = self.reps.iter().filter_map(|r| r.as_ref().err().map(String::as_str)).collect();
        (!errors.is_empty()).then(|| errors.join("; "))
    }

    /// The wake-latency distribution of the repetition with the median p50:
    /// (quantile, ns) points.
    pub(crate) fn cdf(&self) -> Vec<(f64, f64)> {
        let mut ok: Vec<&Map<String, Value>> = self.reps.iter().filter_map(|r| r.as_ref().ok()).collect();
        ok.sort_by(|a, b| {
            let p = |m: &Map<String, Value>| m.get("p50_ns").and_then(Value::as_f64).unwrap_or(f64::MAX);
            p(a).total_cmp(&p(b))
        });
        let Some(mid) = ok.get(ok.len() / 2) else { return Vec::new() };
        mid.get("cdf")
            .and_then(Value::as_array)
            .map(|pts| pts.iter().filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?))).collect())
            .unwrap_or_default()
    }
}

/// How a run was made, stated in every output.
#[derive(Debug, Clone)]
pub(crate) struct RunInfo {
    /// The machine.
    pub(crate) machine: Machine,
    /// Repetitions of every measurement.
    pub(crate) repetitions: usize,
    /// How processes were pinned.
    pub(crate) pinning: String,
    /// Whether this was a `--quick` run.
    pub(crate) quick: bool,
    /// The sizes of the workloads, in words.
    pub(crate) sizes: String,
    /// Peers that could not be measured at all, with why.
    pub(crate) peer_notes: Vec<String>,
}

fn find<'a>(all: &'a [Runs], workload: Workload, subject: &str, children: usize) -> Option<&'a Runs> {
    all.iter().find(|r| r.workload == workload && r.subject.name == subject && r.children == children)
}

/// The subject a row is compared with as its floor, if any: for a
/// transport, the raw call of its mechanism, or on a death workload the
/// death floor of that direction; for a transport chosen through the
/// facade (`any:NAME`) or read by a master on tokio (`NAME+tokio`), the
/// concrete transport `NAME` with its poll(2) master, the best it can do.
fn floor_for(subject: &Subject, workload: Workload) -> Option<&'static str> {
    if workload == Workload::NotifyStopped {
        // Compared with the same subject's notify_cost instead.
        return None;
    }
    match subject.kind {
        Kind::Transport => {
            let concrete = subject.name.strip_prefix(subjects::ANY_PREFIX);
            match concrete.or_else(|| subject.name.strip_suffix(subjects::TOKIO_SUFFIX)) {
                Some(concrete) => Some(concrete),
                None if workload == Workload::DeathMasterToChild => Some(subjects::CLOSE_HANGUP),
                None if workload == Workload::DeathChildToMaster => Some(subjects::KILL_PIDFD),
                None => Some(subjects::floor_of(subject.name)),
            }
        }
        Kind::Floor if workload == Workload::NotifyCost && subject.name != "floor:syscall" => Some("floor:syscall"),
        Kind::Floor | Kind::Peer => None,
    }
}

/// The floor a concrete transport's notify_cost or fan_in row is also
/// compared with: its mechanism's call with what the transport's
/// guarantees add (see [`subjects::guarantees_floor_of`]), for the
/// transports whose guarantees cost the kernel more than the bare call.
fn guarantees_floor_for(subject: &Subject, workload: Workload) -> Option<&'static str> {
    let concrete = subject.kind == Kind::Transport
        && !subject.name.starts_with(subjects::ANY_PREFIX)
        && !subject.name.ends_with(subjects::TOKIO_SUFFIX);
    (concrete && matches!(workload, Workload::NotifyCost | Workload::FanIn))
        .then(|| subjects::guarantees_floor_of(subject.name))
        .flatten()
}

/// A `notify_stopped` row's ratio to the same subject's `notify_cost`: what
/// a stopped master costs a child.
fn ratio_to_running(all: &[Runs], r: &Runs) -> Option<f64> {
    if r.workload != Workload::NotifyStopped {
        return None;
    }
    let running = find(all, Workload::NotifyCost, r.subject.name, r.children)?.median("ns_per_notify")?;
    let stopped = r.median("ns_per_notify")?;
    (running > 0.0).then(|| stopped / running)
}

/// `r`'s main metric over that of subject `to` with as many children.
fn ratio(all: &[Runs], r: &Runs, to: Option<&str>) -> Option<f64> {
    ratio_on(all, r, to, main_metric(r.workload), r.children)
}

/// `r`'s `metric` over that of subject `to` with `children` children.
fn ratio_on(all: &[Runs], r: &Runs, to: Option<&str>, metric: &str, children: usize) -> Option<f64> {
    let to = to?;
    if to == r.subject.name && children == r.children {
        return None;
    }
    paired_ratio(r, find(all, r.workload, to, children)?, metric)
}

/// The median over repetitions of `mine`'s `metric` over `other`'s in the
/// same repetition. Each repetition measures the two a few seconds apart
/// (see the order of `plan`), so a slow phase of the machine, which lasts
/// minutes, moves both of a pair: the ratio of two medians could take one
/// from each phase.
fn paired_ratio(mine: &Runs, other: &Runs, metric: &str) -> Option<f64> {
    let at = |r: &Result<Map<String, Value>, String>| r.as_ref().ok()?.get(metric)?.as_f64();
    let ratios: Vec<f64> = mine
        .reps
        .iter()
        .zip(&other.reps)
        .filter_map(|(a, b)| Some((at(a)?, at(b)?)))
        .filter(|&(_, b)| b > 0.0)
        .map(|(a, b)| a / b)
        .collect();
    median(&ratios)
}

/// The SIGKILL half of `death_master_to_child` over its floor's.
fn kill_ratio(all: &[Runs], r: &Runs) -> Option<f64> {
    if r.workload != Workload::DeathMasterToChild {
        return None;
    }
    ratio_on(all, r, floor_for(&r.subject, r.workload), "kill_p50_ns", r.children)
}

/// A sparse row's CPU per update over the same subject's with one child:
/// what the idle children add to each wake-up.
fn one_child_ratio(all: &[Runs], r: &Runs) -> Option<f64> {
    if r.workload != Workload::Sparse {
        return None;
    }
    ratio_on(all, r, Some(r.subject.name), main_metric(r.workload), 1)
}

/// A JSON number: an integer when the value is a whole number (counts,
/// nanoseconds), else a float.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && (0.0..9.0e15).contains(&x) {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "whole, non-negative, below 2^53")]
        let n = x as u64;
        json!(n)
    } else {
        json!(x)
    }
}

/// The JSON document of a run.
pub(crate) fn to_json(info: &RunInfo, all: &[Runs]) -> Value {
    let rows: Vec<Value> = all
        .iter()
        .map(|r| {
            let mut row = Map::new();
            row.insert("subject".into(), json!(r.subject.name));
            row.insert("workload".into(), json!(r.workload.name()));
            row.insert("children".into(), json!(r.children));
            for metric in METRICS {
                if let (Some(m), Some((lo, hi))) = (r.median(metric), r.min_max(metric)) {
                    row.insert((*metric).into(), number(m));
                    row.insert(format!("{metric}_min"), number(lo));
                    row.insert(format!("{metric}_max"), number(hi));
                }
            }
            let ok = r.reps.iter().filter(|x| x.is_ok()).count();
            row.insert("repetitions".into(), json!(ok));
            if let Some(x) = ratio(all, r, floor_for(&r.subject, r.workload)) {
                row.insert("ratio_to_floor".into(), json!(x));
            }
            if let Some(x) = ratio(all, r, guarantees_floor_for(&r.subject, r.workload)) {
                row.insert("ratio_to_guarantees_floor".into(), json!(x));
            }
            if let Some(x) = ratio(all, r, Some("pipe")) {
                row.insert("ratio_to_pipe".into(), json!(x));
            }
            if let Some(x) = ratio_to_running(all, r) {
                row.insert("ratio_to_running".into(), json!(x));
            }
            if let Some(x) = kill_ratio(all, r) {
                row.insert("kill_ratio_to_floor".into(), json!(x));
            }
            if let Some(x) = one_child_ratio(all, r) {
                row.insert("ratio_to_one_child".into(), json!(x));
            }
            if let Some(e) = r.error() {
                row.insert("error".into(), json!(e));
            }
            Value::Object(row)
        })
        .collect();
    json!({
        "machine": {
            "cpu_model": info.machine.cpu_model,
            "cores": info.machine.cores,
            "kernel": info.machine.kernel,
        },
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "repetitions": info.repetitions,
        "pinning": info.pinning,
        "quick": info.quick,
        "sizes": info.sizes,
        "peer_notes": info.peer_notes,
        "rows": rows,
    })
}

fn us(ns: f64) -> String {
    let us = ns / 1000.0;
    if us >= 100.0 {
        format!("{us:.0}")
    } else if us >= 10.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.2}")
    }
}

fn num(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.0}k", x / 1e3)
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn times(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_owned(), |x| format!("{x:.2}×"))
}

/// The tables of a run, as Markdown (readable as plain text too).
pub(crate) fn to_markdown(info: &RunInfo, all: &[Runs]) -> String {
    let mut s = String::new();
    let m = &info.machine;
    let _ = writeln!(
        s,
        "Machine: {}, {} cores, {}. {} build, {} repetition{} per measurement (median, min–max); {}.",
        m.cpu_model,
        m.cores,
        m.kernel,
        if cfg!(debug_assertions) { "debug" } else { "release" },
        info.repetitions,
        if info.repetitions == 1 { "" } else { "s" },
        info.pinning
    );
    let _ = writeln!(s, "Sizes: {}.", info.sizes);
    for note in &info.peer_notes {
        let _ = writeln!(s, "Peer not measured: {note}.");
    }
    for w in Workload::ALL {
        let rows: Vec<&Runs> = all.iter().filter(|r| r.workload == w).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(s);
        let (title, head) = match w {
            Workload::NotifyCost => (
                "notify cost (child side, master draining)",
                "| subject | ns/notify | min–max | ÷ floor | ÷ floor with its guarantees | ÷ pipe |",
            ),
            Workload::NotifyStopped => (
                "notify cost with the master stopped (child side; the master sleeps on the channel and reads \
                 nothing; only the transports whose notify never waits: the others' children block)",
                "| subject | ns/notify | min–max | ÷ running (its notify_cost) |",
            ),
            Workload::WakeLatency => (
                "wake latency (master asleep in poll, one update at a time)",
                "| subject | p50 µs | min–max | p99 µs | p99.9 µs | ÷ floor | ÷ pipe |",
            ),
            Workload::FanIn => (
                "fan-in (updates/s at the master; peak RSS of the master; a latest-state transport delivers \
                 each child's newest state, the others coalesced: lost counts children whose final state did not \
                 arrive, dup states older than one seen before)",
                "| subject | children | updates/s | min–max | master peak RSS KiB | lost/torn/dup | coalesced | ÷ floor | \
                 ÷ floor with its guarantees | ÷ pipe |",
            ),
            Workload::DeathMasterToChild => (
                "death master → child (master closes its end, or is SIGKILLed; child's disconnect fd fires)",
                "| subject | close p50 µs | min–max | close p99 µs | SIGKILL p50 µs | SIGKILL p99 µs | ÷ floor | \
                 SIGKILL ÷ floor | ÷ pipe |",
            ),
            Workload::DeathChildToMaster => (
                "death child → master (child SIGKILLed; master learns it by SIGCHLD on a signalfd + waitpid, the \
                 floor by its pidfd)",
                "| subject | p50 µs | min–max | p99 µs | ÷ floor | ÷ pipe |",
            ),
            Workload::Sparse => (
                "sparse (all children idle but one, which sends an update every ms; the master polls and drains)",
                "| subject | children | master CPU ns/update | min–max | ÷ 1 child | wake p50 µs | wake p99 µs | \
                 lost/torn/dup | ÷ pipe |",
            ),
        };
        let _ = writeln!(s, "### {} — {title}\n", w.name());
        let _ = writeln!(s, "{head}");
        let cols = head.matches('|').count() - 1;
        let _ = writeln!(s, "|{}", "---|".repeat(cols));
        for r in rows {
            let metric = main_metric(w);
            let fmt = |x: f64| {
                if w == Workload::FanIn {
                    num(x)
                } else if matches!(w, Workload::NotifyCost | Workload::NotifyStopped | Workload::Sparse) {
                    format!("{x:.0}")
                } else {
                    us(x)
                }
            };
            let med = r.median(metric).map_or_else(|| "—".to_owned(), fmt);
            let range = r.min_max(metric).map_or_else(|| "—".to_owned(), |(a, b)| format!("{}–{}", fmt(a), fmt(b)));
            let to_floor = times(ratio(all, r, floor_for(&r.subject, w)));
            let to_pipe = times(ratio(all, r, Some("pipe")));
            let to_guarantees = times(ratio(all, r, guarantees_floor_for(&r.subject, w)));
            let opt_us = |k: &str| r.median(k).map_or_else(|| "—".to_owned(), us);
            let count = |k: &str| r.min_max(k).map_or_else(|| "—".to_owned(), |(_, hi)| format!("{hi:.0}"));
            let mut line = match w {
                Workload::NotifyCost => {
                    format!("| {} | {med} | {range} | {to_floor} | {to_guarantees} | {to_pipe} |", r.subject.name)
                }
                Workload::NotifyStopped => {
                    format!("| {} | {med} | {range} | {} |", r.subject.name, times(ratio_to_running(all, r)))
                }
                Workload::WakeLatency => format!(
                    "| {} | {med} | {range} | {} | {} | {to_floor} | {to_pipe} |",
                    r.subject.name,
                    opt_us("p99_ns"),
                    opt_us("p999_ns")
                ),
                Workload::FanIn => {
                    format!(
                        "| {} | {} | {med} | {range} | {} | {}/{}/{} | {} | {to_floor} | {to_guarantees} | {to_pipe} |",
                        r.subject.name,
                        r.children,
                        r.median("master_peak_rss_kib").map_or_else(|| "—".to_owned(), |x| format!("{x:.0}")),
                        count("lost"),
                        count("torn"),
                        count("duplicated"),
                        r.median("coalesced").map_or_else(|| "—".to_owned(), num),
                    )
                }
                Workload::DeathMasterToChild => format!(
                    "| {} | {med} | {range} | {} | {} | {} | {to_floor} | {} | {to_pipe} |",
                    r.subject.name,
                    opt_us("p99_ns"),
                    opt_us("kill_p50_ns"),
                    opt_us("kill_p99_ns"),
                    times(kill_ratio(all, r)),
                ),
                Workload::DeathChildToMaster => {
                    format!("| {} | {med} | {range} | {} | {to_floor} | {to_pipe} |", r.subject.name, opt_us("p99_ns"))
                }
                Workload::Sparse => format!(
                    "| {} | {} | {med} | {range} | {} | {} | {} | {}/{}/{} | {to_pipe} |",
                    r.subject.name,
                    r.children,
                    times(one_child_ratio(all, r)),
                    opt_us("p50_ns"),
                    opt_us("p99_ns"),
                    count("lost"),
                    count("torn"),
                    count("duplicated"),
                ),
            };
            if let Some(e) = r.error() {
                let e = e.replace('|', "/").replace('\n', " ");
                let _ = write!(line, " failed: {e}");
            }
            let _ = writeln!(s, "{line}");
        }
    }
    s
}

/// Checks a JSON document written by `--json`: the machine is stated;
/// every transport and every floor built here has a row for every workload
/// it applies to, without error and with its metrics (a sparse run with
/// one child and with more); nothing lost, torn or duplicated in fan-in
/// and sparse (for a latest-state transport: no child's final state
/// missing, nothing torn, nothing stale). Returns what is wrong.
pub(crate) fn check_json(doc: &Value) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for field in ["cpu_model", "cores", "kernel"] {
        if doc.pointer(&format!("/machine/{field}")).is_none_or(Value::is_null) {
            problems.push(format!("machine.{field} is missing"));
        }
    }
    let Some(rows) = doc.get("rows").and_then(Value::as_array) else {
        problems.push("no rows array".into());
        return Err(problems);
    };
    let mut seen: BTreeMap<(String, String), Vec<&Map<String, Value>>> = BTreeMap::new();
    for row in rows {
        let Some(row) = row.as_object() else {
            problems.push(format!("a row is not an object: {row}"));
            continue;
        };
        let field = |k: &str| row.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        if row.get("children").and_then(Value::as_u64).is_none() {
            problems.push(format!("row without children: {}", Value::Object(row.clone())));
        }
        seen.entry((field("subject"), field("workload"))).or_default().push(row);
    }
    for subject in subjects::all().iter().filter(|s| s.kind != Kind::Peer) {
        for &w in subject.workloads {
            let Some(found) = seen.get(&(subject.name.to_owned(), w.name().to_owned())) else {
                problems.push(format!("no {} row for {}", w.name(), subject.name));
                continue;
            };
            if w == Workload::Sparse {
                let children: Vec<u64> =
                    found.iter().filter_map(|row| row.get("children").and_then(Value::as_u64)).collect();
                if !children.contains(&1) || !children.iter().any(|&n| n > 1) {
                    problems.push(format!("{} sparse: rows for {children:?} children, not 1 and more", subject.name));
                }
            }
            for row in found {
                let children = row.get("children").and_then(Value::as_u64).unwrap_or(0);
                let at = format!("{} {} (children {children})", subject.name, w.name());
                if let Some(e) = row.get("error") {
                    problems.push(format!("{at} failed: {e}"));
                }
                let mut need = vec![main_metric(w)];
                match w {
                    Workload::WakeLatency => need.extend(["p99_ns", "p999_ns"]),
                    Workload::DeathMasterToChild => need.extend(["p99_ns", "kill_p50_ns", "kill_p99_ns"]),
                    Workload::DeathChildToMaster => need.push("p99_ns"),
                    Workload::FanIn => need.extend(["master_peak_rss_kib", "sent", "received", "lost"]),
                    Workload::Sparse => need.extend(["p50_ns", "p99_ns", "sent", "received", "lost"]),
                    Workload::NotifyCost | Workload::NotifyStopped => {}
                }
                for metric in need {
                    for key in [metric.to_owned(), format!("{metric}_min"), format!("{metric}_max")] {
                        if row.get(&key).and_then(Value::as_f64).is_none() {
                            problems.push(format!("{at}: {key} is missing or not a number"));
                        }
                    }
                }
                let counted = subject.kind == Kind::Transport && matches!(w, Workload::FanIn | Workload::Sparse);
                if counted {
                    for metric in ["lost", "torn", "duplicated"] {
                        let worst = row.get(&format!("{metric}_max")).and_then(Value::as_f64);
                        if worst != Some(0.0) {
                            problems.push(format!("{at}: {metric} is {worst:?}, must be 0"));
                        }
                    }
                }
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A document as a clean run of every transport and floor would write
    /// it (a sparse run with 1 and 64 children).
    fn clean_doc() -> Value {
        let mut rows = Vec::new();
        for s in subjects::all().iter().filter(|s| s.kind != Kind::Peer) {
            for &w in s.workloads {
                let children: &[u64] = if w == Workload::Sparse { &[1, 64] } else { &[1] };
                for &n in children {
                    let mut row = Map::new();
                    row.insert("subject".into(), json!(s.name));
                    row.insert("workload".into(), json!(w.name()));
                    row.insert("children".into(), json!(n));
                    for m in METRICS {
                        for key in [(*m).to_owned(), format!("{m}_min"), format!("{m}_max")] {
                            let zero = ["lost", "torn", "duplicated"].iter().any(|z| key.starts_with(z));
                            row.insert(key, json!(if zero { 0 } else { 7 }));
                        }
                    }
                    rows.push(Value::Object(row));
                }
            }
        }
        json!({ "machine": { "cpu_model": "x", "cores": 2, "kernel": "Linux 6" }, "rows": rows })
    }

    #[test]
    fn whole_numbers_are_integers() {
        assert_eq!(number(20000.0).to_string(), "20000");
        assert_eq!(number(0.0).to_string(), "0");
        assert_eq!(number(2.5).to_string(), "2.5");
        assert_eq!(number(-3.0).to_string(), "-3.0");
    }

    #[test]
    fn a_clean_document_passes() {
        assert_eq!(check_json(&clean_doc()), Ok(()));
    }

    #[test]
    fn a_missing_transport_row_fails() {
        let mut doc = clean_doc();
        let rows = doc["rows"].as_array_mut().expect("rows");
        rows.retain(|r| !(r["subject"] == "pipe" && r["workload"] == "wake_latency"));
        let problems = check_json(&doc).expect_err("a missing row is a problem");
        assert_eq!(problems, ["no wake_latency row for pipe"]);
    }

    #[test]
    fn missing_death_floors_and_a_sparse_run_of_one_size_fail() {
        let mut doc = clean_doc();
        let rows = doc["rows"].as_array_mut().expect("rows");
        rows.retain(|r| {
            let name = r["subject"].as_str().unwrap_or("");
            let one_size = r["subject"] == "pipe" && r["workload"] == "sparse" && r["children"] != 1;
            name != subjects::KILL_PIDFD && name != subjects::CLOSE_HANGUP && !one_size
        });
        let problems = check_json(&doc).expect_err("missing floors are a problem");
        assert_eq!(
            problems,
            [
                "pipe sparse: rows for [1] children, not 1 and more",
                "no death_master_to_child row for floor:close_hangup",
                "no death_child_to_master row for floor:kill_pidfd",
            ]
        );
    }

    #[test]
    fn lost_sparse_updates_fail() {
        let mut doc = clean_doc();
        for r in doc["rows"].as_array_mut().expect("rows") {
            if r["subject"] == "pipe" && r["workload"] == "sparse" && r["children"] == 64 {
                r["duplicated_max"] = json!(1);
            }
        }
        let problems = check_json(&doc).expect_err("a duplicate is a problem");
        assert_eq!(problems, ["pipe sparse (children 64): duplicated is Some(1.0), must be 0"]);
    }

    #[test]
    fn ratios_name_the_death_floors_and_one_child() {
        let subject = |name| subjects::find(name).unwrap_or_else(|| panic!("no subject {name}"));
        let pipe = subject("pipe");
        assert_eq!(floor_for(&pipe, Workload::DeathMasterToChild), Some(subjects::CLOSE_HANGUP));
        assert_eq!(floor_for(&pipe, Workload::DeathChildToMaster), Some(subjects::KILL_PIDFD));
        assert_eq!(floor_for(&pipe, Workload::NotifyCost), Some("floor:pipe_write"));
        assert_eq!(guarantees_floor_for(&pipe, Workload::FanIn), Some("floor:pipe_pwritev2"));
        assert_eq!(guarantees_floor_for(&pipe, Workload::WakeLatency), None);
        assert_eq!(guarantees_floor_for(&subject("dgram"), Workload::NotifyCost), Some("floor:dgram_lifeline"));
        assert_eq!(guarantees_floor_for(&subject("any:dgram"), Workload::NotifyCost), None);
        let with_guarantees: Vec<&str> = subjects::all()
            .iter()
            .filter(|s| guarantees_floor_for(s, Workload::NotifyCost).is_some())
            .map(|s| s.name)
            .collect();
        assert_eq!(with_guarantees.len(), 2, "only pipe and dgram: {with_guarantees:?}");
        let runs = |subject, workload, children, metrics: &[(&str, f64)]| Runs {
            workload,
            subject,
            children,
            reps: vec![Ok(metrics.iter().map(|&(k, v)| (k.to_owned(), json!(v))).collect())],
        };
        let all = [
            runs(pipe, Workload::DeathMasterToChild, 1, &[("p50_ns", 300.0), ("kill_p50_ns", 240.0)]),
            runs(
                subject(subjects::CLOSE_HANGUP),
                Workload::DeathMasterToChild,
                1,
                &[("p50_ns", 200.0), ("kill_p50_ns", 200.0)],
            ),
            runs(pipe, Workload::Sparse, 1, &[("cpu_ns_per_update", 1000.0)]),
            runs(pipe, Workload::Sparse, 512, &[("cpu_ns_per_update", 1500.0)]),
        ];
        assert_eq!(ratio(&all, &all[0], floor_for(&pipe, Workload::DeathMasterToChild)), Some(1.5));
        assert_eq!(kill_ratio(&all, &all[0]), Some(1.2));
        assert_eq!(kill_ratio(&all, &all[2]), None);
        assert_eq!(one_child_ratio(&all, &all[3]), Some(1.5));
        assert_eq!(one_child_ratio(&all, &all[2]), None);
    }

    /// A ratio pairs the repetitions: a subject twice as fast as its
    /// floor in every repetition is 2×, though a slow phase of the machine
    /// took one repetition of each, and the ratio of the medians would
    /// say 1×; a failed repetition drops its pair.
    #[test]
    fn ratios_pair_the_repetitions() {
        let pipe = subjects::find("pipe").expect("pipe");
        let floor = subjects::find("floor:pipe_write").expect("floor");
        let runs = |subject, values: &[Option<f64>]| Runs {
            workload: Workload::FanIn,
            subject,
            children: 4,
            reps: values
                .iter()
                .map(|v| {
                    v.map(|v| [("updates_per_sec".to_owned(), json!(v))].into_iter().collect()).ok_or("x".to_owned())
                })
                .collect(),
        };
        let all = [
            runs(pipe, &[Some(100.0), Some(200.0), Some(100.0), None]),
            runs(floor, &[Some(50.0), Some(100.0), Some(100.0), Some(1.0)]),
        ];
        assert_eq!(ratio(&all, &all[0], floor_for(&pipe, Workload::FanIn)), Some(2.0));
    }

    #[test]
    fn lost_updates_and_errors_fail() {
        let mut doc = clean_doc();
        for r in doc["rows"].as_array_mut().expect("rows") {
            if r["subject"] == "pipe" && r["workload"] == "fan_in" {
                r["lost_max"] = json!(3);
                r["error"] = json!("boom");
            }
        }
        let problems = check_json(&doc).expect_err("lost updates are a problem");
        assert!(problems.iter().any(|p| p.contains("lost is Some(3.0)")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("failed")), "{problems:?}");
    }

    #[test]
    fn a_missing_machine_fails() {
        let mut doc = clean_doc();
        doc["machine"] = json!({});
        assert_eq!(check_json(&doc).expect_err("no machine").len(), 3);
    }
}
