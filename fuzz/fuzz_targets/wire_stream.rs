//! Fuzz target `wire_stream`: the 12-byte wire record and the byte-stream
//! framing (`master_proto::wire`, `master_proto::stream::StreamDecoder`).
//!
//! Input: byte 0 picks the decoder's batch (1 to 8 records per fill), byte 1
//! says how many of the following bytes are read sizes (cycled; a size of 0
//! is a read of nothing, a size with its top bit set also marks the stream
//! drained after that read); the rest is the stream.
//!
//! Checked, for every input and every way of cutting it into reads:
//! - every byte is accounted for: records × 12 + the partial bytes reported
//!   is the number of bytes fed, and each partial is 1 to 11 bytes;
//! - the records are exactly what a plain model of the framing (count to 12,
//!   forget the leftover when drained) cuts from the stream, in order;
//! - `pending_bytes` agrees with the model after every step, and a read is
//!   never handed more room than the decoder has;
//! - every 12 bytes decode to an update that encodes to the same 12 bytes,
//!   every update round-trips, and `decode_packet` accepts exactly 12 bytes
//!   and reports other lengths as what they are.

#![no_main]

use libfuzzer_sys::fuzz_target;
use master_proto::stream::StreamDecoder;
use master_proto::{Malformed, Status, StatusUpdate, WIRE_SIZE};

fuzz_target!(|data: &[u8]| {
    let [batch, nsizes, rest @ ..] = data else { return };
    let batch = usize::from(batch % 8) + 1;
    let (sizes, stream) = rest.split_at(usize::from(*nsizes).min(rest.len()));
    wire(stream);
    framing(batch, sizes, stream);
});

/// The record's round trips and the packet decoder's length rules.
fn wire(stream: &[u8]) {
    for chunk in stream.chunks(WIRE_SIZE) {
        match <&[u8; WIRE_SIZE]>::try_from(chunk) {
            Ok(bytes) => {
                let update = StatusUpdate::decode(bytes);
                assert_eq!(&update.encode(), bytes, "decode then encode changed the bytes");
                assert_eq!(StatusUpdate::decode_packet(chunk), Ok(update));
                let field = |at: usize| [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
                assert_eq!(update.pid, i32::from_ne_bytes(field(0)));
                assert_eq!(update.generation, u32::from_ne_bytes(field(4)));
                assert_eq!(update.status, Status(i32::from_ne_bytes(field(8))));
                let again = StatusUpdate {
                    pid: update.generation.cast_signed(),
                    generation: update.pid.cast_unsigned(),
                    ..update
                };
                assert_eq!(StatusUpdate::decode(&again.encode()), again);
            }
            Err(_) => assert_eq!(StatusUpdate::decode_packet(chunk), Err(Malformed::Short(chunk.len()))),
        }
    }
    // A packet of the whole input: 12 bytes or not.
    let whole = StatusUpdate::decode_packet(stream);
    match stream.len() {
        WIRE_SIZE => assert!(whole.is_ok()),
        n if n < WIRE_SIZE => assert_eq!(whole, Err(Malformed::Short(n))),
        n => assert_eq!(whole, Err(Malformed::Oversized(n))),
    }
}

/// Feeds `stream` to a decoder in reads of the given sizes, as a master
/// does: fill, take every whole record, and when a read left the stream
/// drained, take the partial; at the end the stream is drained.
fn framing(batch: usize, sizes: &[u8], stream: &[u8]) {
    let mut dec = StreamDecoder::new(batch);
    // The model: the bytes buffered and not yet cut into a record.
    let mut model: Vec<u8> = Vec::new();
    let (mut records, mut partial_bytes, mut fed) = (0usize, 0usize, 0usize);
    let mut input = stream;
    let mut sizes = sizes.iter().copied().cycle();
    // A read of nothing makes no progress: bound the number of reads.
    let mut reads_left = 4 * stream.len() + 16;
    while !input.is_empty() && reads_left > 0 {
        reads_left -= 1;
        let size = sizes.next().unwrap_or(u8::MAX);
        let (want, drained) = (usize::from(size & 0x7f), size & 0x80 != 0);
        // Whole records first, as the decoder's contract asks.
        assert_eq!(dec.next_update(), None);
        let n = dec
            .fill_with(|buf| {
                assert_eq!(buf.len(), batch * WIRE_SIZE - model.len(), "the room handed to a read");
                let n = input.len().min(buf.len()).min(want);
                buf[..n].copy_from_slice(&input[..n]);
                input = &input[n..];
                Ok::<_, ()>(n)
            })
            .expect("the read does not fail");
        fed += n;
        model.extend_from_slice(&stream[fed - n..fed]);
        assert_eq!(dec.pending_bytes(), model.len());
        while let Some(update) = dec.next_update() {
            let bytes: [u8; WIRE_SIZE] = model[..WIRE_SIZE].try_into().expect("12 bytes");
            assert_eq!(update, StatusUpdate::decode(&bytes), "record {records} is not the stream's");
            model.drain(..WIRE_SIZE);
            records += 1;
            assert_eq!(dec.pending_bytes(), model.len());
        }
        assert!(model.len() < WIRE_SIZE);
        if drained {
            partial_bytes += take_partial(&mut dec, &mut model);
        }
    }
    partial_bytes += take_partial(&mut dec, &mut model);
    assert_eq!(dec.pending_bytes(), 0);
    assert_eq!(records * WIRE_SIZE + partial_bytes, fed, "bytes fed that are neither in a record nor reported");
}

/// The stream is drained: the decoder reports what the model holds.
fn take_partial(dec: &mut StreamDecoder, model: &mut Vec<u8>) -> usize {
    let got = dec.take_partial();
    let left = std::mem::take(model).len();
    match got {
        None => assert_eq!(left, 0, "a partial of {left} bytes not reported"),
        Some(Malformed::Short(n)) => {
            assert_eq!(n, left, "the partial reported is not the bytes left");
            assert!((1..WIRE_SIZE).contains(&n));
        }
        Some(other) => panic!("a stream reports only partials, got {other:?}"),
    }
    assert_eq!(dec.pending_bytes(), 0);
    left
}
