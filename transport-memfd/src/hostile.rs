//! The conformance suite's [`Hostile`] hook for `memfd`: garbage is
//! scribbled into the child's own ring, over its header and its slots in
//! turn, and a chosen record is published as an honest one is (feature
//! `conformance`).
//!
//! What a scribble does is up to the master's validation: the master reads
//! no index of the child's, only the slot its own index names; a slot whose
//! sequence says neither "published, for this index" nor "not yet" is
//! `Corrupt`, reported once and put back; a slot that happens to look
//! published is delivered under the child's own channel. Nothing reaches
//! another child's ring, which this child has no descriptor for.

use std::io;

use master_proto::{ChildEnv, EnvError, Framing, StatusUpdate, Transport};
use master_proto_conformance::Hostile;

use crate::{Memfd, MemfdSink};

/// The child's own sink, and where its next scribble starts.
#[derive(Debug)]
pub struct Scribbler {
    sink: MemfdSink,
    cursor: usize,
}

impl Hostile for Memfd {
    type Raw = Scribbler;

    const RAW_FRAMING: Option<Framing> = None;

    fn raw(&self, env: &mut ChildEnv) -> Result<Self::Raw, EnvError> {
        Ok(Scribbler { sink: self.sink(env)?, cursor: 0 })
    }

    /// Writes `bytes` at the cursor, which then moves on past them; the
    /// cursor wraps at the end of the region, so successive calls cover the
    /// header words and every slot.
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
