//! `FrameCodec` decoding of arbitrary bytes, arriving in arbitrary pieces.
//!
//! Input: `[flags, max, seed_lo, seed_hi, stream...]`. `flags` bit 0 picks little-endian,
//! bit 1 a huge maximum (`u32::MAX`, to exercise the bounded read-ahead) instead of a small
//! one (`2 * max` bytes, 0..=510); the seed drives how `stream` is cut into chunks.
//!
//! Checked against a reference parser: the same frames come out, in order, whatever the
//! chunking, and the stream ends the same way (cleanly, `TooLarge`, `TruncatedHeader` or
//! `TruncatedBody`, with the same numbers). Also: no frame exceeds the maximum, a framing
//! error leaves the codec broken, re-encoding the frames gives back the consumed bytes,
//! and the buffer never grows far beyond the bytes that actually arrived.

#![no_main]

use bytes::BytesMut;
use hail_wire::frame::{HEADER_LEN, READ_AHEAD};
use hail_wire::{ByteOrder, FrameCodec, WireError};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

/// How a byte stream ends, per the reference parser.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Clean,
    TooLarge { len: usize, max: usize },
    TruncatedHeader { got: usize },
    TruncatedBody { expected: usize, got: usize },
}

/// The format, written out plainly: header, body, repeat.
fn reference(stream: &[u8], order: ByteOrder, max: usize) -> (Vec<&[u8]>, End) {
    let mut frames = Vec::new();
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            return (frames, End::Clean);
        }
        let Some((header, body)) = rest.split_first_chunk::<HEADER_LEN>() else {
            return (frames, End::TruncatedHeader { got: rest.len() });
        };
        let len = match order {
            ByteOrder::BigEndian => u32::from_be_bytes(*header),
            ByteOrder::LittleEndian => u32::from_le_bytes(*header),
        } as usize;
        if len > max {
            return (frames, End::TooLarge { len, max });
        }
        if body.len() < len {
            return (
                frames,
                End::TruncatedBody {
                    expected: len,
                    got: body.len(),
                },
            );
        }
        frames.push(&body[..len]);
        rest = &body[len..];
    }
}

/// A small xorshift generator: chunk sizes from the input's seed.
struct Chunks(u32);

impl Chunks {
    fn next_len(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        match self.0 % 8 {
            0 => 0,                                 // an empty read
            1 => 1 + (self.0 >> 8) as usize % 4096, // a big read
            _ => 1 + (self.0 >> 8) as usize % 9,    // the usual few bytes
        }
    }
}

fn to_end(e: &WireError) -> End {
    match *e {
        WireError::TooLarge { len, max } => End::TooLarge { len, max },
        WireError::TruncatedHeader { got } => End::TruncatedHeader { got },
        WireError::TruncatedBody { expected, got } => End::TruncatedBody { expected, got },
        ref other => panic!("unexpected error from the frame decoder: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&[flags, max_byte, seed_lo, seed_hi], stream)) = data.split_first_chunk::<4>() else {
        return;
    };
    let order = if flags & 1 == 1 {
        ByteOrder::LittleEndian
    } else {
        ByteOrder::BigEndian
    };
    let max = if flags & 2 == 2 {
        u32::MAX
    } else {
        u32::from(max_byte) * 2
    };
    let mut codec = FrameCodec::builder()
        .byte_order(order)
        .max_frame_len(max)
        .build();
    let max = max as usize;
    let (expected_frames, expected_end) = reference(stream, order, max);

    let mut chunks = Chunks(u32::from_le_bytes([seed_lo, seed_hi, 0x5a, 0xa5]));
    let mut buf = BytesMut::new();
    let mut frames: Vec<BytesMut> = Vec::new();
    let mut error = None;
    let mut fed = 0;
    'feed: while fed < stream.len() {
        let n = chunks.next_len().min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break 'feed;
                }
            }
        }
        // Memory follows what arrived (plus a bounded read-ahead), never the announced length.
        assert!(
            buf.capacity() <= 8 * (fed + READ_AHEAD) + 1024,
            "capacity {} after {fed} bytes",
            buf.capacity()
        );
    }
    if error.is_none() {
        loop {
            match codec.decode_eof(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
    }

    for frame in &frames {
        assert!(
            frame.len() <= max,
            "frame of {} over max {max}",
            frame.len()
        );
    }
    let got: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
    assert_eq!(got, expected_frames, "frames differ from the reference");
    let end = error.as_ref().map_or(End::Clean, to_end);
    assert_eq!(end, expected_end, "stream end differs from the reference");

    if let Some(e) = &error {
        assert!(
            !e.is_payload_error(),
            "a framing error is not a payload error"
        );
        if matches!(e, WireError::TooLarge { .. }) {
            assert!(codec.is_broken());
            assert!(matches!(
                codec.decode(&mut BytesMut::from(&[0u8; 8][..])),
                Err(WireError::Broken)
            ));
        }
    }

    // The frames, encoded again, are exactly the bytes they were cut from.
    let mut again = BytesMut::new();
    for frame in &frames {
        codec
            .encode_slice(frame, &mut again)
            .expect("a decoded frame fits the maximum");
    }
    let consumed: usize = frames.iter().map(|f| HEADER_LEN + f.len()).sum();
    assert_eq!(&again[..], &stream[..consumed]);
});
