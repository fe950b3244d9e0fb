//! The hostile-input hook: how a child puts arbitrary bytes where an honest
//! sink puts records.
//!
//! The hostile-input case (and the identity check of the capabilities case)
//! needs a child that misbehaves *as raw as the mechanism allows*, which
//! only the transport knows how to do. [`Hostile`] is that knowledge, one
//! impl per transport, written in the transport's own crate behind its
//! `conformance` feature (so an out-of-tree transport does exactly what an
//! in-tree one does).
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
//! - **shared memory** (`memfd`, `scoreboard`): the bytes are scribbled into the child's
//!   own region of the mapping at an offset of the impl's choosing; the
//!   master validates whatever it finds there, and [`Hostile::RAW_FRAMING`]
//!   is `None` because what a scribble decodes to is not a per-write
//!   promise.
//!
//! # Adding a transport
//!
//! Implement [`Hostile`] for its type in its own crate, behind a cargo
//! feature `conformance` that brings in this crate, as
//! `master-proto-pipe` does in its `src/hostile.rs`.

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
    /// the master's pollable descriptor, if any: a doorbell that children
    /// write and the master waits on, say. `None` (the default) for
    /// transports whose master end no child may hold.
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
