//! Round trips of every codec, with the encoded stream cut into arbitrary pieces.

use bytes::{Bytes, BytesMut};
use hail_wire::{Binary, ByteOrder, FrameCodec, Json, MessageCodec, PayloadCodec, Postcard, Text};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Msg {
    name: String,
    seq: u64,
    values: Vec<i32>,
    flag: Option<bool>,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Kind {
    Empty,
    Code(u16),
    Pair { a: i8, b: String },
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Empty),
        any::<u16>().prop_map(Kind::Code),
        (any::<i8>(), ".{0,8}").prop_map(|(a, b)| Kind::Pair { a, b }),
    ]
}

fn msg() -> impl Strategy<Value = Msg> {
    (
        ".{0,24}",
        any::<u64>(),
        prop::collection::vec(any::<i32>(), 0..16),
        any::<Option<bool>>(),
        kind(),
    )
        .prop_map(|(name, seq, values, flag, kind)| Msg {
            name,
            seq,
            values,
            flag,
            kind,
        })
}

fn order() -> impl Strategy<Value = ByteOrder> {
    prop_oneof![Just(ByteOrder::BigEndian), Just(ByteOrder::LittleEndian)]
}

/// Encodes `items`, cuts the stream at `cuts` (positions taken modulo its length), feeds the
/// pieces to a fresh decoder one by one, and returns what came out.
fn through_pieces<P>(codec: &MessageCodec<P>, items: &[P::Item], cuts: &[usize]) -> Vec<P::Item>
where
    P: PayloadCodec + Clone,
{
    let mut stream = BytesMut::new();
    for item in items {
        codec.encode_ref(item, &mut stream).expect("encode");
    }
    let total = stream.len();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (total + 1)).collect();
    points.push(total);
    points.sort_unstable();

    let mut decoder = codec.clone();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    for p in points {
        buf.extend_from_slice(&stream[at..p]);
        at = p;
        while let Some(item) = decoder.decode(&mut buf).expect("decode") {
            out.push(item);
        }
    }
    assert!(decoder.decode_eof(&mut buf).expect("clean end").is_none());
    out
}

proptest! {
    #[test]
    fn frames_survive_any_chunking(
        order in order(),
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let frames = FrameCodec::builder().byte_order(order).max_frame_len(300).build();
        let items: Vec<Bytes> = bodies.into_iter().map(Bytes::from).collect();
        let codec = MessageCodec::new(frames, Binary);
        prop_assert_eq!(through_pieces(&codec, &items, &cuts), items);
    }

    #[test]
    fn frame_codec_alone_round_trips(
        order in order(),
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..100), 0..20),
    ) {
        let mut codec = FrameCodec::builder().byte_order(order).build();
        let mut buf = BytesMut::new();
        for b in &bodies {
            codec.encode(&b[..], &mut buf).unwrap();
        }
        for b in &bodies {
            let frame = codec.decode(&mut buf).unwrap().unwrap();
            prop_assert_eq!(&frame[..], &b[..]);
        }
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn text_round_trips(
        items in prop::collection::vec(".{0,40}", 0..20),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let codec = MessageCodec::new(FrameCodec::new(), Text);
        prop_assert_eq!(through_pieces(&codec, &items, &cuts), items);
    }

    #[test]
    fn json_round_trips(
        items in prop::collection::vec(msg(), 0..10),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
        python in any::<bool>(),
    ) {
        let json = if python { Json::<Msg>::python_style() } else { Json::<Msg>::new() };
        let codec = MessageCodec::new(FrameCodec::builder().little_endian().build(), json);
        prop_assert_eq!(through_pieces(&codec, &items, &cuts), items);
    }

    #[test]
    fn postcard_round_trips(
        items in prop::collection::vec(msg(), 0..10),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let codec = MessageCodec::new(FrameCodec::new(), Postcard::<Msg>::new());
        prop_assert_eq!(through_pieces(&codec, &items, &cuts), items);
    }
}
