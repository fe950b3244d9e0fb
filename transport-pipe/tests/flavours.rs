//! What is particular to the pipe flavours, in real processes: a signal
//! caught while a child is blocked in its `write(2)`/`send(2)` on fd 5.
//!
//! Everything every transport must do (round trip, disconnect, fd hygiene,
//! back-pressure, hostile input, `EINTR` under a signal storm, …) is checked
//! by the conformance suite (`cargo test -p master-proto-conformance pipe::`
//! and `duplex::`). This test is narrower and sharper than the suite's
//! storm: it finds, in `/proc`, the child's thread blocked in the very
//! system call on fd 5 that these flavours make, and signals exactly that
//! thread, so that every signal interrupts a write in progress. The case is
//! written once, in the conformance crate
//! ([`master_proto_conformance::cases::eintr_in_blocked_write`]), for every
//! transport that writes to fd 5; the socket flavours run it too.

/// Instantiates the test for one flavour, under a module named after its
/// short name.
macro_rules! flavour {
    ($name:ident, $transport:ty) => {
        mod $name {
            #[test]
            fn eintr_is_retried() {
                master_proto_conformance::cases::eintr_in_blocked_write::<$transport>(
                    &master_proto_conformance::harness::Ctx::new(module_path!(), "eintr_is_retried"),
                );
            }
        }
    };
}

flavour!(pipe, master_proto_pipe::Pipe);
flavour!(duplex, master_proto_pipe::Duplex);
