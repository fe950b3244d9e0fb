//! The transport conformance suite (not yet built).
//!
//! This crate is a placeholder in the workspace: it holds no cases yet. It
//! will turn the transport contract of `master-proto` into cases that run in
//! real processes against every transport, one macro line per transport.
