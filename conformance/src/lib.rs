//! The transport conformance suite, and the one list of transports.
//!
//! [`with_transports!`] names every transport built on this platform with
//! the cargo features enabled (`pipe`, `unixsock`, `memfd`); the
//! conformance tests, `cargo xtask bench` and `cargo xtask demo` all expand
//! it, so a new transport is added to all three in one line of
//! `src/transports.rs`.

pub mod transports;

pub use transports::{DEFAULT_TRANSPORT, TRANSPORT_NAMES};
