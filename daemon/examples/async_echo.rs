//! `async_echo`: the echo service on the async skeletons (feature `tokio`), as a single_server or, with the argument `multi`, a multi_server.
//!
//! # Synopsis
//!
//! `async_echo` \[Postfix daemon options\] \[`multi`\]
//!
//! # Description
//!
//! As `postfix_echo`, written with
//! [`master_proto_daemon::Daemon::single_server_async`]: each line a client
//! sends comes back until it closes its end, `TAKEN` before the client and
//! `AVAIL` after. With `multi` it is a multi_server
//! ([`master_proto_daemon::Daemon::multi_server_async`]) whose requests
//! are single lines: many clients at once, `TAKEN` and `AVAIL` around each
//! line. Build it with `cargo build --example async_echo --features tokio`.
//!
//! # Diagnostics
//!
//! As `postfix_echo`'s.
//!
//! # See also
//!
//! `postfix_echo`, Postfix `src/master/single_server.c`,
//! `src/master/multi_server.c`.

use std::process::ExitCode;

use master_proto_daemon::{Daemon, Session, aio};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

fn main() -> ExitCode {
    Daemon::main(|daemon| {
        if daemon.args().args.iter().any(|a| a == "multi") {
            aio::block_on(daemon.multi_server_async(async |client| {
                let mut line = Vec::new();
                if client.read_until(b'\n', &mut line).await? == 0 {
                    return Ok(Session::Close);
                }
                client.write_all(&line).await?;
                Ok(Session::Keep)
            }))
        } else {
            aio::block_on(daemon.single_server_async(async |client| {
                let mut line = Vec::new();
                while client.read_until(b'\n', &mut line).await? > 0 {
                    client.write_all(&line).await?;
                    line.clear();
                }
                Ok(())
            }))
        }
    })
}
