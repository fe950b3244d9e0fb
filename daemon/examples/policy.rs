//! `policy`: a Postfix SMTP access policy daemon that rejects the senders named on its command line.
//!
//! # Synopsis
//!
//! `policy` \[Postfix daemon options\] \[*sender* ...\]
//!
//! # Description
//!
//! A Postfix `multi_server(3)` daemon, written with
//! [`master_proto_daemon::Daemon::multi_server`], that speaks Postfix's
//! policy delegation protocol (SMTPD_POLICY_README): smtpd(8) sends a
//! request as `name=value` lines ending in an empty line, many requests
//! per connection, and reads back `action=...` and an empty line. A
//! request whose `sender` is one of the *sender* arguments (in any case)
//! gets `action=REJECT sender <sender> is blocked`; any other gets
//! `action=DUNNO`. Each request is served between `TAKEN` and `AVAIL`.
//!
//! # Adding it to Postfix
//!
//! `cargo build --release --example policy`, copy
//! `target/release/examples/policy` into Postfix's `daemon_directory`, and:
//!
//! ```text
//! # master.cf
//! policy    unix  -       n       n       -       -       policy blocked@example.com
//! # main.cf
//! smtpd_recipient_restrictions = check_policy_service unix:private/policy, ...
//! ```
//!
//! # Diagnostics
//!
//! `policy[pid]: ...` on stderr; with `-v` one line per request. A request
//! over 100 lines, or a line over 4096 bytes, closes the connection.
//! Exit status as `postfix_echo`'s.
//!
//! # See also
//!
//! SMTPD_POLICY_README, master(8), Postfix `src/master/multi_server.c`.

use std::io::{self, BufRead, Read, Write};
use std::process::ExitCode;

use master_proto_daemon::{Client, Daemon, Session, log};

fn main() -> ExitCode {
    Daemon::main(|daemon| {
        let args = daemon.args().clone();
        let blocked: Vec<String> = args.args.iter().map(|s| s.to_lowercase()).collect();
        daemon.multi_server(|client| {
            let Some(sender) = read_request(client)? else { return Ok(Session::Close) };
            let action = match sender {
                Some(s) if blocked.contains(&s.to_lowercase()) => format!("REJECT sender {s} is blocked"),
                _ => "DUNNO".to_owned(),
            };
            if args.verbose > 0 {
                log(&args.program, format_args!("{}: client {}: action={action}", args.service_name, client.number()));
            }
            write!(client, "action={action}\n\n")?;
            Ok(Session::Keep)
        })
    })
}

/// Reads one request; returns its `sender` attribute, or `None` at EOF.
fn read_request(client: &mut Client) -> io::Result<Option<Option<String>>> {
    let (mut sender, mut line) = (None, String::new());
    for n in 0..100 {
        line.clear();
        if (&mut *client).take(4096).read_line(&mut line)? == 0 || !line.ends_with('\n') {
            let partial = n > 0 || !line.is_empty();
            return if partial { Err(io::Error::new(io::ErrorKind::InvalidData, "cut-off request")) } else { Ok(None) };
        }
        match line.trim_end_matches(['\r', '\n']).split_once('=') {
            None if line.trim().is_empty() => return Ok(Some(sender)),
            Some(("sender", value)) => sender = Some(value.to_owned()),
            _ => {}
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "request too long"))
}
