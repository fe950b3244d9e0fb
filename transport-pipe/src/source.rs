//! The master's end of a byte-stream channel, shared by both flavours.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use master_proto::lifeline::Lifeline;
use master_proto::stream::StreamDecoder;
use master_proto::{BackPressure, Caps, Delivery, Framing, Identity, Received, RecvError, Sender, StatusSource};
use nix::errno::Errno;

/// What both flavours promise; they differ only in Postfix compatibility.
/// Every update arrives (a record is one atomic write), the pid is only
/// claimed, the stream must be counted into records, a full channel blocks
/// the writer until the master reads or goes, and a record is one write, so
/// threads may share a sink.
pub(crate) const STREAM_CAPS: Caps =
    Caps::new(Delivery::EveryUpdate, Identity::Claimed, Framing::ByteStream, BackPressure::Block)
        .with_thread_safe_sink(true);

/// How many records one `read(2)` may take at most.
const BATCH: usize = 512;

/// The master's end of a [`crate::Pipe`] or [`crate::Duplex`] channel.
///
/// It holds the non-blocking read end, and the descriptors that future
/// children's ends are duplicated from (all close-on-exec, so none leaks
/// into a child). Dropping it closes the channel: every child's next
/// `notify` then returns `Disconnected` and its disconnect fd fires. This is
/// how a reload makes old children exit.
#[derive(Debug)]
pub struct StreamSource {
    reader: OwnedFd,
    /// What children get at fd 5 (a duplicate per spawn).
    pub(crate) child_status: OwnedFd,
    /// The lifeline. `None` for the duplex pipe, whose fd 5 itself reports
    /// the master's exit.
    pub(crate) lifeline: Option<Lifeline>,
    decoder: StreamDecoder,
    closed: bool,
}

impl StreamSource {
    pub(crate) fn new(reader: OwnedFd, child_status: OwnedFd, lifeline: Option<Lifeline>) -> StreamSource {
        StreamSource { reader, child_status, lifeline, decoder: StreamDecoder::new(BATCH), closed: false }
    }
}

impl AsFd for StreamSource {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.reader.as_fd()
    }
}

impl StatusSource for StreamSource {
    fn try_recv(&mut self) -> Result<Option<Received>, RecvError> {
        loop {
            if let Some(update) = self.decoder.next_update() {
                return Ok(Some(Received::Update { update, sender: Sender::Claimed }));
            }
            if self.closed {
                return Err(RecvError::Closed);
            }
            let reader = &self.reader;
            match self.decoder.fill_with(|buf| nix::unistd::read(reader, buf)) {
                Ok(0) => {
                    // Every write end is closed. The source holds one itself,
                    // so this means a descriptor was closed behind its back;
                    // report what is left, then Closed, without spinning.
                    self.closed = true;
                    if let Some(m) = self.decoder.take_partial() {
                        return Ok(Some(Received::Malformed(m)));
                    }
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Ok(self.decoder.take_partial().map(Received::Malformed)),
                Err(errno) => return Err(RecvError::Io(errno)),
            }
        }
    }
}
