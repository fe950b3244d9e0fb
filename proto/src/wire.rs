//! The wire format: Postfix's 12-byte `MASTER_STATUS` record.
//!
//! A status update is the C struct
//!
//! ```c
//! typedef struct { int pid; unsigned gen; int avail; } MASTER_STATUS;
//! ```
//!
//! sent as raw memory: 12 bytes, native byte order, no header, no padding
//! (three 4-byte fields). [`StatusUpdate::encode`] produces exactly those
//! bytes, so a child built on this crate can talk to a real Postfix
//! master(8) and a master built on it can read real Postfix daemons.
//!
//! # Errors
//!
//! Decoding twelve bytes never fails: every bit pattern is *some* update, and
//! judging it (unknown pid, unknown status value, wrong generation) is the
//! master's bookkeeping's job ([`crate::master`]). A packet of another length
//! decodes to [`Malformed::Short`] or [`Malformed::Oversized`].
//!
//! # See also
//!
//! Postfix `src/master/master_proto.h`, `master_proto.c` (`master_notify`).

use std::fmt;

/// Size in bytes of one status update on the wire (`sizeof(MASTER_STATUS)`).
pub const WIRE_SIZE: usize = 12;

/// A child's status value, as the `int avail` field of the wire record.
///
/// Like an errno, this is an open set: the protocol defines [`Status::TAKEN`]
/// and [`Status::AVAIL`], but a child may send any `i32`, and the master must
/// be able to hold and report it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Status(pub i32);

impl Status {
    /// `MASTER_STAT_TAKEN`: until further notice the child does not accept
    /// connections.
    pub const TAKEN: Status = Status(0);
    /// `MASTER_STAT_AVAIL`: the child is ready to accept a connection.
    pub const AVAIL: Status = Status(1);

    /// Whether this is one of the two values the protocol defines.
    #[must_use]
    pub const fn is_known(self) -> bool {
        self.0 == Self::TAKEN.0 || self.0 == Self::AVAIL.0
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Status {
    /// `TAKEN`, `AVAIL`, or `other(n)` for a value the protocol does not
    /// define.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Status::TAKEN => f.write_str("TAKEN"),
            Status::AVAIL => f.write_str("AVAIL"),
            Status(n) => write!(f, "other({n})"),
        }
    }
}

/// One status update: who (pid and spawn generation) says what (status).
///
/// This is the decoded form of Postfix's `MASTER_STATUS`. The `pid` is only
/// what the sender *claims*; transports that can vouch for the sender report
/// that separately (see [`crate::Sender`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatusUpdate {
    /// The process id the sender claims (`int pid`).
    pub pid: i32,
    /// The spawn generation the master gave the child in `GENERATION`
    /// (`unsigned gen`).
    pub generation: u32,
    /// The status value (`int avail`).
    pub status: Status,
}

impl StatusUpdate {
    /// Encodes the update as the 12 native-endian bytes of `MASTER_STATUS`.
    ///
    /// # Examples
    ///
    /// ```
    /// use master_proto::{Status, StatusUpdate};
    /// let u = StatusUpdate { pid: 42, generation: 7, status: Status::AVAIL };
    /// let bytes = u.encode();
    /// assert_eq!(bytes[0..4], 42i32.to_ne_bytes());
    /// assert_eq!(StatusUpdate::decode(&bytes), u);
    /// ```
    #[must_use]
    pub fn encode(&self) -> [u8; WIRE_SIZE] {
        let mut out = [0u8; WIRE_SIZE];
        out[0..4].copy_from_slice(&self.pid.to_ne_bytes());
        out[4..8].copy_from_slice(&self.generation.to_ne_bytes());
        out[8..12].copy_from_slice(&self.status.0.to_ne_bytes());
        out
    }

