//! The transport conformance suite, and the one list of transports.
//!
//! DESIGN.md §3, the contract every transport meets, as executable cases
//! that run unchanged against every transport, in real processes. The cases
//! live once, in [`cases`], generic over the transport; the
//! [`conformance_suite!`] macro instantiates every case as a `#[test]` for
//! each transport it is given, under a module named after the transport's
//! short name; and [`with_transports!`] names every transport built on this
//! platform with the cargo features enabled (`pipe`, `unixsock`, `memfd`).
//! `tests/suite.rs` is one line:
//!
//! ```text
//! master_proto_conformance::with_transports!(conformance_suite);
//! ```
//!
//! so `cargo test -p master-proto-conformance` runs every case against
//! every transport, and `cargo test -p master-proto-conformance pipe::`
//! one transport (`duplex::`, `dgram::`, … likewise; `::fd_hygiene` one
//! case everywhere). The bench and the demo expand [`with_transports!`] too.
//!
//! # The cases
//!
//! | # | test | checks |
//! |---|---|---|
//! | 1 | `round_trip` | TAKEN/AVAIL arrive with the child's real pid, generation and sender; the sans-IO master follows |
//! | 2 | `whole_updates_in_order` | 64 children x 10,000 updates: whole, once, per-child order (or latest state exact) |
//! | 3 | `fan_in_at_scale` | 512 children on one channel, all accounted for, then one close tells them all |
//! | 4 | `back_pressure_as_declared` | the master stops reading: block, bounded block, error or overwrite, as declared; nothing lost |
//! | 5 | `master_close_disconnects` | orderly close: disconnect fd fires without sending, notify says `Disconnected`, blocked notify released |
//! | 6 | `master_killed_disconnects` | the master role killed with `SIGKILL`: the same, seen by its orphans |
//! | 7 | `sigpipe_default_never_kills` | 5 and 6 with `SIGPIPE` at `SIG_DFL`: no child dies of a signal |
//! | 8 | `child_killed_mid_notify` | 300 children `SIGKILL`ed at random moments: no wedge, no torn record, the table exact |
//! | 9 | `hostile_input` | garbage of every kind through [`Hostile`]: counted, reported, survived; honest updates still arrive |
//! | 10 | `no_lost_wakeup` | an early update is seen at once; 10,000 sleep/notify/wake rounds |
//! | 11 | `fd_hygiene` | a child holds exactly 0-2, 5, listen and aux fds; never the master's end |
//! | 12 | `eintr_storm` | `SIGUSR1` storm (no `SA_RESTART`) at children and master during 2 and 10 |
//! | 13 | `generation_and_reload` | wrong generations ignored; reload retires old children, tells them to go, counts new ones |
//! | 14 | `threads_share_a_sink` | threads of one child share a sink, nothing torn (or the sink is not `Sync`, as declared) |
//! | 15 | `edge_triggered_wakeup` | a master waiting in `EPOLLET` (as tokio and mio do), 2,000 bursts of 1-300 records beside quiet children: no wait ends by its bound while a record is pending, nothing lost |
//! | 16 | `tokio_master` | a tokio master (current-thread, then multi-thread runtime) receives the bursts of 15 through `AsyncSource`: nothing lost, no stall, every wait bounded |
//! | 17 | `tokio_disconnect` | children await `tokio::Disconnect` (current-thread; multi-thread, in a spawned task): it resolves on orderly close and on `SIGKILL` of the master, then notify says `Disconnected` |
//! | 18 | `mio_master` | a mio master (`MioSource` in a `Poll`) receives the bursts of 15 likewise |
//! | 19 | `mio_disconnect` | 17 with `MioDisconnect` in a `Poll` |
//! | – | `declared_capabilities_are_honest` | identity, delivery, framing, back-pressure, `thread_safe_sink`, `postfix_wire` |
//!
//! Cases 16-17 need the cargo feature `tokio` and 18-19 the feature `mio`
//! (both on by default; the transport crates' own tests use this crate
//! without them). [`conformance_suite!`] instantiates them when this crate
//! was built with them, whoever expands it.
//!
//! Each case reads the transport's [`Caps`](master_proto::Caps) and checks
//! that promise; where a promise makes a case moot it returns early, saying
//! why in a comment. Every wait is bounded ([`harness::WAIT`]) and a
//! failure says what it waited for. Children are the test binary itself,
//! re-executed with a role ([`harness`]); never a `fork()` inside the
//! threaded harness.
//!
//! # Adding a transport
//!
//! 1. Append `name => Type,` to the list in `src/transports.rs` (see
//!    [`transports`]); `Type: Transport + Default`, and `name` its
//!    [`Transport::NAME`](master_proto::Transport::NAME).
//! 2. Implement [`Hostile`] for it in `src/hostile.rs`: how a child writes
//!    raw bytes where its sink writes records.
//!
//! Every case then runs against it. A transport outside this workspace can
//! run the suite from its own test file:
//!
//! ```text
//! master_proto_conformance::conformance_suite! { mine => my_crate::Mine, }
//! ```
//!
//! (with `Hostile` implemented for `Mine` in that crate, since the trait is
//! this crate's).

pub mod cases;
pub mod harness;
pub mod hostile;
pub mod postfix;
mod sys;
pub mod transports;

