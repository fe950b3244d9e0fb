//! Fuzz target `env`: the child's parsing of its standard environment
//! (`master_proto::env`: `parse_generation`, `parse_listen_count`,
//! `Layout::parse`), the pure part of `ChildEnv::from_process`.
//!
//! Input: the values of `GENERATION`, `MASTER_LISTEN_FDS` and
//! `MASTER_STATUS_AUX`, separated by NUL bytes (which no environment value
//! holds); a missing field is an unset variable, and one that is not UTF-8
//! counts as unset, as `from_process` sees it.
//!
//! Checked:
//! - the result, value or error, is what a separate plain parser of the
//!   documented formats says (octal generation that fits 32 bits; decimal
//!   listen count, 1 when unset; `name:fd,…` with every fd above 2, no
//!   descriptor named twice counting fd 5 and the listening sockets, and
//!   the listening sockets within the descriptor range), errors in the
//!   order `from_process` reports them;
//! - no panic, and no allocation that grows with a number in the input
//!   rather than with its length;
//! - a parsed layout round-trips: the generation written as Postfix writes
//!   it (`%o`) and the aux list as `ChildFds::install` writes it parse back
//!   to the same layout, and its descriptor numbers are distinct and
//!   above 2.

#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use master_proto::EnvError;
use master_proto::env::{Layout, MASTER_LISTEN_FD, MASTER_STATUS_FD, parse_generation, parse_listen_count};

fuzz_target!(|data: &[u8]| {
    let mut fields = data.split(|&b| b == 0).map(|f| std::str::from_utf8(f).ok());
    let generation = fields.next().flatten();
    let listen = fields.next().flatten();
    let aux = fields.next().flatten();

    assert_eq!(parse_generation(generation), model_generation(generation), "GENERATION={generation:?}");
    let listen_count = parse_listen_count(listen);
    assert_eq!(listen_count, model_listen_count(listen), "MASTER_LISTEN_FDS={listen:?}");
    let Ok(listen_count) = listen_count else { return };
    let layout = Layout::parse(generation, listen_count, aux);
    assert_eq!(layout, model_layout(generation, listen_count, aux), "{generation:?} {listen_count} {aux:?}");
    let Ok(layout) = layout else { return };

    // The numbers: fd 5, then the listening sockets, then the aux ones, all
    // distinct and above 2. Look at the aux ones and the ends of the
    // listening range only: the range itself may be long.
    let listen_fds = layout.listen_fds();
    assert_eq!(listen_fds.start, MASTER_LISTEN_FD);
    assert_eq!(usize::try_from(listen_fds.end - listen_fds.start).ok(), Some(listen_count));
    let mut seen = HashSet::from([MASTER_STATUS_FD]);
    for (_, fd) in &layout.aux {
        assert!(*fd > 2 && !listen_fds.contains(fd) && seen.insert(*fd), "fd {fd} named twice or too low");
    }
    let mut fds = layout.fds();
    assert_eq!(fds.next(), Some(MASTER_STATUS_FD));
    if listen_count > 0 {
        assert_eq!(fds.next(), Some(MASTER_LISTEN_FD));
    }
    let aux_fds: Vec<i32> = layout.aux.iter().map(|(_, fd)| *fd).collect();
    assert_eq!(layout.fds().skip(1 + listen_count).collect::<Vec<_>>(), aux_fds);

    // Round trip, as the master writes the variables.
    let generation_text = format!("{:o}", layout.generation);
    let aux_text: Vec<String> = layout.aux.iter().map(|(name, fd)| format!("{name}:{fd}")).collect();
    let aux_text = aux_text.join(",");
    let again = Layout::parse(Some(&generation_text), listen_count, Some(aux_text.as_str()).filter(|t| !t.is_empty()));
    assert_eq!(again.as_ref(), Ok(&layout), "written back as {generation_text:?} and {aux_text:?}");
});

/// `GENERATION`: octal digits, at least one, fitting 32 bits.
fn model_generation(value: Option<&str>) -> Result<u32, EnvError> {
    let v = value.ok_or(EnvError::NoGeneration)?;
    let bad = || EnvError::BadGeneration(v.to_owned());
    if v.is_empty() {
        return Err(bad());
    }
    let mut n: u64 = 0;
    for c in v.chars() {
        let digit = c.to_digit(8).ok_or_else(bad)?;
        n = n * 8 + u64::from(digit);
        if n > u64::from(u32::MAX) {
            return Err(bad());
        }
    }
    u32::try_from(n).map_err(|_| bad())
}

/// Digits, with an optional leading `+` (as Rust's integer parsing takes
/// them), into `T`'s range; `negative` allows a leading `-` too.
fn decimal(text: &str, negative: bool) -> Option<i128> {
    let (sign, digits) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') if negative => (-1, &text[1..]),
        _ => (1, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut n: i128 = 0;
    for b in digits.bytes() {
        n = n * 10 + i128::from(b - b'0');
        if n > i128::from(u64::MAX) {
            return None;
        }
    }
    Some(sign * n)
}

/// `MASTER_LISTEN_FDS`: a decimal count, 1 when unset.
fn model_listen_count(value: Option<&str>) -> Result<usize, EnvError> {
    let Some(v) = value else { return Ok(1) };
    decimal(v, false).and_then(|n| usize::try_from(n).ok()).ok_or_else(|| EnvError::BadListenCount(v.to_owned()))
}

/// The layout, in the order `from_process` checks it: the generation, each
/// aux item, the listening range, then duplicates.
fn model_layout(generation: Option<&str>, listen_count: usize, aux: Option<&str>) -> Result<Layout, EnvError> {
    let generation = model_generation(generation)?;
    let spec = aux.unwrap_or("");
    let bad = || EnvError::BadAux(spec.to_owned());
    let mut items = Vec::new();
    for item in spec.split(',').filter(|s| !s.is_empty()) {
        let colon = item.find(':').ok_or_else(bad)?;
        let (name, fd) = (&item[..colon], &item[colon + 1..]);
        let fd = decimal(fd, true).and_then(|n| i32::try_from(n).ok()).ok_or_else(bad)?;
        if fd <= 2 {
            return Err(bad());
        }
        items.push((name.to_owned(), fd));
    }
    let listen_end = i64::from(MASTER_LISTEN_FD).saturating_add(i64::try_from(listen_count).unwrap_or(i64::MAX));
    if listen_end > i64::from(i32::MAX) {
        return Err(EnvError::BadListenCount(listen_count.to_string()));
    }
    let mut seen = HashSet::new();
    for (_, fd) in &items {
        let in_listen = i64::from(*fd) >= i64::from(MASTER_LISTEN_FD) && i64::from(*fd) < listen_end;
        if *fd == MASTER_STATUS_FD || in_listen || !seen.insert(*fd) {
            return Err(bad());
        }
    }
    // Built through the parser itself, since `Layout` cannot be built
    // outside its crate; its fields are checked against the model's here.
    let layout = Layout::parse(Some(&format!("{generation:o}")), listen_count, aux)
        .unwrap_or_else(|e| panic!("the parser says {e:?} where the model finds a layout"));
    assert_eq!((layout.generation, layout.listen_count, &layout.aux), (generation, listen_count, &items));
    Ok(layout)
}
