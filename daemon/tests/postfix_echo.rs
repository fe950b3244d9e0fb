//! The single_server skeleton's rules, through the `postfix_echo` example run as a real child of this project's master code.
//!
//! Each case runs the example binary as a child process with a channel of
//! a transport from the facade at fd 5 and listening sockets from fd 6
//! (`ChildFds`), and plays the master: every status update goes through
//! proto's sans-IO `master::Master`, which must apply it (a TAKEN or AVAIL
//! that changes the child's state, from its pid and generation). The
//! master-side cases run twice, under the duplex pipe (as a real Postfix
//! master(8) passes it: `GENERATION` only) and under memfd
//! (`per_transport!`). Every wait is bounded by `WAIT` and fails saying
//! what it awaited.
//!
//! Cargo builds examples for `cargo test` (unless a single test target is
//! named), next to this test's own binary: `target/<profile>/examples/`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use common::{
    Conversation, Running, Service, SocketPath, Stream, WAIT, per_transport, tcp_client, unix_client, update,
};
use master_proto::Status;
use master_proto_transports::AnyTransport;

per_transport!(
    tcp_client_is_echoed_between_taken_and_avail,
    unix_client_is_echoed_between_taken_and_avail,
    master_close_while_serving_lets_the_client_finish_then_the_child_exits,
    max_use_ends_the_child,
    max_idle_ends_an_idle_child,
    ipc_timeout_ends_a_silent_client,
    two_children_share_one_listening_socket_and_one_channel,
    every_listening_socket_is_served,
);

/// One child, one client: the lines come back, the master sees TAKEN then
/// AVAIL from that pid and generation; then the master closes the channel
/// and the idle child exits 0.
fn one_client_then_master_close<S: Stream>(
    transport: AnyTransport,
    listen: OwnedFd,
    service_type: &str,
    generation: u32,
    connect: impl Fn() -> S,
) {
    let mut service = Service::new(transport, generation);
    let args = ["-n", "echo", "-t", service_type, "-o", "max_idle=3600"];
    let mut child = service.spawn("postfix_echo", &args, vec![listen]);
    let pid = child.pid();

    let mut talk = Conversation::new(connect());
    for line in ["hello", "", "a line with  spaces\t", "\u{e9}t\u{e9}"] {
        talk.echo(line);
    }
    talk.finish("no newline at the end");

    let updates = service.expect_updates(2, "TAKEN and AVAIL around one client");
    assert_eq!(
        updates,
        [update(pid, generation, Status::TAKEN), update(pid, generation, Status::AVAIL)],
        "the updates carry the child's pid and its GENERATION (passed in octal); stderr:\n{}",
        child.stderr_text()
    );

    service.close();
    child.expect_clean_exit("the master closed the status channel while the child was idle");
}

fn tcp_client_is_echoed_between_taken_and_avail(transport: AnyTransport) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    // 0o1234567 is 342391: a decimal GENERATION would come back different.
    one_client_then_master_close(transport, listener.into(), "inet", 0o1234567, || tcp_client(addr));
}

fn unix_client_is_echoed_between_taken_and_avail(transport: AnyTransport) {
    let path = SocketPath::new();
    // The largest generation: GENERATION=37777777777.
    one_client_then_master_close(transport, path.listen(), "unix", u32::MAX, || unix_client(&path.0));
}

fn master_close_while_serving_lets_the_client_finish_then_the_child_exits(transport: AnyTransport) {
    let path = SocketPath::new();
    let mut service = Service::new(transport, 0o17);
    let args = ["-v", "-n", "echo", "-t", "unix", "-o", "max_idle=3600"];
    let mut child = service.spawn("postfix_echo", &args, vec![path.listen()]);
    let pid = child.pid();

    let mut talk = Conversation::new(unix_client(&path.0));
    talk.echo("before the reload");
    let taken = service.expect_updates(1, "TAKEN for the client being served");
    assert_eq!(taken, [update(pid, 0o17, Status::TAKEN)]);

    // "postfix reload": the master closes the channel.
    service.close();
    // The client already accepted is still served to the end.
    talk.echo("after the reload");
    talk.finish("");
    child.expect_clean_exit("AVAIL failed after the master closed the channel");
    let log = child.stderr_text();
    assert!(
        log.contains("master disconnect -- exiting"),
        "the child should say it exits because the master left; stderr:\n{log}"
    );
}

