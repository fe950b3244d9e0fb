//! The hostile-input hook: how a child puts arbitrary bytes where an honest
//! sink puts records.
//!
//! The hostile-input case (and the identity check of the capabilities case)
//! needs a child that misbehaves *as raw as the mechanism allows*, which
//! only the transport knows how to do. [`Hostile`] is that knowledge, one
//! impl per transport, written in this crate (next to the list of
//! transports, since the transport crates do not depend on this one).
//!
//! What garbage can do depends on the mechanism, and each impl documents
//! it:
//!
//! - **byte stream** (`pipe`, `duplex`): one `write(2)` on fd 5. The stream
//!   has no boundaries, so a piece that is not a multiple of 12 bytes
//!   misframes the records behind it until the stream drains; the master
//!   reports the leftover as [`master_proto::Malformed::Short`] at that
//!   moment and framing restarts. Honest records sent meanwhile may reach
//!   the master as garbage and be lost (Postfix's known weakness).
//! - **packets** (`dgram`, `seqpacket`): one `send(2)` per call is one
//!   packet; a wrong size is reported for that packet alone
//!   ([`Short`](master_proto::Malformed::Short) or
//!   [`Oversized`](master_proto::Malformed::Oversized)) and nobody else's
//!   record is touched.
//! - **shared memory** (`memfd`): the bytes are scribbled into the child's
//!   own region of the mapping at an offset of the impl's choosing; the
//!   master validates whatever it finds there, and [`Hostile::RAW_FRAMING`]
//!   is `None` because what a scribble decodes to is not a per-write
//!   promise.
//!
//! # Adding a transport
//!
//! Implement [`Hostile`] for its type in a module of this crate behind the
//! transport's feature, as `pipe` does below.

use std::io;

use master_proto::{ChildEnv, EnvError, Framing, StatusUpdate, Transport};

/// A transport whose children can be made to send raw bytes.
pub trait Hostile: Transport {
    /// The raw handle a hostile child writes through (fd 5, a mapping, …).
    type Raw;

    /// How the master frames what one [`send_raw`](Self::send_raw) wrote,
    /// when that is a promise: `Some(ByteStream)` if the bytes join one
    /// stream shared with every other child, `Some(Packet)` if each call is
    /// one packet reported on its own, `None` if the mechanism makes no
    /// per-write promise (shared memory). When `Some`, it must equal the
    /// framing the transport declares in its capabilities.
    const RAW_FRAMING: Option<Framing>;

    /// The auxiliary descriptor that is, by design, the same open file as
    /// the master's pollable descriptor, if any: memfd's `doorbell`, an
    /// eventfd that children write and the master waits on. `None` (the
    /// default) for transports whose master end no child may hold.
    const SOURCE_SHARED_AS_AUX: Option<&'static str> = None;

    /// Takes the child's end of the channel from its standard environment,
    /// raw, instead of building a sink.
    ///
    /// # Errors
    ///
    /// As [`Transport::sink`].
    fn raw(&self, env: &mut ChildEnv) -> Result<Self::Raw, EnvError>;

    /// Puts `bytes` where the honest sink puts records, as raw as the
    /// mechanism allows: one `write(2)` or `send(2)` on fd 5 for descriptor
    /// transports, one scribble for shared memory. Retries `EINTR`.
    ///
    /// # Errors
    ///
    /// The system call's error; a short write is an error too.
    fn send_raw(raw: &mut Self::Raw, bytes: &[u8]) -> io::Result<()>;

    /// Sends one well-formed record with whatever fields the caller chose
    /// (a forged pid, a wrong generation): it must arrive as that record,
    /// with the sender the transport can vouch for. The default writes its
    /// 12 bytes with [`send_raw`](Self::send_raw).
    ///
    /// # Errors
    ///
    /// As [`send_raw`](Self::send_raw).
    fn send_record(raw: &mut Self::Raw, update: &StatusUpdate) -> io::Result<()> {
        Self::send_raw(raw, &update.encode())
    }
}

#[cfg(feature = "pipe")]
mod pipe {
    //! `pipe` and `duplex`: garbage is one `write(2)` on fd 5 (see the
    //! module docs for what it can do to a shared byte stream).

    use std::io;
    use std::os::fd::OwnedFd;

    use master_proto::transport::check_transport;
    use master_proto::{ChildEnv, EnvError, Framing, Transport};
    use master_proto_pipe::{Duplex, LIFELINE, Pipe};
    use nix::errno::Errno;

    use super::Hostile;

