//! The soak's results: the flood phase's two runs side by side, the
//! tables (valid Markdown), and the checks of a JSON document.
//!
//! A row is one (transport, phase): the transport's `delivery`
//! (`every_update` or `latest_state`, from its capabilities), the figures
//! its master reported (see each phase's module for their meaning),
//! `problems` (the rules it broke, in words), `seconds`, and `error` if it
//! could not run.
//!
//! The rules of a row follow its delivery. Lost, torn and duplicated are 0
//! for both: of a latest-state transport, lost counts the updates after a
//! child's last to arrive (its last state did not), and duplicated the
//! states delivered twice or out of order. Coalesced (the states a
//! transport skipped for a newer one) is a figure of a latest-state
//! transport, and 0 for one that delivers every update.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use master_proto::Delivery;
use master_proto_transports::AnyTransport;
use serde_json::{Map, Value, json};

use super::Phase;
use crate::stats::median;

/// On a transport with a private channel per child, a flooder may raise
/// an honest child's p99 delivery latency to at most this many times what
/// it is without the flooder.
pub(super) const FLOOD_RATIO_BOUND: f64 = 10.0;

/// The `delivery` field of a row.
pub(super) const fn delivery_name(d: Delivery) -> &'static str {
    match d {
        Delivery::EveryUpdate => "every_update",
        Delivery::LatestState => "latest_state",
    }
}

/// The figures a transport that delivers every update must have at 0, and
/// a latest-state one reports as figures: the states skipped for a newer
/// one.
const COALESCED: &[&str] = &[
    "coalesced",
    "survivors_coalesced",
    "honest_coalesced",
    "quiet_coalesced",
    "quiet_honest_coalesced",
    "niced_coalesced",
    "niced_honest_coalesced",
];

/// How the flood phase's figures of several repetitions make one: the
/// median (latencies, scheduling), the sum (counts) or the largest.
#[derive(Clone, Copy)]
enum Over {
    Median,
    Sum,
    Max,
}

/// The flood phase's figures, and how repetitions combine them. The row
/// has each for the flooded runs under its own name and for the runs
/// without the flooder as `quiet_<name>`.
const FLOOD: &[(&str, Over)] = &[
    ("p50_us", Over::Median),
    ("p99_us", Over::Median),
    ("max_us", Over::Max),
    ("sent", Over::Sum),
    ("received", Over::Sum),
    ("honest_coalesced", Over::Sum),
    ("coalesced", Over::Sum),
    ("lost", Over::Sum),
    ("delayed", Over::Sum),
    ("torn", Over::Sum),
    ("duplicated", Over::Sum),
    ("late", Over::Sum),
    ("table_mismatches", Over::Sum),
    ("zombies", Over::Sum),
    ("master_busy_pct", Over::Median),
    ("master_runq_wait_ms", Over::Median),
    ("master_sleeps", Over::Median),
    ("master_preempted", Over::Median),
    ("flooder_per_sec", Over::Median),
];

fn combine(runs: &[Value], name: &str, over: Over) -> Option<f64> {
    let v: Vec<f64> = runs.iter().filter_map(|r| r.get(name)?.as_f64()).collect();
    if v.is_empty() {
        return None;
    }
    match over {
        Over::Median => median(&v),
        Over::Sum => Some(v.iter().sum()),
        Over::Max => v.iter().copied().reduce(f64::max),
    }
}

