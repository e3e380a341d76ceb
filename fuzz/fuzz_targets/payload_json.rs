//! `Json<T>` payload decoding of arbitrary bytes, into `serde_json::Value` and a typed struct.
//!
//! Checked: no panic (deep nesting included); errors are payload errors; whatever decodes
//! encodes again, compact and Python-style, and decodes to the same value.

#![no_main]

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use hail_wire::{Json, PayloadCodec};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A typed message with the shapes real messages have (no floats: serde_json's default
/// float parsing may move the last digit, which is not what this target looks for).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Reading {
    sensor: String,
    seq: u64,
    offset: i32,
    ok: bool,
    tags: Vec<String>,
    location: Option<(i16, i16)>,
    kind: Kind,
    #[serde(default)]
    labels: BTreeMap<String, u8>,
    #[serde(default)]
    children: Vec<Reading>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Kind {
    Ping,
    Value(i64),
    Named { name: String, level: u8 },
}

/// Values equal, floats allowed to differ in the last bits after a text round trip.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= x.abs().max(y.abs()) * 1e-14
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        _ => a == b,
    }
}

/// Encodes `value` compact and Python-style; both decode back to what `check` accepts.
fn round_trip<T: Serialize + serde::de::DeserializeOwned>(value: &T, check: impl Fn(&T)) {
    for codec in [Json::<T>::new(), Json::<T>::python_style()] {
        let mut buf = BytesMut::new();
        codec
            .encode_payload(value, &mut buf)
            .expect("a decoded value encodes");
        let again = codec
            .decode_payload(buf.freeze())
            .expect("an encoded value decodes");
        check(&again);
    }
}

fuzz_target!(|data: &[u8]| {
    match Json::<Value>::new().decode_payload(Bytes::copy_from_slice(data)) {
        Ok(value) => round_trip(&value, |again| {
            assert!(same(&value, again), "{value:?} came back as {again:?}")
        }),
        Err(e) => assert!(e.is_payload_error(), "{e:?}"),
    }
    match Json::<Reading>::new().decode_payload(Bytes::copy_from_slice(data)) {
        Ok(reading) => round_trip(&reading, |again| assert_eq!(&reading, again)),
        Err(e) => assert!(e.is_payload_error(), "{e:?}"),
    }
});
