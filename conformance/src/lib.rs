//! The transport conformance suite: the contract every status transport
//! meets, as cases run in real processes, and the test kit they share.
//!
//! DESIGN.md §3, the contract every transport meets, as executable cases
//! that run unchanged against every transport, in real processes. The cases
//! live once, in [`cases`], generic over the transport; the
//! [`conformance_suite!`] macro instantiates every case as a `#[test]` for
//! each transport it is given, under a module named after the transport's
//! short name. This crate depends on `master-proto` alone: it names no
//! transport.
//!
//! # Where the suite runs
//!
//! The transports facade (crate `master-proto-transports`) runs it for its
//! whole list of transports, in `transports/tests/conformance.rs`, one line:
//!
//! ```text
//! master_proto_transports::with_transports!(conformance_suite);
//! ```
//!
//! so `cargo test -p master-proto-transports --test conformance` runs every
//! case against every transport built here,
//! `cargo test -p master-proto-transports --test conformance pipe::` one
//! transport (`duplex::`, `dgram::`, … likewise), and
//! `cargo test -p master-proto-transports --test conformance ::fd_hygiene`
//! one case against all.
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
//! | 8 | `child_killed_mid_notify` | 300 children `SIGKILL`ed at random moments: no wedge, no torn record delivered (a record a child died writing may be reported once, as `Malformed::Torn`), the table exact |
//! | 9 | `hostile_input` | garbage of every kind through [`Hostile`]: counted, reported, survived; honest updates still arrive |
//! | 10 | `no_lost_wakeup` | an early update is seen at once; 10,000 sleep/notify/wake rounds waiting in `poll`, then 10,000 waiting edge-triggered |
//! | 11 | `fd_hygiene` | a child holds exactly 0-2, 5, listen and aux fds; never the master's end |
//! | 12 | `eintr_storm` | `SIGUSR1` storm (no `SA_RESTART`) at children and master during 2 and 10 |
//! | 13 | `generation_and_reload` | wrong generations ignored; reload retires old children, tells them to go, counts new ones |
//! | 14 | `threads_share_a_sink` | threads of one child share a sink, nothing torn, each thread's in order (latest state: the child's last state arrives last), or the sink is not `Sync`, as declared |
//! | 15 | `edge_triggered_wakeup` | a master waiting in `EPOLLET` (as tokio and mio do), 2,000 bursts of 1-300 records beside quiet children: no wait ends by its bound while a record is pending, nothing lost |
//! | 16 | `tokio_master` | a tokio master (current-thread, then multi-thread runtime) receives the bursts of 15 through `AsyncSource`: nothing lost, no stall, every wait bounded |
//! | 17 | `tokio_disconnect` | children await `tokio::Disconnect` (current-thread; multi-thread, in a spawned task): it resolves on orderly close and on `SIGKILL` of the master, then notify says `Disconnected` |
//! | 18 | `mio_master` | a mio master (`MioSource` in a `Poll`) receives the bursts of 15 likewise |
//! | 19 | `mio_disconnect` | 17 with `MioDisconnect` in a `Poll` |
//! | – | `declared_capabilities_are_honest` | identity, delivery, framing, back-pressure, `thread_safe_sink`, `postfix_wire` |
//!
//! Cases 16-17 need the cargo feature `tokio` and 18-19 the feature `mio`
//! (both off by default, so that the transport crates' own tests, which use
//! this crate as their test kit, and memfd's loom build do not build tokio;
//! the facade turns both on for the suite). [`conformance_suite!`]
//! instantiates them when this crate was built with them, whoever expands
//! it.
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
//! 1. Implement [`Hostile`] for its type in its own crate, behind a cargo
//!    feature `conformance` (see [`hostile`]); the type is
//!    `Transport + Default`.
//! 2. In the workspace: add its crate to the facade's list
//!    (`transports/src/lib.rs`). Every case then runs against it.
//!
//! A transport outside this workspace runs the suite from a test file of
//! its own, with its `conformance` feature on for its tests:
//!
//! ```text
//! master_proto_conformance::conformance_suite! { mine => my_crate::Mine, }
//! ```
//!
//! The type is resolved where the macro is called, so any path works there,
//! even one whose first segment is the name of a generated module.

pub mod cases;
pub mod harness;
pub mod hostile;
pub mod postfix;
mod suite;
mod sys;
pub mod talk;

pub use hostile::Hostile;
pub use suite::Suite;

