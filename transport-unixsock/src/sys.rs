//! The platform's part: kernel credentials (`SO_PASSCRED`,
//! `SCM_CREDENTIALS`) where there are any, one `recvmsg(2)`, and polling.
//!
//! The platform choice is this one `cfg_if!` chain. Linux and Android
//! attach the sender's pid to every datagram once the receiving socket has
//! `SO_PASSCRED`; elsewhere the pid in an update is only a claim, as in
//! Postfix.
//!
//! # Safety
//!
//! A hostile child may attach descriptors (`SCM_RIGHTS`) to what it sends.
//! The control buffer has room for the most the kernel passes in one
//! message, so every such descriptor is installed in the master and reported
//! here; the one `unsafe` block takes ownership of each, to close it at
//! once, and is sound because the kernel has just installed it for this
//! process and nothing else knows its number.

#![allow(unsafe_code)] // Safety: closing descriptors a child attached to a datagram (see the module docs).

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use master_proto::{Identity, Sender};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

cfg_if::cfg_if! {
    if #[cfg(any(target_os = "linux", target_os = "android"))] {
        /// What the source can vouch for: the kernel's word on the sender.
        pub(crate) const IDENTITY: Identity = Identity::KernelPid;

        /// Asks the kernel to attach each sender's credentials to what
        /// `sock` receives. Set before any child gets the other end.
        pub(crate) fn pass_credentials(sock: &socket2::Socket) -> std::io::Result<()> {
            sock.set_passcred(true)
        }

        /// Flags for every receive: never block, learn a datagram's real
        /// length (`MSG_TRUNC`), and make attached descriptors
        /// close-on-exec from the start.
        fn recv_flags() -> MsgFlags {
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC | MsgFlags::MSG_CMSG_CLOEXEC
        }

        /// The sender a received message names: its kernel credentials, or
        /// pid 0 (never a child's) when none came, so that an update
        /// without credentials can never pass for a verified one.
        fn sender(cmsg: &ControlMessageOwned) -> Option<Sender> {
            match cmsg {
                ControlMessageOwned::ScmCredentials(creds) => Some(Sender::KernelPid(creds.pid())),
                _ => None,
            }
        }

        /// The sender of a message that carried no credentials.
        const NO_CREDENTIALS: Sender = Sender::KernelPid(0);
    } else if #[cfg(unix)] {
        /// What the source can vouch for: nothing; the pid is a claim.
        pub(crate) const IDENTITY: Identity = Identity::Claimed;

        /// No credentials to ask for on this platform (the same signature
        /// as on Linux).
        pub(crate) fn pass_credentials(_sock: &socket2::Socket) -> std::io::Result<()> {
            Ok(())
        }

        /// Flags for every receive: never block.
        fn recv_flags() -> MsgFlags {
            MsgFlags::MSG_DONTWAIT
        }

        /// No control message names a sender on this platform.
        fn sender(_cmsg: &ControlMessageOwned) -> Option<Sender> {
            None
        }

        /// The sender of every message: a claim.
        const NO_CREDENTIALS: Sender = Sender::Claimed;
    } else {
        compile_error!("master-proto-unixsock needs AF_UNIX sockets");
    }
}

/// How many bytes of a datagram are read: one more than a record, so that a
/// longer datagram is seen to be longer wherever `MSG_TRUNC` does not report
/// the real length.
pub(crate) const BUF: usize = master_proto::WIRE_SIZE + 1;

/// Room for credentials plus the most descriptors the kernel passes in one
/// message (`SCM_MAX_FD`, 253), with headers and alignment to spare.
const CMSG_BUF: usize = 2048;

/// One received message.
pub(crate) struct Message {
    /// The first bytes of the datagram.
    pub(crate) data: [u8; BUF],
    /// Its length: the real length where the kernel reports it, else at most
    /// [`BUF`].
    pub(crate) len: usize,
    /// Whether the kernel cut it to fit [`BUF`].
    pub(crate) truncated: bool,
    /// Whether the kernel attached the sender's credentials.
    pub(crate) has_credentials: bool,
    /// Who sent it, as far as the kernel says.
    pub(crate) sender: Sender,
}

/// Receives one message from `sock` without blocking; `Ok(None)` when none
/// is pending. `EINTR` is retried. Descriptors attached to it are closed.
pub(crate) fn recv(sock: BorrowedFd<'_>) -> nix::Result<Option<Message>> {
    let mut data = [0u8; BUF];
    let mut cmsg = [0u8; CMSG_BUF];
    loop {
        let mut iov = [IoSliceMut::new(&mut data)];
        let msg = match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), recv_flags()) {
            Ok(msg) => msg,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(None),
            Err(errno) => return Err(errno),
        };
        let (len, truncated) = (msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC));
        let mut found = None;
        // A control buffer this large is cut only by a message no honest
        // child sends; then no credentials are trusted (`found` stays None).
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(fds) = &c {
                    for &fd in fds {
                        // SAFETY: the kernel has just installed `fd` in this
                        // process for this message; nothing else owns it.
                        drop(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                }
                found = found.or_else(|| sender(&c));
            }
        }
        let has_credentials = found.is_some();
        return Ok(Some(Message { data, len, truncated, has_credentials, sender: found.unwrap_or(NO_CREDENTIALS) }));
    }
}

/// What [`wait`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ready {
    /// `sock` can be written to (or has an error or hang-up to report).
    Writable,
    /// The lifeline fired.
    Gone,
}

/// Waits until `sock` is writable or `lifeline` (if any) is readable, with
/// `timeout` (`PollTimeout::ZERO` to only look). `EINTR` is retried.
/// `Ok(None)` when the timeout passed.
pub(crate) fn wait(
    sock: Option<BorrowedFd<'_>>,
    lifeline: Option<BorrowedFd<'_>>,
    timeout: PollTimeout,
) -> nix::Result<Option<Ready>> {
    let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(2);
    if let Some(l) = lifeline {
        fds.push(PollFd::new(l, PollFlags::POLLIN));
    }
    if let Some(s) = sock {
        fds.push(PollFd::new(s, PollFlags::POLLOUT));
    }
    loop {
        match poll(&mut fds, timeout) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(errno),
        }
    }
    // The lifeline first: once it fired, the master is gone whatever the
    // socket says.
    let fired = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
    if lifeline.is_some() && fds.first().is_some_and(fired) {
        return Ok(Some(Ready::Gone));
    }
    Ok(Some(Ready::Writable))
}