/// The flood phase's row from its runs without the flooder (`quiet`),
/// with it (`flooded`) and with it niced (`niced`), one of each per
/// repetition: the figures combined as [`FLOOD`] says (flooded under their
/// own names, the others as `quiet_*` and `niced_*`), each repetition's
/// p99 (`p99_us_reps`, ...), the last flooded run's resource figures,
/// every run's problems, and the ratios of the median p99s to the quiet
/// one (`p99_ratio`, `niced_p99_ratio`).
///
/// The latency rules (no honest update delayed beyond the bound, and where
/// the channel is `per_child` a p99 ratio of at most
/// [`FLOOD_RATIO_BOUND`]) are problems in a full run (`binding`); a quick
/// run is too short, and its machine too busy, for its tail latencies to
/// mean much, so there they are only notes.
pub(super) fn flood_row(
    quiet: &[Value],
    flooded: &[Value],
    niced: &[Value],
    per_child: bool,
    binding: bool,
) -> Map<String, Value> {
    let mut row = flooded.last().and_then(Value::as_object).cloned().unwrap_or_default();
    let mut problems = Vec::new();
    for (prefix, runs) in [("quiet_", quiet), ("", flooded), ("niced_", niced)] {
        for &(name, over) in FLOOD {
            match combine(runs, name, over) {
                Some(x) => row.insert(format!("{prefix}{name}"), json!(x)),
                None => row.remove(&format!("{prefix}{name}")),
            };
        }
        let reps: Vec<Value> = runs.iter().filter_map(|r| r.get("p99_us").cloned()).collect();
        row.insert(format!("{prefix}p99_us_reps"), Value::Array(reps));
        for p in runs.iter().filter_map(|r| r.get("problems")?.as_array()).flatten() {
            let p = p.as_str().unwrap_or_default();
            problems.push(json!(match prefix {
                "quiet_" => format!("without the flooder: {p}"),
                "niced_" => format!("with the niced flooder: {p}"),
                _ => p.to_owned(),
            }));
        }
    }
    // The run with the worst honest update says what the master did then.
    let worst = flooded.iter().max_by(|a, b| {
        let m = |v: &Value| v.get("max_us").and_then(Value::as_f64).unwrap_or(0.0);
        m(a).total_cmp(&m(b))
    });
    if let Some(w) = worst.and_then(|w| w.get("flood_read_during_worst")) {
        row.insert("flood_read_during_worst".into(), w.clone());
    }
    row.insert("repetitions".into(), json!(flooded.len()));
    let mut notes = Vec::new();
    for (run, prefix) in
        [("without the flooder", "quiet_"), ("with the flooder", ""), ("with the niced flooder", "niced_")]
    {
        if let Some(n) = row.get(&format!("{prefix}delayed")).and_then(Value::as_f64)
            && n > 0.0
        {
            notes.push(format!("{n} honest updates {run} took longer than the delay bound"));
        }
    }
    if let (Some(q), Some(n)) = (f(&row, "quiet_p99_us"), f(&row, "niced_p99_us")) {
        row.insert("niced_p99_ratio".into(), json!(n / q.max(1e-3)));
    }
    if let (Some(q), Some(f)) = (f(&row, "quiet_p99_us"), f(&row, "p99_us")) {
        let ratio = f / q.max(1e-3);
        row.insert("p99_ratio".into(), json!(ratio));
        if per_child && ratio > FLOOD_RATIO_BOUND {
            notes.push(format!(
                "the flooder raised the honest p99 {ratio:.1}× ({q:.0} → {f:.0} µs, medians) on a per-child channel (bound {FLOOD_RATIO_BOUND}×)"
            ));
        }
    }
    if binding {
        problems.extend(notes.drain(..).map(Value::from));
    }
    row.insert("per_child".into(), json!(per_child));
    row.insert("problems".into(), Value::Array(problems));
    row.insert("notes".into(), json!(notes));
    row
}

fn rows(doc: &Value) -> Vec<&Map<String, Value>> {
    doc.get("rows")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default()
}

fn get<'a>(row: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    row.get(k)
}

fn f(row: &Map<String, Value>, k: &str) -> Option<f64> {
    get(row, k).and_then(Value::as_f64)
}

/// A count, or a dash.
fn n(row: &Map<String, Value>, k: &str) -> String {
    f(row, k).map_or_else(|| "—".to_owned(), |x| format!("{x:.0}"))
}