fn max_use_ends_the_child(transport: AnyTransport) {
    let path = SocketPath::new();
    let mut service = Service::new(transport, 0o755);
    let args = ["-d", "-v", "-u", "-n", "echo", "-t", "unix", "-s", "1", "-o", "max_use=2"];
    let mut child = service.spawn("postfix_echo", &args, vec![path.listen()]);
    let pid = child.pid();

    for n in 1..=2 {
        let mut talk = Conversation::new(unix_client(&path.0));
        talk.echo(&format!("client {n}"));
        talk.finish("");
        let updates = service.expect_updates(2, &format!("TAKEN and AVAIL around client {n}"));
        assert_eq!(updates, [update(pid, 0o755, Status::TAKEN), update(pid, 0o755, Status::AVAIL)]);
    }
    // The channel is still open: only max_use can end the child now.
    child.expect_clean_exit("max_use=2 clients were served");
    service.expect_no_more_updates("after the child's exit");
    let log = child.stderr_text();
    assert_eq!(
        log.lines().filter(|l| l.contains("echo: client ")).count(),
        2,
        "-v logs one line per client; stderr:\n{log}"
    );
    assert!(log.contains("use limit reached -- exiting"), "stderr:\n{log}");
}

fn max_idle_ends_an_idle_child(transport: AnyTransport) {
    let path = SocketPath::new();
    let mut service = Service::new(transport, 1);
    let args = ["-v", "-n", "echo", "-t", "unix", "-o", "max_idle=1s"];
    let started = Instant::now();
    let mut child = service.spawn("postfix_echo", &args, vec![path.listen()]);
    child.expect_clean_exit("max_idle=1s passed without a client");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(1), "exited after {elapsed:?}, before max_idle");
    let log = child.stderr_text();
    assert!(log.contains("idle timeout -- exiting"), "stderr:\n{log}");
    service.expect_no_more_updates("a child that served nobody");
}

fn ipc_timeout_ends_a_silent_client(transport: AnyTransport) {
    let path = SocketPath::new();
    let mut service = Service::new(transport, 3);
    let args = ["-n", "echo", "-t", "unix", "-o", "ipc_timeout=1s", "-o", "max_idle=3600"];
    let mut child = service.spawn("postfix_echo", &args, vec![path.listen()]);
    let pid = child.pid();

    // A client that says nothing: the child gives up on it after
    // ipc_timeout, closes it and is available again.
    let mut silent = unix_client(&path.0);
    let connected = Instant::now();
    assert_eq!(service.expect_updates(1, "TAKEN for the silent client"), [update(pid, 3, Status::TAKEN)]);
    let mut rest = Vec::new();
    silent.read_to_end(&mut rest).expect("awaiting the child's close (bounded by WAIT)");
    let waited = connected.elapsed();
    assert!(waited >= Duration::from_secs(1), "the silent client was dropped after {waited:?}, before ipc_timeout");
    assert_eq!(service.expect_updates(1, "AVAIL after the timeout"), [update(pid, 3, Status::AVAIL)]);
    let log = child.stderr_text();
    assert!(log.contains("warning: client 1 from local:"), "the timed-out client is a warning; stderr:\n{log}");

    // The next client is served as usual.
    let mut talk = Conversation::new(unix_client(&path.0));
    talk.echo("after the silent one");
    talk.finish("");
    service.expect_updates(2, "TAKEN and AVAIL around the next client");
    service.close();
    child.expect_clean_exit("the master closed the channel");
}

