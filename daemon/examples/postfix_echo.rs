//! `postfix_echo`: a single-server line echo service that runs under a real Postfix master(8).
//!
//! # Synopsis
//!
//! `postfix_echo` \[Postfix daemon options: `-cdDlSuvVz -i -m -n -o -s -t`\]
//!
//! # Description
//!
//! A Postfix `single_server(3)` daemon, written with
//! [`master_proto_daemon::Daemon::single_server`]: it echoes every line a
//! client sends until the client closes its end, one client at a time, and
//! tells the master `TAKEN` before each client and `AVAIL` after, on
//! whichever transport the master chose (Postfix's duplex pipe under a real
//! master(8)). The crate does the rest as Postfix does: the options
//! ([`master_proto_daemon::args`]), the shared non-blocking listening
//! sockets, `max_use`, `max_idle`, `ipc_timeout`, and exit (status 0) when
//! the master goes. `-S` serves stdin/stdout once, without a master. A
//! line longer than `line_length_limit` (default 2048) comes back in pieces.
//!
//! # Adding it to master.cf
//!
//! `cargo build --release --example postfix_echo`, copy
//! `target/release/examples/postfix_echo` into Postfix's `daemon_directory`,
//! then `postfix reload` with (`unpriv` is `n`: see *Bugs*):
//!
//! ```text
//! echo      unix  -       n       n       -       -       postfix_echo
//! 127.0.0.1:7777 inet n   n       n       -       4       postfix_echo -o max_idle=30s
//! ```
//!
//! # Diagnostics
//!
//! `postfix_echo[pid]: ...` on stderr; with `-v` a line per client and why
//! it exits. Exit status 0 (master gone, `max_use`, `max_idle`, `-S` done),
//! 1 after `fatal: ...`, 2 after a usage message.
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

use master_proto_daemon::{ArgsError, Client, Daemon, log};

fn main() -> ExitCode {
    Daemon::main(|daemon| {
        let args = daemon.args().clone();
        args.no_operands()?;
        let limit = match args.count_param("line_length_limit", 2048)? {
            0 => return Err(ArgsError::BadCount { name: "line_length_limit".into(), value: "0".into() }.into()),
            n => n,
        };
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
