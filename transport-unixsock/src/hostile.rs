//! The conformance suite's [`Hostile`] hook for `dgram` and `seqpacket`:
//! garbage is one `send(2)` on fd 5, one packet, reported on its own
//! (feature `conformance`).
//!
//! A wrong size is reported for that packet alone
//! ([`Short`](master_proto::Malformed::Short) or
//! [`Oversized`](master_proto::Malformed::Oversized)) and nobody else's
//! record is touched.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use master_proto::transport::check_transport;
use master_proto::{ChildEnv, EnvError, Framing, Transport};
use master_proto_conformance::Hostile;
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, send};

use crate::{BoundedDgram, Dgram, LIFELINE};

/// One `send(2)` of all of `bytes` on `fd`, `EINTR` retried; a short send
/// is an error.
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

/// A dgram child's raw ends: fd 5, and the lifeline kept open so that the
/// channel stays as an honest child's.
fn dgram_raw(env: &mut ChildEnv, name: &'static str) -> Result<(OwnedFd, OwnedFd), EnvError> {
    check_transport(env, name, false)?;
    let lifeline = env.take_aux(LIFELINE)?;
    Ok((env.take_status()?, lifeline))
}

impl Hostile for Dgram {
    /// fd 5, and the lifeline kept open so that the channel stays as an
    /// honest child's.
    type Raw = (OwnedFd, OwnedFd);

    const RAW_FRAMING: Option<Framing> = Some(Framing::Packet);

    fn raw(&self, env: &mut ChildEnv) -> Result<Self::Raw, EnvError> {
        dgram_raw(env, self.name())
    }

    fn send_raw(raw: &mut Self::Raw, bytes: &[u8]) -> io::Result<()> {
        send_once(&raw.0, bytes)
    }
}

impl Hostile for BoundedDgram {
    /// As [`Dgram`]'s.
    type Raw = (OwnedFd, OwnedFd);

    const RAW_FRAMING: Option<Framing> = Some(Framing::Packet);

    fn raw(&self, env: &mut ChildEnv) -> Result<Self::Raw, EnvError> {
        dgram_raw(env, self.name())
    }

    /// One `send(2)`; the socket is non-blocking for this channel, so a
    /// full one waits for room here.
    fn send_raw(raw: &mut Self::Raw, bytes: &[u8]) -> io::Result<()> {
        loop {
            match send_once(&raw.0, bytes) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut fds = [nix::poll::PollFd::new(raw.0.as_fd(), nix::poll::PollFlags::POLLOUT)];
                    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
                        Ok(_) | Err(Errno::EINTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                other => return other,
            }
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
impl Hostile for crate::SeqPacket {
    type Raw = OwnedFd;

    const RAW_FRAMING: Option<Framing> = Some(Framing::Packet);

    fn raw(&self, env: &mut ChildEnv) -> Result<Self::Raw, EnvError> {
        check_transport(env, self.name(), false)?;
        env.take_status()
    }

    fn send_raw(raw: &mut Self::Raw, bytes: &[u8]) -> io::Result<()> {
        send_once(raw, bytes)
    }
}