pub use hostile::Hostile;
pub use transports::{DEFAULT_TRANSPORT, TRANSPORT_NAMES};

// The cases behind this crate's features, one hidden macro per feature (a
// `cfg` written inside an exported macro would be evaluated in the crate
// that expands it; see `transports.rs`). Each expands to its cases' tests
// for one transport type, inside the module `conformance_suite!` makes.
#[cfg(feature = "tokio")]
#[doc(hidden)]
#[macro_export]
macro_rules! __tokio_cases {
    ($ty:path) => {
        #[test]
        fn tokio_master() {
            $crate::cases::tokio_master::<$ty>(&ctx("tokio_master"));
        }

        #[test]
        fn tokio_disconnect() {
            $crate::cases::tokio_disconnect::<$ty>(&ctx("tokio_disconnect"));
        }
    };
}

#[cfg(not(feature = "tokio"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __tokio_cases {
    ($ty:path) => {};
}

#[cfg(feature = "mio")]
#[doc(hidden)]
#[macro_export]
macro_rules! __mio_cases {
    ($ty:path) => {
        #[test]
        fn mio_master() {
            $crate::cases::mio_master::<$ty>(&ctx("mio_master"));
        }

        #[test]
        fn mio_disconnect() {
            $crate::cases::mio_disconnect::<$ty>(&ctx("mio_disconnect"));
        }
    };
}

#[cfg(not(feature = "mio"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __mio_cases {
    ($ty:path) => {};
}

/// Instantiates every case as a `#[test]` for each `name => Type` given,
/// under `mod name`. See the [crate documentation](crate).
#[macro_export]
macro_rules! conformance_suite {
    ($($name:ident => $ty:path,)*) => {
        $(
            mod $name {
                #[allow(unused_imports, reason = "lets a transport type be named relative to the caller")]
                use super::*;

                fn ctx(case: &str) -> $crate::harness::Ctx {
                    $crate::harness::Ctx::new(module_path!(), case)
                }

                fn share() -> ::core::option::Option<$crate::cases::Share<$ty>> {
                    #[allow(unused_imports, reason = "one of the two answers the probe")]
                    use $crate::cases::{ShareIfSync as _, ShareNever as _};
                    (&&$crate::cases::SyncProbe::<$ty>::new()).share()
                }

                #[test]
                fn round_trip() {
                    $crate::cases::round_trip::<$ty>(&ctx("round_trip"));
                }

                #[test]
                fn whole_updates_in_order() {
                    $crate::cases::whole_updates_in_order::<$ty>(&ctx("whole_updates_in_order"));
                }

                #[test]
                fn fan_in_at_scale() {
                    $crate::cases::fan_in_at_scale::<$ty>(&ctx("fan_in_at_scale"));
                }

                #[test]
                fn back_pressure_as_declared() {
                    $crate::cases::back_pressure_as_declared::<$ty>(&ctx("back_pressure_as_declared"));
                }

                #[test]
                fn master_close_disconnects() {
                    $crate::cases::master_close_disconnects::<$ty>(&ctx("master_close_disconnects"));
                }

                #[test]
                fn master_killed_disconnects() {
                    $crate::cases::master_killed_disconnects::<$ty>(&ctx("master_killed_disconnects"));
                }

                #[test]
                fn sigpipe_default_never_kills() {
                    $crate::cases::sigpipe_default_never_kills::<$ty>(&ctx("sigpipe_default_never_kills"));
                }

                #[test]
                fn child_killed_mid_notify() {
                    $crate::cases::child_killed_mid_notify::<$ty>(&ctx("child_killed_mid_notify"));
                }

                #[test]
                fn hostile_input() {
                    $crate::cases::hostile_input::<$ty>(&ctx("hostile_input"));
                }

                #[test]
                fn no_lost_wakeup() {
                    $crate::cases::no_lost_wakeup::<$ty>(&ctx("no_lost_wakeup"));
                }

                #[test]
                fn edge_triggered_wakeup() {
                    $crate::cases::edge_triggered_wakeup::<$ty>(&ctx("edge_triggered_wakeup"));
                }

                $crate::__tokio_cases! { $ty }
                $crate::__mio_cases! { $ty }

                #[test]
                fn fd_hygiene() {
                    $crate::cases::fd_hygiene::<$ty>(&ctx("fd_hygiene"));
                }

                #[test]
                fn eintr_storm() {
                    $crate::cases::eintr_storm::<$ty>(&ctx("eintr_storm"));
                }

                #[test]
                fn generation_and_reload() {
                    $crate::cases::generation_and_reload::<$ty>(&ctx("generation_and_reload"));
                }

                #[test]
                fn threads_share_a_sink() {
                    $crate::cases::threads_share_a_sink::<$ty>(&ctx("threads_share_a_sink"), share());
                }

                #[test]
                fn declared_capabilities_are_honest() {
                    $crate::cases::declared_capabilities_are_honest::<$ty>(
                        &ctx("declared_capabilities_are_honest"),
                        share(),
                    );
                }

                #[test]
                fn short_name() {
                    assert_eq!(<$ty as master_proto::Transport>::NAME, stringify!($name));
                }
            }
        )*
    };
}
