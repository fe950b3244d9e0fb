//! The platform's part: kernel credentials (`SO_PASSCRED`,
//! `SCM_CREDENTIALS`) where there are any, receiving messages in batches
//! (`recvmmsg(2)` where there is one), and polling.
//!
//! The platform choice is this one `cfg_if!` chain. Linux and Android
//! attach the sender's pid to every datagram once the receiving socket has
//! `SO_PASSCRED`, and take many messages in one `recvmmsg(2)`; elsewhere
//! the pid in an update is only a claim, as in Postfix, and a message is
//! one `recvmsg(2)`.
//!
//! # Reading without a system call per record
//!
//! A [`Batch`] owns the buffers of up to [`SLOTS`] messages and is reused
//! for every read, never zeroed: the kernel says how much of each it wrote
//! (the datagram's length, the control data's length), and nothing beyond
//! that is looked at. One `recvmmsg` fills as many slots as there are
//! messages queued (the master's end is non-blocking), so a master that is
//! behind pays one system call for many records; what the kernel does per
//! record (dequeue, copy, credentials) stays. A batch may also ask whether
//! each message names its sender's address ([`Batch::naming_senders`]),
//! which is how `seqpacket` tells the end of a channel from an empty
//! record.
//!
//! # Attached descriptors
//!
//! A hostile child may attach descriptors (`SCM_RIGHTS`) to what it sends.
//! The kernel installs in the receiver only as many as fit in the control
//! buffer, and drops the rest unopened (`MSG_CTRUNC`); on Linux its
//! credentials come first and always fit (see [`CONTROL`]). Every
//! descriptor the kernel did install is closed before [`Batch::recv`]
//! returns, whether or not the caller looks at the message it came with.
//!
//! # Safety
//!
//! Each `unsafe` block says why it is sound. They are: the receive call,
//! whose headers point only at buffers of the same [`Batch`] that live,
//! unborrowed, through the call; all-zero headers to start from; libc's
//! `CMSG_*` arithmetic (`unsafe` only by the C macros' heritage); copying a
//! control message header out of bytes the kernel wrote (`read_unaligned`
//! of plain integers, bounds checked first); and taking ownership of each
//! descriptor the kernel has just installed for this process, to close it
//! at once (nothing else knows its number). `Batch` keeps raw pointers
//! between calls, so it is declared `Send` and `Sync` by hand: the pointers
//! are re-derived from its own buffers at every call and used only inside
//! that call, which holds `&mut self`.

