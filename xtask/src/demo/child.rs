//! The demo's own service: a line-echo child on the child side of the status protocol.
//!
//! The master runs it by re-executing the xtask binary as
//! `xtask demo --echo-child`, with the standard environment installed
//! ([`master_proto::ChildFds`]). It is a single_server written with
//! `master-proto-daemon` ([`Daemon::single_server_with_sink`]), which
//! builds the sink of the transport the master named in
//! `MASTER_STATUS_TRANSPORT`, accepts on the shared listening socket (fd 6,
//! TCP or UNIX-domain, whichever the master made; a lost race is normal),
//! notifies `TAKEN`, runs the echo below, notifies `AVAIL`, and returns
//! when the master goes away (seen while idle on the sink's disconnect
//! descriptor, or while serving as a failed `AVAIL`: the client in hand is
//! served to the end first). Unlike a Postfix daemon it has no use or idle
//! limit: the master decides when it goes.
//!
//! With `DEMO_GOSSIP=1` in its environment it also sends the undefined
//! status value 7 after each client, for the master to show and count.
//!
//! # Errors
//!
//! An incomplete environment, an unknown transport or a failed
//! notification other than the master's leaving: a line on standard error
//! and exit status 1. A client that fails is a line on standard error.

use std::io::{self, BufRead, Write};
use std::process::ExitCode;

use master_proto::{Status, StatusSink};
use master_proto_daemon::{Client, Daemon, DaemonArgs, Level, log};

/// The environment variable that turns on `--gossip` in a child.
pub(super) const GOSSIP_VAR: &str = "DEMO_GOSSIP";

/// The undefined status value a gossiping child sends.
pub(super) const GOSSIP_STATUS: Status = Status(7);

/// The name in the child's log lines.
const NAME: &str = "demo child";

/// Runs the child; its exit status says how it ended.
pub(super) fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            log(NAME, format_args!("{why}"));
            ExitCode::FAILURE
        }
    }
}

/// Serves until the master goes.
fn run() -> Result<(), String> {
    // A client may stay silent for 60 s; no use or idle limit.
    let argv = ["demo-child", "-t", "inet", "-o", "ipc_timeout=60s", "-o", "max_use=0", "-o", "max_idle=0"];
    let mut args = DaemonArgs::parse(argv).map_err(|e| e.to_string())?;
    // The master passes no -t: take the listening socket as it is.
    args.service_type = None;
    let gossip = std::env::var_os(GOSSIP_VAR).is_some_and(|v| v == "1");
    Daemon::new(args)
        .on_event(|event| {
            if event.level() >= Level::Warning {
                log(NAME, format_args!("{event}"));
            }
        })
        .single_server_with_sink(|client, sink| {
            let result = echo(client);
            if let Some(sink) = sink.filter(|_| gossip) {
                let _ = sink.notify(GOSSIP_STATUS);
            }
            result
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Echoes each line of `client` back until it closes its end.
fn echo(client: &mut Client) -> io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if client.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        client.write_all(&line)?;
    }
}
