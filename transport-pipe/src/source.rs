//! The master's end of a byte-stream channel, shared by both flavours.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use master_proto::lifeline::Lifeline;
use master_proto::stream::StreamDecoder;
use master_proto::{BackPressure, Caps, Delivery, Framing, Identity, Received, RecvError, Sender, StatusSource};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};

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
/// # Reading
///
/// A read that returns less than it asked for found the stream empty, so
/// the source then asks `poll(2)` (zero timeout) whether more has come
/// before it reads again, and says nothing is pending when poll says so.
/// Reading again at once would do no more for the master and cost the
/// children dearly: a pipe's read and write both take the pipe's lock, and
/// a reader that comes back to it straight away takes each record as it is
/// written, spinning on the writer's lock; poll looks without the lock.
/// Either way "nothing pending" is the kernel's word at that moment, so
/// whatever comes later makes its own edge.
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
    /// The last read returned less than it asked for (it emptied the
    /// stream): ask poll before reading again.
    emptied: bool,
}

impl StreamSource {
    pub(crate) fn new(reader: OwnedFd, child_status: OwnedFd, lifeline: Option<Lifeline>) -> StreamSource {
        StreamSource {
            reader,
            child_status,
            lifeline,
            decoder: StreamDecoder::new(BATCH),
            closed: false,
            emptied: false,
        }
    }
}

impl AsFd for StreamSource {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.reader.as_fd()
    }
}

impl StreamSource {
    /// Whether the stream has bytes to read now, asked without reading.
    fn readable(&self) -> Result<bool, RecvError> {
        let mut fds = [PollFd::new(self.reader.as_fd(), PollFlags::POLLIN)];
        loop {
            return match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
                Ok(n) => Ok(n > 0),
                Err(Errno::EINTR) => continue,
                Err(errno) => Err(RecvError::Io(errno)),
            };
        }
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
            // After a read that emptied the stream, only read again if
            // something came (see "Reading"); "nothing" is as good as EAGAIN.
            if std::mem::take(&mut self.emptied) && !self.readable()? {
                return Ok(self.decoder.take_partial().map(Received::Malformed));
            }
            let reader = &self.reader;
            let mut emptied = false;
            let read = self.decoder.fill_with(|buf| {
                let read = nix::unistd::read(reader, buf);
                emptied = matches!(read, Ok(n) if n < buf.len());
                read
            });
            match read {
                Ok(0) => {
                    // Every write end is closed. The source holds one itself,
                    // so this means a descriptor was closed behind its back;
                    // report what is left, then Closed, without spinning.
                    self.closed = true;
                    if let Some(m) = self.decoder.take_partial() {
                        return Ok(Some(Received::Malformed(m)));
                    }
                }
                Ok(_) => self.emptied = emptied,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Ok(self.decoder.take_partial().map(Received::Malformed)),
                Err(errno) => return Err(RecvError::Io(errno)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use master_proto::{Malformed, Status, StatusUpdate, Transport};

    use super::*;
    use crate::{Duplex, Pipe};

    fn record(pid: i32) -> [u8; 12] {
        StatusUpdate { pid, generation: 1, status: Status::AVAIL }.encode()
    }

    fn update(item: Option<Received>) -> i32 {
        match item {
            Some(Received::Update { update, .. }) => update.pid,
            other => panic!("expected an update, got {other:?}"),
        }
    }

    /// Both flavours: after a read that emptied the stream, the next read
    /// is decided by poll, which must see what came in between; a partial
    /// record left at such a moment is reported and framing restarts.
    fn after_an_emptying_read<T: Transport<Source = StreamSource>>(transport: &T) {
        let mut source = transport.open().unwrap();
        let end = transport.child_end(&mut source, 1).unwrap();
        let write = |bytes: &[u8]| assert_eq!(nix::unistd::write(&end.status, bytes), Ok(bytes.len()));
        write(&record(1));
        assert_eq!(update(source.try_recv().unwrap()), 1, "the first read takes it, and empties the stream");
        write(&record(2));
        assert_eq!(update(source.try_recv().unwrap()), 2, "poll sees what came after the emptying read");
        assert_eq!(source.try_recv(), Ok(None), "nothing left");
        write(&record(3));
        write(&record(4)[..5]);
        assert_eq!(update(source.try_recv().unwrap()), 3);
        assert_eq!(source.try_recv(), Ok(Some(Received::Malformed(Malformed::Short(5)))));
        write(&record(5));
        assert_eq!(update(source.try_recv().unwrap()), 5, "framing restarts after the drained moment");
        let mut seen = Vec::new();
        write(&record(6));
        write(&record(7));
        assert_eq!(source.drain(|item| seen.push(update(Some(item)))), Ok(2));
        assert_eq!(seen, [6, 7]);
        write(&record(8));
        assert_eq!(source.drain(|item| seen.push(update(Some(item)))), Ok(1), "a drain after an emptying read");
        assert_eq!(seen, [6, 7, 8]);
        assert_eq!(source.drain(|item| panic!("nothing is pending, got {item:?}")), Ok(0));
    }

    #[test]
    fn pipe_reads_what_came_after_an_emptying_read() {
        after_an_emptying_read(&Pipe);
    }

    #[test]
    fn duplex_reads_what_came_after_an_emptying_read() {
        after_an_emptying_read(&Duplex);
    }
}
