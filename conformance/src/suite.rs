//! [`Suite`]: every case for one transport type, as [`conformance_suite!`]
//! calls them.
//!
//! [`conformance_suite!`]: crate::conformance_suite

use master_proto::Transport;

use crate::Hostile;
use crate::cases::{self, Share};
use crate::harness::Ctx;

/// Every case of the suite for transport `T`, made by
/// [`conformance_suite!`](crate::conformance_suite) where `T` is a concrete
/// type (so that whether its sink is `Sync` is known).
#[derive(Debug)]
pub struct Suite<T: Transport> {
    name: &'static str,
    share: Option<Share<T>>,
}

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[doc = concat!("Runs [`cases::", stringify!($case), "`] for `T`.")]
            pub fn $case(&self, ctx: &Ctx) {
                cases::$case::<T>(ctx);
            }
        )*
    };
}

impl<T: Hostile + Default> Suite<T> {
    /// The suite for `T`, registered under the short name `name`;
    /// `share` says how threads share its sink, if they may.
    #[must_use]
    pub fn new(name: &'static str, share: Option<Share<T>>) -> Suite<T> {
        Suite { name, share }
    }

    cases!(
        round_trip,
        whole_updates_in_order,
        fan_in_at_scale,
        back_pressure_as_declared,
        master_close_disconnects,
        master_killed_disconnects,
        sigpipe_default_never_kills,
        child_killed_mid_notify,
        hostile_input,
        no_lost_wakeup,
        edge_triggered_wakeup,
        fd_hygiene,
        eintr_storm,
        generation_and_reload,
    );

    /// Runs [`cases::tokio_master`] for `T`.
    #[cfg(feature = "tokio")]
    pub fn tokio_master(&self, ctx: &Ctx) {
        cases::tokio_master::<T>(ctx);
    }

    /// Runs [`cases::tokio_disconnect`] for `T`.
    #[cfg(feature = "tokio")]
    pub fn tokio_disconnect(&self, ctx: &Ctx) {
        cases::tokio_disconnect::<T>(ctx);
    }

    /// Runs [`cases::mio_master`] for `T`.
    #[cfg(feature = "mio")]
    pub fn mio_master(&self, ctx: &Ctx) {
        cases::mio_master::<T>(ctx);
    }

    /// Runs [`cases::mio_disconnect`] for `T`.
    #[cfg(feature = "mio")]
    pub fn mio_disconnect(&self, ctx: &Ctx) {
        cases::mio_disconnect::<T>(ctx);
    }

    /// Runs [`cases::threads_share_a_sink`] for `T`.
    pub fn threads_share_a_sink(&self, ctx: &Ctx) {
        cases::threads_share_a_sink::<T>(ctx, self.share);
    }

    /// Runs [`cases::declared_capabilities_are_honest`] for `T`.
    pub fn declared_capabilities_are_honest(&self, ctx: &Ctx) {
        cases::declared_capabilities_are_honest::<T>(ctx, self.share);
    }

    /// Checks that the module the suite runs under is named after the
    /// transport's short name, so that `cargo test NAME::` selects it.
    pub fn short_name(&self) {
        assert_eq!(T::default().name(), self.name, "the suite's module is not named after the transport");
    }
}
