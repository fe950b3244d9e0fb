//! Packet status channels: `AF_UNIX` `SOCK_DGRAM` and `SOCK_SEQPACKET`
//! socketpairs, whose senders the master can name.
//!
//! Three flavours of [`master_proto::Transport`], all carrying Postfix's
//! 12-byte records as one datagram each:
//!
//! | flavour | name | mechanism | who sent it | master gone, as the child sees it |
//! |---|---|---|---|---|
//! | [`Dgram`] | `dgram` | one `AF_UNIX SOCK_DGRAM` socketpair shared by a service's children, plus a lifeline | the kernel's `SCM_CREDENTIALS` ([`Sender::KernelPid`]) | EOF on the lifeline pipe; `send` fails with `ECONNREFUSED` / `ENOTCONN` |
//! | [`BoundedDgram`] | `bounded_dgram` | [`Dgram`] whose `notify` waits for room at most a bound ([`Dgram::with_timeout`]) | as `dgram` | as `dgram` |
//! | [`SeqPacket`] | `seqpacket` | one `AF_UNIX SOCK_SEQPACKET` socketpair per child, behind one epoll descriptor (Linux, Android) | the child's private channel ([`Sender::Channel`]) | EOF and hang-up on fd 5; `send` fails with `EPIPE` |
//!
//! What both promise ([`master_proto::Caps`]):
//!
//! - **framing** [`Framing::Packet`]: the kernel keeps each record's
//!   boundaries. A datagram of another length than 12 bytes is reported as
//!   what it is ([`Malformed::Short`], or [`Malformed::Oversized`] with its
//!   real length, learnt with `MSG_TRUNC`), and never costs a neighbour its
//!   framing.
//! - **identity**: the master can tell who sent each update, so
//!   [`master_proto::master::Master::receive`] rejects an update whose
//!   claimed pid differs as [`Outcome::ForgedPid`].
//!   - [`Dgram`] declares [`Identity::KernelPid`] on Linux and Android: the
//!     master's socket has `SO_PASSCRED` from before any child holds the
//!     other end, and each update is reported with the pid from its
//!     `SCM_CREDENTIALS`. A message without credentials is reported as from
//!     pid 0, which is never a child. (The kernel lets a sender with
//!     `CAP_SYS_ADMIN` put another pid in its credentials.) Elsewhere it
//!     declares [`Identity::Claimed`], as in Postfix.
//!   - [`SeqPacket`] declares [`Identity::Channel`]: the channel the
//!     master handed to the child names it, whatever it writes.
//! - **delivery** [`Delivery::EveryUpdate`]: one datagram per update, a
//!   child's updates in the order sent.
//! - **back-pressure** [`BackPressure::Block`]: a child whose update does
//!   not fit blocks until the master reads or goes away (then
//!   `Disconnected`), even if the socket was made non-blocking (a `dgram`
//!   child's socket is one open file shared with its siblings).
//!   [`BoundedDgram`] declares [`BackPressure::BlockFor`] instead: it waits
//!   at most its bound, then `notify` returns `Full`, and nothing it
//!   accepted is lost.
//! - a sink may be shared by threads: an update is one `send(2)`.
//!
//! The `seqpacket` module docs say what a channel per child buys and costs;
//! the `dgram` module docs, why it needs a lifeline and how `notify` deals
//! with the order in which a dying master's files are released.
//!
//! # Errors
//!
//! A child's `notify` returns [`NotifyError::Disconnected`] once the master
//! has gone, never dies of `SIGPIPE` whatever the process's disposition,
//! and retries `EINTR`. The master's sources never block, retry `EINTR`,
//! report malformed datagrams as [`Received::Malformed`], and close any
//! descriptor a child attaches (`SCM_RIGHTS`). On the shared `dgram`
//! channel a child can `shutdown(2)` the socket all children send on,
//! after which every child's `notify` returns `Disconnected`: sharing a
//! socket shares its state, as on Postfix's own channel. A `seqpacket`
//! child can end only its own channel.
//!
//! # See also
//!
//! `unix(7)` (`SO_PASSCRED`, `SCM_CREDENTIALS`), `socketpair(2)`,
//! `epoll(7)`; Postfix `src/master/master_status.c`,
//! `src/master/master_proto.c`; the byte-stream transports in crate
//! `master-proto-pipe`.
//!
//! [`Framing::Packet`]: master_proto::Framing::Packet
//! [`Malformed::Short`]: master_proto::Malformed::Short
//! [`Malformed::Oversized`]: master_proto::Malformed::Oversized
//! [`Identity::KernelPid`]: master_proto::Identity::KernelPid
//! [`Identity::Claimed`]: master_proto::Identity::Claimed
//! [`Identity::Channel`]: master_proto::Identity::Channel
//! [`Sender::KernelPid`]: master_proto::Sender::KernelPid
//! [`Sender::Channel`]: master_proto::Sender::Channel
//! [`Outcome::ForgedPid`]: master_proto::master::Outcome::ForgedPid
//! [`Delivery::EveryUpdate`]: master_proto::Delivery::EveryUpdate
//! [`BackPressure::Block`]: master_proto::BackPressure::Block
//! [`BackPressure::BlockFor`]: master_proto::BackPressure::BlockFor
//! [`NotifyError::Disconnected`]: master_proto::NotifyError::Disconnected
//! [`Received::Malformed`]: master_proto::Received::Malformed

mod dgram;
#[cfg(feature = "conformance")]
mod hostile;
mod packet;
mod sys;

pub use dgram::{BoundedDgram, Dgram, LIFELINE};
pub use packet::{DgramSource, PacketSink};

cfg_if::cfg_if! {
    if #[cfg(any(target_os = "linux", target_os = "android"))] {
        mod seqpacket;
        pub use seqpacket::{ChannelSource, SeqPacket};
    }
}
