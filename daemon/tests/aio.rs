//! The async skeletons' rules (feature `tokio`), through the `async_echo` example run as a real child of this project's master code.
//!
//! As `postfix_echo.rs` and `policy.rs` do for the blocking flavour, under
//! duplex and memfd (`per_transport!`), every update through proto's
//! `master::Master`. `async_echo` is a single_server, or with `multi` a
//! multi_server whose requests are lines. Every wait is bounded by `WAIT`.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{Conversation, Running, Service, SocketPath, per_transport, unix_client, update};
use master_proto::Status;
use master_proto_transports::AnyTransport;

per_transport!(
    single_serves_a_client_between_taken_and_avail_and_leaves_with_the_master,
    single_finishes_its_client_after_the_master_left,
    single_keeps_max_use_and_max_idle,
    single_drops_a_silent_client_after_ipc_timeout,
    multi_goes_taken_and_avail_per_request_and_counts_clients_at_disconnect,
    multi_idle_timer_runs_only_without_clients_and_the_master_ends_it,
);

fn single_serves_a_client_between_taken_and_avail_and_leaves_with_the_master(transport: AnyTransport) {
    let path = SocketPath::new();
    let mut service = Service::new(transport, 0o1234567);
    let mut child = service.spawn("async_echo", &["-n", "echo", "-t", "unix"], vec![path.listen()]);
    let pid = child.pid();
    let mut talk = Conversation::new(unix_client(&path.0));
    talk.echo("hello");
    talk.echo("again");
    talk.finish("tail");
    let got = service.expect_updates(2, "TAKEN and AVAIL around the client");
    assert_eq!(got, [update(pid, 0o1234567, Status::TAKEN), update(pid, 0o1234567, Status::AVAIL)]);
    service.close();
    child.expect_clean_exit("the master closed the channel while the child was idle");
}

fn single_finishes_its_client_after_the_master_left(transport: AnyTransport) {
    let path = SocketPath::new();
    let mut service = Service::new(transport, 1);
    let mut child = service.spawn("async_echo", &["-v", "-n", "echo", "-t", "unix"], vec![path.listen()]);
    let mut talk = Conversation::new(unix_client(&path.0));
    talk.echo("before");
    service.expect_updates(1, "TAKEN");
    service.close();
    talk.echo("after the master left");
    talk.finish("");
    child.expect_clean_exit("AVAIL failed after the master left");
    assert!(child.stderr_text().contains("master disconnect -- exiting"), "{}", child.stderr_text());
}

fn single_keeps_max_use_and_max_idle(transport: AnyTransport) {
    let path = SocketPath::new();
    let mut service = Service::new(transport, 1);
    let mut child =
        service.spawn("async_echo", &["-v", "-n", "echo", "-t", "unix", "-o", "max_use=2"], vec![path.listen()]);
    for n in 0..2 {
        let mut talk = Conversation::new(unix_client(&path.0));
        talk.echo(&format!("client {n}"));
        talk.finish("");
        service.expect_updates(2, "TAKEN and AVAIL");
    }
    child.expect_clean_exit("max_use=2");
    assert!(child.stderr_text().contains("use limit reached -- exiting"), "{}", child.stderr_text());

    let started = Instant::now();
    let mut child = service.spawn(
        "async_echo",
        &["-v", "-n", "echo", "-t", "unix", "-o", "max_idle=1"],
        vec![SocketPath::new().listen()],
    );
    child.expect_clean_exit("max_idle=1");
    assert!(started.elapsed() >= Duration::from_secs(1), "exited after {:?}", started.elapsed());
    assert!(child.stderr_text().contains("idle timeout -- exiting"), "{}", child.stderr_text());
}

fn single_drops_a_silent_client_after_ipc_timeout(transport: AnyTransport) {
    let path = SocketPath::new();
    let mut service = Service::new(transport, 1);
    let args = ["-n", "echo", "-t", "unix", "-o", "ipc_timeout=1s"];
    let mut child = service.spawn("async_echo", &args, vec![path.listen()]);
    let mut silent = unix_client(&path.0);
    let connected = Instant::now();
    service.expect_updates(1, "TAKEN for the silent client");
    let mut rest = Vec::new();
    silent.read_to_end(&mut rest).expect("awaiting the child's close");
    assert!(connected.elapsed() >= Duration::from_secs(1), "dropped after {:?}", connected.elapsed());
    service.expect_updates(1, "AVAIL after ipc_timeout");
    assert!(child.stderr_text().contains("warning: client 1 from local: ipc_timeout"), "{}", child.stderr_text());
    service.close();
    child.expect_clean_exit("the master left");
}

