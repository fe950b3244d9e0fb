//! The `choose` example, run for every transport built here: the master
//! picks the transport by name, the child (the example itself) builds its
//! sink from the environment alone, and TAKEN and AVAIL arrive with the
//! child's pid and the sender the transport vouches for.
//!
//! Cargo builds examples for `cargo test` (unless a single test target is
//! named), next to this test's own binary: `target/<profile>/examples/`.

use std::path::PathBuf;
use std::process::{Command, Output};

use master_proto_conformance::cases::expected_sender;
use master_proto_transports::{AnyTransport, NAMES};

fn choose(args: &[&str]) -> Output {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<this test> -> target/<profile>/examples/choose
    let bin: PathBuf = exe.parent().and_then(|d| d.parent()).expect("test binary location").join("examples/choose");
    assert!(bin.is_file(), "{} is missing: run `cargo test -p master-proto-transports`", bin.display());
    Command::new(&bin).args(args).output().unwrap_or_else(|e| panic!("running {}: {e}", bin.display()))
}

/// Runs the example with `args` and checks its report for `transport`.
fn check(args: &[&str], transport: AnyTransport) {
    let out = choose(args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "choose {args:?} failed ({}):\n{stdout}{stderr}", out.status);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "choose {args:?} printed:\n{stdout}");
    assert_eq!(lines[0], format!("transport {}", transport.name()));
    // The child's pid, from the last line: "pid P exited: ...".
    let pid: i32 = lines[3]
        .strip_prefix("pid ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {:?}", lines[3]));
    let sender = expected_sender(transport.caps().identity, pid);
    assert_eq!(lines[1], format!("TAKEN from pid {pid} generation 1 ({sender:?}): taken"));
    assert_eq!(lines[2], format!("AVAIL from pid {pid} generation 1 ({sender:?}): avail"));
    assert!(lines[3].starts_with(&format!("pid {pid} exited: exit status: 0; Reaped")), "{}", lines[3]);
}

#[test]
fn every_transport_by_name() {
    for transport in AnyTransport::all() {
        check(&[transport.name()], transport);
    }
}

#[test]
fn no_name_is_the_platform_default() {
    check(&[], AnyTransport::platform_default());
}

#[test]
fn an_unknown_name_is_refused_with_the_known_ones() {
    let out = choose(&["carrier-pigeon"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown transport \"carrier-pigeon\""), "{stderr}");
    for name in NAMES {
        assert!(stderr.contains(name), "{stderr} does not name {name}");
    }
}
