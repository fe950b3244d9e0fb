//! Framing of status updates on a shared byte stream.
//!
//! Postfix's duplex pipe and an anonymous pipe carry updates as a plain byte
//! stream shared by every child of a service. Honest writers send each
//! 12-byte record with one `write(2)`, which the kernel keeps whole (a pipe
//! write of at most `PIPE_BUF` bytes is atomic; a small `AF_UNIX` stream send
//! is queued as one buffer), so records never interleave. A stream still has
//! no message boundaries: a reader sees them only by counting to 12.
//!
//! [`StreamDecoder`] does that counting without I/O. It buffers what was read,
//! yields whole records, and, when the stream has been drained (the kernel
//! said it was empty: the next read would block, or `poll(2)` found nothing
//! after a read that returned less than it asked for), reports a leftover
//! partial record as
//! [`Malformed::Short`] and drops it. Because no honest record can be half
//! written at a moment the stream is empty, this resynchronises the framing
//! at the first drained moment after a hostile short write; records read
//! between that write and that moment are misframed (Postfix's known
//! weakness of a shared byte stream) and reach the master as gossip, where
//! its bookkeeping rejects them.
//!
//! # See also
//!
//! Postfix `src/master/master_status.c` (`master_status_event`, "sent
//! partial status update").

use crate::wire::{Malformed, StatusUpdate, WIRE_SIZE};

/// A sans-IO decoder of 12-byte records from a byte stream.
///
/// # Examples
///
/// ```
/// use master_proto::{Malformed, Status, StatusUpdate, stream::StreamDecoder};
/// let mut dec = StreamDecoder::new(4);
/// let u = StatusUpdate { pid: 1, generation: 2, status: Status::AVAIL };
/// let mut bytes = u.encode().to_vec();
/// bytes.extend_from_slice(&[0xff; 5]);
/// let mut input = &bytes[..];
/// dec.fill_with(|buf| { let n = input.len().min(buf.len()); buf[..n].copy_from_slice(&input[..n]); input = &input[n..]; Ok::<_, ()>(n) }).unwrap();
/// assert_eq!(dec.next_update(), Some(u));
/// assert_eq!(dec.next_update(), None);
/// assert_eq!(dec.take_partial(), Some(Malformed::Short(5)));
/// ```
#[derive(Debug)]
pub struct StreamDecoder {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl StreamDecoder {
    /// A decoder that reads up to `batch` records per fill (at least one).
    #[must_use]
    pub fn new(batch: usize) -> StreamDecoder {
        StreamDecoder { buf: vec![0; batch.max(1) * WIRE_SIZE].into_boxed_slice(), start: 0, end: 0 }
    }

    /// The next whole record already buffered, if any.
    pub fn next_update(&mut self) -> Option<StatusUpdate> {
        let bytes = self.buf[self.start..self.end].first_chunk::<WIRE_SIZE>()?;
        let update = StatusUpdate::decode(bytes);
        self.start += WIRE_SIZE;
        Some(update)
    }

    /// Number of bytes buffered that do not yet form a whole record.
    #[must_use]
    pub fn pending_bytes(&self) -> usize {
        self.end - self.start
    }

    /// Moves any partial record to the front of the buffer and lets `read`
    /// append to it; returns what `read` returned. Call it only when
    /// [`next_update`](Self::next_update) has returned `None`.
    ///
    /// # Errors
    ///
    /// Whatever `read` returns; the buffer is left as it was.
    pub fn fill_with<E>(&mut self, read: impl FnOnce(&mut [u8]) -> Result<usize, E>) -> Result<usize, E> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        let n = read(&mut self.buf[self.end..])?;
        // A reader that claims more than it was given is a bug of ours, not
        // the peer's: clamp rather than index out of bounds.
        self.end += n.min(self.buf.len() - self.end);
        Ok(n)
    }

