//! Payload codecs: what goes inside a frame body.
//!
//! | codec | item | on the wire | decode errors |
//! |---|---|---|---|
//! | [`Binary`] | [`Bytes`] | the bytes as they are (zero-copy on decode) | none |
//! | [`Text`] | [`String`] | UTF-8 | [`WireError::InvalidUtf8`] |
//! | [`Json<T>`] | `T: serde` | `serde_json`, UTF-8 | [`WireError::Json`] (depth limit 128, serde_json's) |
//! | [`Postcard<T>`] | `T: serde` | `postcard` 1.x | [`WireError::Postcard`], [`WireError::TrailingBytes`], [`WireError::TooDeep`] |
//!
//! `Postcard<T>` is the default for typed messages: compact, fast, and strict (trailing
//! bytes are an error, nesting is bounded by [`DEFAULT_MAX_DEPTH`]).

use std::fmt;
use std::marker::PhantomData;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::WireError;
use crate::depth::Limit;

/// Default nesting limit of [`Postcard`] decoding: 64 levels of structs, sequences,
/// maps, options or enum variants. Each level costs a few hundred bytes of stack at most,
/// far below a 2 MiB thread stack; real messages rarely nest beyond ten.
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// Turns one message into a frame body and back.
///
/// Codecs are cheap to clone and hold no per-stream state, so one instance may serve
/// many connections (a link encodes a broadcast once and shares the bytes).
pub trait PayloadCodec {
    /// The message type.
    type Item;

    /// Appends the encoded `item` to `dst`.
    fn encode_payload(&self, item: &Self::Item, dst: &mut BytesMut) -> Result<(), WireError>;

    /// Decodes one whole frame body.
    fn decode_payload(&self, body: Bytes) -> Result<Self::Item, WireError>;
}

/// Raw bytes, unchanged. Decoding hands out the frame's own buffer (no copy).
#[derive(Debug, Clone, Copy, Default)]
pub struct Binary;

impl PayloadCodec for Binary {
    type Item = Bytes;

    fn encode_payload(&self, item: &Bytes, dst: &mut BytesMut) -> Result<(), WireError> {
        dst.put_slice(item);
        Ok(())
    }

    fn decode_payload(&self, body: Bytes) -> Result<Bytes, WireError> {
        Ok(body)
    }
}

/// UTF-8 text. Invalid UTF-8 is [`WireError::InvalidUtf8`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Text;

impl PayloadCodec for Text {
    type Item = String;

    fn encode_payload(&self, item: &String, dst: &mut BytesMut) -> Result<(), WireError> {
        dst.put_slice(item.as_bytes());
        Ok(())
    }

    fn decode_payload(&self, body: Bytes) -> Result<String, WireError> {
        std::str::from_utf8(&body)?;
        // Checked just above; `from_utf8` on the Vec then cannot fail, and the Vec reuses
        // a heap body's buffer (a mapped large body is copied out).
        String::from_utf8(Vec::from(body)).map_err(|e| WireError::InvalidUtf8(e.utf8_error()))
    }
}

/// JSON via `serde_json`: human-readable, and what Python Comms speaks.
///
/// Output is compact by default (`{"a":1,"b":[1,2]}`); [`Json::python_style`] writes the
/// separators of Python's `json.dumps` defaults (`{"a": 1, "b": [1, 2]}`), so for ASCII
/// content the bytes equal what a Python peer would send. Either is read by both.
/// Nesting is bounded by serde_json's own recursion limit (128).
pub struct Json<T> {
    python_style: bool,
    _item: PhantomData<fn() -> T>,
}

/// Postcard: compact binary serde, the default for typed hail messages.
///
/// Decoding rejects trailing bytes ([`WireError::TrailingBytes`]) and input that nests
/// deeper than its limit ([`WireError::TooDeep`], default [`DEFAULT_MAX_DEPTH`]), so a
/// hostile message cannot overflow the stack.
pub struct Postcard<T> {
    max_depth: usize,
    _item: PhantomData<fn() -> T>,
}

