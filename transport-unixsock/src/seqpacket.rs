//! `seqpacket`: an `AF_UNIX SOCK_SEQPACKET` socketpair shared by all
//! children of a service.
//!
//! The master reads one end (non-blocking, `SO_PASSCRED` on Linux); every
//! child sends 12-byte records on a duplicate of the other end at fd 5. The
//! kernel keeps each record whole and names its sender (`SCM_CREDENTIALS`).
//!
//! Unlike a datagram socket, a sequenced-packet socket is a connection: when
//! the master's end closes (a reload, or the master's death), the kernel
//! shuts the children's end down, so fd 5 itself becomes readable (EOF,
//! hang-up) and the next `send` fails with `EPIPE`, which `MSG_NOSIGNAL`
//! keeps from raising `SIGPIPE`. No lifeline is needed, and since one open
//! file does both jobs there is no release-order race: a notify is one
//! `send(2)`.
//!
//! # One channel shared, not one per child
//!
//! The channel is shared by the service's children, like Postfix's own.
//! A socketpair per child would name each sender by its channel on every
//! platform (`Identity::PrivateChannel`) and keep one child's flood or
//! `shutdown(2)` of its socket from touching the others, at the price of a
//! descriptor per child in the master, an aggregating poll set (epoll)
//! behind the source's one descriptor, and per-child bookkeeping. With
//! `SCM_CREDENTIALS` the kernel already names each sender on Linux, so the
//! shared channel keeps the master at one descriptor per service and spawns
//! at one `dup`. What sharing costs: a child can shut the shared socket down
//! (`shutdown(2)` acts on the socket, not the descriptor), which ends the
//! channel for every child of the service; the source then reports
//! [`master_proto::RecvError::Closed`] once, and the master reopens the
//! channel as on a reload.
//!
//! # See also
//!
//! `unix(7)`, `socketpair(2)`; Postfix `src/master/master_status.c`.

use std::io;
use std::os::fd::OwnedFd;

use master_proto::env::ChildEnv;
use master_proto::transport::check_transport;
use master_proto::{Caps, ChildEnd, EnvError, Transport};

use crate::packet::{PACKET_CAPS, PacketSink, PacketSource, open_pair};

/// A `SOCK_SEQPACKET` socketpair shared by a service's children;
/// kernel-verified sender pids on Linux.
///
/// # Examples
///
/// ```
/// use master_proto::{StatusSource, Transport};
/// let mut source = master_proto_unixsock::SeqPacket.open()?;
/// let end = master_proto_unixsock::SeqPacket.child_end(&mut source, 1)?;
/// assert!(end.aux.is_empty());
/// assert_eq!(source.try_recv(), Ok(None));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SeqPacket;

impl Transport for SeqPacket {
    type Source = PacketSource;
    type Sink = PacketSink;

    const NAME: &'static str = "seqpacket";

    fn caps(&self) -> Caps {
        PACKET_CAPS
    }

    fn open(&self) -> io::Result<PacketSource> {
        let (master, child) = open_pair(socket2::Type::SEQPACKET)?;
        Ok(PacketSource::new(master, child, None, true))
    }

    fn child_end(&self, source: &mut PacketSource, _generation: u32) -> io::Result<ChildEnd> {
        Ok(ChildEnd { transport: Self::NAME, status: OwnedFd::from(source.child_status.try_clone()?), aux: Vec::new() })
    }

    fn sink(&self, env: &mut ChildEnv) -> Result<PacketSink, EnvError> {
        check_transport(env, Self::NAME, false)?;
        let status = env.take_status()?;
        Ok(PacketSink::new(status, None, env.pid, env.generation))
    }
}
