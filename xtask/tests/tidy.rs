//! House rules, checked as ordinary tests over every Rust file of the
//! workspace.
//!
//! - every file opens with a `//!` line saying what it is;
//! - no ignored or panic-expecting tests, and no `todo`, `unimplemented`
//!   or `dbg` macro calls;
//! - the transport names are listed only by the facade and the transport
//!   crates;
//! - `unsafe` appears only in files that opt in with
//!   `#![allow(unsafe_code)]` and a reason, and every `unsafe` block or
//!   `unsafe impl` has a `// SAFETY:` comment right above it (clippy's
//!   `undocumented_unsafe_blocks` checks the blocks the compiler sees; this
//!   also covers code behind a `cfg` that is not built here).

use std::path::{Path, PathBuf};

/// The workspace root: the parent of this crate's folder.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_owned()
}

/// Every `.rs` file below the workspace root, outside `target/` and hidden
/// folders, except this one (which has to name what it looks for).
fn rust_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read_dir").map(|e| e.expect("entry").path()).collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            if path.ends_with(file!()) {
                continue;
            }
            if path.is_dir() {
                walk(&path, out);
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&workspace(), &mut out);
    assert!(out.len() > 10, "found only {} Rust files: is the walk broken?", out.len());
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rel(path: &Path) -> String {
    path.strip_prefix(workspace()).unwrap_or(path).display().to_string()
}

#[test]
fn every_file_says_what_it_is() {
    let missing: Vec<String> =
        rust_files().into_iter().filter(|p| !read(p).trim_start().starts_with("//!")).map(|p| rel(&p)).collect();
    assert!(missing.is_empty(), "files without a leading //! line: {missing:?}");
}

#[test]
fn no_ignored_tests_or_placeholders() {
    // Spelled in pieces so that this file does not match itself.
    let banned = [
        ["#[", "ignore"].concat(),
        ["#[", "should_panic"].concat(),
        ["todo", "!("].concat(),
        ["unimplemented", "!("].concat(),
        ["dbg", "!("].concat(),
    ];
    let mut hits = Vec::new();
    for path in rust_files() {
        for (n, line) in read(&path).lines().enumerate() {
            if let Some(b) = banned.iter().find(|b| line.contains(b.as_str())) {
                hits.push(format!("{}:{}: {b}", rel(&path), n + 1));
            }
        }
    }
    assert!(hits.is_empty(), "banned constructs: {hits:#?}");
}

#[test]
fn unsafe_is_opted_into_and_justified() {
    let mut problems = Vec::new();
    for path in rust_files() {
        let text = read(&path);
        let lines: Vec<&str> = text.lines().collect();
        let mut uses_unsafe = false;
        for (n, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            let block = code.contains("unsafe {") || code.contains("unsafe impl");
            let call = code.contains("unsafe fn");
            if !(block || call) {
                continue;
            }
            uses_unsafe = true;
            if block {
                // The SAFETY comment may sit above the statement that holds
                // the block: look back over the statement's own lines and
                // the comment lines before them.
                let justified = lines[..n]
                    .iter()
                    .rev()
                    .take(12)
                    .take_while(|l| !l.trim().is_empty())
                    .any(|l| l.trim_start().starts_with("// SAFETY:"));
                if !justified {
                    problems.push(format!("{}:{}: unsafe without a // SAFETY: comment above", rel(&path), n + 1));
                }
            }
        }
        if uses_unsafe && !text.contains("#![allow(unsafe_code)]") {
            problems.push(format!("{}: uses unsafe without #![allow(unsafe_code)]", rel(&path)));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The files that may say which transports exist: the facade's root, and
/// each transport crate's own sources.
fn may_list_transports(rel: &str) -> bool {
    rel == "transports/src/lib.rs" || (rel.starts_with("transport-") && rel.contains("/src/"))
}

#[test]
fn transport_names_are_listed_in_one_place() {
    // A file that names more than two transports as string literals is
    // keeping a list of its own (a dispatch by name, a table of
    // mechanisms); one or two are a choice of subject, as in a test.
    let names = master_proto_transports::NAMES;
    assert!(names.len() > 2, "this check needs the whole list: {names:?}");
    let mut lists = Vec::new();
    for path in rust_files() {
        let rel = rel(&path);
        if may_list_transports(&rel) {
            continue;
        }
        let text = read(&path);
        let named: Vec<&str> = names.iter().copied().filter(|n| text.contains(&format!("\"{n}\""))).collect();
        if named.len() > 2 {
            lists.push(format!("{rel}: {named:?}"));
        }
    }
    assert!(lists.is_empty(), "files listing transport names (take them from master-proto-transports): {lists:#?}");
}
