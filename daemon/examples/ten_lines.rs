//! `ten_lines`: the README's ten-line service, a Postfix single_server that answers each client with its line count.
use std::io::{BufRead, Write};

fn main() -> std::process::ExitCode {
    master_proto_daemon::Daemon::main(|daemon| {
        daemon.single_server(|client| {
            let lines = client.lines().count();
            writeln!(client, "{lines} lines")
        })
    })
}
