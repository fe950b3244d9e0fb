//! The child's end of both flavours, and the master's end of the shared
//! `dgram` channel.
//!
//! A child sends each update as one `send(2)`, which the kernel keeps one
//! datagram (or one `SOCK_SEQPACKET` record), queued whole in the order
//! sent, so a record is never torn, merged or misframed, whatever its
//! neighbours send.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use master_proto::lifeline::{self, Lifeline};
use master_proto::{
    BackPressure, Caps, Delivery, Framing, Malformed, NotifyError, Received, RecvError, Sender, Status, StatusSink,
    StatusSource, StatusUpdate, WIRE_SIZE,
};
use nix::errno::Errno;
use nix::poll::PollTimeout;
use socket2::Socket;

use crate::sys::{self, Ready};

/// What both flavours promise. Every update arrives, whole and in per-child
/// order (a child's updates share one queue, one datagram each); the kernel
/// names the sender where it can (`SCM_CREDENTIALS`; `seqpacket` declares
/// its private channels instead); a full channel blocks the sender until
/// the master reads or goes; one `send` per update, so threads may share a
/// sink.
pub(crate) const PACKET_CAPS: Caps =
    Caps::new(Delivery::EveryUpdate, sys::IDENTITY, Framing::Packet, BackPressure::Block).with_thread_safe_sink(true);

/// Opens a socketpair of `ty`: the master's end, with credentials passing on
/// and non-blocking, and the children's end. Both are close-on-exec.
pub(crate) fn open_pair(ty: socket2::Type) -> io::Result<(Socket, Socket)> {
    // socket2 creates both ends close-on-exec (SOCK_CLOEXEC where the
    // platform has it).
    let (master, child) = Socket::pair(socket2::Domain::UNIX, ty, None)?;
    // Before any child holds the other end: every datagram queued from now
    // on carries its sender's credentials.
    sys::pass_credentials(&master)?;
    // Only the master's end: the two ends are separate open files, so
    // children keep blocking sends.
    master.set_nonblocking(true)?;
    Ok((master, child))
}

/// The master's end of a [`crate::Dgram`] channel.
///
/// It holds the master's socket (non-blocking, with `SO_PASSCRED` on
/// Linux), the child-side socket that each child's fd 5 duplicates, and the
/// lifeline. All are close-on-exec, so none leaks
/// into a child. Dropping the source closes the channel: every child's next
/// `notify` returns `Disconnected` and its disconnect fd fires. This is how
/// a reload makes old children exit.
#[derive(Debug)]
pub struct DgramSource {
    /// The lifeline children get a copy of. First, so that it is the first
    /// thing dropping the source closes: it is the children's disconnect
    /// fd, and their notify looks at it before sending.
    pub(crate) lifeline: Lifeline,
    master: Socket,
    /// The receive buffers, reused by every read.
    batch: sys::Batch,
    /// What children get at fd 5 (a duplicate per spawn).
    pub(crate) child_status: Socket,
}

impl DgramSource {
    pub(crate) fn new(master: Socket, child_status: Socket, lifeline: Lifeline) -> DgramSource {
        DgramSource { master, batch: sys::Batch::new(), child_status, lifeline }
    }
}

impl AsFd for DgramSource {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }
}

impl StatusSource for DgramSource {
    fn try_recv(&mut self) -> Result<Option<Received>, RecvError> {
        // A datagram socket has no end: a read of nothing is an empty
        // datagram.
        let msgs = self.batch.recv(self.master.as_fd(), 1).map_err(RecvError::Io)?;
        Ok(msgs.first().map(|msg| item(msg, msg.sender)))
    }

    /// Reads up to 64 datagrams per system call (`recvmmsg(2)` on
    /// Linux), until the socket has no more.
    ///
    /// It stops after a read that filled fewer slots than it offered: the
    /// queue was empty when the kernel looked for the next datagram, so
    /// whatever comes later makes its own edge. (Or the kernel met an
    /// error, which it keeps for the next read; on this socketpair that can
    /// only be one it raises while this call runs, with its own wake-up.)
    fn drain(&mut self, mut f: impl FnMut(Received)) -> Result<usize, RecvError> {
        let mut n = 0;
        loop {
            let msgs = self.batch.recv(self.master.as_fd(), sys::SLOTS).map_err(RecvError::Io)?;
            for msg in msgs {
                f(item(msg, msg.sender));
            }
            n += msgs.len();
            if msgs.len() < sys::SLOTS {
                return Ok(n);
            }
        }
    }
}

