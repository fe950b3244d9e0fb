//! Project tasks, run as `cargo xtask <task>`.
//!
//! No task is implemented yet: `bench` (every transport side by side) and
//! `demo` (a real prefork master) are still to come. Until then this binary
//! says so and exits with an error rather than pretend.

use std::process::ExitCode;

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    eprintln!("cargo xtask: task {task:?} is not available yet (planned: bench, demo)");
    ExitCode::FAILURE
}
