//! How a device encodes typed messages: [`MessageFormat`].

use bytes::Bytes;
use hail_wire::{DEFAULT_MAX_DEPTH, PayloadCodec, Text};
use serde::Serialize;
use serde::de::{DeserializeOwned, IntoDeserializer};

/// The encoding of typed messages, questions and answers on a device
/// ([`DeviceBuilder::format`](crate::DeviceBuilder::format)): what
/// [`Device::send_msg`](crate::Device::send_msg) and
/// [`Device::ask_msg`](crate::Device::ask_msg) put on the wire and what
/// [`Device::decode`](crate::Device::decode) reads from a message's payload.
///
/// The bytes API ([`Device::send`](crate::Device::send), [`Device::ask`](crate::Device::ask)
/// and [`DeviceEvent::Message`](crate::DeviceEvent::Message)'s payload) is the same in
/// every format: these are the payload bytes. Every device of a group should use the
/// same format (a receiver decodes with its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MessageFormat {
    /// Postcard: compact binary serde (the default). Decoding is strict: no trailing
    /// bytes, nesting at most [`DEFAULT_MAX_DEPTH`] (hail-wire's `postcard_from_slice`).
    #[default]
    Postcard,
    /// JSON (serde_json), compact; readable by any JSON peer.
    Json,
    /// UTF-8 text: a value that serializes as a string is sent as its bytes; decoding
    /// checks UTF-8 (hail-wire's `Text` codec) and gives a string-like type.
    Text,
    /// Raw bytes: a value that serializes as bytes (`Vec<u8>`, `[u8; N]`, ...) is
    /// sent as they are; decoding gives such a type back. For large binary payloads use
    /// the bytes API directly (this path builds an intermediate value).
    Bytes,
}

/// A typed message could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The value cannot be written in this format (for [`MessageFormat::Text`], it is
    /// not a string; for [`MessageFormat::Bytes`], not bytes).
    #[error("cannot encode as {format:?}: {reason}")]
    Encode {
        /// The device's format.
        format: MessageFormat,
        /// What went wrong.
        reason: String,
    },
    /// The payload is not a valid value of the wanted type in this format.
    #[error("cannot decode as {format:?}: {reason}")]
    Decode {
        /// The device's format.
        format: MessageFormat,
        /// What went wrong.
        reason: String,
    },
}