fn two_children_share_one_listening_socket_and_one_channel(transport: AnyTransport) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    let mut service = Service::new(transport, 0o101);
    // -v -v: the children log each accept race they lose; no use limit.
    let args = ["-v", "-v", "-n", "echo", "-t", "inet", "-o", "max_idle=3600", "-o", "max_use=0"];
    let fd = |l: &TcpListener| OwnedFd::from(l.try_clone().expect("dup the listening socket"));
    let mut first = service.spawn("postfix_echo", &args, vec![fd(&listener)]);
    let mut second = service.spawn("postfix_echo", &args, vec![fd(&listener)]);
    drop(listener);
    let children: BTreeSet<(i32, u32)> = [(first.pid(), 0o101), (second.pid(), 0o102)].into();

    // Two clients held open at once: a single server busy with one cannot
    // take the other, so each child serves one.
    let mut a = Conversation::new(tcp_client(addr));
    a.echo("held open: a");
    let mut b = Conversation::new(tcp_client(addr));
    b.echo("held open: b");
    let taken = service.expect_updates(2, "TAKEN from each child while two clients are held open");
    assert!(taken.iter().all(|u| u.status == Status::TAKEN), "{taken:?}");
    let who: BTreeSet<(i32, u32)> = taken.iter().map(|u| (u.pid, u.generation)).collect();
    assert_eq!(who, children, "each child took one client");
    a.finish("");
    b.finish("");
    let avail = service.expect_updates(2, "AVAIL from each child");
    assert!(avail.iter().all(|u| u.status == Status::AVAIL), "{avail:?}");

    // Many clients, one after the other: both idle children wake for each
    // connection, and the one that does not get it loses the accept race.
    const CLIENTS: usize = 8;
    for n in 0..CLIENTS {
        let mut talk = Conversation::new(tcp_client(addr));
        talk.echo(&format!("client {n}, line 1"));
        talk.finish(&format!("client {n}, tail"));
        service.expect_updates(2, &format!("TAKEN and AVAIL around client {n}"));
    }
    // And at once: both race for every connection.
    std::thread::scope(|s| {
        for n in 0..CLIENTS {
            s.spawn(move || {
                let mut talk = Conversation::new(tcp_client(addr));
                talk.echo(&format!("client {n}, line 1"));
                talk.echo(&format!("client {n}, line 2"));
                talk.finish(&format!("client {n}, tail"));
            });
        }
    });
    let updates = service.expect_updates(2 * CLIENTS, "TAKEN and AVAIL around every concurrent client");
    let mut per_child: BTreeMap<(i32, u32), Vec<Status>> = BTreeMap::new();
    for u in &updates {
        assert!(children.contains(&(u.pid, u.generation)), "update {u:?} is from neither child {children:?}");
        per_child.entry((u.pid, u.generation)).or_default().push(u.status);
    }
    for (child, statuses) in &per_child {
        let alternating = statuses.chunks(2).all(|pair| pair == [Status::TAKEN, Status::AVAIL]);
        assert!(alternating, "child {child:?} should alternate TAKEN, AVAIL: {statuses:?}");
    }
    let served: usize = per_child.values().map(|s| s.len() / 2).sum();
    assert_eq!(served, CLIENTS, "every client was served once: {per_child:?}");

    // Bursts of clients that connect and leave at once, until one of the
    // children is seen to lose a race for a connection: both were woken
    // by it, the other took it, and this one's accept said EAGAIN.
    const BURST: usize = 16;
    let deadline = Instant::now() + WAIT;
    let lost_race = |first: &mut Running, second: &mut Running| {
        (first.stderr_text() + &second.stderr_text()).contains("(another process took it)")
    };
    while !lost_race(&mut first, &mut second) {
        assert!(Instant::now() < deadline, "no child lost an accept race within {WAIT:?}");
        std::thread::scope(|s| {
            for _ in 0..BURST {
                s.spawn(move || Conversation::new(tcp_client(addr)).finish(""));
            }
        });
        service.expect_updates(2 * BURST, "TAKEN and AVAIL around every client of a burst");
    }

    // Both survived the races and leave when the master closes the channel.
    service.close();
    first.expect_clean_exit("the master closed the channel shared by both children");
    second.expect_clean_exit("the master closed the channel shared by both children");
    let logs = first.stderr_text() + &second.stderr_text();
    assert!(!logs.contains("warning:"), "a lost race is no warning; stderr:\n{logs}");
}

fn every_listening_socket_is_served(transport: AnyTransport) {
    let paths = [SocketPath::new(), SocketPath::new(), SocketPath::new()];
    let mut service = Service::new(transport, 9);
    let args = ["-n", "echo", "-t", "unix", "-s", "3", "-o", "max_idle=3600"];
    let mut child = service.spawn("postfix_echo", &args, paths.iter().map(SocketPath::listen).collect());
    // The last socket first: no socket is watched only after another.
    for path in paths.iter().rev() {
        let mut talk = Conversation::new(unix_client(&path.0));
        talk.echo(&format!("to {}", path.0.display()));
        talk.finish("");
        service.expect_updates(2, &format!("TAKEN and AVAIL for the client of {}", path.0.display()));
    }
    service.close();
    child.expect_clean_exit("the master closed the channel");
}

