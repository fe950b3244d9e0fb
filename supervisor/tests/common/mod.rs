//! Shared by the supervisor's tests: the child roles (the test binary re-executed), clients, and a bounded way to drive a supervisor.
//!
//! Each test names its case with [`Ctx`] and calls [`play_role`] first: in
//! a re-executed child that plays the role and exits, in the test itself it
//! returns. The children are the test binary, never a `fork()` of the
//! threaded harness. Every wait is bounded by [`WAIT`] and says what it
//! waited for; the only pauses are inside `poll(2)` and `epoll_wait(2)`.

#![allow(dead_code, reason = "each test binary uses only some of the shared helpers")]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use master_proto::{ChildEnv, NotifyError, Status, StatusSink};
pub(crate) use master_proto_conformance::harness::{Ctx, WAIT, fail};
use master_proto_supervisor::{Event, ListenAddr, ServiceId, Supervisor};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{SockFlag, accept4};

/// The roles a re-executed test binary plays.
pub(crate) mod role {
    /// Serves clients (one line echoed per line) until the master goes.
    pub(crate) const ECHO: &str = "echo";
    /// Exits with status 1 at once, having served nobody.
    pub(crate) const DIE: &str = "die";
    /// Serves one client, then exits with status 3.
    pub(crate) const CRASH: &str = "crash";
    /// Takes its channel and then ignores it: never exits by itself.
    pub(crate) const STUBBORN: &str = "stubborn";
    /// Notifies AVAIL as fast as it can until the master goes.
    pub(crate) const FLOOD: &str = "flood";
}

/// Plays this process's role and exits, if it is a re-executed child.
pub(crate) fn play_role(ctx: &Ctx) {
    let Some(role) = ctx.role() else { return };
    let code = match role.as_str() {
        role::ECHO => serve(None),
        role::CRASH => {
            serve(Some(1));
            3
        }
        role::DIE => 1,
        role::STUBBORN => {
            let mut env = ChildEnv::from_process().unwrap_or_else(|e| fail(e));
            let _sink = master_proto_transports::sink_from_env(&mut env).unwrap_or_else(|e| fail(e));
            // Nothing to wait for: the harness's alarm ends it at the
            // latest, the master's SIGKILL much sooner.
            let _ = poll(&mut [], PollTimeout::NONE);
            0
        }
        role::FLOOD => {
            let mut env = ChildEnv::from_process().unwrap_or_else(|e| fail(e));
            let sink = master_proto_transports::sink_from_env(&mut env).unwrap_or_else(|e| fail(e));
            while sink.notify(Status::AVAIL).is_ok() {}
            0
        }
        other => fail(format!("unknown role {other:?}")),
    };
    std::process::exit(code);
}

/// A single-server child: waits on the listening socket and on the
/// master's disconnect together; `TAKEN`, echo, `AVAIL` for each client;
/// exits 0 when the master goes (at once when idle, after the client in
/// hand when busy). With `clients`, returns after that many.
fn serve(clients: Option<u32>) -> i32 {
    let mut env = ChildEnv::from_process().unwrap_or_else(|e| fail(e));
    let sink = master_proto_transports::sink_from_env(&mut env).unwrap_or_else(|e| fail(e));
    let listener = env.take_listen().into_iter().next().unwrap_or_else(|| fail("no listening socket"));
    fcntl(&listener, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap_or_else(|e| fail(e));
    let mut served = 0;
    loop {
        if clients.is_some_and(|n| served >= n) {
            return 0;
        }
        let mut fds =
            [PollFd::new(sink.disconnect_fd(), PollFlags::POLLIN), PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => fail(e),
        }
        if fds[0].any().unwrap_or(true) {
            return 0;
        }
        let client = match accept4(&listener, SockFlag::SOCK_CLOEXEC) {
            Ok(client) => client,
            Err(Errno::EAGAIN | Errno::EINTR | Errno::ECONNABORTED) => continue,
            Err(e) => fail(e),
        };
        let _ = sink.notify(Status::TAKEN);
        echo(client);
        served += 1;
        match sink.notify(Status::AVAIL) {
            Ok(()) => {}
            Err(NotifyError::Disconnected) => return 0,
            Err(e) => fail(e),
        }
    }
}

/// Echoes each line back until the client closes.
fn echo(client: OwnedFd) {
    let mut out = std::fs::File::from(client.try_clone().unwrap_or_else(|e| fail(e)));
    let mut input = BufReader::new(std::fs::File::from(client));
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if out.write_all(&line).is_err() {
                    return;
                }
            }
        }
    }
}

