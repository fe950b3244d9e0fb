//! Fuzz target `daemon_args`: the daemon's command line as master(8) passes
//! it (`master_proto_daemon::DaemonArgs::parse`), and the time values of
//! its limits (`args::parse_time`).
//!
//! Input: an argument vector, `argv[0]` first (arbitrary strings, NUL bytes
//! and all).
//!
//! Checked:
//! - no panic, whatever the vector, and the same answer twice;
//! - a parsed command line keeps the service's own arguments whole: they
//!   are the input's tail, as given (getopt's `+` mode stops at the first
//!   operand, or after `--`);
//! - every parameter it kept (`-o name=value`, and the options that set
//!   one) has a value that the input holds, and `-s` is a count above 0;
//! - `parse_time` of every input string agrees with a plain model of
//!   Postfix's time values (digits, then at most one unit of `s`, `m`, `h`,
//!   `d`, `w`; seconds when none), overflow refused.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use master_proto_daemon::DaemonArgs;
use master_proto_daemon::args::parse_time;

fuzz_target!(|argv: Vec<String>| {
    let parsed = DaemonArgs::parse(argv.iter().cloned());
    assert_eq!(parsed, DaemonArgs::parse(argv.iter().cloned()), "the same command line, parsed twice");
    if let Ok(args) = &parsed {
        assert!(argv.ends_with(&args.args), "the service's arguments {:?} are not the tail of {argv:?}", args.args);
        for (name, value) in &args.params {
            assert!(
                argv.iter().any(|a| a.contains(value.as_str())),
                "{name}={value}: the value is in no argument of {argv:?}"
            );
        }
        assert_ne!(args.sockets, Some(0), "-s 0 was accepted from {argv:?}");
    }
    for value in &argv {
        assert_eq!(parse_time(value), model_time(value), "parse_time({value:?})");
    }
});

/// Postfix's time values, plainly: decimal digits, then at most one unit.
fn model_time(value: &str) -> Option<Duration> {
    let (digits, scale) = match value.as_bytes().last()? {
        b's' => (&value[..value.len() - 1], 1),
        b'm' => (&value[..value.len() - 1], 60),
        b'h' => (&value[..value.len() - 1], 3600),
        b'd' => (&value[..value.len() - 1], 86_400),
        b'w' => (&value[..value.len() - 1], 604_800),
        b'0'..=b'9' => (value, 1),
        _ => return None,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(scale).map(Duration::from_secs)
}
