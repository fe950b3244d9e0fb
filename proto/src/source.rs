//! The master side: [`StatusSource`], what Postfix's `master_status_event()`
//! reads.
//!
//! A source is the master's end of one service's channel. It is
//! non-blocking: [`StatusSource::try_recv`] returns what is pending, then
//! `None`. Its descriptor ([`AsFd`]) is readable whenever something is
//! pending, including updates sent before the master started waiting, so it
//! fits poll, epoll, mio or tokio.
//!
//! # Waiting edge-triggered
//!
//! tokio and mio (and any `EPOLLET` user) do not ask whether the descriptor
//! *is* readable, only whether it *became* readable since they last
//! looked: they drain until the source says nothing is pending, then sleep
//! until the next readiness edge. Every source therefore promises (contract
//! item 7): once `try_recv` has returned `None`, or
//! [`drain`](StatusSource::drain) has returned, anything pending then or
//! sent later makes a new edge on the descriptor, no earlier than that very
//! call began. (A reactor may take edges on another thread while the master
//! drains, as tokio's multi-thread runtime does, and it clears the
//! readiness it had seen before the call once the call says nothing is
//! pending; an edge from an earlier call may be gone with it.) A source may
//! end a drain early for fairness (so that children sending as fast as the master reads
//! cannot keep it there), with records still pending; it then makes the
//! descriptor fire again at once (a level-triggered poll finds it readable,
//! an edge-triggered one gets a new edge), so such a `None` never looks
//! like "nothing pending" to a master that waits. The `None` is the
//! `WouldBlock` of tokio's and mio's rules: clear readiness after it, not
//! before.
//!
//! A source delivers and frames; it does not judge. Each item is either an
//! update with the identity the transport can vouch for ([`Sender`]) or a
//! [`Malformed`] piece of input. The master's bookkeeping
//! ([`crate::master`]) decides what an update means.
//!
//! # Errors
//!
//! [`RecvError`] is for failures of the channel itself, never for what a
//! child sent.
//!
//! # See also
//!
//! Postfix `src/master/master_status.c`.

use std::os::fd::AsFd;

use nix::errno::Errno;

use crate::wire::{Malformed, StatusUpdate};

/// What the transport can vouch for about the sender of one update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sender {
    /// Nothing: the pid inside the update is only a claim.
    Claimed,
    /// The kernel says the update came from this process.
    KernelPid(i32),
    /// The update came through the private channel handed to the child
    /// spawned with this pid.
    Channel(i32),
}

impl Sender {
    /// The pid the transport vouches for, if it vouches for one.
    #[must_use]
    pub const fn verified_pid(self) -> Option<i32> {
        match self {
            Sender::Claimed => None,
            Sender::KernelPid(pid) | Sender::Channel(pid) => Some(pid),
        }
    }
}

/// One item received from a status channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Received {
    /// A whole update, and who the transport says sent it.
    Update {
        /// The decoded update.
        update: StatusUpdate,
        /// The identity the transport vouches for.
        sender: Sender,
    },
    /// Input that is not an update.
    Malformed(Malformed),
}

/// The master's end of a service's status channel.
pub trait StatusSource: AsFd {
    /// The next pending item, or `None` when nothing is pending. Never
    /// blocks.
    ///
    /// After `None`, anything pending or sent later makes a new readiness
    /// edge on the source's descriptor (see [Waiting
    /// edge-triggered](self#waiting-edge-triggered)): a `None` that a
    /// fairness bound returns while records are pending leaves the
    /// descriptor ready to fire again at once.
    ///
    /// # Errors
    ///
    /// [`RecvError`] when the channel itself fails; malformed input is an
    /// `Ok(Some(Received::Malformed(..)))`, not an error.
    fn try_recv(&mut self) -> Result<Option<Received>, RecvError>;

    /// Calls `f` with every pending item, then returns how many there were.
    ///
    /// A source may end a drain early for fairness; what it left then
    /// makes the descriptor fire again at once, so a master that waits
    /// edge-triggered after `drain` returns is woken for it (see [Waiting
    /// edge-triggered](self#waiting-edge-triggered)).
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv); items handed to `f` before the error
    /// are not lost.
    fn drain(&mut self, mut f: impl FnMut(Received)) -> Result<usize, RecvError>
    where
        Self: Sized,
    {
        let mut n = 0;
        while let Some(item) = self.try_recv()? {
            f(item);
            n += 1;
        }
        Ok(n)
    }

    /// How many states this source has dropped so far because a newer
    /// state of the same child replaced them before the master read them
    /// ([`Delivery::LatestState`](crate::Delivery)); `None` for a source
    /// that delivers every update.
    ///
    /// The states skipped just before an item are counted when that item
    /// is handed out, so the difference across one
    /// [`try_recv`](Self::try_recv) that returns an update is how many of
    /// that child's states came between it and the child's update before:
    /// with it a master can tell which of the child's states each update
    /// is.
    fn overwritten(&self) -> Option<u64> {
        None
    }
}

/// Why a [`StatusSource`] could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// Every sending end is closed (the master's own included), so nothing
    /// can arrive any more. Postfix treats this as impossible ("read EOF
    /// status"); a transport reports it once instead of spinning.
    #[error("the status channel has no senders left")]
    Closed,
    /// The read failed.
    #[error("reading the status channel failed: {0}")]
    Io(#[source] Errno),
}
