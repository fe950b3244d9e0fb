//! Project tasks, run as `cargo xtask <task>`.
//!
//! - `bench`: every transport side by side (see [`bench`](mod@bench));
//! - `demo`: a real prefork master (see [`demo`](mod@demo));
//! - `soak`: a long run over every transport (see [`soak`](mod@soak)).

use std::ffi::OsString;
use std::process::ExitCode;

mod bench;
mod checked;
mod demo;
mod release;
mod soak;
mod stats;
mod sys;

const USAGE: &str = "usage: cargo xtask <bench|demo|soak> [OPTIONS]  (--help after the task for its options)";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let task = args.next();
    let rest: Vec<OsString> = args.collect();
    match task.as_ref().and_then(|t| t.to_str()) {
        Some("bench") => bench::main(rest),
        Some("demo") => demo::main(rest),
        Some("soak") => soak::main(rest),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("cargo xtask: unknown task {other:?}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
