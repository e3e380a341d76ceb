//! `Postcard<T>` and `postcard_from_slice` decoding of arbitrary bytes, into a recursive
//! enum (nesting bounded by the depth limit) and a typed struct.
//!
//! Checked: no panic and no stack overflow (a small and the default depth limit); errors
//! are payload errors; `Postcard<T>` and `postcard_from_slice` agree; a value that decodes
//! whole makes the same input plus one byte fail with `TrailingBytes { count: 1 }` (postcard
//! is self-delimiting); and re-encoding is stable (encode, decode, encode gives the same
//! bytes; compared as bytes, so NaN floats are fine).

#![no_main]

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use hail_wire::{DEFAULT_MAX_DEPTH, PayloadCodec, Postcard, WireError, postcard_from_slice};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A recursive value: every shape postcard has, nested as deep as the input says.
#[derive(Debug, Serialize, Deserialize)]
enum Tree {
    Unit,
    Bool(bool),
    Int(i64),
    Uint(u128),
    Float(f32),
    Char(char),
    Text(String),
    Bytes(#[serde(with = "serde_bytes_compat")] Vec<u8>),
    Opt(Option<Box<Tree>>),
    List(Vec<Tree>),
    Pair(Box<Tree>, Box<Tree>),
    Map(BTreeMap<u16, Tree>),
    Node { label: String, kids: Vec<Tree> },
}

/// `Vec<u8>` as a postcard byte string (length + bytes) instead of a sequence of u8.
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl serde::de::Visitor<'_> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
        }
        d.deserialize_bytes(Bytes)
    }
}

/// A typed message as an application would define it.
#[derive(Debug, Serialize, Deserialize)]
struct Reading {
    sensor: String,
    seq: u64,
    celsius: f32,
    raw: [u8; 4],
    tags: Vec<String>,
    location: Option<(i16, i16)>,
    kind: Kind,
    labels: BTreeMap<String, u8>,
}

#[derive(Debug, Serialize, Deserialize)]
enum Kind {
    Ping,
    Value(i64),
    Named { name: String, level: u8 },
}

/// Depth limits to try: a small one (hit often) and the default.
const DEPTHS: [usize; 2] = [4, DEFAULT_MAX_DEPTH];

fn check<T: Serialize + DeserializeOwned + std::fmt::Debug>(data: &[u8]) {
    for depth in DEPTHS {
        let codec = Postcard::<T>::with_max_depth(depth);
        let via_codec = codec.decode_payload(Bytes::copy_from_slice(data));
        let via_slice = postcard_from_slice::<T>(data, depth);
        match (&via_codec, &via_slice) {
            (Ok(a), Ok(b)) => assert_eq!(encode(&codec, a), encode(&codec, b)),
            (Err(a), Err(b)) => {
                assert!(a.is_payload_error(), "{a:?}");
                assert_eq!(a.to_string(), b.to_string());
            }
            (a, b) => panic!("codec gave {a:?}, postcard_from_slice gave {b:?}"),
        }
        let Ok(value) = via_codec else { continue };

        let mut longer = data.to_vec();
        longer.push(0);
        match postcard_from_slice::<T>(&longer, depth) {
            Err(WireError::TrailingBytes { count: 1 }) => {}
            other => panic!("one extra byte after {value:?} gave {other:?}"),
        }

        let bytes = encode(&codec, &value);
        let again = codec
            .decode_payload(bytes.clone().freeze())
            .unwrap_or_else(|e| panic!("{value:?} encoded as {bytes:?} does not decode: {e}"));
        assert_eq!(encode(&codec, &again), bytes, "re-encoding is not stable");
    }
}

fn encode<T: Serialize + DeserializeOwned>(codec: &Postcard<T>, value: &T) -> BytesMut {
    let mut buf = BytesMut::new();
    codec
        .encode_payload(value, &mut buf)
        .expect("a decoded value encodes");
    buf
}

fuzz_target!(|data: &[u8]| {
    check::<Tree>(data);
    check::<Reading>(data);
});
