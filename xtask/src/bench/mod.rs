//! `cargo xtask bench` (not available yet).

use std::ffi::OsString;
use std::process::ExitCode;

/// Runs the task with its arguments.
pub(crate) fn main(args: Vec<OsString>) -> ExitCode {
    let _ = args;
    eprintln!("cargo xtask bench: not available yet");
    ExitCode::FAILURE
}
