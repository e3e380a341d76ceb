//! `wire/*`: the codecs in memory, against tokio-util's `LengthDelimitedCodec` and JSON.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hail_wire::{FrameCodec, Json, MessageCodec, Postcard};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use crate::harness::{Better, Ctx, Record, interleaved_rate};

/// Frames per round: enough that a round takes about a millisecond.
const BATCH: usize = 1024;

/// Runs the `wire/*` benchmarks.
pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Record>> {
    let budget = Duration::from_millis(ctx.pick(300, 2000));
    let mut out = Vec::new();
    if ctx.wants("wire/codec") {
        for (label, size) in [("64B", 64), ("1KiB", 1024)] {
            out.push(codec(budget, label, size));
        }
    }
    if ctx.wants("wire/postcard") {
        out.push(postcard_vs_json(budget));
    }
    Ok(out)
}

/// Encode a batch of frames into one buffer, then decode them all, as a stream would.
fn codec(budget: Duration, label: &str, size: usize) -> Record {
    let body = Bytes::from(vec![0xa5u8; size]);
    let mut ours = FrameCodec::new();
    let mut theirs = LengthDelimitedCodec::new();
    let mut buf_a = BytesMut::with_capacity(BATCH * (size + 4));
    let mut buf_b = BytesMut::with_capacity(BATCH * (size + 4));
    let (a, b) = interleaved_rate(
        budget,
        BATCH as u64,
        || {
            for _ in 0..BATCH {
                ours.encode(black_box(body.clone()), &mut buf_a)
                    .expect("encode");
            }
            let mut n = 0;
            while let Some(frame) = ours.decode(&mut buf_a).expect("decode") {
                n += black_box(frame).len();
            }
            assert_eq!(n, BATCH * size);
        },
        || {
            for _ in 0..BATCH {
                theirs
                    .encode(black_box(body.clone()), &mut buf_b)
                    .expect("encode");
            }
            let mut n = 0;
            while let Some(frame) = theirs.decode(&mut buf_b).expect("decode") {
                n += black_box(frame).len();
            }
            assert_eq!(n, BATCH * size);
        },
    );
    Record::new(format!("wire/codec-{label}"), a, b, "msg/s", Better::Higher)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Telemetry {
    device: String,
    seq: u64,
    temperature: f32,
    tags: Vec<String>,
    samples: Vec<i16>,
}

/// The same typed message through `MessageCodec`: postcard (ours) against JSON (baseline).
fn postcard_vs_json(budget: Duration) -> Record {
    let msg = Telemetry {
        device: "greenhouse-3".into(),
        seq: 123_456,
        temperature: 21.5,
        tags: vec!["east".into(), "shelf-2".into()],
        samples: (0..16).map(|i| i * 37 - 200).collect(),
    };
    let mut pc = MessageCodec::new(FrameCodec::new(), Postcard::<Telemetry>::new());
    let mut js = MessageCodec::new(FrameCodec::new(), Json::<Telemetry>::new());
    let mut buf_a = BytesMut::new();
    let mut buf_b = BytesMut::new();
    let (a, b) = interleaved_rate(
        budget,
        BATCH as u64,
        || {
            for _ in 0..BATCH {
                pc.encode_ref(black_box(&msg), &mut buf_a).expect("encode");
            }
            while let Some(m) = pc.decode(&mut buf_a).expect("decode") {
                black_box(m);
            }
        },
        || {
            for _ in 0..BATCH {
                js.encode_ref(black_box(&msg), &mut buf_b).expect("encode");
            }
            while let Some(m) = js.decode(&mut buf_b).expect("decode") {
                black_box(m);
            }
        },
    );
    Record::new("wire/postcard-vs-json", a, b, "msg/s", Better::Higher)
}
