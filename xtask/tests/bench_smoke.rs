//! The bench, end to end: `cargo xtask bench --quick --json PATH` runs
//! every workload on every transport in real processes (as a release
//! build), and its JSON passes `--check-json`. No figure is asserted: only
//! that everything ran, every transport has its rows, and nothing was lost,
//! torn or duplicated where every update is promised.

use std::path::PathBuf;
use std::process::Command;

fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

#[test]
fn quick_bench_runs_and_its_json_checks_out() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-smoke");
    std::fs::create_dir_all(&dir).expect("create the output folder");
    let json = dir.join("bench.json");
    let svgs = [dir.join("bench-wake_latency.svg"), dir.join("bench-fan_in.svg")];
    for stale in svgs.iter().chain([&json]) {
        let _ = std::fs::remove_file(stale);
    }

    let out = xtask().args(["bench", "--quick", "--json"]).arg(&json).output().expect("run cargo xtask bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench --quick failed ({}):\n{stdout}\n{stderr}", out.status);
    for workload in [
        "notify_cost",
        "notify_stopped",
        "wake_latency",
        "fan_in",
        "death_master_to_child",
        "death_child_to_master",
        "sparse",
    ] {
        assert!(stdout.contains(&format!("### {workload}")), "no {workload} table in:\n{stdout}");
    }
    assert!(stdout.contains("release build"), "the run says it measured a release build:\n{stdout}");

    let check = xtask().arg("bench").arg("--check-json").arg(&json).output().expect("run --check-json");
    assert!(
        check.status.success(),
        "--check-json rejected the bench's own output:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    for svg in &svgs {
        let text = std::fs::read_to_string(svg).unwrap_or_else(|e| panic!("read {}: {e}", svg.display()));
        assert!(text.starts_with("<svg"), "{} is not an SVG", svg.display());
        for transport in ["pipe", "duplex"] {
            assert!(text.contains(&format!("\n{transport}\n")), "{} has no line for {transport}", svg.display());
        }
    }
}

#[test]
fn check_json_rejects_a_file_without_rows() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-empty.json");
    std::fs::write(&path, r#"{"machine": {"cpu_model": "x", "cores": 2, "kernel": "Linux"}, "rows": []}"#)
        .expect("write the file");
    let out = xtask().arg("bench").arg("--check-json").arg(&path).output().expect("run --check-json");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an empty result set passed the check");
    assert!(stderr.contains("no notify_cost row for pipe"), "the check names what is missing:\n{stderr}");
}