impl<T> Json<T> {
    /// A JSON codec for `T` writing compact JSON.
    pub fn new() -> Self {
        Self {
            python_style: false,
            _item: PhantomData,
        }
    }

    /// A JSON codec for `T` writing `", "` and `": "` separators, as Python's `json.dumps`.
    pub fn python_style() -> Self {
        Self {
            python_style: true,
            _item: PhantomData,
        }
    }
}

impl<T> Postcard<T> {
    /// A postcard codec for `T` with the default nesting limit ([`DEFAULT_MAX_DEPTH`]).
    pub fn new() -> Self {
        Self::with_max_depth(DEFAULT_MAX_DEPTH)
    }

    /// A postcard codec for `T` that refuses input nesting deeper than `max_depth`.
    pub fn with_max_depth(max_depth: usize) -> Self {
        Self {
            max_depth,
            _item: PhantomData,
        }
    }

    /// The nesting limit.
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }
}

// Manual impls: deriving would require `T: Clone`/`T: Debug`/`T: Default` for no reason.
// Each codec is a setting and a `PhantomData<fn() -> T>`: copied whatever `T` is, printed
// with `T`'s name and its setting.
macro_rules! codec_impls {
    ($codec:ident, $setting:ident) => {
        impl<T> Default for $codec<T> {
            fn default() -> Self {
                Self::new()
            }
        }
        impl<T> Clone for $codec<T> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<T> Copy for $codec<T> {}
        impl<T> fmt::Debug for $codec<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let name = format!("{}<{}>", stringify!($codec), std::any::type_name::<T>());
                f.debug_struct(&name)
                    .field(stringify!($setting), &self.$setting)
                    .finish()
            }
        }
    };
}
codec_impls!(Json, python_style);
codec_impls!(Postcard, max_depth);

impl<T: Serialize + DeserializeOwned> PayloadCodec for Json<T> {
    type Item = T;

    fn encode_payload(&self, item: &T, dst: &mut BytesMut) -> Result<(), WireError> {
        if self.python_style {
            let mut ser = serde_json::Serializer::with_formatter(dst.writer(), PythonFormatter);
            item.serialize(&mut ser)?;
        } else {
            serde_json::to_writer(dst.writer(), item)?;
        }
        Ok(())
    }

    fn decode_payload(&self, body: Bytes) -> Result<T, WireError> {
        Ok(serde_json::from_slice(&body)?)
    }
}

impl<T: Serialize + DeserializeOwned> PayloadCodec for Postcard<T> {
    type Item = T;

    fn encode_payload(&self, item: &T, dst: &mut BytesMut) -> Result<(), WireError> {
        postcard::serialize_with_flavor(item, BytesMutFlavor::new(dst))?;
        Ok(())
    }

    fn decode_payload(&self, body: Bytes) -> Result<T, WireError> {
        postcard_from_slice(&body, self.max_depth)
    }
}

/// Decodes a whole postcard value from `bytes`: trailing bytes and nesting deeper than
/// `max_depth` are errors. Other hail protocols (RPC packets, adverts) decode through here.
pub fn postcard_from_slice<T: DeserializeOwned>(
    bytes: &[u8],
    max_depth: usize,
) -> Result<T, WireError> {
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let exceeded = std::cell::Cell::new(false);
    let value = match T::deserialize(Limit::new(&mut de, max_depth, &exceeded)) {
        Ok(v) => v,
        Err(_) if exceeded.get() => return Err(WireError::TooDeep { max: max_depth }),
        Err(e) => return Err(e.into()),
    };
    let rest = de.finalize()?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes { count: rest.len() });
    }
    Ok(value)
}

/// serde_json output with the separators of Python's `json.dumps` defaults.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

