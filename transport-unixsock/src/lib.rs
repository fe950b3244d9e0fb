//! `SOCK_DGRAM` and `SOCK_SEQPACKET` socketpair transports (not yet built).
//!
//! This crate is a placeholder in the workspace: it holds no transport yet
//! and exports nothing. It will provide the `dgram` and `seqpacket` flavours
//! with kernel-verified sender pids (`SCM_CREDENTIALS`), as described in the
//! project's design notes.
