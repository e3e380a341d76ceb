//! Malformed input through the public codecs: each case is its own typed error, and a bad
//! payload costs only its own frame.

use bytes::{BufMut, Bytes, BytesMut};
use hail_wire::{Binary, FrameCodec, Json, MessageCodec, Postcard, Text, WireError};
use serde::{Deserialize, Serialize};
use tokio_util::codec::Decoder;

fn framed(body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u32(body.len() as u32);
    b.put_slice(body);
    b
}

#[test]
fn truncated_header() {
    let mut codec = MessageCodec::new(FrameCodec::new(), Binary);
    let mut buf = BytesMut::from(&[0u8, 0, 1][..]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    let err = codec.decode_eof(&mut buf).unwrap_err();
    assert!(
        matches!(err, WireError::TruncatedHeader { got: 3 }),
        "{err}"
    );
}

#[test]
fn truncated_body() {
    let mut codec = MessageCodec::new(FrameCodec::new(), Binary);
    let mut buf = framed(b"twelve bytes");
    buf.truncate(4 + 5);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    let err = codec.decode_eof(&mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            WireError::TruncatedBody {
                expected: 12,
                got: 5
            }
        ),
        "{err}"
    );
}

#[test]
fn over_limit_header() {
    let frames = FrameCodec::builder().max_frame_len(1000).build();
    let mut codec = MessageCodec::new(frames, Binary);
    let mut buf = BytesMut::new();
    buf.put_u32(1001);
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            WireError::TooLarge {
                len: 1001,
                max: 1000
            }
        ),
        "{err}"
    );
    assert!(!err.is_payload_error());
    assert_eq!(
        err.to_string(),
        "frame of 1001 bytes exceeds the maximum frame length of 1000 bytes"
    );
}

#[test]
fn u32_max_header_under_default_limit_is_refused() {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::from(&[0xff_u8; 4][..]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(
        matches!(err, WireError::TooLarge { len, max } if len == u32::MAX as usize && max == 16 << 20)
    );
}

#[test]
fn invalid_utf8() {
    let mut codec = MessageCodec::new(FrameCodec::new(), Text);
    let mut buf = framed(b"caf\xc3");
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(matches!(err, WireError::InvalidUtf8(_)), "{err}");
    assert!(err.is_payload_error());
}

#[test]
fn bad_json() {
    let mut codec = MessageCodec::new(FrameCodec::new(), Json::<Vec<u32>>::new());
    for body in [&b"[1, 2,"[..], b"{\"a\": 1}", b"[-1]", b"", b"[1] x"] {
        let err = codec.decode(&mut framed(body)).unwrap_err();
        assert!(matches!(err, WireError::Json(_)), "{body:?}: {err}");
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Point {
    x: u16,
    label: String,
}

#[test]
fn bad_postcard() {
    let mut codec = MessageCodec::new(FrameCodec::new(), Postcard::<Point>::new());
    // Varint u16 overflow, then a string length past the end, then invalid UTF-8 in the label.
    for body in [
        &[0xff_u8, 0xff, 0xff, 0x01, 0][..],
        &[1, 9, b'a'],
        &[1, 1, 0xff],
        &[],
    ] {
        let err = codec.decode(&mut framed(body)).unwrap_err();
        assert!(matches!(err, WireError::Postcard(_)), "{body:?}: {err}");
    }
}

#[test]
fn postcard_trailing_bytes() {
    let mut codec = MessageCodec::new(FrameCodec::new(), Postcard::<Point>::new());
    let err = codec
        .decode(&mut framed(&[7, 2, b'h', b'i', 0, 0]))
        .unwrap_err();
    assert!(
        matches!(err, WireError::TrailingBytes { count: 2 }),
        "{err}"
    );
}

#[derive(Debug, Serialize, Deserialize)]
enum Nest {
    End,
    More(Box<Self>),
    List(Vec<Self>),
}

#[test]
fn deeply_nested_postcard() {
    let mut codec = MessageCodec::new(FrameCodec::new(), Postcard::<Nest>::new());
    // A million levels of `More`: without the limit this overflows the stack.
    let mut body = vec![1u8; 1_000_000];
    body.push(0);
    let err = codec.decode(&mut framed(&body)).unwrap_err();
    assert!(matches!(err, WireError::TooDeep { max: 64 }), "{err}");
    // The same through sequences: List([List([...])]).
    let body: Vec<u8> = std::iter::repeat_n([2u8, 1], 100_000).flatten().collect();
    let err = codec.decode(&mut framed(&body)).unwrap_err();
    assert!(matches!(err, WireError::TooDeep { max: 64 }), "{err}");
}

#[test]
fn bad_payload_costs_only_its_frame() {
    let mut codec = MessageCodec::new(FrameCodec::new(), Text);
    let mut buf = framed(b"\xff\xfe");
    buf.unsplit(framed(b"next"));
    assert!(codec.decode(&mut buf).is_err());
    assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some("next"));
}

#[test]
fn oversized_message_is_refused_before_writing() {
    let frames = FrameCodec::builder().max_frame_len(8).build();
    let codec = MessageCodec::new(frames, Binary);
    let mut out = BytesMut::new();
    let err = codec
        .encode_ref(&Bytes::from_static(b"nine byte"), &mut out)
        .unwrap_err();
    assert!(matches!(err, WireError::TooLarge { len: 9, max: 8 }));
    assert!(out.is_empty());
}