    /// One `write(2)` of all of `bytes` on `fd`, `EINTR` retried; a short
    /// write is an error (a piece of at most `PIPE_BUF` bytes never is one).
    fn write_once(fd: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
        loop {
            match nix::unistd::write(fd, bytes) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => return Err(io::Error::other(format!("short write: {n} of {} bytes", bytes.len()))),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    impl Hostile for Pipe {
        /// fd 5, and the lifeline kept open so that the channel stays as
        /// an honest child's.
        type Raw = (OwnedFd, OwnedFd);

        const RAW_FRAMING: Option<Framing> = Some(Framing::ByteStream);

        fn raw(&self, env: &mut ChildEnv) -> Result<Self::Raw, EnvError> {
            check_transport(env, Self::NAME, false)?;
            let lifeline = env.take_aux(LIFELINE)?;
            Ok((env.take_status()?, lifeline))
        }

        fn send_raw(raw: &mut Self::Raw, bytes: &[u8]) -> io::Result<()> {
            write_once(&raw.0, bytes)
        }
    }

    impl Hostile for Duplex {
        type Raw = OwnedFd;

        const RAW_FRAMING: Option<Framing> = Some(Framing::ByteStream);

        fn raw(&self, env: &mut ChildEnv) -> Result<Self::Raw, EnvError> {
            check_transport(env, Self::NAME, true)?;
            env.take_status()
        }

        fn send_raw(raw: &mut Self::Raw, bytes: &[u8]) -> io::Result<()> {
            write_once(raw, bytes)
        }
    }
}

#[cfg(all(feature = "memfd", target_os = "linux"))]
mod memfd {
    //! `memfd`: garbage is scribbled into the child's own ring, over its
    //! header and its slots in turn, and a chosen record is published as
    //! an honest one is. What a scribble does is up to the master's
    //! validation: the master reads no index of the child's, only the slot
    //! its own index names; a slot whose sequence says neither "published,
    //! for this index" nor "not yet" is `Corrupt` and skipped; a slot that
    //! happens to look published is delivered under the child's own
    //! channel. Nothing reaches another child's ring, which this child has
    //! no descriptor for.

    use std::io;

    use master_proto::{ChildEnv, EnvError, Framing, StatusUpdate, Transport};
    use master_proto_memfd::{Memfd, MemfdSink};

    use super::Hostile;

    /// The child's own sink, and where its next scribble starts.
    #[derive(Debug)]
    pub struct Scribbler {
        sink: MemfdSink,
        cursor: usize,
    }

    impl Hostile for Memfd {
        type Raw = Scribbler;

        const RAW_FRAMING: Option<Framing> = None;

        const SOURCE_SHARED_AS_AUX: Option<&'static str> = Some(master_proto_memfd::DOORBELL);

        fn raw(&self, env: &mut ChildEnv) -> Result<Self::Raw, EnvError> {
            Ok(Scribbler { sink: self.sink(env)?, cursor: 0 })
        }

        /// Writes `bytes` at the cursor, which then moves on past them; the
        /// cursor wraps at the end of the region, so successive calls
        /// cover the header words and every slot.
        fn send_raw(raw: &mut Self::Raw, bytes: &[u8]) -> io::Result<()> {
            let len = raw.sink.region_len();
            let mut done = 0;
            while done < bytes.len() {
                if raw.cursor >= len {
                    raw.cursor = 0;
                }
                let wrote = raw.sink.scribble(raw.cursor, &bytes[done..]);
                if wrote == 0 {
                    return Err(io::Error::other("the ring region is empty"));
                }
                done += wrote;
                raw.cursor += wrote;
            }
            Ok(())
        }

        fn send_record(raw: &mut Self::Raw, update: &StatusUpdate) -> io::Result<()> {
            raw.sink.publish(*update).map_err(io::Error::other)
        }
    }
}

#[cfg(all(feature = "unixsock", unix))]
mod unixsock {
    //! `dgram` and `seqpacket`: garbage is one `send(2)` on fd 5, one
    //! packet, reported on its own (see the module docs).

    use std::io;
    use std::os::fd::{AsRawFd, OwnedFd};

    use master_proto::transport::check_transport;
    use master_proto::{ChildEnv, EnvError, Framing, Transport};
    use master_proto_unixsock::{Dgram, LIFELINE};
    use nix::errno::Errno;
    use nix::sys::socket::{MsgFlags, send};

    use super::Hostile;

    /// One `send(2)` of all of `bytes` on `fd`, `EINTR` retried; a short
    /// send is an error.
    fn send_once(fd: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
        loop {
            match send(fd.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => return Err(io::Error::other(format!("short send: {n} of {} bytes", bytes.len()))),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    impl Hostile for Dgram {
        /// fd 5, and the lifeline kept open so that the channel stays as
        /// an honest child's.
        type Raw = (OwnedFd, OwnedFd);

        const RAW_FRAMING: Option<Framing> = Some(Framing::Packet);

        fn raw(&self, env: &mut ChildEnv) -> Result<Self::Raw, EnvError> {
            check_transport(env, Self::NAME, false)?;
            let lifeline = env.take_aux(LIFELINE)?;
            Ok((env.take_status()?, lifeline))
        }

        fn send_raw(raw: &mut Self::Raw, bytes: &[u8]) -> io::Result<()> {
            send_once(&raw.0, bytes)
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    impl Hostile for master_proto_unixsock::SeqPacket {
        type Raw = OwnedFd;

        const RAW_FRAMING: Option<Framing> = Some(Framing::Packet);

        fn raw(&self, env: &mut ChildEnv) -> Result<Self::Raw, EnvError> {
            check_transport(env, Self::NAME, false)?;
            env.take_status()
        }

        fn send_raw(raw: &mut Self::Raw, bytes: &[u8]) -> io::Result<()> {
            send_once(raw, bytes)
        }
    }
}
