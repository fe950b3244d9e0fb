//! A library's manners: child exits learned by pidfd with no signal handler installed and no signal blocked, and the application's own children keep their exit statuses.
//!
//! A test binary of its own, so that no other test (the tokio driver's,
//! whose runtime installs a SIGCHLD handler) changes the process's signal
//! state while these read it.

mod common;

use std::process::Command;

use common::{Client, Ctx, Driven, play_role, role, tcp_addr};
use master_proto::master::Exit;
use master_proto_supervisor::{Event, ExitWatch, Service, Supervisor};
use master_proto_transports::AnyTransport;
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

/// A signal-mask line of a `/proc` status file, as a bit set.
fn mask(path: &str, key: &str) -> u64 {
    let status = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let line = status.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key} in {path}"));
    u64::from_str_radix(line.trim(), 16).unwrap_or_else(|e| panic!("{key} {line:?}: {e}"))
}

/// The handlers installed in this process, and the signals blocked in
/// this thread (the one that runs the supervisor).
fn signal_state() -> (u64, u64) {
    (mask("/proc/self/status", "SigCgt:"), mask("/proc/thread-self/status", "SigBlk:"))
}

/// A supervisor with one echo service.
fn echo_service(ctx: &Ctx) -> (Driven, master_proto_supervisor::ServiceId) {
    let ctx = ctx.clone();
    let mut sup = Supervisor::new().expect("supervisor");
    let id = sup
        .add(
            Service::builder("echo")
                .transport(AnyTransport::postfix())
                .listen_tcp(([127, 0, 0, 1], 0))
                .command(move |_| ctx.command(role::ECHO))
                .build()
                .expect("service"),
        )
        .expect("add");
    (Driven::new(sup), id)
}

#[test]
fn exits_are_learned_by_pidfd_with_no_signal_handler_and_no_signal_blocked() {
    let ctx = Ctx::new(module_path!(), "exits_are_learned_by_pidfd_with_no_signal_handler_and_no_signal_blocked");
    play_role(&ctx);
    let before = signal_state();
    let sigchld_bit = 1u64 << (nix::libc::SIGCHLD - 1);
    assert_eq!(before.0 & sigchld_bit, 0, "a SIGCHLD handler before the test: {:#x}", before.0);

    let (mut d, id) = echo_service(&ctx);
    let mut client = Client::connect(tcp_addr(&d.sup, id));
    d.until("a busy child", |d| d.sup.snapshot(id).unwrap().busy == 1);
    client.echo("hello");
    let (pid, watch) = d.until_event("the spawn", 0, |e| match e {
        Event::Spawned { pid, watch, .. } => Some((*pid, *watch)),
        _ => None,
    });
    assert_eq!(watch, ExitWatch::Pidfd, "this kernel has pidfds");
    assert_eq!(signal_state(), before, "spawning installed a handler or blocked a signal");
    // The reload makes the child exit after its client; its pidfd tells.
    d.sup.reload();
    drop(client);
    let exit = d.until_event("the reap", 0, |e| match e {
        Event::Reaped { pid: p, exit, .. } if *p == pid => Some(*exit),
        _ => None,
    });
    assert_eq!(exit, Exit::Code(0));
    d.shutdown();
    let after = signal_state();
    assert_eq!(after, before, "SigCgt/SigBlk before {before:x?}, after {after:x?}");
}

#[test]
fn the_applications_own_child_keeps_its_exit_status() {
    let ctx = Ctx::new(module_path!(), "the_applications_own_child_keeps_its_exit_status");
    play_role(&ctx);
    // The application's child, spawned beside the supervisor, exits first
    // and stays a zombie for the application to reap.
    let mut own = Command::new("/bin/sh").args(["-c", "exit 42"]).spawn().expect("sh");
    let own_pid = Pid::from_raw(i32::try_from(own.id()).unwrap());
    // Wait for its exit without reaping it (WNOWAIT).
    waitid(Id::Pid(own_pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT).expect("waitid");

    // The supervisor spawns and reaps children of its own meanwhile.
    let (mut d, id) = echo_service(&ctx);
    let addr = tcp_addr(&d.sup, id);
    for _ in 0..2 {
        let mark = d.events.len();
        let mut client = Client::connect(addr);
        d.until("a busy child", |d| d.sup.snapshot(id).unwrap().busy == 1);
        client.echo("round");
        d.sup.reload();
        drop(client);
        d.until_event("a child reaped", mark, |e| matches!(e, Event::Reaped { .. }).then_some(()));
    }
    d.shutdown();
    assert!(d.sup.master(id).unwrap().counters().reaped >= 2);
    let status = own.wait().expect("the application reaps its own child");
    assert_eq!(status.code(), Some(42), "the supervisor left the application's child alone");
}
