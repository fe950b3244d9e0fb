//! The cases, each generic over the transport.
//!
//! Each case is a function `case::<T>(&Ctx)` that plays the master when run
//! by the test harness and, re-executed with a role, the children. Each
//! reads `T::default().caps()` and checks that promise; where a promise makes
//! a case moot it returns early, saying why in a comment. The numbers are
//! the issue's: 1 round trip, 2 whole updates in order, 3 fan-in, 4
//! back-pressure, 5 orderly close, 6 master killed, 7 `SIGPIPE` at
//! `SIG_DFL`, 8 children killed mid-notify, 9 hostile input, 10 no lost
//! wake-up, 11 fd hygiene, 12 `EINTR` storm, 13 generations and reload, 14
//! threads sharing a sink, 15 edge-triggered wake-ups, 16-17 a tokio master
//! and children waiting on tokio, 18-19 the same with mio (cargo features
//! `tokio` and `mio`); and the declared capabilities checked for honesty.

mod bursts;
mod caps;
mod delivery;
mod disconnect;
mod faults;
mod generation;
mod hygiene;
#[cfg(any(feature = "tokio", feature = "mio"))]
mod reactors;
mod wakeup;

use std::marker::PhantomData;
use std::time::Duration;

use master_proto::master::Config;
use master_proto::{Identity, Sender, Status, StatusSink, Transport};

pub use caps::declared_capabilities_are_honest;
pub use delivery::{
    back_pressure_as_declared, fan_in_at_scale, round_trip, threads_share_a_sink, whole_updates_in_order,
};
pub use disconnect::{master_close_disconnects, master_killed_disconnects, sigpipe_default_never_kills};
pub use faults::{child_killed_mid_notify, hostile_input};
pub use generation::generation_and_reload;
pub use hygiene::fd_hygiene;
#[cfg(feature = "mio")]
pub use reactors::{mio_disconnect, mio_master};
#[cfg(feature = "tokio")]
pub use reactors::{tokio_disconnect, tokio_master};
pub use wakeup::{edge_triggered_wakeup, eintr_in_blocked_write, eintr_storm, no_lost_wakeup};

use crate::harness::fail;

/// The sender a transport with `identity` must report for child `pid`.
#[must_use]
pub fn expected_sender(identity: Identity, pid: i32) -> Sender {
    match identity {
        Identity::Claimed => Sender::Claimed,
        Identity::KernelPid => Sender::KernelPid(pid),
        Identity::Channel => Sender::Channel(pid),
    }
}

/// A master's policy for the cases: no process limit and no throttle, so
/// that killing children never stops spawning.
pub(crate) fn open_config() -> Config {
    Config { process_limit: 0, throttle_delay: Duration::ZERO }
}

/// Notifies from `threads` threads sharing one sink, `each` updates per
/// thread: thread `t` sends `2 + t * each + i`. Exists only for sinks that
/// are `Sync`.
pub type Share<T> = fn(&<T as Transport>::Sink, i32, i32);

fn notify_from_threads<T: Transport>(sink: &T::Sink, threads: i32, each: i32)
where
    T::Sink: Sync,
{
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in 0..each {
                    sink.notify(Status(2 + t * each + i))
                        .unwrap_or_else(|e| fail(format_args!("thread {t}, notify {i}: {e}")));
                }
            });
        }
    });
}

/// Asks the type system whether a transport's sink may be shared between
/// threads: `(&&SyncProbe::<T>::new()).share()` is `Some` exactly when
/// `T::Sink: Sync` (resolved where `T` is a concrete type, as in
/// [`conformance_suite!`](crate::conformance_suite)).
#[derive(Debug)]
pub struct SyncProbe<T>(PhantomData<T>);

impl<T> SyncProbe<T> {
    /// A probe for `T`.
    #[must_use]
    pub fn new() -> SyncProbe<T> {
        SyncProbe(PhantomData)
    }
}

impl<T> Default for SyncProbe<T> {
    fn default() -> Self {
        SyncProbe::new()
    }
}

/// The probe's answer when the sink is `Sync`.
pub trait ShareIfSync<T: Transport> {
    /// The sharing function.
    fn share(&self) -> Option<Share<T>>;
}

impl<T: Transport> ShareIfSync<T> for &SyncProbe<T>
where
    T::Sink: Sync,
{
    fn share(&self) -> Option<Share<T>> {
        Some(notify_from_threads::<T>)
    }
}

/// The probe's answer otherwise.
pub trait ShareNever<T: Transport> {
    /// `None`: the type system forbids sharing the sink.
    fn share(&self) -> Option<Share<T>>;
}

impl<T: Transport> ShareNever<T> for SyncProbe<T> {
    fn share(&self) -> Option<Share<T>> {
        None
    }
}
