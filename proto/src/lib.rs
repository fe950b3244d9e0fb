//! The Postfix master(8) child-status protocol, without a transport.
//!
//! Postfix's master runs each service as a pool of child processes sharing a
//! listening socket. Each child tells the master over a status channel
//! (fd 5) whether it is busy ([`Status::TAKEN`]) or idle
//! ([`Status::AVAIL`]); the master spawns more children only when none is
//! idle, notices children that die, and forces old children out on reload by
//! closing the channel. This crate holds every part of that protocol that
//! does not depend on the mechanism carrying it:
//!
//! - [`wire`]: the 12-byte `MASTER_STATUS` record, byte-exact with Postfix;
//! - [`stream`]: framing of records on a shared byte stream;
//! - [`sink`]: the child's side, [`StatusSink`];
//! - [`source`]: the master's side, [`StatusSource`];
//! - [`transport`]: the [`Transport`] trait a backend implements, and
//!   [`caps`], what it promises;
//! - [`env`](mod@env): the child's standard environment (fd 5, listen fds from 6,
//!   `GENERATION` in octal);
//! - [`master`]: the master's bookkeeping as a sans-IO state machine with
//!   every Postfix rule;
//! - `tokio` and `mio`, behind the cargo features of those names: a source
//!   awaited on tokio's reactor or registered with mio, and a child's wait
//!   for its master's disconnect;
//! - [`lifeline`] and, behind feature `shm` on Linux, `shm`: machinery that
//!   several transports share (a lifeline pipe; sealed memfds, doorbells,
//!   the death word and a biased lock for the shared-memory transports).
//!
//! # The contract every transport meets
//!
//! Each item names the conformance case (crate `master-proto-conformance`)
//! that checks it.
//!
//! 1. Every update a live child sends reaches the master whole: never torn,
//!    never merged, never duplicated; in per-child order, or coalesced to each
//!    child's latest state where the transport declares
//!    [`Delivery::LatestState`], and then its source counts what it
//!    overwrote ([`StatusSource::overwritten`]). *(`round_trip`,
//!    `whole_updates_in_order`)*
//! 2. Hundreds of children can share one service's channel at full speed.
//!    *(`fan_in_at_scale`)*
//! 3. Back-pressure is what the transport declares ([`BackPressure`]);
//!    nothing is lost silently unless it coalesces by design.
//!    *(`back_pressure_as_declared`)*
//! 4. Master gone, by orderly close or `SIGKILL`: the child's next
//!    [`StatusSink::notify`] returns [`NotifyError::Disconnected`] and its
//!    [`StatusSink::disconnect_fd`] becomes readable without sending. Never a
//!    hang, never death by `SIGPIPE`. *(`master_close_disconnects`,
//!    `master_killed_disconnects`, `sigpipe_default_never_kills`; waiting
//!    on tokio and mio: `tokio_disconnect`, `mio_disconnect`)*
//! 5. A child killed at any instruction never wedges the channel for the
//!    others nor corrupts the master. *(`child_killed_mid_notify`)*
//! 6. The master trusts nothing it receives: malformed, partial, forged or
//!    hostile input is counted, reported and survived. *(`hostile_input`)*
//! 7. Wake-ups are never lost, and waiting edge-triggered is safe: the
//!    source's fd is readable whenever an update is pending, including
//!    updates sent before the master started waiting; and once
//!    [`StatusSource::try_recv`] has returned `None`, or
//!    [`StatusSource::drain`] has returned, anything pending then or sent
//!    later makes a new readiness edge on that fd, no earlier than that
//!    call began. So a master that drains
//!    and then waits edge-triggered (tokio, mio, `EPOLLET`) never sleeps on
//!    a pending update. A fairness bound may end a drain early; the fd then
//!    fires again at once. *(`no_lost_wakeup`, `edge_triggered_wakeup`;
//!    through the adapters: `tokio_master`, `mio_master`)*
//! 8. fd hygiene: a child inherits exactly its standard fds; the master's
//!    ends never leak. *(`fd_hygiene`)*
//! 9. `EINTR` is retried inside the transport; errors carry their cause.
//!    *(`eintr_storm`)*
//! 10. Each transport declares its [`Caps`]: delivery, identity, framing,
//!     back-pressure, Postfix wire compatibility. *(`declared_capabilities_are_honest`;
//!     generations and reload: `generation_and_reload`; threads:
//!     `threads_share_a_sink`)*
//!
//! # See also
//!
//! Postfix `src/master/master_proto.c`, `master_status.c`,
//! `master_spawn.c`, `master_avail.c`, `master_service.c`.

pub mod caps;
pub mod env;
pub mod lifeline;
pub mod master;
#[cfg(feature = "mio")]
pub mod mio;
#[cfg(all(feature = "shm", target_os = "linux"))]
pub mod shm;
pub mod sink;
pub mod source;
pub mod stream;
#[cfg(feature = "tokio")]
pub mod tokio;
pub mod transport;
pub mod wire;

pub use caps::{BackPressure, Caps, Delivery, Framing, Identity};
pub use env::{ChildEnd, ChildEnv, ChildFds, EnvError, InstallError};
pub use sink::{NotifyError, StatusSink};
pub use source::{Received, RecvError, Sender, StatusSource};
pub use transport::{EndFds, Transport};
pub use wire::{Malformed, Status, StatusUpdate, WIRE_SIZE};
