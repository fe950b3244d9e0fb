//! Byte-stream status channels: an anonymous pipe, and Postfix's own duplex
//! pipe.
//!
//! Two flavours of [`master_proto::Transport`], both shared by every child
//! of a service, both carrying Postfix's 12-byte records as a byte stream:
//!
//! | flavour | name | mechanism | master gone, as the child sees it |
//! |---|---|---|---|
//! | [`Duplex`] | `duplex` | `AF_UNIX SOCK_STREAM` socketpair, as Postfix's master(8) | EOF on fd 5; `send` fails with `EPIPE` |
//! | [`Pipe`] | `pipe` | anonymous pipe (`os_pipe`) | `POLLERR` on fd 5 (no reader left; elsewhere than Linux, EOF on a lifeline pipe); the write fails with `EPIPE` |
//!
//! [`Duplex`] is byte-exact with Postfix: a child built on it runs under a
//! real Postfix master(8), and a master built on it reads real Postfix
//! daemons. [`Pipe`] is the lightest mechanism: on Linux a notify is one
//! `pwritev2(RWF_NOSIGNAL)` and fd 5 itself reports the master gone (where
//! a pipe's write end cannot tell that its reader left, each child also
//! gets the read end of a *lifeline* pipe whose only write end the master
//! holds, passed as auxiliary descriptor `lifeline`).
//!
//! Both deliver every update whole and in per-child order: an honest record
//! is one `write(2)` of 12 bytes, which a pipe (at most `PIPE_BUF` bytes) and
//! an `AF_UNIX` stream (one kernel buffer) keep whole. Both block a child
//! whose channel is full until the master reads or goes away. Neither can
//! vouch for a sender: the pid is a claim, as in Postfix.
//!
//! # Errors
//!
//! A child's `notify` returns [`NotifyError::Disconnected`] when the master
//! has gone, never dies of `SIGPIPE` whatever the process's disposition, and
//! retries `EINTR`. The master's source reports a partial record as
//! [`master_proto::Malformed::Short`] once the stream is drained (see
//! [`master_proto::stream`] for what a hostile short write can cost its
//! neighbours).
//!
//! # See also
//!
//! Postfix `src/master/master_status.c` (`master_status_init`: the duplex
//! pipe), `src/master/master_proto.c`.
//!
//! [`NotifyError::Disconnected`]: master_proto::NotifyError::Disconnected

mod duplex;
#[cfg(feature = "conformance")]
mod hostile;
mod pipe;
mod source;
mod sys;

pub use duplex::{Duplex, DuplexSink};
pub use pipe::{LIFELINE, Pipe, PipeSink};
pub use source::StreamSource;
