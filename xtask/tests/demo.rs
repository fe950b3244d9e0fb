//! `cargo xtask demo` end to end: the xtask binary run as a master of real child processes, read in `--plain` mode.
//!
//! Each test runs `xtask demo --plain ...` and checks what it printed
//! against itself and against the protocol: children spawned on demand up
//! to the limit, TAKEN and AVAIL in turn for each child, a reload retiring
//! the old children and spawning new generations, every child reaped, and a
//! summary whose numbers agree with the lines. `--service` runs
//! master-proto-daemon's `postfix_echo` example unchanged. Every wait is bounded
//! and says what it waited for.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Demo, WAIT, fields, num, summary, tally};
use nix::sys::signal::{Signal, kill};

#[test]
fn children_spawn_on_demand_go_taken_and_avail_and_a_reload_starts_new_generations() {
    let limit = 3;
    let demo = Demo::start(&[
        "--clients",
        "6",
        "--max-children",
        "3",
        "--duration",
        "4",
        "--reload-after",
        "2",
        "--hold",
        "0.05",
        "--gossip",
    ]);
    let (status, lines, stderr) = demo.finish();
    assert!(status.success(), "demo failed: {status}; stderr {stderr}; lines {lines:#?}");
    assert!(lines[0].starts_with("listen tcp 127.0.0.1:"), "first line: {:?}", lines[0]);
    let t = tally(&lines, limit);
    let s = summary(&lines);

    assert!(t.spawned.len() >= 2, "six clients need more than one child: {lines:#?}");
    assert_eq!(t.max_alive, limit, "six busy clients bring the service to its limit");
    assert_eq!(t.reloads.len(), 1);
    assert!(!t.reloads[0].1.is_empty(), "the reload retired children");
    assert!(!t.gens_after_reload.is_empty(), "children spawned after the reload");
    assert!(t.gens_after_reload.iter().all(|&g| g > t.gens_before_reload), "new generations after the reload");
    assert_eq!(t.spawned, t.reaped, "every child reaped");

    assert_eq!(num(&s, "spawned"), t.spawned.len() as u64);
    assert_eq!(num(&s, "reaped"), t.reaped.len() as u64);
    assert_eq!(s["children-left"], "0", "no child process left, zombie or not");
    assert_eq!(num(&s, "reloads"), 1);
    assert_eq!(num(&s, "spawn-failed"), 0);
    for outcome in ["taken", "avail", "unknown-status"] {
        let lines_said = t.outcomes.get(outcome).copied().unwrap_or(0);
        assert!(lines_said > 0, "no {outcome} line");
        assert_eq!(num(&s, outcome), lines_said, "summary {outcome}= against the lines");
    }
    assert_eq!(num(&s, "redundant"), 0, "the duplex pipe delivers every update, and the child sends no repeats");
    let updates: u64 = t.outcomes.values().sum();
    assert_eq!(num(&s, "updates"), updates);
    // Each gossiping child sends its 7 after each client, before AVAIL.
    assert!(num(&s, "unknown-status") >= num(&s, "avail"));
    let connections = num(&s, "connections");
    assert_eq!(num(&s, "failed-connections"), 0, "every echo came back: {stderr}");
    assert!(connections >= num(&s, "taken"), "each TAKEN is a client served");
    let clients = num(&s, "max-concurrent-clients");
    assert!((2..=6).contains(&clients), "max-concurrent-clients={clients}");
    let busy = num(&s, "max-busy-children");
    assert!((2..=3).contains(&busy), "max-busy-children={busy}");
}

#[test]
fn without_clients_no_child_is_spawned() {
    let (status, lines, stderr) = Demo::start(&["--clients", "0", "--duration", "0.5"]).finish();
    assert!(status.success(), "{status}: {stderr}");
    let s = summary(&lines);
    assert_eq!((num(&s, "spawned"), num(&s, "updates")), (0, 0), "{lines:#?}");
}

#[test]
fn every_transport_runs_the_demo() {
    for name in master_proto_transports::NAMES {
        let (status, lines, stderr) =
            Demo::start(&["--transport", name, "--clients", "3", "--duration", "1", "--hold", "0.02"]).finish();
        assert!(status.success(), "{name}: {status}: {stderr}");
        assert!(lines[0].ends_with(&format!("transport={name}")), "{name}: {:?}", lines[0]);
        let t = tally(&lines, 4);
        let s = summary(&lines);
        assert!(num(&s, "taken") > 0 && num(&s, "connections") > 0, "{name}: {lines:#?}");
        assert_eq!(num(&s, "failed-connections"), 0, "{name}: {stderr}");
        assert_eq!(t.spawned, t.reaped, "{name}");
        assert_eq!(s["children-left"], "0", "{name}");
    }
}

/// The `postfix_echo` example of master-proto-daemon, built now if it is
/// missing or older than its source.
fn postfix_echo() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--quiet", "-p", "master-proto-daemon", "--example", "postfix_echo"])
        .current_dir(workspace)
        .spawn()
        .expect("running cargo build");
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = build.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = build.kill();
            let _ = build.wait();
            panic!("cargo build of the postfix_echo example took more than 600 s");
        }
        let _ = nix::poll::poll(&mut [], nix::poll::PollTimeout::from(50u8));
    };
    assert!(status.success(), "cargo build -p master-proto-daemon --example postfix_echo: {status}");
    // target/<profile>/xtask -> target/<profile>/examples/postfix_echo
    let bin = Path::new(env!("CARGO_BIN_EXE_xtask")).with_file_name("examples").join("postfix_echo");
    assert!(bin.is_file(), "{} is missing after the build", bin.display());
    bin
}