/// A postcard serializer flavor that appends to a [`BytesMut`]: postcard straight into a
/// frame or packet buffer, with no intermediate `Vec`. [`Postcard`] encodes through it, and
/// so do other hail protocols that write a header before a postcard body (RPC packets).
///
/// The buffer grows as needed, so the flavor itself never fails:
/// `postcard::serialize_with_flavor` with it errors only on values postcard cannot encode
/// (sequences of unknown length, or a `Serialize` impl that returns an error).
///
/// ```
/// use bytes::BytesMut;
/// use hail_wire::BytesMutFlavor;
///
/// let mut buf = BytesMut::from(&b"v1"[..]);
/// postcard::serialize_with_flavor::<_, _, ()>(&(300u16, "hi"), BytesMutFlavor::new(&mut buf))?;
/// assert_eq!(&buf[..], b"v1\xac\x02\x02hi");
/// # Ok::<(), postcard::Error>(())
/// ```
#[derive(Debug)]
pub struct BytesMutFlavor<'a>(&'a mut BytesMut);

impl<'a> BytesMutFlavor<'a> {
    /// A flavor appending to `dst` (what `dst` already holds is kept).
    pub fn new(dst: &'a mut BytesMut) -> Self {
        Self(dst)
    }
}

impl postcard::ser_flavors::Flavor for BytesMutFlavor<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.put_u8(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.put_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Tree {
        Leaf,
        Node(Box<Self>),
    }

    fn nested(depth: usize) -> Vec<u8> {
        // Node = variant 1, Leaf = variant 0.
        let mut v = vec![1u8; depth];
        v.push(0);
        v
    }

    #[test]
    fn binary_decode_is_zero_copy() {
        let body = BytesMut::from(&b"abc"[..]).freeze();
        let ptr = body.as_ptr();
        let out = Binary.decode_payload(body).unwrap();
        assert_eq!(out.as_ptr(), ptr);
    }

    #[test]
    fn invalid_utf8_is_typed() {
        let err = Text
            .decode_payload(Bytes::copy_from_slice(&b"ok\xff"[..]))
            .unwrap_err();
        assert!(matches!(err, WireError::InvalidUtf8(e) if e.valid_up_to() == 2));
    }

    #[test]
    fn bad_json_is_typed() {
        let err = Json::<Vec<u8>>::new()
            .decode_payload(Bytes::copy_from_slice(&b"[1,2"[..]))
            .unwrap_err();
        assert!(matches!(err, WireError::Json(_)));
        assert!(err.is_payload_error());
    }

    #[test]
    fn postcard_rejects_trailing_bytes() {
        let err = Postcard::<u8>::new()
            .decode_payload(Bytes::copy_from_slice(&[5u8, 6, 7][..]))
            .unwrap_err();
        assert!(matches!(err, WireError::TrailingBytes { count: 2 }));
    }

    #[test]
    fn postcard_rejects_bad_input() {
        // A bool must be 0 or 1.
        let err = Postcard::<bool>::new()
            .decode_payload(Bytes::copy_from_slice(&[2u8][..]))
            .unwrap_err();
        assert!(matches!(err, WireError::Postcard(_)));
        // A string longer than the input.
        let err = Postcard::<String>::new()
            .decode_payload(Bytes::copy_from_slice(&[50u8, b'a'][..]))
            .unwrap_err();
        assert!(matches!(err, WireError::Postcard(_)));
    }

    #[test]
    fn postcard_depth_is_bounded() {
        let codec = Postcard::<Tree>::with_max_depth(32);
        let ok = codec
            .decode_payload(Bytes::copy_from_slice(&nested(20)[..]))
            .unwrap();
        let mut expect = Tree::Leaf;
        for _ in 0..20 {
            expect = Tree::Node(Box::new(expect));
        }
        assert_eq!(ok, expect);
        // Deep enough to overflow the stack without the limit.
        let err = codec
            .decode_payload(Bytes::copy_from_slice(&nested(1_000_000)[..]))
            .unwrap_err();
        assert!(matches!(err, WireError::TooDeep { max: 32 }), "{err:?}");
    }

    #[test]
    fn deep_json_is_refused() {
        let deep = "[".repeat(100_000);
        let err = Json::<serde_json::Value>::new()
            .decode_payload(Bytes::copy_from_slice(deep.as_bytes()))
            .unwrap_err();
        assert!(matches!(err, WireError::Json(_)));
    }
}
