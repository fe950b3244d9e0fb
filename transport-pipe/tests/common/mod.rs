//! Helpers shared by this crate's integration tests, re-exported from the test kit.
//!
//! Each test file includes this module with `mod common;` (Cargo's layout
//! for code shared by integration tests: a file in a subdirectory of
//! `tests/` is not a test target of its own). The bounded waits, child
//! process helpers and temporary paths are the conformance harness's
//! (`master_proto_conformance::harness`), children's output and line
//! clients its `talk` module, and the private Postfix instance its
//! `postfix` module. Every wait ends at a deadline the caller gives and
//! pauses only inside poll(2), never in a bare sleep, so a test that fails
//! says what it awaited instead of hanging.

// Each test binary compiles its own copy of this module and uses only some
// of it; the rest would otherwise warn in every binary that does not.
#![allow(unused_imports, reason = "each test binary uses only some of the shared helpers")]

pub(crate) use master_proto_conformance::harness::{
    TempDir, WAIT, fresh_temp_path, kill_and_reap, pid_of, poll_timeout, poll_until, try_wait_until, wait_readable,
};
pub(crate) use master_proto_conformance::postfix;
pub(crate) use master_proto_conformance::talk::{
    Collector, Conversation, Stream, tcp_client, try_unix_client, unix_client,
};
