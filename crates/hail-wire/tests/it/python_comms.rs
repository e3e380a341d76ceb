//! Byte compatibility with Python Comms (ReliableCommunication): a little-endian u32
//! length, then UTF-8 JSON, as `struct.pack("<I", len(data)) + data` with
//! `data = json.dumps(obj).encode()`.

use std::collections::BTreeMap;

use bytes::BytesMut;
use hail_wire::{FrameCodec, Json, MessageCodec};
use tokio_util::codec::{Decoder, Encoder};

/// What Python Comms sends for `{"hello": "world"}`: `json.dumps` gives 18 bytes.
const PYTHON_BYTES: &[u8] = b"\x12\x00\x00\x00{\"hello\": \"world\"}";

fn codec() -> MessageCodec<Json<BTreeMap<String, String>>> {
    MessageCodec::new(
        FrameCodec::builder().little_endian().build(),
        Json::python_style(),
    )
}

fn hello() -> BTreeMap<String, String> {
    BTreeMap::from([("hello".to_owned(), "world".to_owned())])
}

#[test]
fn decodes_python_bytes() {
    assert_eq!(PYTHON_BYTES.len(), 4 + 18);
    let mut buf = BytesMut::from(PYTHON_BYTES);
    assert_eq!(codec().decode(&mut buf).unwrap(), Some(hello()));
    assert!(buf.is_empty());
}

#[test]
fn encodes_python_bytes() {
    let mut buf = BytesMut::new();
    codec().encode(hello(), &mut buf).unwrap();
    assert_eq!(&buf[..], PYTHON_BYTES);
}

#[test]
fn compact_json_is_read_by_the_same_header() {
    // hail's default JSON is compact; Python's json.loads reads it as well. The header
    // counts the 17 compact bytes.
    let mut codec = MessageCodec::new(
        FrameCodec::builder().little_endian().build(),
        Json::<BTreeMap<String, String>>::new(),
    );
    let mut buf = BytesMut::new();
    codec.encode(hello(), &mut buf).unwrap();
    assert_eq!(&buf[..], b"\x11\x00\x00\x00{\"hello\":\"world\"}");
}
