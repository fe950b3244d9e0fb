//! Packet status channels: `AF_UNIX` `SOCK_DGRAM` and `SOCK_SEQPACKET`
//! socketpairs with kernel-verified senders.
//!
//! Two flavours of [`master_proto::Transport`], both one socketpair shared
//! by every child of a service, both carrying Postfix's 12-byte records as
//! one datagram each:
//!
//! | flavour | name | mechanism | master gone, as the child sees it |
//! |---|---|---|---|
//! | [`Dgram`] | `dgram` | `AF_UNIX SOCK_DGRAM` socketpair | EOF on a lifeline pipe; `send` fails with `ECONNREFUSED` / `ENOTCONN` |
//! | [`SeqPacket`] | `seqpacket` | `AF_UNIX SOCK_SEQPACKET` socketpair | EOF and hang-up on fd 5; `send` fails with `EPIPE` |
//!
//! What both promise ([`master_proto::Caps`]):
//!
//! - **framing** [`Framing::Packet`]: the kernel keeps each record's
//!   boundaries. A datagram of another length than 12 bytes is reported as
//!   what it is ([`Malformed::Short`], or [`Malformed::Oversized`] with its
//!   real length, learnt with `MSG_TRUNC`), and never costs a neighbour its
//!   framing.
//! - **identity** [`Identity::KernelPid`] on Linux and Android: the master's
//!   socket has `SO_PASSCRED` from before any child holds the other end, and
//!   each update is reported with the pid from its `SCM_CREDENTIALS`
//!   ([`Sender::KernelPid`]), so [`master_proto::master::Master::receive`]
//!   rejects an update whose claimed pid differs as
//!   [`Outcome::ForgedPid`]. A message without credentials is reported as
//!   from pid 0, which is never a child. Elsewhere the identity is
//!   [`Identity::Claimed`], as in Postfix. (A sender with `CAP_SYS_ADMIN`
//!   may put another pid in its credentials: the kernel lets privileged
//!   processes do so.)
//! - **delivery** [`Delivery::EveryUpdate`]: one queue, one datagram per
//!   update, in the order sent.
//! - **back-pressure** [`BackPressure::Block`]: a child whose update does
//!   not fit blocks until the master reads or goes away (then
//!   `Disconnected`), even if some child made the shared socket
//!   non-blocking.
//! - a sink may be shared by threads: an update is one `send(2)`.
//!
//! [`SeqPacket`] is the cheaper of the two for a child (one system call per
//! notify, the disconnect signalled on fd 5 itself); [`Dgram`] needs a
//! lifeline because a datagram socket is not told that its peer closed.
//! The `seqpacket` module docs say why the channel is shared rather than
//! one per child.
//!
//! # Errors
//!
//! A child's `notify` returns [`NotifyError::Disconnected`] once the master
//! has gone, never dies of `SIGPIPE` whatever the process's disposition,
//! and retries `EINTR`. The master's source never blocks, retries `EINTR`,
//! reports malformed datagrams as [`Received::Malformed`], closes any
//! descriptor a child attaches (`SCM_RIGHTS`), and reports
//! [`master_proto::RecvError::Closed`] once if a child shuts the shared
//! `SOCK_SEQPACKET` socket down.
//!
//! # See also
//!
//! `unix(7)` (`SO_PASSCRED`, `SCM_CREDENTIALS`), `socketpair(2)`; Postfix
//! `src/master/master_status.c`, `src/master/master_proto.c`; the
//! byte-stream transports in crate `master-proto-pipe`.
//!
//! [`Framing::Packet`]: master_proto::Framing::Packet
//! [`Malformed::Short`]: master_proto::Malformed::Short
//! [`Malformed::Oversized`]: master_proto::Malformed::Oversized
//! [`Identity::KernelPid`]: master_proto::Identity::KernelPid
//! [`Identity::Claimed`]: master_proto::Identity::Claimed
//! [`Sender::KernelPid`]: master_proto::Sender::KernelPid
//! [`Outcome::ForgedPid`]: master_proto::master::Outcome::ForgedPid
//! [`Delivery::EveryUpdate`]: master_proto::Delivery::EveryUpdate
//! [`BackPressure::Block`]: master_proto::BackPressure::Block
//! [`NotifyError::Disconnected`]: master_proto::NotifyError::Disconnected
//! [`Received::Malformed`]: master_proto::Received::Malformed

mod dgram;
mod packet;
mod seqpacket;
mod sys;

pub use dgram::{Dgram, LIFELINE};
pub use packet::{PacketSink, PacketSource};
pub use seqpacket::SeqPacket;
