//! The conformance suite's [`Hostile`] hook for `scoreboard`: garbage is
//! scribbled into the child's own slot, over its words in turn, and a
//! chosen state is published as an honest one is (feature `conformance`).
//!
//! What a scribble does is up to the master's validation: a state word
//! that changed is a new state, delivered under the child's own channel
//! whatever pid and status it holds, when its sequence number is odd, and
//! `Corrupt`, reported once, when it is even. A scribble over the master's
//! sleep epoch only changes when this child rings. Nothing reaches another child's slot,
//! which this child has no descriptor for.

use std::io;

use master_proto::{ChildEnv, EnvError, Framing, StatusUpdate, Transport};
use master_proto_conformance::Hostile;

use crate::{Scoreboard, ScoreboardSink};

/// The child's own sink, and where its next scribble starts.
#[derive(Debug)]
pub struct Scribbler {
    sink: ScoreboardSink,
    cursor: usize,
}

impl Hostile for Scoreboard {
    type Raw = Scribbler;

    const RAW_FRAMING: Option<Framing> = None;

    fn raw(&self, env: &mut ChildEnv) -> Result<Self::Raw, EnvError> {
        Ok(Scribbler { sink: self.sink(env)?, cursor: 0 })
    }

    /// Writes `bytes` at the cursor, which then moves on past them; the
    /// cursor wraps at the end of the slot's words (the first 72 bytes of
    /// the page: the state, the sender and the master's sleep word), so
    /// successive calls cover every word.
    fn send_raw(raw: &mut Self::Raw, bytes: &[u8]) -> io::Result<()> {
        let len = raw.sink.region_len().min(crate::slot::SLOT_BYTES);
        let mut done = 0;
        while done < bytes.len() {
            if raw.cursor >= len {
                raw.cursor = 0;
            }
            let end = (done + len - raw.cursor).min(bytes.len());
            let wrote = raw.sink.scribble(raw.cursor, &bytes[done..end]);
            if wrote == 0 {
                return Err(io::Error::other("the slot region is empty"));
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