#[test]
fn service_runs_the_postfix_echo_example_unchanged() {
    let example = postfix_echo();
    let example = example.to_str().expect("UTF-8 path");
    let mut demo = Demo::start(&["--clients", "0", "--duration", "0", "--service", example, "-v"]);
    let addr: SocketAddr =
        demo.await_line("the listen line", |l| l.strip_prefix("listen tcp ")?.split_whitespace().next()?.parse().ok());
    let mut client = TcpStream::connect(addr).expect("connecting to the demo");
    client.set_read_timeout(Some(WAIT)).expect("read timeout");
    client.write_all(b"hello from the test\n").expect("sending");
    let mut back = String::new();
    let mut reader = BufReader::new(client.try_clone().expect("clone"));
    reader.read_line(&mut back).expect("awaiting the echo");
    assert_eq!(back, "hello from the test\n");
    let pid: i32 = demo.await_line("the spawn line", |l| {
        fields(l).get("pid").filter(|_| l.starts_with("spawn ")).and_then(|p| p.parse().ok())
    });
    demo.await_line("TAKEN from the example", |l| {
        (l == format!("pid={pid} gen=1 status=TAKEN outcome=taken")).then_some(())
    });
    client.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).expect("awaiting the server's close");
    demo.await_line("AVAIL from the example", |l| {
        (l == format!("pid={pid} gen=1 status=AVAIL outcome=avail")).then_some(())
    });
    kill(demo.pid(), Signal::SIGTERM).expect("SIGTERM to the demo");
    let (status, lines, stderr) = demo.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert!(lines.iter().any(|l| l == "shutdown reason=SIGTERM" || l == "stop reason=SIGTERM"), "{lines:#?}");
    assert!(
        lines.contains(&format!("reap pid={pid} gen=1 exit=\"exit status 0\" uses=1 outcome=reaped")),
        "{lines:#?}"
    );
    let s = summary(&lines);
    assert_eq!((num(&s, "spawned"), num(&s, "reaped"), num(&s, "taken"), num(&s, "avail")), (1, 1, 1, 1));
    assert_eq!(s["children-left"], "0");
    // -v and -n NAME reached the example: it logs each client under the
    // service name the demo gave it.
    assert!(stderr.contains(&format!("postfix_echo[{pid}]: {addr}: client 1 from")), "stderr: {stderr}");
}

#[test]
fn service_on_a_unix_socket_serves_the_load_generator() {
    let example = postfix_echo();
    let socket = std::env::temp_dir().join(format!("xtask-demo-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let listen = format!("unix:{}", socket.display());
    let demo = Demo::start(&[
        "--listen",
        &listen,
        "--clients",
        "2",
        "--duration",
        "1",
        "--hold",
        "0.02",
        "--service",
        example.to_str().expect("UTF-8 path"),
    ]);
    let (status, lines, stderr) = demo.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(lines[0], format!("listen unix {} transport=duplex", socket.display()));
    let t = tally(&lines, 4);
    let s = summary(&lines);
    assert!(num(&s, "connections") > 0 && num(&s, "taken") > 0, "{lines:#?}");
    assert_eq!(num(&s, "failed-connections"), 0, "{stderr}");
    assert_eq!(t.spawned, t.reaped);
    assert!(!socket.exists(), "the socket file is removed at exit");
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    for (args, says) in [
        (&["--transport", "pipe", "--service", "/bin/true"][..], "duplex"),
        (&["--transport", "no-such-transport"][..], "unknown transport"),
        (&["--listen", "udp:1"][..], "--listen"),
        (&["--duration", "soon"][..], "--duration"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_xtask")).arg("demo").args(args).output().expect("running xtask");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?} should say {says:?}: {stderr}");
    }
}

#[test]
fn a_child_that_dies_before_serving_anyone_throttles_spawning() {
    let false_ = ["/bin/false", "/usr/bin/false"].into_iter().find(|p| Path::new(p).is_file()).expect("a false(1)");
    let mut demo = Demo::start(&["--clients", "0", "--duration", "0", "--throttle", "1", "--service", false_]);
    let addr: SocketAddr =
        demo.await_line("the listen line", |l| l.strip_prefix("listen tcp ")?.split_whitespace().next()?.parse().ok());
    // A client waiting in the backlog: the master spawns for it, the child
    // exits 1 at once, unused.
    let _client = TcpStream::connect(addr).expect("connecting to the demo");
    demo.await_line("the first spawn", |l| l.starts_with("spawn ").then_some(()));
    demo.await_line("a reap that begins a throttle", |l| {
        (l.starts_with("reap ") && l.contains("exit=\"exit status 1\" uses=0 outcome=reaped-throttle")).then_some(())
    });
    demo.await_line("the throttle", |l| (l == "throttle seconds=1").then_some(()));
    let throttled_at = Instant::now();
    // The client is still waiting: once the throttle is over, the master
    // spawns again, and not before.
    demo.await_line("the spawn after the throttle", |l| l.starts_with("spawn ").then_some(()));
    let waited = throttled_at.elapsed();
    assert!(waited >= Duration::from_millis(900), "spawned again {waited:?} after a 1 s throttle began");
    kill(demo.pid(), Signal::SIGTERM).expect("SIGTERM to the demo");
    let (status, lines, stderr) = demo.finish();
    assert!(status.success(), "{status}: {stderr}");
    let s = summary(&lines);
    assert!(num(&s, "throttled") >= 2, "{lines:#?}");
    assert_eq!(num(&s, "spawned"), num(&s, "reaped"));
    assert_eq!(s["children-left"], "0");
}
