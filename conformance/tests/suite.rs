//! The conformance suite, instantiated for every transport built here:
//! `cargo test -p master-proto-conformance pipe::` runs one transport.

master_proto_conformance::with_transports!(conformance_suite);

use master_proto_conformance::conformance_suite;