#![allow(unsafe_code)] // Safety: the receive call, reading kernel-written control headers, closing attached descriptors (see the module docs).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use master_proto::{Identity, Sender};
use nix::errno::Errno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::MsgFlags;

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

        /// Room for the credentials the kernel puts first in every message,
        /// and for a few descriptors. A child that attaches more has the
        /// rest dropped by the kernel before they are ever installed here;
        /// the few that are installed are closed at once.
        #[allow(clippy::cast_possible_truncation, reason = "a few dozen bytes")]
        // SAFETY: CMSG_SPACE is arithmetic on its argument (`unsafe` only
        // by the C macro's heritage).
        const CONTROL: usize = unsafe {
            libc::CMSG_SPACE(size_of::<libc::ucred>() as u32) as usize
                + libc::CMSG_SPACE((FDS_ROOM * size_of::<RawFd>()) as u32) as usize
        };

        /// The sender one control message names: its kernel credentials,
        /// when it is a whole `SCM_CREDENTIALS`.
        fn credentials(level: libc::c_int, ty: libc::c_int, data: &[u8]) -> Option<Sender> {
            if level != libc::SOL_SOCKET || ty != libc::SCM_CREDENTIALS || data.len() < size_of::<libc::ucred>() {
                return None;
            }
            let at = std::mem::offset_of!(libc::ucred, pid);
            let pid = data.get(at..at + size_of::<libc::pid_t>())?;
            Some(Sender::KernelPid(libc::pid_t::from_ne_bytes(pid.try_into().ok()?)))
        }

        /// The sender of a message that carried no credentials: pid 0,
        /// never a child's, so that it can never pass for a verified one.
        const NO_CREDENTIALS: Sender = Sender::KernelPid(0);

        /// One message's header, as `recvmmsg(2)` takes an array of them.
        type Header = libc::mmsghdr;

        /// Receives up to `hdrs.len()` messages in one call; the kernel
        /// sets each header's `msg_len`.
        ///
        /// # Safety
        ///
        /// Every header must point at buffers that are valid for writes of
        /// the lengths it gives, for the whole call.
        unsafe fn recv_many(sock: BorrowedFd<'_>, hdrs: &mut [Header]) -> libc::c_int {
            let vlen = libc::c_uint::try_from(hdrs.len()).unwrap_or(1);
            #[allow(clippy::cast_sign_loss, reason = "musl takes the flags as c_uint; every flag used is positive")]
            let flags = recv_flags().bits() as _;
            // SAFETY: the caller vouches for the buffers; `hdrs` is `vlen`
            // headers long; no timeout.
            unsafe { libc::recvmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), vlen, flags, std::ptr::null_mut()) }
        }
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

        /// Room for the most descriptors these kernels pass in one message,
        /// with headers and alignment to spare: whether one drops what does
        /// not fit, unopened, is not checked here.
        const CONTROL: usize = 2048;

        /// No control message names a sender on this platform.
        fn credentials(_level: libc::c_int, _ty: libc::c_int, _data: &[u8]) -> Option<Sender> {
            None
        }

        /// The sender of every message: a claim.
        const NO_CREDENTIALS: Sender = Sender::Claimed;

        /// One message's header: Linux's `mmsghdr`, which not every libc
        /// has; only its `msg_hdr` goes to the kernel here.
        #[derive(Clone, Copy)]
        struct Header {
            msg_hdr: libc::msghdr,
            msg_len: libc::c_uint,
        }

        /// Receives one message (no `recvmmsg` here) into the first
        /// header, and sets its `msg_len`.
        ///
        /// # Safety
        ///
        /// As on Linux: the first header's buffers must be valid for the
        /// whole call.
        unsafe fn recv_many(sock: BorrowedFd<'_>, hdrs: &mut [Header]) -> libc::c_int {
            let Some(first) = hdrs.first_mut() else { return 0 };
            // SAFETY: the caller vouches for the buffers.
            let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &raw mut first.msg_hdr, recv_flags().bits()) };
            if n < 0 {
                return -1;
            }
            first.msg_len = libc::c_uint::try_from(n).unwrap_or(libc::c_uint::MAX);
            1
        }
    } else {
        compile_error!("master-proto-unixsock needs AF_UNIX sockets");
    }
}

/// How many bytes of a datagram are read: one more than a record, so that a
/// longer datagram is seen to be longer wherever `MSG_TRUNC` does not report
/// the real length.
pub(crate) const BUF: usize = master_proto::WIRE_SIZE + 1;

/// How many descriptors' room the control buffer has beside the
/// credentials (Linux): enough that closing them is exercised, few enough
/// that a child cannot make the master install many.
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
const FDS_ROOM: usize = 4;

/// How many messages one [`Batch::recv`] takes at most.
pub(crate) const SLOTS: usize = 64;

/// One received message.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Message {
    /// The first bytes of the datagram.
    pub(crate) data: [u8; BUF],
    /// Its length: the real length where the kernel reports it, else at most
    /// [`BUF`].
    pub(crate) len: usize,
    /// Whether the kernel cut it to fit [`BUF`].
    pub(crate) truncated: bool,
    /// Whether the kernel named the sending socket's address (asked for
    /// only by a batch made with [`Batch::naming_senders`]).
    pub(crate) named: bool,
    /// Who sent it, as far as the kernel says.
    pub(crate) sender: Sender,
}

impl Message {
    const EMPTY: Message = Message { data: [0; BUF], len: 0, truncated: false, named: false, sender: NO_CREDENTIALS };
}

