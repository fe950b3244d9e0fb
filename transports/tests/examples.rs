//! The `choose` and `tokio_master` examples, run for every transport built
//! here: the master picks the transport by name, the children (the example
//! itself) build their sink from the environment alone, and TAKEN and
//! AVAIL arrive with each child's pid (and, for `choose`, the sender the
//! transport vouches for).
//!
//! Cargo builds examples for `cargo test` (unless a single test target is
//! named), next to this test's own binary: `target/<profile>/examples/`.

use std::path::PathBuf;
use std::process::{Command, Output};

use master_proto::Delivery;
use master_proto_conformance::cases::expected_sender;
use master_proto_transports::{AnyTransport, NAMES};

fn example(name: &str, args: &[&str]) -> Output {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<this test> -> target/<profile>/examples/<name>
    let bin: PathBuf = exe.parent().and_then(|d| d.parent()).expect("test binary location").join("examples").join(name);
    assert!(bin.is_file(), "{} is missing: run `cargo test -p master-proto-transports`", bin.display());
    Command::new(&bin).args(args).output().unwrap_or_else(|e| panic!("running {}: {e}", bin.display()))
}

fn choose(args: &[&str]) -> Output {
    example("choose", args)
}

/// Runs the example with `args` and checks its report for `transport`.
fn check(args: &[&str], transport: AnyTransport) {
    let out = choose(args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "choose {args:?} failed ({}):\n{stdout}{stderr}", out.status);
    let lines: Vec<&str> = stdout.lines().collect();
    // A transport that keeps each child's latest state may deliver the
    // AVAIL alone (the TAKEN overwritten): redundant then, since a new
    // child counts as idle.
    let every = transport.caps().delivery == Delivery::EveryUpdate;
    let n = lines.len();
    assert!(n == 4 || (!every && n == 3), "choose {args:?} printed:\n{stdout}");
    assert_eq!(lines[0], format!("transport {}", transport.name()));
    // The child's pid, from the last line: "pid P exited: ...".
    let pid: i32 = lines[n - 1]
        .strip_prefix("pid ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {:?}", lines[n - 1]));
    let sender = expected_sender(transport.caps().identity, pid);
    if n == 4 {
        assert_eq!(lines[1], format!("TAKEN from pid {pid} generation 1 ({sender:?}): taken"));
        assert_eq!(lines[2], format!("AVAIL from pid {pid} generation 1 ({sender:?}): avail"));
    } else {
        assert_eq!(lines[1], format!("AVAIL from pid {pid} generation 1 ({sender:?}): redundant"));
    }
    assert!(lines[n - 1].starts_with(&format!("pid {pid} exited: exit status: 0; Reaped")), "{}", lines[n - 1]);
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

#[test]
fn a_tokio_master_hears_every_child_over_every_transport() {
    for transport in AnyTransport::all() {
        let out = example("tokio_master", &[transport.name(), "4"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "tokio_master {transport} failed ({}):\n{stdout}{stderr}", out.status);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.first().copied(), Some(format!("transport {transport}").as_str()), "{stdout}");
        let children: Vec<&&str> = lines.iter().filter(|l| l.starts_with("pid ")).collect();
        assert_eq!(children.len(), 4, "one line per child:\n{stdout}");
        let every = transport.caps().delivery == Delivery::EveryUpdate;
        for line in children {
            assert!(line.ends_with(", last AVAIL, exit status: 0"), "{transport}: {line}");
            if every {
                assert!(line.ends_with(": 100 TAKEN, 100 AVAIL, last AVAIL, exit status: 0"), "{transport}: {line}");
            }
        }
        let last = lines.last().copied().unwrap_or_default();
        assert!(last.starts_with("4 children, ") && last.ends_with(" updates, 0 left in the table"), "{stdout}");
        if every {
            assert_eq!(last, "4 children, 800 updates, 0 left in the table");
        }
    }
}
