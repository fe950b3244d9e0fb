//! The `prefork_echo` example, run as a program: concurrent clients served by children spawned on demand, a reload on SIGHUP, a clean shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use master_proto_conformance::harness::{WAIT, try_wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

mod common;

/// The example, built now (a `cargo test --test example` builds no
/// example by itself).
fn example() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--quiet", "-p", "master-proto-supervisor", "--example", "prefork_echo"])
        .current_dir(workspace)
        .spawn()
        .expect("running cargo build");
    let status = try_wait_until(&mut build, Instant::now() + Duration::from_secs(600)).expect("cargo build in time");
    assert!(status.success(), "cargo build --example prefork_echo: {status}");
    // target/<profile>/deps/example-HASH -> target/<profile>/examples/prefork_echo
    let exe = std::env::current_exe().expect("test binary");
    let bin = exe.parent().and_then(Path::parent).expect("target dir").join("examples").join("prefork_echo");
    assert!(bin.is_file(), "{} is missing after the build", bin.display());
    bin
}

/// The example's process, killed and reaped if the test fails before it
/// exits.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The next line starting with `prefix`, bounded by `WAIT`.
fn await_line(lines: &Receiver<String>, seen: &mut Vec<String>, prefix: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).unwrap_or_else(|e| panic!("no line {prefix:?} ({e}); seen {seen:#?}"));
        seen.push(line.clone());
        if line.starts_with(prefix) {
            return line;
        }
    }
}

#[test]
fn prefork_echo_serves_concurrent_clients_reloads_on_sighup_and_stops_on_sigterm() {
    let server = Command::new(example()).stdout(Stdio::piped()).stdin(Stdio::null()).spawn().expect("example");
    let pid = Pid::from_raw(i32::try_from(server.id()).unwrap());
    let mut server = Reaped(server);
    let (tx, lines) = mpsc::channel();
    let stdout = server.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let first = lines.recv_timeout(WAIT).expect("the first line");
    let addr: SocketAddr = first.strip_prefix("listening on ").expect("listening on ADDR first").parse().unwrap();

    let clients = |round: usize| {
        let threads: Vec<_> = (0..6)
            .map(|n| {
                std::thread::spawn(move || {
                    let mut client = common::Client::connect(addr);
                    for i in 0..3 {
                        client.echo(&format!("round {round} client {n} line {i}"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a client failed");
        }
    };
    clients(0);
    await_line(&lines, &mut seen, "spawned ");
    kill(pid, Signal::SIGHUP).expect("SIGHUP");
    await_line(&lines, &mut seen, "reloaded ");
    clients(1);
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    await_line(&lines, &mut seen, "shutdown-began ");
    await_line(&lines, &mut seen, "shutdown-complete");
    let status = try_wait_until(&mut server.0, Instant::now() + WAIT).expect("the example exits");
    assert!(status.success(), "{status}");
    while let Ok(line) = lines.recv_timeout(WAIT) {
        seen.push(line);
    }
    let spawned = seen.iter().filter(|l| l.starts_with("spawned ")).count();
    let reaped = seen.iter().filter(|l| l.starts_with("reaped ")).count();
    assert!(spawned >= 2, "children before and after the reload: {seen:#?}");
    assert_eq!(spawned, reaped, "every child reaped: {seen:#?}");
    assert!(seen.iter().all(|l| !l.starts_with("killed")), "every child left by itself: {seen:#?}");
}