/// The buffers of one message, aligned for control message headers.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Slot {
    control: [u8; CONTROL],
    data: [u8; BUF],
    /// Room for a whole `AF_UNIX` address, so that the length the kernel
    /// reports back never exceeds the buffer (it reports the address's
    /// full length even when it copied less, and whatever trusts that
    /// length, AddressSanitizer's interceptor for one, would read past a
    /// shorter buffer). Only whether the length is 0 is looked at.
    name: [u8; NAME],
}

/// Room for a sender's address.
const NAME: usize = size_of::<libc::sockaddr_un>();

/// Buffers for up to [`SLOTS`] messages, reused by every receive.
pub(crate) struct Batch {
    slots: Box<[Slot]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[Header]>,
    messages: Box<[Message]>,
    /// How many messages the last [`Batch::recv`] took.
    len: usize,
    /// Whether each receive asks for the sender's address.
    naming: bool,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` point into `slots` and
// `iovs` of the same batch, are set afresh from them at every `recv` and
// used only by the kernel during that call, which holds `&mut self`; between
// calls nothing reads them.
unsafe impl Send for Batch {}
// SAFETY: as for `Send`; a shared `Batch` gives access to nothing.
unsafe impl Sync for Batch {}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("slots", &self.slots.len()).finish_non_exhaustive()
    }
}

impl Batch {
    /// Buffers for [`SLOTS`] messages.
    pub(crate) fn new() -> Batch {
        Batch::with_names(false)
    }

    /// Buffers for [`SLOTS`] messages, each received with whether the
    /// kernel names its sending socket's address ([`Message::named`]). A
    /// socket once bound stays bound, so on a connection whose peer the
    /// master bound, every message the peer sent is named, and a read of
    /// nothing that is not named is the end of the connection.
    pub(crate) fn naming_senders() -> Batch {
        Batch::with_names(true)
    }

    fn with_names(naming: bool) -> Batch {
        let iov = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        // SAFETY: a header is integers and raw pointers, for which all
        // zeroes (null pointers, no lengths) are valid values.
        let hdr: Header = unsafe { std::mem::zeroed() };
        Batch {
            slots: vec![Slot { control: [0; CONTROL], data: [0; BUF], name: [0; NAME] }; SLOTS].into_boxed_slice(),
            iovs: vec![iov; SLOTS].into_boxed_slice(),
            hdrs: vec![hdr; SLOTS].into_boxed_slice(),
            messages: vec![Message::EMPTY; SLOTS].into_boxed_slice(),
            len: 0,
            naming,
        }
    }

    /// Receives up to `max` messages (at least 1, at most [`SLOTS`]) from
    /// `sock` without blocking: empty when none is pending. `EINTR` is
    /// retried. Descriptors attached to them are closed.
    ///
    /// Fewer than `max` means the kernel stopped at a message it could not
    /// take: none was queued, or an error, which it keeps for the next
    /// call (`recvmmsg(2)`).
    pub(crate) fn recv(&mut self, sock: BorrowedFd<'_>, max: usize) -> nix::Result<&[Message]> {
        let max = max.clamp(1, SLOTS);
        self.len = 0;
        #[allow(clippy::useless_conversion, reason = "size_t with glibc, socklen_t with musl")]
        // A length that did not fit would be no room at all: no credentials
        // are trusted then, and no descriptor installed.
        let control_len = CONTROL.try_into().unwrap_or_default();
        #[allow(clippy::cast_possible_truncation, reason = "the size of an address family")]
        let name_len = NAME as libc::socklen_t;
        for ((slot, iov), hdr) in self.slots.iter_mut().zip(self.iovs.iter_mut()).zip(self.hdrs.iter_mut()).take(max) {
            *iov = libc::iovec { iov_base: slot.data.as_mut_ptr().cast(), iov_len: BUF };
            let h = &mut hdr.msg_hdr;
            if self.naming {
                h.msg_name = slot.name.as_mut_ptr().cast();
                // The kernel writes back the address's real length (0 for
                // none).
                h.msg_namelen = name_len;
            }
            h.msg_iov = std::ptr::from_mut(iov);
            h.msg_iovlen = 1;
            h.msg_control = slot.control.as_mut_ptr().cast();
            // The kernel writes back how much it used.
            h.msg_controllen = control_len;
            h.msg_flags = 0;
            hdr.msg_len = 0;
        }
        let n = loop {
            let hdrs = self.hdrs.get_mut(..max).unwrap_or_default();
            // SAFETY: each of these headers was just pointed at one iovec
            // (itself at one slot's `data`, BUF bytes), at that slot's
            // `control` (CONTROL bytes) and, if it names senders, at its
            // `name` (NAME bytes; else at none), all owned by `self` and
            // not borrowed otherwise during the call.
            let n = unsafe { recv_many(sock, hdrs) };
            match Errno::result(n) {
                Ok(n) => break usize::try_from(n).unwrap_or(0).min(max),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Ok(&[]),
                Err(errno) => return Err(errno),
            }
        };
        for ((slot, hdr), msg) in self.slots.iter().zip(self.hdrs.iter()).zip(self.messages.iter_mut()).take(n) {
            #[allow(clippy::useless_conversion, reason = "size_t with glibc, socklen_t with musl")]
            let used = usize::try_from(hdr.msg_hdr.msg_controllen).unwrap_or(0).min(CONTROL);
            let found = take_control(slot.control.get(..used).unwrap_or_default());
            *msg = Message {
                data: slot.data,
                len: usize::try_from(hdr.msg_len).unwrap_or(usize::MAX),
                truncated: hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                named: self.naming && hdr.msg_hdr.msg_namelen > 0,
                sender: found.unwrap_or(NO_CREDENTIALS),
            };
        }
        self.len = n;
        Ok(self.received())
    }

    /// What the last [`Batch::recv`] took.
    pub(crate) fn received(&self) -> &[Message] {
        self.messages.get(..self.len).unwrap_or_default()
    }
}

/// Walks the control data the kernel wrote for one message: closes every
/// descriptor it installed, and returns the first credentials, if any.
fn take_control(control: &[u8]) -> Option<Sender> {
    // SAFETY: CMSG_LEN is arithmetic on its argument.
    let header = unsafe { libc::CMSG_LEN(0) } as usize;
    let mut found = None;
    let mut at = 0;
    while let Some(rest) = control.get(at..)
        && rest.len() >= header
    {
        // SAFETY: `rest` holds at least `header` bytes, which is at least
        // the size of a cmsghdr; `read_unaligned` copies them whatever
        // their alignment, and a cmsghdr is integers, valid for any bits.
        let cmsg = unsafe { rest.as_ptr().cast::<libc::cmsghdr>().read_unaligned() };
        #[allow(clippy::useless_conversion, reason = "size_t with glibc, socklen_t with musl")]
        let len = usize::try_from(cmsg.cmsg_len).unwrap_or(0);
        if len < header {
            break;
        }
        // Within what the kernel wrote, even if it cut this one short.
        let data = rest.get(header..len.min(rest.len())).unwrap_or_default();
        if cmsg.cmsg_level == libc::SOL_SOCKET && cmsg.cmsg_type == libc::SCM_RIGHTS {
            for fd in data.chunks_exact(size_of::<RawFd>()) {
                let fd = RawFd::from_ne_bytes(fd.try_into().unwrap_or([0xff; size_of::<RawFd>()]));
                if fd >= 0 {
                    // SAFETY: the kernel has just installed `fd` in this
                    // process for this message; nothing else owns it.
                    drop(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        found = found.or_else(|| credentials(cmsg.cmsg_level, cmsg.cmsg_type, data));
        // SAFETY: CMSG_SPACE is arithmetic on its argument.
        let space = unsafe { libc::CMSG_SPACE(u32::try_from(len - header).unwrap_or(u32::MAX)) } as usize;
        at = at.saturating_add(space);
    }
    found
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
