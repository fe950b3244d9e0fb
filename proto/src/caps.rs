//! What a transport promises: its capabilities (contract item 10).
//!
//! Every transport declares these through [`crate::Transport::caps`]; the
//! conformance suite reads them and checks each promise, so a declaration is
//! a claim that is tested, not a comment.

use std::time::Duration;

/// A transport's declared capabilities.
///
/// Read the fields; build a value with [`Caps::new`] and the `with_`
/// methods, so that a capability added later does not break a transport
/// written outside this crate.
///
/// # Examples
///
/// ```
/// use master_proto::{BackPressure, Caps, Delivery, Framing, Identity};
/// const CAPS: Caps = Caps::new(Delivery::EveryUpdate, Identity::Claimed, Framing::ByteStream, BackPressure::Block)
///     .with_thread_safe_sink(true);
/// assert!(!CAPS.postfix_wire);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Caps {
    /// Whether every update arrives, or only each child's latest state.
    pub delivery: Delivery,
    /// What the transport can vouch for about who sent an update.
    pub identity: Identity,
    /// How updates are delimited.
    pub framing: Framing,
    /// What [`crate::StatusSink::notify`] does when the master does not read.
    pub back_pressure: BackPressure,
    /// Whether the child's end is byte-for-byte Postfix's status channel, so
    /// that real Postfix daemons and a real Postfix master(8) can be peers.
    pub postfix_wire: bool,
    /// Whether one sink may be shared by several threads of a child, each
    /// notifying concurrently, with every update still whole.
    pub thread_safe_sink: bool,
}

impl Caps {
    /// Capabilities with these four promises, not Postfix's wire, and a
    /// sink that threads may not share.
    #[must_use]
    pub const fn new(delivery: Delivery, identity: Identity, framing: Framing, back_pressure: BackPressure) -> Caps {
        Caps { delivery, identity, framing, back_pressure, postfix_wire: false, thread_safe_sink: false }
    }

    /// The same, with [`postfix_wire`](Self::postfix_wire) set to `yes`.
    #[must_use]
    pub const fn with_postfix_wire(self, yes: bool) -> Caps {
        Caps { postfix_wire: yes, ..self }
    }

    /// The same, with [`thread_safe_sink`](Self::thread_safe_sink) set to
    /// `yes`.
    #[must_use]
    pub const fn with_thread_safe_sink(self, yes: bool) -> Caps {
        Caps { thread_safe_sink: yes, ..self }
    }

    /// The same, with another [`identity`](Self::identity).
    #[must_use]
    pub const fn with_identity(self, identity: Identity) -> Caps {
        Caps { identity, ..self }
    }

    /// The same, with another [`back_pressure`](Self::back_pressure).
    #[must_use]
    pub const fn with_back_pressure(self, back_pressure: BackPressure) -> Caps {
        Caps { back_pressure, ..self }
    }
}

/// Delivery guarantee (contract item 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// Every update a live child sends arrives once, whole, in per-child
    /// order.
    EveryUpdate,
    /// Updates of one child may be coalesced: the master sees each child's
    /// latest state, never a stale one after a newer one.
    LatestState,
}

/// Sender identity (the `Sender` of each received update).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// Only the pid the sender wrote in the update, as in Postfix: any child
    /// of the service can claim to be any other.
    Claimed,
    /// The kernel vouches for the sender's pid (for example
    /// `SCM_CREDENTIALS`).
    KernelPid,
    /// Every child has a private channel handed out at spawn; the channel
    /// names the child whatever it writes
    /// ([`Sender::Channel`](crate::Sender::Channel)).
    Channel,
}

/// How records are delimited (contract item 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Framing {
    /// A byte stream shared by the children: the reader counts to 12, and a
    /// short write can misframe neighbouring records until the stream drains.
    ByteStream,
    /// The kernel or the transport keeps each record's boundaries.
    Packet,
}

/// Back-pressure: what `notify` does when the master is not reading
/// (contract item 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackPressure {
    /// `notify` blocks until the master reads or goes away (then it returns
    /// `Disconnected`); nothing is lost.
    Block,
    /// `notify` blocks for at most this long, then fails with
    /// `NotifyError::Full`; nothing is lost silently.
    BlockFor(Duration),
    /// `notify` fails at once with `NotifyError::Full`.
    Error,
    /// `notify` never waits: a newer state replaces an unread older one of
    /// the same child (only with [`Delivery::LatestState`]).
    Overwrite,
}
