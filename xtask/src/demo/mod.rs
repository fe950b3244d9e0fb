//! `cargo xtask demo`: a real prefork master for one service, with its own echo child and load generator.
//!
//! - [`options`]: the command line (`--help` lists it);
//! - [`master`]: the master, one service on `master-proto-supervisor`
//!   in a poll(2) loop beside the demo's signals and load generator;
//! - [`child`]: the built-in echo service (`xtask demo --echo-child`, run
//!   by the master only);
//! - [`load`]: the load generator's client threads;
//! - [`view`]: the live terminal view, or one line per event with
//!   `--plain`.
//!
//! The transport named by `--transport` is looked up by name in the
//! transports facade ([`master_proto_transports::AnyTransport`]), so every
//! transport built here can run the demo.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

mod child;
mod load;
mod master;
mod options;
mod view;

/// The hidden first argument that runs the built-in child.
const CHILD_ROLE: &str = "--echo-child";

/// Runs the task with its arguments.
pub(crate) fn main(args: Vec<OsString>) -> ExitCode {
    if args.first().is_some_and(|a| a == CHILD_ROLE) {
        return child::main();
    }
    let mut options = match options::parse(args) {
        Ok(options::Parsed::Run(options)) => options,
        Ok(options::Parsed::Help) => {
            let names = master_proto_transports::NAMES.join(", ");
            let default = options::DEFAULT_TRANSPORT.name();
            println!("{}", options::HELP.replace("{TRANSPORTS}", &names).replace("{DEFAULT}", default));
            return ExitCode::SUCCESS;
        }
        Err(why) => {
            eprintln!("cargo xtask demo: {why}\n(cargo xtask demo --help lists the options)");
            return ExitCode::from(2);
        }
    };
    // The live view needs a terminal to redraw.
    options.plain |= !std::io::stdout().is_terminal();
    match master::run(options.transport, &options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("cargo xtask demo: {why}");
            ExitCode::FAILURE
        }
    }
}