/// A figure with `digits` decimals, or a dash.
fn d(row: &Map<String, Value>, k: &str, digits: usize) -> String {
    f(row, k).map_or_else(|| "—".to_owned(), |x| format!("{x:.digits$}"))
}

fn rate(row: &Map<String, Value>, k: &str) -> String {
    match f(row, k) {
        Some(x) if x >= 1e6 => format!("{:.2}M", x / 1e6),
        Some(x) if x >= 1e4 => format!("{:.0}k", x / 1e3),
        Some(x) => format!("{x:.0}"),
        None => "—".to_owned(),
    }
}

/// A list of figures, comma-separated, without decimals.
fn reps(row: &Map<String, Value>, k: &str) -> String {
    let v: Vec<String> = get(row, k)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_f64).map(|x| format!("{x:.0}")).collect())
        .unwrap_or_default();
    if v.is_empty() { "—".to_owned() } else { v.join(", ") }
}

fn name(row: &Map<String, Value>, k: &str) -> String {
    get(row, k).and_then(Value::as_str).unwrap_or("?").to_owned()
}

/// The tables of a run, as Markdown.
pub(super) fn to_markdown(doc: &Value) -> String {
    let mut s = String::new();
    let m = &doc["machine"];
    let _ = writeln!(
        s,
        "Machine: {}, {} cores, {}. {} build; seed {}; {:.0} s in all.",
        m["cpu_model"].as_str().unwrap_or("?"),
        m["cores"],
        m["kernel"].as_str().unwrap_or("?"),
        doc["build"].as_str().unwrap_or("?"),
        doc["seed"],
        doc["seconds"].as_f64().unwrap_or(0.0)
    );
    let _ = writeln!(s, "Sizes: {}.", doc["sizes_text"].as_str().unwrap_or("?"));
    let b = &doc["bounds"];
    let _ = writeln!(
        s,
        "Bounds: a survivor wedged after {} ms without an update; an orphan left after {} ms; an honest update \
         delayed after {} ms; RSS growth {} KiB; flooded p99 at most {}× the quiet p99 on per-child channels.",
        b["wedge_ms"], b["orphan_ms"], b["delay_ms"], b["rss_growth_kib"], b["flood_p99_ratio"]
    );
    let all = rows(doc);
    let spent: Vec<String> = Phase::ALL
        .iter()
        .filter_map(|p| {
            let secs: Vec<f64> = all
                .iter()
                .filter(|r| r.get("phase").and_then(Value::as_str) == Some(p.name()))
                .filter_map(|r| f(r, "seconds"))
                .collect();
            (!secs.is_empty()).then(|| format!("{} {:.0} s", p.name(), secs.iter().sum::<f64>()))
        })
        .collect();
    let _ = writeln!(s, "Time per phase, every transport: {}.", spent.join(", "));
    let of = |p: Phase| all.iter().filter(move |r| r.get("phase").and_then(Value::as_str) == Some(p.name()));
    let failed = |r: &Map<String, Value>| {
        r.get("error").and_then(Value::as_str).map(|e| format!(" failed: {}", e.replace('|', "/"))).unwrap_or_default()
    };
    let mut table = |title: &str, head: &str, lines: Vec<String>| {
        if lines.is_empty() {
            return;
        }
        let _ = writeln!(s, "\n### {title}\n\n{head}");
        let cols = head.matches('|').count() - 1;
        let _ = writeln!(s, "|{}", "---|".repeat(cols));
        for l in lines {
            let _ = writeln!(s, "{l}");
        }
    };
    let lost_torn_dup = |r: &Map<String, Value>| format!("{}/{}/{}", n(r, "lost"), n(r, "torn"), n(r, "duplicated"));
    table(
        "volume — every update of many children, checked one by one (latest state: in order, the last arrives)",
        "| transport | children | sent | received | coalesced | lost/torn/dup | updates/s | seconds |",
        of(Phase::Volume)
            .map(|r| {
                format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} |{}",
                    name(r, "transport"),
                    n(r, "children"),
                    n(r, "sent"),
                    n(r, "received"),
                    n(r, "coalesced"),
                    lost_torn_dup(r),
                    rate(r, "updates_per_sec"),
                    d(r, "seconds", 1),
                    failed(r)
                )
            })
            .collect(),
    );
    table(
        "churn — victims SIGKILLed mid-notify while survivors report",
        "| transport | kills | survivor updates | coalesced: survivors / all | lost/torn/dup | died writing | late | wedges | max gap ms | table checks | mismatches | seconds |",
        of(Phase::Churn)
            .map(|r| {
                format!(
                    "| {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} |{}",
                    name(r, "transport"),
                    n(r, "kills"),
                    n(r, "sent"),
                    n(r, "survivors_coalesced"),
                    n(r, "coalesced"),
                    lost_torn_dup(r),
                    n(r, "died_writing"),
                    n(r, "late"),
                    n(r, "wedges"),
                    d(r, "max_gap_ms", 1),
                    n(r, "table_checks"),
                    n(r, "table_mismatches"),
                    d(r, "seconds", 1),
                    failed(r)
                )
            })
            .collect(),
    );
    table(
        "master_death — masters SIGKILLed under load; their orphans",
        "| transport | cycles | orphans | exited: notify / fd | failed | left | exit p50 ms | p99 ms | max ms | seconds |",
        of(Phase::MasterDeath)
            .map(|r| {
                format!(
                    "| {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} |{}",
                    name(r, "transport"),
                    n(r, "cycles"),
                    n(r, "orphans"),
                    n(r, "by_notify"),
                    n(r, "by_fd"),
                    n(r, "orphans_failed"),
                    n(r, "orphans_left"),
                    d(r, "exit_p50_ms", 2),
                    d(r, "exit_p99_ms", 2),
                    d(r, "exit_max_ms", 2),
                    d(r, "seconds", 1),
                    failed(r)
                )
            })
            .collect(),
    );
    let three = |r: &Map<String, Value>, k: &str, digits: usize| {
        format!(
            "{} / {} / {}",
            d(r, &format!("quiet_{k}"), digits),
            d(r, k, digits),
            d(r, &format!("niced_{k}"), digits)
        )
    };
    table(
        "flood — honest children's delivery latency: quiet / flooded / flooder at nice 19",
        "| transport | channel | p50 µs | p99 µs | p99 ÷ quiet | p99 per repetition | honest coalesced | lost | delayed | flooder updates/s, niced | seconds |",
        of(Phase::Flood)
            .map(|r| {
                let channel =
                    if get(r, "per_child").and_then(Value::as_bool) == Some(true) { "per child" } else { "shared" };
                format!(
                    "| {} | {channel} | {} | {} | {}× / {}× | {} / {} / {} | {} | {} | {} | {}, {} | {} |{}",
                    name(r, "transport"),
                    three(r, "p50_us", 0),
                    three(r, "p99_us", 0),
                    d(r, "p99_ratio", 1),
                    d(r, "niced_p99_ratio", 1),
                    reps(r, "quiet_p99_us_reps"),
                    reps(r, "p99_us_reps"),
                    reps(r, "niced_p99_us_reps"),
                    format_args!(
                        "{}+{}+{}",
                        n(r, "quiet_honest_coalesced"),
                        n(r, "honest_coalesced"),
                        n(r, "niced_honest_coalesced")
                    ),
                    format_args!("{}+{}+{}", n(r, "quiet_lost"), n(r, "lost"), n(r, "niced_lost")),
                    format_args!("{}+{}+{}", n(r, "quiet_delayed"), n(r, "delayed"), n(r, "niced_delayed")),
                    rate(r, "flooder_per_sec"),
                    rate(r, "niced_flooder_per_sec"),
                    d(r, "seconds", 1),
                    failed(r)
                )
            })
            .collect(),
    );
    table(
        "flood — how the master was scheduled while the honest children ran: quiet / flooded / flooder at nice 19",
        "| transport | master on a CPU % | waiting for a CPU ms | sleeps | preempted | worst honest µs | flood read while it waited |",
        of(Phase::Flood)
            .map(|r| {
                format!(
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    name(r, "transport"),
                    three(r, "master_busy_pct", 0),
                    three(r, "master_runq_wait_ms", 0),
                    three(r, "master_sleeps", 0),
                    three(r, "master_preempted", 0),
                    three(r, "max_us", 0),
                    n(r, "flood_read_during_worst"),
                )
            })
            .collect(),
    );
    table(
        "resources — each phase's master: descriptors and memory (master death: the driver's own)",
        "| transport | phase | fds start → open → reaped → end | shared maps open → reaped | RSS open → reaped KiB | peak RSS KiB | zombies | left to the driver |",
        all.iter()
            .map(|r| {
                format!(
                    "| {} | {} | {} → {} → {} → {} | {} → {} | {} → {} | {} | {} | {} |",
                    name(r, "transport"),
                    name(r, "phase"),
                    n(r, "fds_start"),
                    n(r, "fds_open"),
                    n(r, "fds_reaped"),
                    n(r, "fds_end"),
                    n(r, "shared_maps_open"),
                    n(r, "shared_maps_reaped"),
                    n(r, "rss_open_kib"),
                    n(r, "rss_reaped_kib"),
                    n(r, "hwm_kib"),
                    n(r, "zombies"),
                    n(r, "driver_orphans")
                )
            })
            .collect(),
    );
    // Each row's list under `key`, one line per entry, naming the row.
    let listed = |key: &str| -> Vec<String> {
        all.iter()
            .flat_map(|r| {
                let at = format!("{} {}", name(r, "transport"), name(r, "phase"));
                r.get(key)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(move |p| format!("- {at}: {}", p.as_str().unwrap_or("?")))
            })
            .collect()
    };
    let problems = listed("problems");
    if !problems.is_empty() {
        let _ = writeln!(s, "\nProblems:\n\n{}", problems.join("\n"));
    }
    let notes = listed("notes");
    if !notes.is_empty() {
        let _ = writeln!(s, "\nNotes (not rules in a quick run):\n\n{}", notes.join("\n"));
    }
    s
}