    /// Decodes 12 bytes. Never fails: every bit pattern is an update, to be
    /// judged by the master's bookkeeping.
    #[must_use]
    pub fn decode(bytes: &[u8; WIRE_SIZE]) -> StatusUpdate {
        let field = |at: usize| [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        StatusUpdate {
            pid: i32::from_ne_bytes(field(0)),
            generation: u32::from_ne_bytes(field(4)),
            status: Status(i32::from_ne_bytes(field(8))),
        }
    }

    /// Decodes one packet (a datagram, or one record of a record-keeping
    /// transport): exactly [`WIRE_SIZE`] bytes is an update, anything else is
    /// reported as what it is.
    ///
    /// # Errors
    ///
    /// [`Malformed::Short`] for fewer than 12 bytes (an empty packet
    /// included), [`Malformed::Oversized`] for more.
    pub fn decode_packet(packet: &[u8]) -> Result<StatusUpdate, Malformed> {
        match <&[u8; WIRE_SIZE]>::try_from(packet) {
            Ok(bytes) => Ok(StatusUpdate::decode(bytes)),
            Err(_) if packet.len() < WIRE_SIZE => Err(Malformed::Short(packet.len())),
            Err(_) => Err(Malformed::Oversized(packet.len())),
        }
    }
}

/// Input that could not be decoded as a status update.
///
/// Transports report these instead of updates; the master's bookkeeping
/// counts them ([`crate::master`]). None of them is an error of the master's
/// own: they are what a child sent, or what was left of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// A partial message of `n` bytes (`0 < n < 12` on a byte stream; on a
    /// packet transport, any packet shorter than 12 bytes, empty included).
    /// On a shared byte stream this is Postfix's "sent partial status
    /// update" and may have cost the framing of neighbouring updates.
    #[error("partial status update ({0} bytes, expected 12)")]
    Short(usize),
    /// A packet longer than 12 bytes (`n` is its length, or the receive
    /// buffer's size when the kernel reports truncation without a length).
    #[error("oversized status packet ({0} bytes, expected 12)")]
    Oversized(usize),
    /// A record that a sender was still writing (or died writing) when the
    /// master looked; its bytes were not delivered.
    #[error("torn status record")]
    Torn,
    /// A record in shared memory whose bookkeeping (index, length, sequence)
    /// is impossible; it was skipped.
    #[error("corrupt status record: {0}")]
    Corrupt(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of Postfix's `MASTER_STATUS`, spelled out as a `repr(C)`
    /// struct: the encoding must be its raw memory, byte for byte.
    #[repr(C)]
    struct CMasterStatus {
        pid: i32,
        gen_: u32,
        avail: i32,
    }

    #[test]
    fn encoding_is_the_c_struct_memory() {
        assert_eq!(std::mem::size_of::<CMasterStatus>(), WIRE_SIZE);
        let c = CMasterStatus { pid: -0x1234_5678, gen_: 0xdead_beef, avail: 7 };
        let mut raw = Vec::new();
        raw.extend_from_slice(&c.pid.to_ne_bytes());
        raw.extend_from_slice(&c.gen_.to_ne_bytes());
        raw.extend_from_slice(&c.avail.to_ne_bytes());
        let u = StatusUpdate { pid: c.pid, generation: c.gen_, status: Status(c.avail) };
        assert_eq!(u.encode().as_slice(), raw.as_slice());
        assert_eq!(std::mem::offset_of!(CMasterStatus, gen_), 4);
        assert_eq!(std::mem::offset_of!(CMasterStatus, avail), 8);
    }

    #[test]
    fn decode_inverts_encode_for_every_field_extreme() {
        for pid in [0, 1, -1, i32::MIN, i32::MAX] {
            for generation in [0, 1, u32::MAX] {
                for status in [Status::TAKEN, Status::AVAIL, Status(-1), Status(i32::MIN)] {
                    let u = StatusUpdate { pid, generation, status };
                    assert_eq!(StatusUpdate::decode(&u.encode()), u);
                }
            }
        }
    }

    #[test]
    fn packets_of_the_wrong_length_are_reported() {
        let good = StatusUpdate { pid: 9, generation: 3, status: Status::TAKEN };
        assert_eq!(StatusUpdate::decode_packet(&good.encode()), Ok(good));
        assert_eq!(StatusUpdate::decode_packet(&[]), Err(Malformed::Short(0)));
        assert_eq!(StatusUpdate::decode_packet(&[1; 11]), Err(Malformed::Short(11)));
        assert_eq!(StatusUpdate::decode_packet(&[1; 13]), Err(Malformed::Oversized(13)));
    }

    #[test]
    fn status_display_names_the_known_values() {
        assert_eq!(Status::TAKEN.to_string(), "TAKEN");
        assert_eq!(Status::AVAIL.to_string(), "AVAIL");
        assert_eq!(Status(7).to_string(), "other(7)");
        assert!(Status::AVAIL.is_known() && !Status(2).is_known());
    }
}