// The cases behind this crate's features, one hidden macro per feature (a
// `cfg` written inside an exported macro would be evaluated in the crate
// that expands it). Each expands to its cases' tests
// for one transport type, inside the module `conformance_suite!` makes.
#[cfg(feature = "tokio")]
#[doc(hidden)]
#[macro_export]
macro_rules! __tokio_cases {
    ($name:ident) => {
        #[test]
        fn tokio_master() {
            super::$name().tokio_master(&ctx("tokio_master"));
        }

        #[test]
        fn tokio_disconnect() {
            super::$name().tokio_disconnect(&ctx("tokio_disconnect"));
        }
    };
}

#[cfg(not(feature = "tokio"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __tokio_cases {
    ($name:ident) => {};
}

#[cfg(feature = "mio")]
#[doc(hidden)]
#[macro_export]
macro_rules! __mio_cases {
    ($name:ident) => {
        #[test]
        fn mio_master() {
            super::$name().mio_master(&ctx("mio_master"));
        }

        #[test]
        fn mio_disconnect() {
            super::$name().mio_disconnect(&ctx("mio_disconnect"));
        }
    };
}

#[cfg(not(feature = "mio"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __mio_cases {
    ($name:ident) => {};
}

/// Instantiates every case as a `#[test]` for each `name => Type` given,
/// under `mod name`. See the [crate documentation](crate).
///
/// For each entry it also defines a function `name` beside the module (a
/// function and a module of one name do not clash), which resolves `Type`
/// where the macro is called and hands the module a [`Suite`] for it.
#[macro_export]
macro_rules! conformance_suite {
    ($($name:ident => $ty:ty,)*) => {
        $(
            #[doc(hidden)]
            fn $name() -> $crate::Suite<$ty> {
                #[allow(unused_imports, reason = "one of the two answers the probe")]
                use $crate::cases::{ShareIfSync as _, ShareNever as _};
                $crate::Suite::new(stringify!($name), (&&$crate::cases::SyncProbe::<$ty>::new()).share())
            }

            mod $name {
                fn ctx(case: &str) -> $crate::harness::Ctx {
                    $crate::harness::Ctx::new(module_path!(), case)
                }

                #[test]
                fn round_trip() {
                    super::$name().round_trip(&ctx("round_trip"));
                }

                #[test]
                fn whole_updates_in_order() {
                    super::$name().whole_updates_in_order(&ctx("whole_updates_in_order"));
                }

                #[test]
                fn fan_in_at_scale() {
                    super::$name().fan_in_at_scale(&ctx("fan_in_at_scale"));
                }

                #[test]
                fn back_pressure_as_declared() {
                    super::$name().back_pressure_as_declared(&ctx("back_pressure_as_declared"));
                }

                #[test]
                fn master_close_disconnects() {
                    super::$name().master_close_disconnects(&ctx("master_close_disconnects"));
                }

                #[test]
                fn master_killed_disconnects() {
                    super::$name().master_killed_disconnects(&ctx("master_killed_disconnects"));
                }

                #[test]
                fn sigpipe_default_never_kills() {
                    super::$name().sigpipe_default_never_kills(&ctx("sigpipe_default_never_kills"));
                }

                #[test]
                fn child_killed_mid_notify() {
                    super::$name().child_killed_mid_notify(&ctx("child_killed_mid_notify"));
                }

                #[test]
                fn hostile_input() {
                    super::$name().hostile_input(&ctx("hostile_input"));
                }

                #[test]
                fn no_lost_wakeup() {
                    super::$name().no_lost_wakeup(&ctx("no_lost_wakeup"));
                }

                #[test]
                fn edge_triggered_wakeup() {
                    super::$name().edge_triggered_wakeup(&ctx("edge_triggered_wakeup"));
                }

                $crate::__tokio_cases! { $name }
                $crate::__mio_cases! { $name }

                #[test]
                fn fd_hygiene() {
                    super::$name().fd_hygiene(&ctx("fd_hygiene"));
                }

                #[test]
                fn eintr_storm() {
                    super::$name().eintr_storm(&ctx("eintr_storm"));
                }

                #[test]
                fn generation_and_reload() {
                    super::$name().generation_and_reload(&ctx("generation_and_reload"));
                }

                #[test]
                fn threads_share_a_sink() {
                    super::$name().threads_share_a_sink(&ctx("threads_share_a_sink"));
                }

                #[test]
                fn declared_capabilities_are_honest() {
                    super::$name().declared_capabilities_are_honest(&ctx("declared_capabilities_are_honest"));
                }

                #[test]
                fn short_name() {
                    super::$name().short_name();
                }
            }
        )*
    };
}
