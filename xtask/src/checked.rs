//! `--check-json PATH` for the tasks that write JSON (bench, soak): read the
//! file, check it, say what is wrong with it.

use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

/// Reads `path` as JSON and runs `check` on it: one line per problem on
/// standard error (exit status 1), or a line saying that it passed, whose
/// tail is `passed`.
pub(crate) fn check_json_file(
    task: &str,
    path: &Path,
    check: impl FnOnce(&Value) -> Result<(), Vec<String>>,
    passed: &str,
) -> ExitCode {
    let doc: Value = match std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(doc) => doc,
        Err(e) => {
            eprintln!("cargo xtask {task}: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    match check(&doc) {
        Ok(()) => {
            let rows = doc["rows"].as_array().map_or(0, Vec::len);
            println!("{}: {rows} rows, {passed}", path.display());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in problems {
                eprintln!("{}: {p}", path.display());
            }
            ExitCode::FAILURE
        }
    }
}
