//! multi_server: many clients per process; the handler serves one request whenever a client has data.
//!
//! The loop of Postfix's `multi_server_main`:
//!
//! - a new connection is accepted and kept; the idle timer stops while
//!   any client is connected;
//! - a client with data (or a request already buffered) gets the handler,
//!   between `TAKEN` and `AVAIL` (Postfix's `multi_server_execute`); a
//!   client at EOF is closed without bothering the handler; a handler
//!   that returns [`Session::Close`] or an error closes its client;
//! - a client counts toward `max_use` when it disconnects; once no client
//!   is connected, the process exits if `max_use` clients have been
//!   served, and otherwise starts the idle timer again (a whole
//!   `max_idle`);
//! - the master's leaving ends the process at once, connected clients or
//!   not (they reconnect to another child), as does an `AVAIL` that says
//!   `Disconnected`.
//!
//! As in Postfix, a process that reached `max_use` still accepts while it
//! has clients, and requests are served one at a time, in the order their
//! clients became readable. With `-S` the handler serves requests from
//! stdin (answers to stdout) until EOF or [`Session::Close`] (Postfix
//! serves one).
//!
//! # Errors
//!
//! [`ServerError`], fatal; a handler's error only closes its client.
//!
//! # See also
//!
//! Postfix `src/master/multi_server.c` (`multi_server_main`,
//! `multi_server_execute`, `multi_server_disconnect`).

use std::io::{self, BufRead, Write};
use std::time::{Duration, Instant};

use master_proto::StatusSink;

use crate::client::{Client, Conn};
use crate::event::{Event, ExitReason};
use crate::listen::is_lost_race;
use crate::server::{Daemon, ServerError, deadline, passed, wait};

/// What a multi_server handler wants done with its client after a
/// request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Session {
    /// Keep the connection for the client's next request.
    Keep,
    /// Close it (Postfix's `multi_server_disconnect`).
    Close,
}

/// Whether a client has a request to serve: bytes buffered or arriving
/// (`Some(Ok)`), EOF (`None`), or an error.
fn has_request(client: &mut Client) -> Option<io::Result<()>> {
    if client.has_buffered() {
        return Some(Ok(()));
    }
    match client.fill_buf() {
        Ok([]) => None,
        Ok(_) => Some(Ok(())),
        Err(e) => Some(Err(e)),
    }
}

impl Daemon {
    /// Runs Postfix's multi_server loop (module docs): `handler` serves one
    /// request of a client that has data, between `TAKEN` and `AVAIL`.
    /// Returns why the process should now exit (with status 0).
    ///
    /// # Errors
    ///
    /// As [`single_server`](Daemon::single_server).
    pub fn multi_server(
        mut self,
        mut handler: impl FnMut(&mut Client) -> io::Result<Session>,
    ) -> Result<ExitReason, ServerError> {
        if self.args.stand_alone {
            let mut client = Client::new(Conn::Stdio(io::stdin(), io::stdout()), 1, Duration::ZERO)
                .map_err(|e| ServerError::StandAlone(e.kind()))?;
            while let Some(ready) = has_request(&mut client) {
                ready.map_err(|e| ServerError::StandAlone(e.kind()))?;
                let session = handler(&mut client).map_err(|e| ServerError::StandAlone(e.kind()))?;
                client.flush().map_err(|e| ServerError::StandAlone(e.kind()))?;
                if session == Session::Close {
                    break;
                }
            }
            return self.exit(ExitReason::StandAloneDone);
        }
        let (sink, listeners) = self.setup()?;
        let limits = self.args.limits;
        let mut clients: Vec<Client> = Vec::new();
        let mut accepted: u64 = 0;
        let mut use_count: u64 = 0;
        let mut accept_errors = 0;
        let mut idle_until = deadline(limits.max_idle);
        loop {
            if clients.is_empty() {
                if limits.max_use > 0 && use_count >= limits.max_use {
                    return self.exit(ExitReason::UseLimit);
                }
                if passed(idle_until) {
                    return self.exit(ExitReason::IdleTimeout);
                }
            }
            // A request already buffered is served without waiting; the
            // idle timer runs only while no client is connected.
            let buffered: Vec<usize> = (0..clients.len()).filter(|&i| clients[i].has_buffered()).collect();
            let until = if !buffered.is_empty() {
                Some(Instant::now())
            } else if clients.is_empty() {
                idle_until
            } else {
                None
            };
            let ready = wait(sink.disconnect_fd(), &listeners, &clients, until)?;
            if ready.master_gone {
                return self.exit(ExitReason::MasterDisconnect);
            }
            let mut serve: Vec<usize> = ready.clients;
            serve.extend(buffered);
            serve.sort_unstable();
            serve.dedup();
            let mut closed: Vec<(usize, Option<io::Error>)> = Vec::new();
            for i in serve {
                let client = &mut clients[i];
                match has_request(client) {
                    None => closed.push((i, None)),
                    Some(Err(e)) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                    Some(Err(e)) => closed.push((i, Some(e))),
                    Some(Ok(())) => {
                        self.taken(&sink);
                        let result = handler(client);
                        if !self.avail(&sink)? {
                            return self.exit(ExitReason::MasterDisconnect);
                        }
                        match result {
                            Ok(Session::Keep) => {}
                            Ok(Session::Close) => closed.push((i, None)),
                            Err(e) => closed.push((i, Some(e))),
                        }
                    }
                }
            }
            // Highest index first, so that the others stay put.
            for (i, error) in closed.into_iter().rev() {
                let client = clients.remove(i);
                client.shutdown();
                use_count = use_count.saturating_add(1);
                self.report(&Event::Closed { client: client.number(), peer: client.peer(), error: error.as_ref() });
                if clients.is_empty() {
                    idle_until = deadline(limits.max_idle);
                }
            }
            for i in ready.listeners {
                match listeners[i].accept(accepted + 1, limits.ipc_timeout) {
                    Ok(client) => {
                        accepted += 1;
                        self.report(&Event::Connected { client: client.number(), peer: client.peer() });
                        clients.push(client);
                    }
                    Err(errno) if is_lost_race(errno) => self.report(&Event::LostRace { errno }),
                    Err(errno) => self.accept_failed(errno, &mut accept_errors)?,
                }
            }
        }
    }
}
