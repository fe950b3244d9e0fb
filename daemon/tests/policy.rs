//! The multi_server skeleton's rules, through the `policy` example run as a real child of this project's master code.
//!
//! As `postfix_echo.rs` does for single_server: the example runs with a
//! channel of a transport from the facade (duplex and memfd,
//! `per_transport!`) and a UNIX-domain listening socket, every status
//! update goes through proto's `master::Master`, and clients speak
//! Postfix's policy delegation protocol to it. Every wait is bounded by
//! `WAIT` and fails saying what it awaited.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{Running, Service, SocketPath, per_transport, unix_client, update};
use master_proto::Status;
use master_proto_transports::AnyTransport;

per_transport!(
    each_request_goes_taken_and_avail_and_gets_its_answer,
    many_clients_share_one_process,
    a_client_counts_toward_max_use_when_it_disconnects,
    the_idle_timer_runs_only_while_no_client_is_connected,
    the_masters_leaving_ends_the_process_with_clients_connected,
);

/// A request for `sender`, as smtpd sends it.
fn request(sender: &str) -> String {
    format!(
        "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=SMTP\nsender={sender}\nrecipient=rcpt@example.net\n\n"
    )
}

/// One connection of a policy client (smtpd's side).
struct PolicyClient {
    conn: BufReader<UnixStream>,
}

impl PolicyClient {
    fn connect(path: &SocketPath) -> PolicyClient {
        PolicyClient { conn: BufReader::new(unix_client(&path.0)) }
    }

    fn send(&mut self, text: &str) {
        self.conn.get_mut().write_all(text.as_bytes()).expect("sending a request");
    }

    /// Reads one answer: its `action=` value, checking the empty line.
    fn answer(&mut self) -> String {
        let mut line = String::new();
        self.conn.read_line(&mut line).expect("awaiting an answer (bounded by WAIT)");
        let action = line.strip_prefix("action=").unwrap_or_else(|| panic!("not an answer: {line:?}")).trim_end();
        let action = action.to_owned();
        line.clear();
        self.conn.read_line(&mut line).expect("awaiting the answer's end");
        assert_eq!(line, "\n", "an answer ends with an empty line");
        action
    }

    fn ask(&mut self, sender: &str) -> String {
        self.send(&request(sender));
        self.answer()
    }

    /// Closes our end and awaits the server's close.
    fn close(self) {
        let stream = self.conn.into_inner();
        stream.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut rest = String::new();
        (&stream).read_to_string(&mut rest).expect("awaiting the server's close");
        assert_eq!(rest, "", "nothing more from the server");
    }
}

/// The policy child of `service` on `path`, blocking `blocked@example.com`.
fn spawn(service: &mut Service, path: &SocketPath, options: &[&str]) -> Running {
    let mut args = vec!["-n", "policy", "-t", "unix"];
    args.extend_from_slice(options);
    args.push("Blocked@Example.COM");
    service.spawn("policy", &args, vec![path.listen()])
}

fn each_request_goes_taken_and_avail_and_gets_its_answer(transport: AnyTransport) {
    let path = SocketPath::new();
    let mut service = Service::new(transport, 0o44);
    let mut child = spawn(&mut service, &path, &["-o", "max_idle=3600"]);
    let pid = child.pid();
    let mut c = PolicyClient::connect(&path);
    assert_eq!(c.ask("blocked@example.com"), "REJECT sender blocked@example.com is blocked");
    assert_eq!(
        service.expect_updates(2, "one request"),
        [update(pid, 0o44, Status::TAKEN), update(pid, 0o44, Status::AVAIL)]
    );
    assert_eq!(c.ask("someone@example.org"), "DUNNO");
    service.expect_updates(2, "the second request on the same connection");
    // Two requests in one write: the second is buffered behind the first
    // and served without any more data arriving.
    c.send(&(request("a@example.org") + &request("BLOCKED@example.com")));
    assert_eq!(c.answer(), "DUNNO");
    assert_eq!(c.answer(), "REJECT sender BLOCKED@example.com is blocked");
    let updates = service.expect_updates(4, "two pipelined requests");
    let statuses: Vec<Status> = updates.iter().map(|u| u.status).collect();
    assert_eq!(statuses, [Status::TAKEN, Status::AVAIL, Status::TAKEN, Status::AVAIL]);
    c.close();
    service.close();
    child.expect_clean_exit("the master closed the channel");
}

