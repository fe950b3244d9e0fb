//! The conformance suite, instantiated for every transport built here, and
//! for `bounded_dgram`, `dgram` with a bounded wait:
//! `cargo test -p master-proto-transports --test conformance pipe::` runs
//! one transport, `... --test conformance ::fd_hygiene` one case for all.

use master_proto_conformance::conformance_suite;

master_proto_transports::with_transports!(conformance_suite);

// Not in the facade's list (a bounded wait is a setting of `dgram`, not a
// transport of its own: `AnyTransport` would have to pick a bound for it),
// but a transport the suite must hold to its declaration: the only one here
// whose notify waits at most a bound (`BackPressure::BlockFor`).
conformance_suite! {
    bounded_dgram => master_proto_unixsock::BoundedDgram,
}