/// A client connection to an echo service.
#[derive(Debug)]
pub(crate) struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    /// Connects (the connection waits in the backlog until a child
    /// accepts it).
    pub(crate) fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Client { stream, reader }
    }

    /// Sends a line and checks that it comes back (bounded by [`WAIT`]).
    pub(crate) fn echo(&mut self, text: &str) {
        self.stream.write_all(format!("{text}\n").as_bytes()).expect("sending");
        let mut back = String::new();
        self.reader.read_line(&mut back).unwrap_or_else(|e| panic!("awaiting the echo of {text:?}: {e}"));
        assert_eq!(back, format!("{text}\n"), "the echo of {text:?}");
    }
}

/// Connects, echoes one line and closes; an error instead of a panic
/// (for clients that may outlive the service).
pub(crate) fn try_echo_once(addr: SocketAddr, text: &str) -> std::io::Result<()> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(WAIT))?;
    (&stream).write_all(format!("{text}\n").as_bytes())?;
    let mut back = String::new();
    BufReader::new(&stream).read_line(&mut back)?;
    if back == format!("{text}\n") { Ok(()) } else { Err(std::io::Error::other(format!("echo {back:?}"))) }
}

/// The one TCP address of a service.
pub(crate) fn tcp_addr(sup: &Supervisor, id: ServiceId) -> SocketAddr {
    match sup.listen_addrs(id).expect("a service").as_slice() {
        [ListenAddr::Tcp(addr)] => *addr,
        other => panic!("not one TCP socket: {other:?}"),
    }
}

/// A supervisor under test, and every event it has reported, with the
/// instant each was seen.
#[derive(Debug)]
pub(crate) struct Driven {
    pub(crate) sup: Supervisor,
    pub(crate) events: Vec<(Instant, Event)>,
}

impl Driven {
    pub(crate) fn new(sup: Supervisor) -> Driven {
        Driven { sup, events: Vec::new() }
    }

    /// One round of the loop, waiting at most 10 ms for readiness (so that
    /// conditions outside the supervisor, such as a client thread's, are
    /// looked at again soon).
    pub(crate) fn turn(&mut self) {
        let events = &mut self.events;
        self.sup.poll_once(Some(Duration::from_millis(10)), |e| events.push((Instant::now(), e))).expect("poll_once");
    }

    /// Drives the supervisor until `done` holds, bounded by [`WAIT`].
    pub(crate) fn until(&mut self, what: &str, mut done: impl FnMut(&Driven) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(self) {
            assert!(Instant::now() < deadline, "{WAIT:?} without {what}; events: {:#?}", self.lines());
            self.turn();
        }
    }

    /// Drives it until an event matches `pick`, which is then returned
    /// (only events after the first `from` are looked at).
    pub(crate) fn until_event<R>(&mut self, what: &str, from: usize, mut pick: impl FnMut(&Event) -> Option<R>) -> R {
        let deadline = Instant::now() + WAIT;
        let mut seen = from;
        loop {
            while seen < self.events.len() {
                let found = pick(&self.events[seen].1);
                seen += 1;
                if let Some(found) = found {
                    return found;
                }
            }
            assert!(Instant::now() < deadline, "{WAIT:?} without {what}; events: {:#?}", self.lines());
            self.turn();
        }
    }

    /// Shuts down and drives until every child is reaped.
    pub(crate) fn shutdown(&mut self) {
        self.sup.shutdown();
        self.until("the shutdown to complete", |d| d.sup.is_done());
    }

    /// The events, one line each, for failure messages.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.events.iter().map(|(_, e)| e.to_string()).collect()
    }

    /// The events matching `pick`.
    pub(crate) fn all<R>(&self, mut pick: impl FnMut(&Event) -> Option<R>) -> Vec<R> {
        self.events.iter().filter_map(|(_, e)| pick(e)).collect()
    }

    /// The pids of every `Spawned` and every `Reaped` event.
    pub(crate) fn spawned_and_reaped(&self) -> (Vec<i32>, Vec<i32>) {
        let mut spawned = self.all(|e| match e {
            Event::Spawned { pid, .. } => Some(*pid),
            _ => None,
        });
        let mut reaped = self.all(|e| match e {
            Event::Reaped { pid, .. } => Some(*pid),
            _ => None,
        });
        spawned.sort_unstable();
        reaped.sort_unstable();
        (spawned, reaped)
    }
}
