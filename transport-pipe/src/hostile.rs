//! The conformance suite's [`Hostile`] hook for `pipe` and `duplex`: garbage
//! is one `write(2)` on fd 5 (feature `conformance`).
//!
//! The stream has no boundaries, so a piece that is not a multiple of 12
//! bytes misframes the records behind it until the stream drains; the
//! master reports the leftover as [`master_proto::Malformed::Short`] at
//! that moment and framing restarts. Honest records sent meanwhile may
//! reach the master as garbage and be lost (Postfix's known weakness).

use std::io;
use std::os::fd::OwnedFd;

use master_proto::transport::check_transport;
use master_proto::{ChildEnv, EnvError, Framing, Transport};
use master_proto_conformance::Hostile;
use nix::errno::Errno;

use crate::{Duplex, LIFELINE, Pipe};

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
    /// fd 5, and the lifeline (where there is one) kept open so that the
    /// channel stays as an honest child's.
    type Raw = (OwnedFd, Option<OwnedFd>);

    const RAW_FRAMING: Option<Framing> = Some(Framing::ByteStream);

    fn raw(&self, env: &mut ChildEnv) -> Result<Self::Raw, EnvError> {
        check_transport(env, self.name(), false)?;
        let lifeline = if crate::sys::NEEDS_LIFELINE { Some(env.take_aux(LIFELINE)?) } else { None };
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
        check_transport(env, self.name(), true)?;
        env.take_status()
    }

    fn send_raw(raw: &mut Self::Raw, bytes: &[u8]) -> io::Result<()> {
        write_once(raw, bytes)
    }
}
