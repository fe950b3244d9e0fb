//! The README's ten-line service is `examples/ten_lines.rs` (the README's copy is compiled as a doctest of this crate too): the two must say the same.

#[test]
fn the_readme_shows_the_ten_line_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("examples/ten_lines.rs")).expect("reading the example");
    let readme = std::fs::read_to_string(root.join("../README.md")).expect("reading the README");
    // The example without its leading //! line.
    let code: String = example.lines().skip_while(|l| l.starts_with("//!")).map(|l| format!("{l}\n")).collect();
    let block = format!("```rust,no_run\n{}```", code.trim_start());
    assert!(readme.contains(&block), "README.md should show examples/ten_lines.rs as:\n{block}");
    assert!(code.lines().filter(|l| !l.trim().is_empty()).count() <= 10, "ten lines at most:\n{code}");
}
