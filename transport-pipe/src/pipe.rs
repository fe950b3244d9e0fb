//! `pipe`: an anonymous pipe shared by all children of a service, with a
//! lifeline.
//!
//! Children write 12-byte records into the pipe's write end at fd 5; a write
//! of at most `PIPE_BUF` bytes is atomic, so records of different children
//! never interleave. The master reads the other end, non-blocking.
//!
//! The master gone, as the child sees it: on Linux a pipe's write end
//! reports `POLLERR` (which every poll reports, whatever it asked for) as
//! soon as no reader is left, so fd 5 itself is the child's disconnect fd,
//! and since one open file both carries the writes and reports the reader
//! gone, no write can succeed after it fired. Elsewhere each child also
//! gets the read end of a *lifeline* pipe (auxiliary descriptor `lifeline`,
//! [`master_proto::lifeline`]) whose only write end the master holds; a
//! dying master's files are released in no promised order, so `notify`
//! then looks at the lifeline before writing.
//!
//! A `write(2)` to a pipe without readers raises `SIGPIPE`, and unlike
//! `send(2)` it has no `MSG_NOSIGNAL`. `notify` writes with
//! `pwritev2(RWF_NOSIGNAL)` (Linux 6.18), which fails with `EPIPE` and
//! raises nothing: one system call per update, as the raw write. Where the
//! kernel does not know the flag, `notify` blocks `SIGPIPE` in the calling
//! thread around a plain write and consumes the signal the failed write
//! left pending before restoring the mask (three system calls), so the
//! process never sees it, whatever its disposition.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use master_proto::env::ChildEnv;
use master_proto::lifeline::{self, Lifeline};
use master_proto::{Caps, EndFds, EnvError, NotifyError, Status, StatusSink, StatusUpdate, Transport};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};

use crate::source::StreamSource;
use crate::sys;

pub use master_proto::lifeline::LIFELINE;

/// An anonymous pipe shared by a service's children (plus a lifeline where
/// a pipe's write end cannot tell that its reader left: not on Linux).
///
/// # Examples
///
/// ```
/// use master_proto::{StatusSource, Transport};
/// let mut source = master_proto_pipe::Pipe.open()?;
/// let end = master_proto_pipe::Pipe.child_end(&mut source, 1)?;
/// # #[cfg(target_os = "linux")]
/// assert!(end.aux.is_empty(), "fd 5 itself reports the master gone");
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
        let lifeline = if sys::NEEDS_LIFELINE { Some(Lifeline::new()?) } else { None };
        Ok(StreamSource::new(reader, writer.into(), lifeline))
    }

    fn end_fds(&self, source: &mut StreamSource, _generation: u32) -> io::Result<EndFds> {
        let aux = match &source.lifeline {
            Some(lifeline) => vec![lifeline.aux()?],
            None => Vec::new(),
        };
        Ok(EndFds { status: sys::dup(&source.child_status)?, aux })
    }

    fn open_sink(&self, env: &mut ChildEnv) -> Result<PipeSink, EnvError> {
        let lifeline = if sys::NEEDS_LIFELINE { Some(lifeline::take(env)?) } else { None };
        let status = env.take_status()?;
        Ok(PipeSink { fd: status, lifeline, pid: env.pid, generation: env.generation })
    }
}

/// A child's end of a [`Pipe`] channel.
#[derive(Debug)]
pub struct PipeSink {
    fd: OwnedFd,
    /// Where fd 5 cannot tell that its reader left.
    lifeline: Option<OwnedFd>,
    pid: i32,
    generation: u32,
}

impl StatusSink for PipeSink {
    #[inline]
    fn notify(&self, status: Status) -> Result<(), NotifyError> {
        if let Some(l) = &self.lifeline {
            // The dying master closes its read end and the lifeline's write
            // end one after the other, and the kernel may release the
            // lifeline first: look at the lifeline before writing, so that a
            // notify after the disconnect fd fired always says Disconnected.
            lifeline::check(l)?;
        }
        let record = StatusUpdate { pid: self.pid, generation: self.generation, status }.encode();
        loop {
            return match sys::write_nosignal(self.fd.as_fd(), &record) {
                // The whole record (a pipe takes at most PIPE_BUF bytes
                // whole), or, after a signal, nothing.
                Some(Ok(n)) if n == record.len() => Ok(()),
                Some(Err(Errno::EINTR)) => continue,
                Some(Ok(n)) => finish(&self.fd, &record, n),
                Some(Err(errno)) => Err(NotifyError::from_send_errno(errno)),
                None => finish(&self.fd, &record, 0),
            };
        }
    }

    fn disconnect_fd(&self) -> BorrowedFd<'_> {
        self.lifeline.as_ref().unwrap_or(&self.fd).as_fd()
    }

    fn pid(&self) -> i32 {
        self.pid
    }

    fn generation(&self) -> u32 {
        self.generation
    }
}

/// Writes what is left of `record` after `done` bytes, the slow way (rare:
/// a signal arrived, or the kernel lacks `RWF_NOSIGNAL`): with `SIGPIPE`
/// blocked around plain writes.
#[cold]
#[inline(never)]
fn finish(fd: &OwnedFd, record: &[u8], done: usize) -> Result<(), NotifyError> {
    let rest = record.get(done..).unwrap_or_default();
    without_sigpipe(|| sys::write_all(rest, |rest| nix::unistd::write(fd, rest)))
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
