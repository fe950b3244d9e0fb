//! single_server: one client at a time, `TAKEN` while serving it, `AVAIL` after.
//!
//! The loop of Postfix's `single_server_main`:
//!
//! 1. exit once `max_use` clients were served ([`ExitReason::UseLimit`]);
//! 2. wait for a client on any listening socket, for the master to go, or
//!    for `max_idle` to pass since the last client (or the start);
//! 3. master gone ([`ExitReason::MasterDisconnect`]) or idle time over
//!    ([`ExitReason::IdleTimeout`]): exit;
//! 4. accept; a lost race (another child took the connection) means
//!    waiting again, with the idle time left as it was;
//! 5. `TAKEN`, the handler, close, `AVAIL`; an `AVAIL` that says
//!    `Disconnected` ends the process.
//!
//! With `-S` the handler serves one client on stdin/stdout, without a
//! master, and the skeleton returns [`ExitReason::StandAloneDone`].
//!
//! # Errors
//!
//! [`ServerError`], fatal; a handler's error only ends its client (an
//! [`Event::Closed`] with the error).
//!
//! # See also
//!
//! Postfix `src/master/single_server.c` (`single_server_main`,
//! `single_server_wakeup`, `single_server_accept_inet`).

use std::io::{self, Write};
use std::time::Duration;

use master_proto::StatusSink;
use master_proto_transports::AnySink;

use crate::client::{Client, Conn};
use crate::event::{Event, ExitReason};
use crate::listen::is_lost_race;
use crate::server::{Daemon, ServerError, deadline, passed, wait};

impl Daemon {
    /// Runs Postfix's single_server loop (module docs): `handler` serves
    /// one whole client, between `TAKEN` and `AVAIL`; the connection is
    /// closed when it returns. Returns why the process should now exit
    /// (with status 0).
    ///
    /// # Errors
    ///
    /// [`ServerError`] for what is fatal to a Postfix server: a bad
    /// standard environment or listening socket, too many accept errors,
    /// an `AVAIL` that failed for another reason than the master's
    /// leaving, a stand-alone client whose handler failed.
    pub fn single_server(
        self,
        mut handler: impl FnMut(&mut Client) -> io::Result<()>,
    ) -> Result<ExitReason, ServerError> {
        self.single_server_with_sink(|client, _| handler(client))
    }

    /// As [`single_server`](Daemon::single_server), with the status sink
    /// passed to the handler too, for a service that tells the master more
    /// than the skeleton does (a load test sending undefined status values
    /// to see the master ignore them, say). The sink is the stand-alone
    /// one, [`None`], with `-S`.
    ///
    /// # Errors
    ///
    /// As [`single_server`](Daemon::single_server).
    pub fn single_server_with_sink(
        mut self,
        mut handler: impl FnMut(&mut Client, Option<&AnySink>) -> io::Result<()>,
    ) -> Result<ExitReason, ServerError> {
        if self.args.stand_alone {
            let mut client = Client::new(Conn::Stdio(io::stdin(), io::stdout()), 1, Duration::ZERO)
                .map_err(|e| ServerError::StandAlone(e.kind()))?;
            handler(&mut client, None).and_then(|()| client.flush()).map_err(|e| ServerError::StandAlone(e.kind()))?;
            return self.exit(ExitReason::StandAloneDone);
        }
        let (sink, listeners) = self.setup()?;
        let limits = self.args.limits;
        let mut served: u64 = 0;
        let mut accept_errors = 0;
        let mut idle_until = deadline(limits.max_idle);
        loop {
            if limits.max_use > 0 && served >= limits.max_use {
                return self.exit(ExitReason::UseLimit);
            }
            if passed(idle_until) {
                return self.exit(ExitReason::IdleTimeout);
            }
            let ready = wait(sink.disconnect_fd(), &listeners, &[], idle_until)?;
            if ready.master_gone {
                return self.exit(ExitReason::MasterDisconnect);
            }
            for i in ready.listeners {
                let mut client = match listeners[i].accept(served + 1, limits.ipc_timeout) {
                    Ok(client) => client,
                    Err(errno) if is_lost_race(errno) => {
                        self.report(&Event::LostRace { errno });
                        continue;
                    }
                    Err(errno) => {
                        self.accept_failed(errno, &mut accept_errors)?;
                        continue;
                    }
                };
                served += 1;
                self.report(&Event::Connected { client: client.number(), peer: client.peer() });
                self.taken(&sink);
                let result = handler(&mut client, Some(&sink));
                // The client sees EOF before the master sees AVAIL.
                client.shutdown();
                self.report(&Event::Closed {
                    client: client.number(),
                    peer: client.peer(),
                    error: result.as_ref().err(),
                });
                if !self.avail(&sink)? {
                    return self.exit(ExitReason::MasterDisconnect);
                }
                idle_until = deadline(limits.max_idle);
                // Back to the top: the use limit may have been reached.
                break;
            }
        }
    }
}