/// The figures every row of a phase must have: its own, then its
/// resources.
fn required(phase: Phase) -> &'static [&'static str] {
    match phase {
        Phase::Volume => &[
            "sent",
            "received",
            "coalesced",
            "lost",
            "torn",
            "duplicated",
            "updates_per_sec",
            "table_mismatches",
            "zombies",
            "fds_start",
            "fds_open",
            "fds_reaped",
            "fds_end",
            "rss_open_kib",
            "rss_reaped_kib",
        ],
        Phase::Churn => &[
            "kills",
            "sent",
            "received",
            "survivors_coalesced",
            "coalesced",
            "lost",
            "torn",
            "duplicated",
            "died_writing",
            "wedges",
            "table_checks",
            "table_mismatches",
            "zombies",
            "fds_start",
            "fds_open",
            "fds_reaped",
            "fds_end",
            "rss_open_kib",
            "rss_reaped_kib",
        ],
        Phase::MasterDeath => &[
            "cycles",
            "orphans",
            "by_notify",
            "by_fd",
            "orphans_failed",
            "orphans_left",
            "fds_start",
            "fds_end",
            "rss_open_kib",
            "rss_reaped_kib",
        ],
        Phase::Flood => &[
            "p50_us",
            "p99_us",
            "quiet_p50_us",
            "quiet_p99_us",
            "p99_ratio",
            "honest_coalesced",
            "quiet_honest_coalesced",
            "lost",
            "quiet_lost",
            "delayed",
            "torn",
            "duplicated",
            "table_mismatches",
            "zombies",
            "fds_start",
            "fds_open",
            "fds_reaped",
            "fds_end",
            "rss_open_kib",
            "rss_reaped_kib",
        ],
    }
}

