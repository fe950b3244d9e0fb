//! The demo's own service: a line-echo child on the child side of the status protocol.
//!
//! The master runs it by re-executing the xtask binary as
//! `xtask demo --echo-child`, with the standard environment installed
//! ([`master_proto::ChildFds`]). It reads that environment back
//! ([`ChildEnv::from_process`]), builds the sink of the transport the master
//! named in `MASTER_STATUS_TRANSPORT`, and then, like a Postfix
//! `single_server` daemon:
//!
//! - waits in poll(2) on the listening socket (fd 6) and on the sink's
//!   disconnect descriptor together;
//! - accepts a client (the socket is shared with the service's other
//!   children: a lost race is `EAGAIN` and means waiting again), notifies
//!   `TAKEN`, echoes each line until the client closes, notifies `AVAIL`;
//! - exits with status 0 when the master goes away: seen while idle on the
//!   disconnect descriptor, or while serving as a failed `AVAIL` (the
//!   client in hand is served to the end first).
//!
//! With `DEMO_GOSSIP=1` in its environment it also sends the undefined
//! status value 7 after each client, for the master to show and count.
//!
//! # Errors
//!
//! An incomplete environment, an unknown transport or a failed
//! notification other than the master's leaving: a line on standard error
//! and exit status 1.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use master_proto::{ChildEnv, NotifyError, Status, StatusSink};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{SockFlag, accept4, setsockopt, sockopt};
use nix::sys::time::TimeVal;

/// The environment variable that turns on `--gossip` in a child.
pub(super) const GOSSIP_VAR: &str = "DEMO_GOSSIP";

/// The undefined status value a gossiping child sends.
pub(super) const GOSSIP_STATUS: Status = Status(7);

/// How long a client may stay silent before the child gives up on it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the child; its exit status says how it ended.
pub(super) fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            let line = format!("demo child[{}]: {why}\n", std::process::id());
            let _ = io::stderr().lock().write_all(line.as_bytes());
            ExitCode::FAILURE
        }
    }
}

/// Reads the environment and serves with the transport it names.
fn run() -> Result<(), String> {
    let mut env = ChildEnv::from_process().map_err(|e| e.to_string())?;
    let sink = master_proto_transports::sink_from_env(&mut env).map_err(|e| e.to_string())?;
    let listener = env.take_listen().into_iter().next().ok_or("no listening socket at fd 6")?;
    // Shared with the other children, which may take a connection between
    // our poll and our accept.
    fcntl(&listener, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(|e| format!("listening socket: {e}"))?;
    let gossip = std::env::var_os(GOSSIP_VAR).is_some_and(|v| v == "1");
    loop {
        let mut fds =
            [PollFd::new(sink.disconnect_fd(), PollFlags::POLLIN), PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        if fds[0].any().unwrap_or(true) {
            return Ok(()); // the master has gone
        }
        if !fds[1].any().unwrap_or(false) {
            continue;
        }
        let client = match accept4(&listener, SockFlag::SOCK_CLOEXEC) {
            Ok(client) => client,
            Err(Errno::EAGAIN | Errno::EINTR | Errno::ECONNABORTED) => continue,
            Err(e) => return Err(format!("accept: {e}")),
        };
        // As Postfix: a failed TAKEN is not a reason to drop the client in
        // hand; the AVAIL after it fails the same way and ends the process.
        let _ = sink.notify(Status::TAKEN);
        if let Err(e) = echo(client) {
            let line = format!("demo child[{}]: client: {e}\n", std::process::id());
            let _ = io::stderr().lock().write_all(line.as_bytes());
        }
        if gossip {
            let _ = sink.notify(GOSSIP_STATUS);
        }
        match sink.notify(Status::AVAIL) {
            Ok(()) => {}
            Err(NotifyError::Disconnected) => return Ok(()),
            Err(e) => return Err(format!("notify AVAIL: {e}")),
        }
    }
}

/// Echoes each line of `client` back until it closes its end.
fn echo(client: OwnedFd) -> io::Result<()> {
    let timeout = TimeVal::new(CLIENT_TIMEOUT.as_secs().try_into().unwrap_or(i64::MAX), 0);
    setsockopt(&client, sockopt::ReceiveTimeout, &timeout)?;
    setsockopt(&client, sockopt::SendTimeout, &timeout)?;
    let mut output = File::from(client.try_clone()?);
    let mut input = BufReader::new(File::from(client));
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        output.write_all(&line)?;
    }
}
