//! The soak, end to end: `cargo xtask soak --quick --json PATH` runs every
//! phase on every transport in real processes (as a release build), and
//! its JSON passes `--check-json`. No figure is asserted beyond the rules:
//! every transport has a row for every phase, nothing lost, torn or
//! duplicated (of a latest-state transport: each child's states in order
//! and its last one arrived), none coalesced where every update is
//! delivered, no wedge, no orphan or zombie left, no descriptor left open.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

const PHASES: [&str; 4] = ["volume", "churn", "master_death", "flood"];

#[test]
fn quick_soak_runs_and_its_json_checks_out() {
    let json = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("soak-smoke.json");
    let _ = std::fs::remove_file(&json);

    let out = xtask().args(["soak", "--quick", "--json"]).arg(&json).output().expect("run cargo xtask soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "soak --quick failed ({}):\n{stdout}\n{stderr}", out.status);
    for phase in PHASES.iter().chain(&["resources"]) {
        assert!(stdout.contains(&format!("### {phase} ")), "no {phase} table in:\n{stdout}");
    }
    assert!(stdout.contains("release build"), "the run says it soaked a release build:\n{stdout}");

    let check = xtask().arg("soak").arg("--check-json").arg(&json).output().expect("run --check-json");
    assert!(
        check.status.success(),
        "--check-json rejected the soak's own output:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // The same rules, read here directly from the file.
    let doc: Value = serde_json::from_slice(&std::fs::read(&json).expect("read the JSON")).expect("parse the JSON");
    assert_eq!(doc["driver"]["children_left"], 0, "the driver has no child left");
    let rows = doc["rows"].as_array().expect("rows");
    // Every transport in the facade's list, each with the rules of the
    // delivery it declares.
    let soaked: Vec<master_proto_transports::AnyTransport> = master_proto_transports::AnyTransport::all().collect();
    assert!(soaked.len() > 1, "transports to soak: {soaked:?}");
    for t in &soaked {
        let transport = t.name();
        let every = t.caps().delivery == master_proto::Delivery::EveryUpdate;
        for phase in PHASES {
            let row = rows
                .iter()
                .find(|r| r["transport"] == transport && r["phase"] == phase)
                .unwrap_or_else(|| panic!("no {phase} row for {transport}"));
            let at = format!("{transport} {phase}");
            assert!(row.get("error").is_none(), "{at}: {}", row["error"]);
            let delivery = if every { "every_update" } else { "latest_state" };
            assert_eq!(row["delivery"], delivery, "{at}");
            if every && let Some(c) = row.get("coalesced") {
                assert_eq!(c.as_f64(), Some(0.0), "{at}: every update is delivered, none coalesced");
            }
            assert_eq!(row["problems"], serde_json::json!([]), "{at}");
            for zero in ["lost", "torn", "duplicated", "orphans_left", "orphans_failed", "zombies", "driver_orphans"] {
                if let Some(v) = row.get(zero) {
                    assert_eq!(v.as_f64(), Some(0.0), "{at}: {zero}");
                }
            }
            assert_eq!(row["fds_start"], row["fds_end"], "{at}: descriptors left open");
            if phase != "master_death" {
                assert_eq!(row["fds_open"], row["fds_reaped"], "{at}: descriptors left open after the reaps");
                assert!(row["table_checks"].as_u64().unwrap_or(0) > 0, "{at}: the master's table was checked");
            }
        }
    }
}

#[test]
fn check_json_rejects_a_file_without_rows() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("soak-empty.json");
    std::fs::write(
        &path,
        r#"{"machine": {"cpu_model": "x", "cores": 2, "kernel": "Linux"}, "driver": {"children_left": 0}, "rows": []}"#,
    )
    .expect("write the file");
    let out = xtask().arg("soak").arg("--check-json").arg(&path).output().expect("run --check-json");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an empty result set passed the check");
    let first = master_proto_transports::NAMES[0];
    assert!(stderr.contains(&format!("no volume row for {first}")), "the check names what is missing:\n{stderr}");
}