    /// The stream is drained (or closed): reports a leftover partial record
    /// and drops it so that framing restarts at the next byte.
    pub fn take_partial(&mut self) -> Option<Malformed> {
        let left = self.pending_bytes();
        self.start = 0;
        self.end = 0;
        (left > 0).then_some(Malformed::Short(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Status;

    fn feed(dec: &mut StreamDecoder, mut input: &[u8]) -> Vec<StatusUpdate> {
        let mut out = Vec::new();
        loop {
            while let Some(u) = dec.next_update() {
                out.push(u);
            }
            if input.is_empty() {
                return out;
            }
            dec.fill_with(|buf| {
                // Deliver in awkward chunks of at most 5 bytes.
                let n = input.len().min(buf.len()).min(5);
                buf[..n].copy_from_slice(&input[..n]);
                input = &input[n..];
                Ok::<_, ()>(n)
            })
            .unwrap();
        }
    }

    fn update(pid: i32) -> StatusUpdate {
        StatusUpdate { pid, generation: 1, status: Status::AVAIL }
    }

    #[test]
    fn records_split_across_reads_are_reassembled() {
        let mut dec = StreamDecoder::new(2);
        let bytes: Vec<u8> = (1..=7).flat_map(|p| update(p).encode()).collect();
        let got = feed(&mut dec, &bytes);
        assert_eq!(got, (1..=7).map(update).collect::<Vec<_>>());
        assert_eq!(dec.take_partial(), None);
    }

    #[test]
    fn a_short_write_is_reported_when_drained_and_framing_restarts() {
        let mut dec = StreamDecoder::new(8);
        let mut bytes = update(1).encode().to_vec();
        bytes.extend_from_slice(&[9; 7]);
        assert_eq!(feed(&mut dec, &bytes), vec![update(1)]);
        assert_eq!(dec.take_partial(), Some(Malformed::Short(7)));
        // After the drained moment, framing starts afresh.
        assert_eq!(feed(&mut dec, &update(2).encode()), vec![update(2)]);
        assert_eq!(dec.take_partial(), None);
    }

    #[test]
    fn read_errors_leave_the_buffer_intact() {
        let mut dec = StreamDecoder::new(1);
        let bytes = update(3).encode();
        dec.fill_with(|buf| {
            buf[..4].copy_from_slice(&bytes[..4]);
            Ok::<_, ()>(4)
        })
        .unwrap();
        assert_eq!(dec.fill_with(|_| Err::<usize, _>("would block")), Err("would block"));
        assert_eq!(dec.pending_bytes(), 4);
        dec.fill_with(|buf| {
            buf[..8].copy_from_slice(&bytes[4..]);
            Ok::<_, ()>(8)
        })
        .unwrap();
        assert_eq!(dec.next_update(), Some(update(3)));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;
        use crate::wire::Status;

        /// Feeds `stream` to a decoder in the given read sizes, draining
        /// after each read as a master does when a read would block next.
        fn run(stream: &[u8], reads: &[usize], drained_after_each: bool) -> (Vec<StatusUpdate>, Vec<Malformed>) {
            let mut dec = StreamDecoder::new(3);
            let (mut updates, mut malformed) = (Vec::new(), Vec::new());
            let mut input = stream;
            let mut sizes = reads.iter().copied().cycle();
            while !input.is_empty() {
                let want = sizes.next().unwrap_or(1).max(1);
                dec.fill_with(|buf| {
                    let n = input.len().min(buf.len()).min(want);
                    buf[..n].copy_from_slice(&input[..n]);
                    input = &input[n..];
                    Ok::<_, ()>(n)
                })
                .unwrap();
                while let Some(u) = dec.next_update() {
                    updates.push(u);
                }
                if drained_after_each {
                    malformed.extend(dec.take_partial());
                }
            }
            malformed.extend(dec.take_partial());
            (updates, malformed)
        }

        fn update() -> impl Strategy<Value = StatusUpdate> {
            (any::<i32>(), any::<u32>(), any::<i32>()).prop_map(|(pid, generation, s)| StatusUpdate {
                pid,
                generation,
                status: Status(s),
            })
        }

        proptest! {
            /// However the reads split an honest stream, every record comes
            /// out once, whole, in order, and nothing is reported malformed.
            #[test]
            fn honest_stream_survives_any_read_sizes(
                updates in prop::collection::vec(update(), 0..60),
                reads in prop::collection::vec(1usize..40, 1..8),
            ) {
                let stream: Vec<u8> = updates.iter().flat_map(StatusUpdate::encode).collect();
                let (got, malformed) = run(&stream, &reads, false);
                prop_assert_eq!(got, updates);
                prop_assert!(malformed.is_empty());
            }

            /// Arbitrary bytes never panic the decoder, and every byte is
            /// accounted for: in a record, or in a reported partial.
            #[test]
            fn arbitrary_bytes_are_all_accounted_for(
                stream in prop::collection::vec(any::<u8>(), 0..400),
                reads in prop::collection::vec(1usize..50, 1..8),
                drained in any::<bool>(),
            ) {
                let (got, malformed) = run(&stream, &reads, drained);
                let partial: usize = malformed
                    .iter()
                    .map(|m| match m {
                        Malformed::Short(n) => *n,
                        other => panic!("a stream reports only partials, got {other:?}"),
                    })
                    .sum();
                prop_assert_eq!(got.len() * WIRE_SIZE + partial, stream.len());
                prop_assert!(malformed.iter().all(|m| matches!(m, Malformed::Short(n) if (1..WIRE_SIZE).contains(n))));
            }
        }
    }
}
