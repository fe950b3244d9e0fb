//! `pipe`: an anonymous pipe shared by all children of a service, with a
//! lifeline.
//!
//! Children write 12-byte records into the pipe's write end at fd 5; a write
//! of at most `PIPE_BUF` bytes is atomic, so records of different children
//! never interleave. The master reads the other end, non-blocking.
//!
//! A pipe's write end cannot be watched for the reader leaving, so each
//! child also gets the read end of a *lifeline* pipe (auxiliary descriptor
//! `lifeline`) whose only write end the master holds and never writes: it
//! becomes readable, at EOF, exactly when the master closes the channel or
//! dies.
//!
//! A `write(2)` to a pipe without readers raises `SIGPIPE`, and unlike
//! `send(2)` it has no flag to prevent that. `notify` therefore blocks
//! `SIGPIPE` in the calling thread around the write, and consumes the
//! signal the failed write left pending before restoring the mask, so the
//! process never sees it, whatever its disposition.
//!
//! The lifeline and the pipe are two open files, which a dying master's
//! kernel releases one after the other, in no promised order: a child could
//! see the lifeline fire while the pipe still has its reader for a moment.
//! So `notify` looks at the lifeline (a zero-timeout `poll`) before
//! writing, and a notify after the disconnect fd fired always returns
//! `Disconnected`. A notify is thus four system calls (poll, two
//! `pthread_sigmask`, write); the duplex flavour, one file for both jobs,
//! needs one.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use master_proto::env::ChildEnv;
use master_proto::lifeline::{self, Lifeline};
use master_proto::{Caps, EndFds, EnvError, NotifyError, Status, StatusSink, StatusUpdate, Transport};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};

use crate::source::StreamSource;
use crate::sys;

pub use master_proto::lifeline::LIFELINE;

/// An anonymous pipe shared by a service's children, plus a lifeline.
///
/// # Examples
///
/// ```
/// use master_proto::{StatusSource, Transport};
/// let mut source = master_proto_pipe::Pipe.open()?;
/// let end = master_proto_pipe::Pipe.child_end(&mut source, 1)?;
/// assert_eq!(end.aux[0].0, "lifeline");
/// assert_eq!(source.try_recv(), Ok(None));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Pipe;

impl Transport for Pipe {
    type Source = StreamSource;
    type Sink = PipeSink;

    fn name(&self) -> &'static str {
        "pipe"
    }

    fn caps(&self) -> Caps {
        crate::source::STREAM_CAPS
    }

    fn open(&self) -> io::Result<StreamSource> {
        // os_pipe makes both ends close-on-exec.
        let (reader, writer) = os_pipe::pipe()?;
        let reader = OwnedFd::from(reader);
        sys::set_nonblocking(reader.as_fd())?;
        Ok(StreamSource::new(reader, writer.into(), Some(Lifeline::new()?)))
    }

    fn end_fds(&self, source: &mut StreamSource, _generation: u32) -> io::Result<EndFds> {
        let lifeline = source.lifeline.as_ref().ok_or_else(|| io::Error::other("pipe channel without a lifeline"))?;
        Ok(EndFds { status: sys::dup(&source.child_status)?, aux: vec![lifeline.aux()?] })
    }

    fn open_sink(&self, env: &mut ChildEnv) -> Result<PipeSink, EnvError> {
        let lifeline = lifeline::take(env)?;
        let status = env.take_status()?;
        Ok(PipeSink { fd: status, lifeline, pid: env.pid, generation: env.generation })
    }
}

/// A child's end of a [`Pipe`] channel.
#[derive(Debug)]
pub struct PipeSink {
    fd: OwnedFd,
    lifeline: OwnedFd,
    pid: i32,
    generation: u32,
}

impl StatusSink for PipeSink {
    fn notify(&self, status: Status) -> Result<(), NotifyError> {
        // The dying master closes its read end and the lifeline's write end
        // one after the other, and the kernel may release the lifeline
        // first: look at the lifeline before writing, so that a notify after
        // the disconnect fd fired always says Disconnected.
        lifeline::check(&self.lifeline)?;
        let record = StatusUpdate { pid: self.pid, generation: self.generation, status }.encode();
        without_sigpipe(|| sys::write_all(&record, |rest| nix::unistd::write(&self.fd, rest)))
    }

    fn disconnect_fd(&self) -> BorrowedFd<'_> {
        self.lifeline.as_fd()
    }

    fn pid(&self) -> i32 {
        self.pid
    }

    fn generation(&self) -> u32 {
        self.generation
    }
}

/// Runs `write` with `SIGPIPE` blocked in this thread; if it failed with
/// `EPIPE`, consumes the `SIGPIPE` that the failed write left pending for
/// this thread before restoring the mask.
fn without_sigpipe(write: impl FnOnce() -> Result<(), NotifyError>) -> Result<(), NotifyError> {
    let mut sigpipe = SigSet::empty();
    sigpipe.add(Signal::SIGPIPE);
    let old = match sigpipe.thread_swap_mask(SigmaskHow::SIG_BLOCK) {
        Ok(old) => old,
        Err(errno) => return Err(NotifyError::Io(errno)),
    };
    if old.contains(Signal::SIGPIPE) {
        // The caller blocks SIGPIPE itself: what the write raises is theirs.
        return write();
    }
    let result = write();
    if result == Err(NotifyError::Disconnected) {
        // A write that fails with EPIPE always raises SIGPIPE at the writing
        // thread, and a blocked signal is queued even when its disposition
        // is to ignore it: one is pending now, so this returns at once.
        let _ = sigpipe.wait();
    }
    // Restoring the mask cannot fail with a valid `how`; should it, the
    // thread keeps SIGPIPE blocked, which is harmless.
    let _ = old.thread_set_mask();
    result
}