#[test]
fn stand_alone_serves_stdin_and_stdout_without_a_master() {
    let mut child = Running::bare("postfix_echo", &["-S", "-v"], true);
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"one\ntwo\nno newline").expect("writing stdin");
    drop(stdin);
    let mut out = String::new();
    child.stdout.take().expect("stdout").read_to_string(&mut out).expect("reading stdout");
    assert_eq!(out, "one\ntwo\nno newline");
    child.expect_clean_exit("stand-alone, at the end of stdin");
    assert!(child.stderr_text().contains("stand-alone client done -- exiting"), "{}", child.stderr_text());
}

#[test]
fn usage_errors_exit_2_with_a_usage_message() {
    let cases: [(&[&str], &str); 7] = [
        (&["-Q"], "invalid option -- 'Q'"),
        (&["-n", "echo", "-t", "unix", "-Q"], "invalid option -- 'Q'"),
        (&["-n", "echo", "-t", "unix", "-s"], "option -s requires a value"),
        (&["-t", "unix", "-o", "max_use=many"], "invalid max_use value \"many\""),
        (&["-t", "unix", "-s", "0"], "invalid socket_count"),
        (&["-t", "unix", "stray-operand"], "takes no operands"),
        (&["-t", "unix", "-o", "line_length_limit=x"], "invalid line_length_limit"),
    ];
    for (args, says) in cases {
        let mut child = Running::bare("postfix_echo", args, false);
        let status = child.wait_exit("a usage error");
        let log = child.stderr_text();
        assert_eq!(status.code(), Some(2), "{args:?} should exit 2; stderr:\n{log}");
        assert!(log.contains("usage: postfix_echo"), "{args:?}: no usage message; stderr:\n{log}");
        assert!(log.contains(says), "{args:?} should say {says:?}; stderr:\n{log}");
    }
}

#[test]
fn no_service_type_or_no_standard_environment_is_fatal() {
    for (args, says) in [
        (&["-n", "echo"][..], "no transport type specified"),
        (&["-t", "fifo"][..], "unsupported transport type: fifo"),
        (&["-n", "echo", "-t", "unix"][..], "GENERATION is not set"),
    ] {
        let mut child = Running::bare("postfix_echo", args, false);
        let status = child.wait_exit("a fatal error");
        let log = child.stderr_text();
        assert!(matches!(status.code(), Some(1 | 2)), "{args:?}: {status}; stderr:\n{log}");
        assert!(log.contains(says), "{args:?} should say {says:?}; stderr:\n{log}");
    }
}

#[test]
fn a_listening_socket_of_the_wrong_family_is_fatal() {
    let path = SocketPath::new();
    let mut service = Service::new(master_proto_transports::AnyTransport::postfix(), 1);
    let mut child = service.spawn("postfix_echo", &["-n", "echo", "-t", "inet"], vec![path.listen()]);
    let status = child.wait_exit("-t inet with a Unix-domain listening socket");
    let log = child.stderr_text();
    assert_eq!(status.code(), Some(1), "stderr:\n{log}");
    assert!(log.contains("fatal:") && log.contains("does not match service type inet"), "stderr:\n{log}");
}

#[test]
fn accept_errors_are_bounded() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let mut service = Service::new(master_proto_transports::AnyTransport::postfix(), 1);
    let shared = OwnedFd::from(listener.try_clone().expect("dup"));
    let mut child = service.spawn("postfix_echo", &["-n", "echo", "-t", "inet", "-o", "max_idle=3600"], vec![shared]);
    // One client first: the child has checked its socket and waits in poll.
    let addr = listener.local_addr().expect("local_addr");
    Conversation::new(tcp_client(addr)).finish("first");
    service.expect_updates(2, "TAKEN and AVAIL around the first client");
    // A listening TCP socket shut down for reading polls readable (hang-up)
    // and every accept on it fails with EINVAL: not a lost race.
    nix::sys::socket::shutdown(listener.as_raw_fd(), nix::sys::socket::Shutdown::Read)
        .expect("shutdown the listening socket");
    let status = child.wait_exit("accept failing again and again");
    let log = child.stderr_text();
    assert_eq!(status.code(), Some(1), "stderr:\n{log}");
    assert!(log.contains("fatal: too many accept errors, the last: EINVAL"), "stderr:\n{log}");
    assert_eq!(
        log.matches("warning: accept connection: EINVAL").count(),
        master_proto_daemon::ACCEPT_ERROR_LIMIT as usize,
        "each accept error is a warning, up to the limit; stderr:\n{log}"
    );
}