fn many_clients_share_one_process(transport: AnyTransport) {
    let path = SocketPath::new();
    let mut service = Service::new(transport, 1);
    let mut child = spawn(&mut service, &path, &["-o", "max_idle=3600"]);
    let mut clients: Vec<PolicyClient> = (0..4).map(|_| PolicyClient::connect(&path)).collect();
    for round in 0..3 {
        for (n, c) in clients.iter_mut().enumerate().rev() {
            assert_eq!(c.ask(&format!("c{n}r{round}@example.org")), "DUNNO");
        }
    }
    service.expect_updates(2 * 4 * 3, "a TAKEN and an AVAIL for every request of every client");
    for c in clients {
        c.close();
    }
    service.close();
    child.expect_clean_exit("the master closed the channel");
}

fn a_client_counts_toward_max_use_when_it_disconnects(transport: AnyTransport) {
    let path = SocketPath::new();
    let mut service = Service::new(transport, 1);
    let mut child = spawn(&mut service, &path, &["-v", "-o", "max_use=2", "-o", "max_idle=3600"]);
    let soon = || Instant::now() + Duration::from_millis(300);
    // Three requests from one client are one use, not three.
    let mut a = PolicyClient::connect(&path);
    for _ in 0..3 {
        assert_eq!(a.ask("x@example.org"), "DUNNO");
    }
    a.close();
    assert!(!child.exits_before(soon()), "exited after one client (max_use=2): requests were counted as uses");
    // The second use, while a third client is still connected: the process
    // goes on until that one leaves too.
    let mut b = PolicyClient::connect(&path);
    let mut c = PolicyClient::connect(&path);
    assert_eq!(b.ask("y@example.org"), "DUNNO");
    assert_eq!(c.ask("z@example.org"), "DUNNO");
    b.close();
    assert!(!child.exits_before(soon()), "exited with a client connected");
    assert_eq!(c.ask("z@example.org"), "DUNNO", "still served after max_use clients came");
    service.expect_updates(2 * 6, "six requests");
    c.close();
    child.expect_clean_exit("max_use clients have disconnected");
    assert!(child.stderr_text().contains("use limit reached -- exiting"), "{}", child.stderr_text());
}

fn the_idle_timer_runs_only_while_no_client_is_connected(transport: AnyTransport) {
    let path = SocketPath::new();
    let mut service = Service::new(transport, 1);
    let mut child = spawn(&mut service, &path, &["-v", "-o", "max_idle=1s"]);
    let mut c = PolicyClient::connect(&path);
    assert_eq!(c.ask("x@example.org"), "DUNNO");
    // A connected client that says nothing for twice max_idle keeps the
    // process alive.
    assert!(!child.exits_before(Instant::now() + Duration::from_secs(2)), "idle timeout with a client connected");
    assert_eq!(c.ask("x@example.org"), "DUNNO");
    service.expect_updates(4, "two requests");
    // Once it leaves, a whole max_idle later the process exits.
    c.close();
    let left = Instant::now();
    child.expect_clean_exit("max_idle after the last client left");
    assert!(left.elapsed() >= Duration::from_millis(900), "exited {:?} after the last client left", left.elapsed());
    assert!(child.stderr_text().contains("idle timeout -- exiting"), "{}", child.stderr_text());
}

fn the_masters_leaving_ends_the_process_with_clients_connected(transport: AnyTransport) {
    let path = SocketPath::new();
    let mut service = Service::new(transport, 1);
    let mut child = spawn(&mut service, &path, &["-v", "-o", "max_idle=3600"]);
    let mut c = PolicyClient::connect(&path);
    assert_eq!(c.ask("x@example.org"), "DUNNO");
    service.expect_updates(2, "one request");
    service.close();
    child.expect_clean_exit("the master closed the channel");
    assert!(child.stderr_text().contains("master disconnect -- exiting"), "{}", child.stderr_text());
    let mut rest = String::new();
    let _ = c.conn.read_to_string(&mut rest);
    assert_eq!(rest, "", "the connection was closed, nothing sent");
}

#[test]
fn stand_alone_answers_requests_from_stdin() {
    let mut child = Running::bare("policy", &["-S", "blocked@example.com"], true);
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all((request("blocked@example.com") + &request("ok@example.com")).as_bytes()).expect("writing");
    drop(stdin);
    let mut out = String::new();
    child.stdout.take().expect("stdout").read_to_string(&mut out).expect("reading stdout");
    assert_eq!(out, "action=REJECT sender blocked@example.com is blocked\n\naction=DUNNO\n\n");
    child.expect_clean_exit("stand-alone, at the end of stdin");
}