/// The figures that must be 0 wherever a row has them.
const ZERO: &[&str] = &[
    "lost",
    "torn",
    "duplicated",
    "quiet_lost",
    "niced_lost",
    "wedges",
    "table_mismatches",
    "orphans_failed",
    "orphans_left",
    "zombies",
    "driver_orphans",
];

/// Checks every row of a document as far as the run went: no error, no
/// problem, every figure its phase needs, the zero figures 0, and no
/// descriptor left open; in a full run (not `quick`) also the flood
/// phase's latency rules. Returns what is wrong.
pub(super) fn check_rows(doc: &Value) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let full = doc.get("quick").and_then(Value::as_bool) == Some(false);
    let Some(all) = doc.get("rows").and_then(Value::as_array) else {
        return Err(vec!["no rows array".to_owned()]);
    };
    for row in all {
        let Some(row) = row.as_object() else {
            problems.push(format!("a row is not an object: {row}"));
            continue;
        };
        let at = format!("{} {}", name(row, "transport"), name(row, "phase"));
        let Some(phase) = row.get("phase").and_then(Value::as_str).and_then(Phase::from_name) else {
            problems.push(format!("{at}: no such phase"));
            continue;
        };
        if let Some(e) = row.get("error") {
            problems.push(format!("{at} failed: {e}"));
            continue;
        }
        match row.get("problems").and_then(Value::as_array) {
            Some(p) => problems.extend(p.iter().map(|p| format!("{at}: {}", p.as_str().unwrap_or("?")))),
            None => problems.push(format!("{at}: no problems array")),
        }
        for k in required(phase) {
            if f(row, k).is_none() {
                problems.push(format!("{at}: {k} is missing or not a number"));
            }
        }
        match row.get("delivery").and_then(Value::as_str) {
            Some("latest_state") => {}
            Some("every_update") => {
                for k in COALESCED {
                    if let Some(x) = f(row, k)
                        && x != 0.0
                    {
                        problems.push(format!("{at}: {k} is {x}, must be 0 where every update is delivered"));
                    }
                }
            }
            other => problems.push(format!("{at}: delivery is {other:?}, not every_update or latest_state")),
        }
        for k in ZERO {
            if let Some(x) = f(row, k)
                && x != 0.0
            {
                problems.push(format!("{at}: {k} is {x}, must be 0"));
            }
        }
        if let (Some(died), Some(kills)) = (f(row, "died_writing"), f(row, "kills"))
            && died > kills
        {
            problems.push(format!("{at}: died_writing is {died}, more than the {kills} kills"));
        }
        for (a, b) in [("fds_open", "fds_reaped"), ("fds_start", "fds_end"), ("shared_maps_open", "shared_maps_reaped")]
        {
            if let (Some(x), Some(y)) = (f(row, a), f(row, b))
                && x != y
            {
                problems.push(format!("{at}: {b} is {y}, {a} was {x}: descriptors left open"));
            }
        }
        if full {
            if get(row, "per_child").and_then(Value::as_bool) == Some(true)
                && let Some(r) = f(row, "p99_ratio")
                && r > FLOOD_RATIO_BOUND
            {
                problems.push(format!("{at}: p99_ratio is {r:.1}, bound {FLOOD_RATIO_BOUND}"));
            }
            for k in ["delayed", "quiet_delayed", "niced_delayed"] {
                if let Some(x) = f(row, k)
                    && x != 0.0
                {
                    problems.push(format!("{at}: {k} is {x}, must be 0 in a full run"));
                }
            }
        }
    }
    if let Some(left) = doc.pointer("/driver/children_left").and_then(Value::as_u64)
        && left > 0
    {
        problems.push(format!("{left} children of the driver were left at the end"));
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// Checks a JSON document written by `--json`: the machine is stated, the
/// driver left no child, every transport built here has a row for every
/// phase, and every row passes [`check_rows`]. Returns what is wrong.
pub(super) fn check_json(doc: &Value) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for field in ["cpu_model", "cores", "kernel"] {
        if doc.pointer(&format!("/machine/{field}")).is_none_or(Value::is_null) {
            problems.push(format!("machine.{field} is missing"));
        }
    }
    if doc.pointer("/driver/children_left").and_then(Value::as_u64).is_none() {
        problems.push("driver.children_left is missing".to_owned());
    }
    let seen: BTreeSet<(String, String)> = rows(doc).iter().map(|r| (name(r, "transport"), name(r, "phase"))).collect();
    for r in rows(doc) {
        let said = r.get("delivery").and_then(Value::as_str);
        if let Ok(t) = AnyTransport::from_name(&name(r, "transport"))
            && said.is_some_and(|d| d != delivery_name(t.caps().delivery))
        {
            problems.push(format!(
                "{} {}: delivery is {said:?}, the transport declares {}",
                name(r, "transport"),
                name(r, "phase"),
                delivery_name(t.caps().delivery)
            ));
        }
    }
    for t in crate::soak::soaked() {
        for p in Phase::ALL {
            if !seen.contains(&(t.name().to_owned(), p.name().to_owned())) {
                problems.push(format!("no {} row for {}", p.name(), t.name()));
            }
        }
    }
    if let Err(more) = check_rows(doc) {
        problems.extend(more);
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A document as a clean run of every transport would write it.
    fn clean_doc() -> Value {
        let mut rows = Vec::new();
        for t in crate::soak::soaked() {
            for p in Phase::ALL {
                let mut row = Map::new();
                row.insert("transport".into(), json!(t.name()));
                row.insert("phase".into(), json!(p.name()));
                row.insert("delivery".into(), json!(delivery_name(t.caps().delivery)));
                for k in required(p) {
                    let latest = t.caps().delivery == Delivery::LatestState;
                    let zero = ZERO.contains(k) || k.ends_with("delayed") || (!latest && COALESCED.contains(k));
                    row.insert((*k).to_owned(), json!(if zero { 0 } else { 7 }));
                }
                row.insert("problems".into(), json!([]));
                rows.push(Value::Object(row));
            }
        }
        json!({
            "quick": false,
            "machine": { "cpu_model": "x", "cores": 2, "kernel": "Linux 6" },
            "driver": { "children_left": 0 },
            "rows": rows,
        })
    }

    fn set(doc: &mut Value, transport: &str, phase: Phase, k: &str, v: Value) {
        for r in doc["rows"].as_array_mut().expect("rows") {
            if r["transport"] == transport && r["phase"] == phase.name() {
                r[k] = v.clone();
            }
        }
    }

    fn first() -> &'static str {
        crate::soak::soaked().next().expect("a transport").name()
    }

    #[test]
    fn a_clean_document_passes() {
        assert_eq!(check_json(&clean_doc()), Ok(()));
    }

    #[test]
    fn a_missing_row_fails() {
        let mut doc = clean_doc();
        doc["rows"].as_array_mut().expect("rows").retain(|r| !(r["transport"] == first() && r["phase"] == "churn"));
        assert_eq!(check_json(&doc), Err(vec![format!("no churn row for {}", first())]));
    }

    #[test]
    fn losses_orphans_zombies_and_open_descriptors_fail() {
        for (phase, k, v, expect) in [
            (Phase::Volume, "lost", json!(1), "lost is 1"),
            (Phase::Churn, "wedges", json!(2), "wedges is 2"),
            (Phase::Churn, "table_mismatches", json!(1), "table_mismatches is 1"),
            (Phase::Churn, "died_writing", json!(8), "died_writing is 8, more than the 7 kills"),
            (Phase::MasterDeath, "orphans_left", json!(3), "orphans_left is 3"),
            (Phase::Flood, "zombies", json!(1), "zombies is 1"),
            (Phase::Flood, "delayed", json!(4), "delayed is 4"),
            (Phase::Volume, "fds_reaped", json!(8), "descriptors left open"),
            (Phase::Flood, "problems", json!(["boom"]), "boom"),
            (Phase::Churn, "error", json!("it broke"), "failed"),
        ] {
            let mut doc = clean_doc();
            set(&mut doc, first(), phase, k, v);
            let problems = check_json(&doc).expect_err(expect);
            assert!(problems.iter().any(|p| p.contains(expect)), "{expect}: {problems:?}");
        }
    }

    /// Coalesced is a figure where a transport keeps each child's latest
    /// state and a fault where it delivers every update; a row's delivery
    /// must be the one its transport declares.
    #[test]
    fn coalescing_is_judged_by_the_declared_delivery() {
        let every = crate::soak::soaked().find(|t| t.caps().delivery == Delivery::EveryUpdate).expect("one");
        let mut doc = clean_doc();
        set(&mut doc, every.name(), Phase::Volume, "coalesced", json!(5));
        let problems = check_json(&doc).expect_err("coalesced where every update is delivered");
        assert!(problems.iter().any(|p| p.contains("coalesced is 5, must be 0")), "{problems:?}");

        let mut doc = clean_doc();
        set(&mut doc, every.name(), Phase::Churn, "delivery", json!("latest_state"));
        let problems = check_json(&doc).expect_err("a delivery the transport does not declare");
        assert!(problems.iter().any(|p| p.contains("the transport declares every_update")), "{problems:?}");

        if let Some(latest) = crate::soak::soaked().find(|t| t.caps().delivery == Delivery::LatestState) {
            let mut doc = clean_doc();
            for (phase, k) in [
                (Phase::Volume, "coalesced"),
                (Phase::Churn, "survivors_coalesced"),
                (Phase::Flood, "honest_coalesced"),
            ] {
                set(&mut doc, latest.name(), phase, k, json!(1234));
            }
            assert_eq!(check_json(&doc), Ok(()));
            // Its last state lost, or a state twice: the same rules as for
            // every update.
            for k in ["lost", "duplicated"] {
                let mut doc = clean_doc();
                set(&mut doc, latest.name(), Phase::Flood, k, json!(1));
                let problems = check_json(&doc).expect_err(k);
                assert!(problems.iter().any(|p| p.contains(&format!("{k} is 1"))), "{problems:?}");
            }
        }
    }

    #[test]
    fn the_flood_ratio_binds_per_child_channels_only() {
        let quiet = [json!({ "p99_us": 100.0, "problems": [] }), json!({ "p99_us": 300.0, "problems": [] })];
        let flooded = [json!({ "p99_us": 2000.0, "problems": [] }), json!({ "p99_us": 6000.0, "problems": [] })];
        let niced = [json!({ "p99_us": 150.0, "problems": [] })];
        let shared = flood_row(&quiet, &flooded, &niced, false, true);
        assert_eq!(shared["problems"], json!([]));
        assert_eq!(shared["p99_ratio"], json!(20.0), "medians: 4000 / 200");
        assert_eq!(shared["quiet_p99_us_reps"], json!([100.0, 300.0]));
        assert_eq!(shared["niced_p99_ratio"], json!(0.75));
        let private = flood_row(&quiet, &flooded, &niced, true, true);
        assert_eq!(private["problems"].as_array().map(Vec::len), Some(1), "{private:?}");
        let quick = flood_row(&quiet, &flooded, &niced, true, false);
        assert_eq!(quick["problems"], json!([]));
        assert_eq!(quick["notes"].as_array().map(Vec::len), Some(1), "{quick:?}");
    }
}
