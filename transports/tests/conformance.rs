//! The conformance suite, instantiated for every transport built here:
//! `cargo test -p master-proto-transports --test conformance pipe::` runs
//! one transport, `... --test conformance ::fd_hygiene` one case for all.

use master_proto_conformance::conformance_suite;

master_proto_transports::with_transports!(conformance_suite);
