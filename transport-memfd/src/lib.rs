//! Shared-memory status rings in a sealed memfd (not yet built).
//!
//! This crate is a placeholder in the workspace: it holds no transport yet
//! and exports nothing. It will provide the `memfd` transport: one
//! single-producer ring per child in a size-sealed memfd, eventfd wake-ups
//! and a lifeline for death detection, as described in the project's design
//! notes.
