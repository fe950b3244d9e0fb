//! Re-running a task as a release build: what `bench` and `soak` do when
//! started from a debug build, since a debug build measures nothing worth
//! reporting and runs a soak's millions of updates too slowly.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, ExitCode};

/// Runs `cargo run --release -p xtask [--features F,...] -- TASK ARGS...`
/// and exits as it does. The release build is this very crate, found by
/// its manifest, so the call works from any directory; cargo is the one
/// that started this build (`$CARGO`), else `cargo` from the path.
pub(crate) fn rerun(task: &str, args: &[OsString], features: &[&str]) -> ExitCode {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["run", "--quiet", "--release", "--manifest-path"]).arg(manifest);
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    cmd.args(["--", task]).args(args);
    eprintln!("cargo xtask {task}: running a release build (cargo run --release -p xtask -- {task} ...)");
    match cmd.status() {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("cargo xtask {task}: the release build exited with {s}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("cargo xtask {task}: cannot run cargo: {e}");
            ExitCode::FAILURE
        }
    }
}
