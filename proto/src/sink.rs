//! The child side: [`StatusSink`], Postfix's `master_notify()`.
//!
//! A child holds one sink for its whole life. Its pid and spawn generation
//! are bound when the sink is made (from the standard environment, see
//! [`crate::env`]), so a call says only the new state.
//!
//! # Errors
//!
//! [`NotifyError::Disconnected`] means the master has gone: it closed the
//! channel after a reload to make old children exit, or it died. A Postfix
//! child treats that as the signal to exit when idle. Every sink must also
//! offer a file descriptor that becomes readable when the master goes away
//! ([`StatusSink::disconnect_fd`]), so a child can wait for that in its event
//! loop without sending anything. No sink ever raises `SIGPIPE`, whatever the
//! process's `SIGPIPE` disposition, and every sink retries `EINTR`.
//!
//! # See also
//!
//! Postfix `src/master/master_proto.c` (`master_notify`),
//! `src/master/single_server.c` (watching `MASTER_STATUS_FD` for EOF).

use std::os::fd::BorrowedFd;

use nix::errno::Errno;

use crate::wire::Status;

/// The child's end of a service's status channel.
///
/// # Examples
///
/// ```no_run
/// # fn serve() {}
/// use master_proto::{Status, StatusSink, NotifyError};
/// fn one_client(sink: &impl StatusSink) -> Result<(), NotifyError> {
///     sink.notify(Status::TAKEN)?;
///     serve();
///     sink.notify(Status::AVAIL)
/// }
/// ```
pub trait StatusSink {
    /// Tells the master this child's new status.
    ///
    /// What happens when the master is not reading is the transport's
    /// declared [`crate::BackPressure`].
    ///
    /// # Errors
    ///
    /// [`NotifyError::Disconnected`] once the master has gone;
    /// [`NotifyError::Full`] where the transport declares a bounded or
    /// non-blocking back-pressure and the channel stayed full;
    /// [`NotifyError::Io`] for any other failure, with its errno.
    fn notify(&self, status: Status) -> Result<(), NotifyError>;

    /// A descriptor that becomes readable (or reports hang-up, or an error:
    /// a pipe's write end with no reader left reports only `POLLERR`) once
    /// the master has gone, and not before. Poll it for `POLLIN` (poll and
    /// epoll report hang-up and errors whatever was asked for; tokio needs
    /// `Interest::ERROR` too, which `tokio::Disconnect` (feature `tokio`) asks for);
    /// do not read from it or change its flags.
    fn disconnect_fd(&self) -> BorrowedFd<'_>;

    /// The pid this sink reports in each update.
    fn pid(&self) -> i32;

    /// The spawn generation this sink reports in each update.
    fn generation(&self) -> u32;
}

/// Why [`StatusSink::notify`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The master has gone (closed the channel or died): exit when idle.
    #[error("the master closed the status channel")]
    Disconnected,
    /// The channel stayed full for as long as the transport waits.
    #[error("the status channel is full")]
    Full,
    /// The send failed for another reason.
    #[error("status notification failed: {0}")]
    Io(#[source] Errno),
}

impl NotifyError {
    /// What a `write(2)` or `send(2)` of a record that failed with `errno`
    /// means: [`Disconnected`](Self::Disconnected) for the errors of a
    /// writer whose reader has gone (`EPIPE` on a pipe or a stream or
    /// seqpacket socket, `ECONNRESET`, `ENOTCONN`, and `ECONNREFUSED` for
    /// the first datagram to a closed peer), [`Io`](Self::Io) for any other.
    /// Callers retry `EINTR` and wait out `EAGAIN` themselves.
    #[must_use]
    pub const fn from_send_errno(errno: Errno) -> NotifyError {
        match errno {
            Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN | Errno::ECONNREFUSED => NotifyError::Disconnected,
            errno => NotifyError::Io(errno),
        }
    }
}

impl From<NotifyError> for std::io::Error {
    fn from(e: NotifyError) -> std::io::Error {
        use std::io::ErrorKind;
        match e {
            NotifyError::Disconnected => std::io::Error::new(ErrorKind::BrokenPipe, e),
            NotifyError::Full => std::io::Error::new(ErrorKind::WouldBlock, e),
            NotifyError::Io(errno) => std::io::Error::from(errno),
        }
    }
}
