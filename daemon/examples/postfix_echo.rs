//! `postfix_echo`: a single-server line echo service that runs under a real Postfix master(8).
//!
//! # Synopsis
//!
//! `postfix_echo` \[`-cdDlSuvVz`\] \[`-i -m -n -o -s -t` *value*\]
//!
//! # Description
//!
//! A Postfix `single_server(3)` daemon on
//! [`master_proto_daemon::Daemon::single_server`]: it echoes each line of a
//! client until the client closes its end, one client at a time, `TAKEN`
//! before each client and `AVAIL` after, on whichever transport the master
//! chose. The crate does the rest as Postfix does: the options
//! ([`master_proto_daemon::args`]), shared listening sockets, `max_use`,
//! `max_idle`, `ipc_timeout`, exit when the master goes; `-S` serves
//! stdin/stdout. Lines over `line_length_limit` (2048) come back in pieces.
//!
//! # Adding it to master.cf
//!
//! Copy `target/release/examples/postfix_echo` into Postfix's
//! `daemon_directory`, then `postfix reload` with (`unpriv`: see *Bugs*):
//!
//! ```text
//! echo      unix  -       n       n       -       -       postfix_echo
//! 127.0.0.1:7777 inet n   n       n       -       4       postfix_echo -o max_idle=30s
//! ```
//!
//! # Diagnostics
//!
//! `postfix_echo[pid]: ...` on stderr, with `-v` a line per client. Exit
//! status 0 (normal exit), 1 after `fatal: ...`, 2 after a usage message.
//!
//! # Bugs
//!
//! No chroot (`-c`), no privilege drop (`-u`), no in-flow control.
//!
//! # See also
//!
//! master(8), master.cf(5), Postfix `src/master/single_server.c`.

use std::io::{self, BufRead, Read, Write};
use std::process::ExitCode;

use master_proto_daemon::{Client, Daemon, log};

fn main() -> ExitCode {
    Daemon::main(|daemon| {
        let args = daemon.args().clone();
        args.no_operands()?;
        let limit = args.count_param("line_length_limit", 2048)?.max(1);
        daemon.single_server(|client| {
            let (lines, bytes, result) = echo(client, limit);
            if args.verbose > 0 {
                let outcome = result.as_ref().map_or_else(|e| format!("error: {e}"), |()| "done".to_owned());
                let (n, peer) = (client.number(), client.peer());
                log(
                    &args.program,
                    format_args!(
                        "{}: client {n} from {peer}: {lines} lines, {bytes} bytes, {outcome}",
                        args.service_name
                    ),
                );
            }
            result
        })
    })
}

/// Echoes `client` a line (at most `limit` bytes) at a time until EOF;
/// returns the lines and bytes echoed.
fn echo(client: &mut Client, limit: u64) -> (u64, u64, io::Result<()>) {
    let (mut lines, mut bytes, mut line) = (0, 0, Vec::new());
    loop {
        line.clear();
        match (&mut *client).take(limit).read_until(b'\n', &mut line) {
            Ok(0) => return (lines, bytes, Ok(())),
            Ok(n) => bytes += n as u64,
            Err(e) => return (lines, bytes, Err(e)),
        }
        if let Err(e) = client.write_all(&line) {
            return (lines, bytes, Err(e));
        }
        lines += 1;
    }
}
