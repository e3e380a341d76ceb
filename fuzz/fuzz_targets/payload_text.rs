//! `Text` payload decoding of arbitrary bytes, alone and inside a frame.
//!
//! Checked: decoding succeeds exactly when the bytes are UTF-8, gives back the same bytes,
//! fails with `InvalidUtf8` (a payload error: the stream stays usable) otherwise, and a
//! `MessageCodec<Text>` gives the same answer and then decodes the next frame normally.

#![no_main]

use bytes::{Bytes, BytesMut};
use hail_wire::{FrameCodec, MessageCodec, PayloadCodec, Text, WireError};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let direct = Text.decode_payload(Bytes::copy_from_slice(data));
    match (&direct, std::str::from_utf8(data)) {
        (Ok(text), Ok(expected)) => assert_eq!(text, expected),
        (Err(WireError::InvalidUtf8(e)), Err(expected)) => {
            assert_eq!(e.valid_up_to(), expected.valid_up_to());
        }
        (got, expected) => panic!("Text gave {got:?}, from_utf8 gave {expected:?}"),
    }
    if let Err(e) = &direct {
        assert!(e.is_payload_error());
    }

    // The same bytes as a frame, followed by a valid frame.
    let mut codec = MessageCodec::new(FrameCodec::new(), Text);
    let mut stream = BytesMut::new();
    codec
        .frames()
        .encode_slice(data, &mut stream)
        .expect("fuzz inputs are far below 16 MiB");
    codec
        .encode_ref(&"next".to_owned(), &mut stream)
        .expect("a short string encodes");
    let framed = codec.decode(&mut stream);
    assert_eq!(framed.is_ok(), direct.is_ok());
    if let (Ok(Some(a)), Ok(b)) = (&framed, &direct) {
        assert_eq!(a, b);
    }
    assert_eq!(codec.decode(&mut stream).unwrap().as_deref(), Some("next"));
    assert!(stream.is_empty());
});