impl MessageFormat {
    /// Encodes `value` in this format.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Bytes, FormatError> {
        let fail = |reason: String| FormatError::Encode {
            format: self,
            reason,
        };
        match self {
            Self::Postcard => postcard::to_allocvec(value)
                .map(Bytes::from)
                .map_err(|e| fail(e.to_string())),
            Self::Json => serde_json::to_vec(value)
                .map(Bytes::from)
                .map_err(|e| fail(e.to_string())),
            Self::Text => match serde_json::to_value(value).map_err(|e| fail(e.to_string()))? {
                serde_json::Value::String(s) => Ok(Bytes::from(s)),
                other => Err(fail(format!("not a string: {}", kind(&other)))),
            },
            Self::Bytes => match serde_json::to_value(value).map_err(|e| fail(e.to_string()))? {
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|v| {
                        v.as_u64()
                            .and_then(|n| u8::try_from(n).ok())
                            .ok_or_else(|| fail(format!("not a byte: {v}")))
                    })
                    .collect::<Result<Vec<u8>, _>>()
                    .map(Bytes::from),
                other => Err(fail(format!("not bytes: {}", kind(&other)))),
            },
        }
    }

    /// Decodes a payload in this format. Never panics on any input.
    pub fn decode<T: DeserializeOwned>(self, payload: &[u8]) -> Result<T, FormatError> {
        let fail = |reason: String| FormatError::Decode {
            format: self,
            reason,
        };
        match self {
            Self::Postcard => hail_wire::postcard_from_slice(payload, DEFAULT_MAX_DEPTH)
                .map_err(|e| fail(e.to_string())),
            Self::Json => serde_json::from_slice(payload).map_err(|e| fail(e.to_string())),
            Self::Text => {
                let text = Text
                    .decode_payload(bytes::Bytes::copy_from_slice(payload))
                    .map_err(|e| fail(e.to_string()))?;
                T::deserialize(text.into_deserializer())
                    .map_err(|e: serde::de::value::Error| fail(e.to_string()))
            }
            Self::Bytes => {
                let items = payload
                    .iter()
                    .map(|&b| serde_json::Value::from(b))
                    .collect();
                serde_json::from_value(serde_json::Value::Array(items))
                    .map_err(|e| fail(e.to_string()))
            }
        }
    }
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a sequence",
        serde_json::Value::Object(_) => "a map or struct",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Reading {
        sensor: String,
        values: Vec<i32>,
        on: bool,
    }

    #[test]
    fn each_format_writes_the_expected_bytes() {
        let r = Reading {
            sensor: "t1".into(),
            values: vec![1, -2],
            on: true,
        };
        let json = MessageFormat::Json.encode(&r).unwrap();
        assert_eq!(json, r#"{"sensor":"t1","values":[1,-2],"on":true}"#);
        let pc = MessageFormat::Postcard.encode(&r).unwrap();
        assert_eq!(pc.as_ref(), [2, b't', b'1', 2, 2, 3, 1]);
        assert_eq!(MessageFormat::Text.encode("héllo").unwrap(), "héllo");
        assert_eq!(
            MessageFormat::Bytes.encode(&vec![1u8, 2]).unwrap(),
            Bytes::from_static(&[1, 2])
        );
    }

    #[test]
    fn values_of_the_wrong_shape_are_typed_errors() {
        let e = MessageFormat::Text.encode(&5).unwrap_err();
        assert!(matches!(
            e,
            FormatError::Encode {
                format: MessageFormat::Text,
                ..
            }
        ));
        assert!(MessageFormat::Bytes.encode("text").is_err());
        assert!(MessageFormat::Bytes.encode(&vec![256u32]).is_err());
        // Malformed input.
        assert!(MessageFormat::Text.decode::<String>(b"\xff\xfe").is_err());
        assert!(MessageFormat::Json.decode::<Reading>(b"{").is_err());
        assert!(
            MessageFormat::Postcard
                .decode::<Reading>(&[2, b't'])
                .is_err()
        );
        let trailing = MessageFormat::Postcard.decode::<u8>(&[1, 2]).unwrap_err();
        assert!(trailing.to_string().contains("trailing"), "{trailing}");
        assert!(MessageFormat::Bytes.decode::<String>(b"ab").is_err());
    }

    proptest! {
        #[test]
        fn round_trips(sensor in ".{0,20}", values in proptest::collection::vec(any::<i32>(), 0..8), on in any::<bool>()) {
            let r = Reading { sensor: sensor.clone(), values, on };
            for f in [MessageFormat::Postcard, MessageFormat::Json] {
                let bytes = f.encode(&r).unwrap();
                prop_assert_eq!(f.decode::<Reading>(&bytes).unwrap(), r.clone());
            }
            let b = MessageFormat::Bytes.encode(&sensor.as_bytes().to_vec()).unwrap();
            prop_assert_eq!(MessageFormat::Bytes.decode::<Vec<u8>>(&b).unwrap(), sensor.as_bytes());
            let t = MessageFormat::Text.encode(&sensor).unwrap();
            prop_assert_eq!(MessageFormat::Text.decode::<String>(&t).unwrap(), sensor);
        }

        #[test]
        fn decoding_anything_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            for f in [MessageFormat::Postcard, MessageFormat::Json, MessageFormat::Text, MessageFormat::Bytes] {
                let _ = f.decode::<Reading>(&bytes);
                let _ = f.decode::<String>(&bytes);
                let _ = f.decode::<Vec<u8>>(&bytes);
            }
        }
    }
}