/// A line client of the multi_server.
fn ask(stream: &mut std::io::BufReader<UnixStream>, line: &str) {
    use std::io::BufRead;
    stream.get_mut().write_all(format!("{line}\n").as_bytes()).expect("sending");
    let mut back = String::new();
    stream.read_line(&mut back).expect("awaiting the echo");
    assert_eq!(back, format!("{line}\n"));
}

fn multi_goes_taken_and_avail_per_request_and_counts_clients_at_disconnect(transport: AnyTransport) {
    let path = SocketPath::new();
    let mut service = Service::new(transport, 1);
    let args = ["-v", "-n", "echo", "-t", "unix", "-o", "max_use=2", "multi"];
    let mut child = service.spawn("async_echo", &args, vec![path.listen()]);
    let pid = child.pid();
    let mut a = std::io::BufReader::new(unix_client(&path.0));
    let mut b = std::io::BufReader::new(unix_client(&path.0));
    for n in 0..3 {
        ask(&mut a, &format!("a{n}"));
        ask(&mut b, &format!("b{n}"));
    }
    let got = service.expect_updates(12, "a TAKEN and an AVAIL per line");
    assert!(got.chunks(2).all(|p| p == [update(pid, 1, Status::TAKEN), update(pid, 1, Status::AVAIL)]), "{got:?}");
    // Two lines in one write: the second is buffered, and served too.
    a.get_mut().write_all(b"x\ny\n").expect("sending");
    let mut back = String::new();
    while back.lines().count() < 2 {
        std::io::BufRead::read_line(&mut a, &mut back).expect("awaiting the echoes");
    }
    assert_eq!(back, "x\ny\n");
    service.expect_updates(4, "two pipelined requests");
    drop(b);
    assert!(!child.exits_before(Instant::now() + Duration::from_millis(300)), "exited with a client connected");
    drop(a);
    child.expect_clean_exit("two clients disconnected (max_use=2)");
    assert!(child.stderr_text().contains("use limit reached -- exiting"), "{}", child.stderr_text());
}

fn multi_idle_timer_runs_only_without_clients_and_the_master_ends_it(transport: AnyTransport) {
    let path = SocketPath::new();
    let mut service = Service::new(transport, 1);
    let args = ["-v", "-n", "echo", "-t", "unix", "-o", "max_idle=1s", "multi"];
    let mut child = service.spawn("async_echo", &args, vec![path.listen()]);
    let mut a = std::io::BufReader::new(unix_client(&path.0));
    ask(&mut a, "one");
    assert!(!child.exits_before(Instant::now() + Duration::from_secs(2)), "idle timeout with a client connected");
    ask(&mut a, "two");
    drop(a);
    let left = Instant::now();
    child.expect_clean_exit("max_idle after the last client left");
    assert!(left.elapsed() >= Duration::from_millis(900), "exited {:?} after the client left", left.elapsed());
    assert!(child.stderr_text().contains("idle timeout -- exiting"), "{}", child.stderr_text());
    service.expect_updates(4, "two requests");

    let other = SocketPath::new();
    let mut child = service.spawn("async_echo", &["-v", "-n", "echo", "-t", "unix", "multi"], vec![other.listen()]);
    let mut a = std::io::BufReader::new(unix_client(&other.0));
    ask(&mut a, "one");
    service.expect_updates(2, "one request");
    service.close();
    child.expect_clean_exit("the master left, a client connected");
    assert!(child.stderr_text().contains("master disconnect -- exiting"), "{}", child.stderr_text());
}

#[test]
fn stand_alone_serves_stdin_and_stdout() {
    for args in [&["-S"][..], &["-S", "multi"][..]] {
        let mut child = Running::bare("async_echo", args, true);
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"one\ntwo\n").expect("writing stdin");
        drop(stdin);
        let mut out = String::new();
        child.stdout.take().expect("stdout").read_to_string(&mut out).expect("reading stdout");
        assert_eq!(out, "one\ntwo\n", "{args:?}");
        child.expect_clean_exit("stand-alone, at the end of stdin");
    }
}