/// What one received message is: an update from `sender`, or malformed.
pub(crate) fn item(msg: &sys::Message, sender: Sender) -> Received {
    if msg.truncated || msg.len > WIRE_SIZE {
        return Received::Malformed(Malformed::Oversized(msg.len));
    }
    match StatusUpdate::decode_packet(msg.data.get(..msg.len).unwrap_or_default()) {
        Ok(update) => Received::Update { update, sender },
        Err(malformed) => Received::Malformed(malformed),
    }
}

/// A child's end of a [`crate::Dgram`], [`crate::BoundedDgram`] or
/// [`crate::SeqPacket`] channel.
///
/// Each [`notify`](StatusSink::notify) is one `send(2)` of one 12-byte
/// datagram with `MSG_NOSIGNAL`; the `dgram` flavours first look at their
/// lifeline (a zero-timeout `poll`). Its disconnect fd is the lifeline
/// (`dgram`) or fd 5 itself (`seqpacket`).
#[derive(Debug)]
pub struct PacketSink {
    sock: Socket,
    lifeline: Option<OwnedFd>,
    /// How long a `notify` waits for room before it says `Full`; `None`:
    /// for as long as it takes.
    bound: Option<Duration>,
    pid: i32,
    generation: u32,
}

impl PacketSink {
    pub(crate) fn new(sock: OwnedFd, lifeline: Option<OwnedFd>, pid: i32, generation: u32) -> PacketSink {
        PacketSink { sock: Socket::from(sock), lifeline, bound: None, pid, generation }
    }

    /// The same sink, whose `notify` waits at most `bound` for room.
    pub(crate) fn with_bound(self, bound: Duration) -> PacketSink {
        PacketSink { bound: Some(bound), ..self }
    }

    /// Waits for room on the socket (or the master's exit), at most until
    /// `deadline` if there is one: `Full` when it passes first.
    #[cold]
    fn wait_for_room(&self, deadline: Option<Instant>) -> Result<(), NotifyError> {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(NotifyError::Full);
                }
                // Rounded up, so that the wait never ends before the
                // deadline; `EINTR` comes back here with less left.
                PollTimeout::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(PollTimeout::MAX)
            }
        };
        match sys::wait(Some(self.sock.as_fd()), self.lifeline.as_ref().map(AsFd::as_fd), timeout)
            .map_err(NotifyError::Io)?
        {
            Some(Ready::Gone) => Err(NotifyError::Disconnected),
            Some(Ready::Writable) => Ok(()),
            None => Err(NotifyError::Full),
        }
    }
}

impl StatusSink for PacketSink {
    fn notify(&self, status: Status) -> Result<(), NotifyError> {
        // A dying master's socket and lifeline are two open files, which
        // the kernel releases one after the other in no promised order: the
        // lifeline may fire while the socket still takes datagrams. Look at
        // it first, so that a notify after the disconnect fd fired always
        // says Disconnected.
        if let Some(l) = &self.lifeline {
            lifeline::check(l)?;
        }
        let record = StatusUpdate { pid: self.pid, generation: self.generation, status }.encode();
        // Set at the first EAGAIN: the bound counts from there, across any
        // number of wake-ups that find the room taken by a sibling.
        let mut deadline = None;
        loop {
            match self.sock.send_with_flags(&record, nix::libc::MSG_NOSIGNAL) {
                // A datagram is sent whole or not at all.
                Ok(_) => return Ok(()),
                Err(e) => match Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
                    Errno::EINTR => {}
                    // The socket's open file is shared by every child of the
                    // service, and any of them may have made it
                    // non-blocking (a bounded channel's is, from the
                    // start): wait for room (or the master's exit) here, so
                    // that a full channel blocks as declared, or for at
                    // most the bound.
                    Errno::EAGAIN => {
                        if deadline.is_none() {
                            deadline = Some(self.bound.map(|b| Instant::now() + b));
                        }
                        self.wait_for_room(deadline.flatten())?;
                    }
                    // The master's socket is closed: ECONNREFUSED for the
                    // first datagram sent to a closed peer, ENOTCONN after;
                    // EPIPE on a connection the master's exit shut down.
                    errno => return Err(NotifyError::from_send_errno(errno)),
                },
            }
        }
    }

    fn disconnect_fd(&self) -> BorrowedFd<'_> {
        self.lifeline.as_ref().map_or_else(|| self.sock.as_fd(), AsFd::as_fd)
    }

    fn pid(&self) -> i32 {
        self.pid
    }

    fn generation(&self) -> u32 {
        self.generation
    }
}
