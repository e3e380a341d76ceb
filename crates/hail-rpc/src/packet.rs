//! RPC packets: what one link frame carries.
//!
//! Every packet is one frame body of the underlying link (the link does the framing and,
//! with a passphrase, the encryption). Its first byte is the format version, the rest is
//! postcard:
//!
//! ```text
//! +---------+------------+--------------------------------------------+
//! | version | kind       | fields, by kind                            |
//! | u8 = 1  | varint u32 |                                            |
//! +---------+------------+--------------------------------------------+
//!
//! kind 0  Request       retcode: varint u32 | method | args: bytes
//! kind 1  Reply         retcode: varint u32 | status: u8 | body: bytes
//! kind 2  Notification  method | args: bytes
//! kind 3  Cancel        retcode: varint u32
//!
//! method  = 0x00 opcode: varint u16           (an Opcode)
//!         | 0x01 len: varint u32, UTF-8 bytes (a name, at most 255 bytes)
//! bytes   = len: varint u32, then len bytes   (args and bodies are postcard themselves)
//! ```
//!
//! A varint is postcard's (LEB128: 7 bits a byte, low bits first, high bit = more).
//! `args` is the postcard encoding of the handler's argument type; a reply `body` is the
//! postcard encoding of the result for [`Status::OK`], a postcard string (the message)
//! for `BAD_ARGUMENTS` and `HANDLER_ERROR`, and empty otherwise.
//!
//! Example: `Request { retcode: 1, method: Opcode(1), args: (2i32, 3i32) }` is
//! `01 00 01 00 01 02 04 06` (version, kind, retcode, method kind, opcode, args length,
//! then the two zigzag varints).
//!
//! Decoding is strict: an empty packet, another version, an unknown kind, a truncated
//! field, an over-long name, invalid UTF-8 or trailing bytes is a [`PacketError`]; it
//! never panics and never allocates more than the packet's own length.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use hail_wire::BytesMutFlavor;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::method::{MAX_METHOD_NAME_LEN, Method, RetCode, Status};

/// The packet format version this crate writes and reads.
pub const VERSION: u8 = 1;

/// Postcard nesting limit for packets: the envelope nests three levels, 8 leaves room.
const MAX_DEPTH: usize = 8;

/// One RPC packet, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Call `method` with `args`; answer with a [`Packet::Reply`] carrying `retcode`.
    Request {
        /// Caller-chosen correlation id.
        retcode: RetCode,
        /// The method to run.
        method: Method,
        /// Postcard-encoded arguments.
        args: Bytes,
    },
    /// The outcome of the request with the same `retcode`.
    Reply {
        /// The request's correlation id.
        retcode: RetCode,
        /// How the call ended.
        status: Status,
        /// The result (for [`Status::OK`]) or an error message, see the module docs.
        body: Bytes,
    },
    /// Run `method` with `args`, send no reply.
    Notification {
        /// The method to run.
        method: Method,
        /// Postcard-encoded arguments.
        args: Bytes,
    },
    /// The caller gave up on `retcode`: abort its handler if it still runs, send no reply.
    Cancel {
        /// The abandoned call's correlation id.
        retcode: RetCode,
    },
}

/// A packet that could not be decoded. The packet is dropped; the connection lives on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// The packet has no bytes at all.
    #[error("empty RPC packet")]
    Empty,
    /// The packet's version byte is not [`VERSION`].
    #[error("RPC packet version {0} is not supported (this peer speaks version {VERSION})")]
    UnsupportedVersion(u8),
    /// A method name is longer than [`MAX_METHOD_NAME_LEN`] bytes.
    #[error("method name of {len} bytes exceeds the limit of {MAX_METHOD_NAME_LEN}")]
    NameTooLong {
        /// The name's length in bytes.
        len: usize,
    },
    /// The postcard body is malformed: unknown kind, truncated, invalid UTF-8, trailing
    /// bytes or too deep.
    #[error("malformed RPC packet: {0}")]
    Malformed(#[from] hail_wire::WireError),
}

impl Packet {
    /// Decodes one packet from a whole frame body.
    pub fn decode(frame: &[u8]) -> Result<Self, PacketError> {
        let (&version, rest) = frame.split_first().ok_or(PacketError::Empty)?;
        if version != VERSION {
            return Err(PacketError::UnsupportedVersion(version));
        }
        let wire: WireOwned = hail_wire::postcard_from_slice(rest, MAX_DEPTH)?;
        let check = |m: &Method| match m.name() {
            Some(n) if n.len() > MAX_METHOD_NAME_LEN => {
                Err(PacketError::NameTooLong { len: n.len() })
            }
            _ => Ok(()),
        };
        Ok(match wire {
            WireOwned::Request {
                retcode,
                method,
                args,
            } => {
                check(&method)?;
                Self::Request {
                    retcode: RetCode(retcode),
                    method,
                    args: args.into(),
                }
            }
            WireOwned::Reply {
                retcode,
                status,
                body,
            } => Self::Reply {
                retcode: RetCode(retcode),
                status: Status(status),
                body: body.into(),
            },
            WireOwned::Notification { method, args } => {
                check(&method)?;
                Self::Notification {
                    method,
                    args: args.into(),
                }
            }
            WireOwned::Cancel { retcode } => Self::Cancel {
                retcode: RetCode(retcode),
            },
        })
    }

    /// Appends the encoded packet to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Self::Request {
                retcode,
                method,
                args,
            } => encode_request(dst, *retcode, method, args),
            Self::Reply {
                retcode,
                status,
                body,
            } => encode_reply(dst, *retcode, *status, body),
            Self::Notification { method, args } => encode_notification(dst, method, args),
            Self::Cancel { retcode } => encode_cancel(dst, *retcode),
        }
    }

    /// The encoded packet as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }
}

/// Appends a request packet to `dst`.
pub(crate) fn encode_request(dst: &mut BytesMut, retcode: RetCode, method: &Method, args: &[u8]) {
    write(
        dst,
        &WireRef::Request {
            retcode: retcode.0,
            method,
            args: Blob(args),
        },
    );
}

/// Appends a reply packet to `dst`.
pub(crate) fn encode_reply(dst: &mut BytesMut, retcode: RetCode, status: Status, body: &[u8]) {
    write(
        dst,
        &WireRef::Reply {
            retcode: retcode.0,
            status: status.0,
            body: Blob(body),
        },
    );
}

/// Appends a notification packet to `dst`.
pub(crate) fn encode_notification(dst: &mut BytesMut, method: &Method, args: &[u8]) {
    write(
        dst,
        &WireRef::Notification {
            method,
            args: Blob(args),
        },
    );
}

/// Appends a cancel packet to `dst`.
pub(crate) fn encode_cancel(dst: &mut BytesMut, retcode: RetCode) {
    write(dst, &WireRef::Cancel { retcode: retcode.0 });
}

fn write(dst: &mut BytesMut, wire: &WireRef<'_>) {
    // Exactly the packet's length: the session keeps each packet in an allocation of its
    // own length, and a buffer with room to spare would be shrunk (a `realloc`) there.
    // Measuring walks the envelope once more, which costs less than the `realloc`.
    let len = postcard::serialize_with_flavor::<_, _, usize>(
        wire,
        postcard::ser_flavors::Size::default(),
    )
    .unwrap_or(16 + wire.payload_len());
    dst.reserve(1 + len);
    dst.put_u8(VERSION);
    // Writing into a growable buffer cannot fail: postcard errors only on a full flavor
    // or on types (unknown-length sequences) that `WireRef` does not contain.
    postcard::serialize_with_flavor::<_, _, ()>(wire, BytesMutFlavor::new(dst))
        .expect("serializing a packet envelope into a BytesMut cannot fail");
}

/// Serializes `value` as postcard into a fresh buffer (arguments, results, messages).
pub(crate) fn to_postcard<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, postcard::Error> {
    // A `Vec` pushes single bytes (varints, `u8` sequences) faster than `BytesMut`, and
    // turns into `Bytes` without a copy.
    Ok(Bytes::from(postcard::to_extend(
        value,
        Vec::with_capacity(64),
    )?))
}

/// Serializes `value` as postcard into a plain `Vec` with room for 64 bytes and their
/// header (arguments, copied into their packet and dropped).
pub(crate) fn to_postcard_vec<T: Serialize + ?Sized>(
    value: &T,
) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_extend(value, Vec::with_capacity(128))
}

/// An error message as a reply body (a postcard string).
pub(crate) fn message_body(msg: &str) -> Bytes {
    to_postcard(msg).expect("a string always serializes")
}

/// The message of a `BAD_ARGUMENTS` or `HANDLER_ERROR` reply body.
pub(crate) fn decode_message(body: &[u8]) -> String {
    hail_wire::postcard_from_slice::<String>(body, 1)
        .unwrap_or_else(|_| format!("<{} bytes of undecodable message>", body.len()))
}

/// Borrowed packet for encoding. Variant order is the wire `kind`; it must match `WireOwned`.
#[derive(Serialize)]
enum WireRef<'a> {
    Request {
        retcode: u32,
        method: &'a Method,
        args: Blob<'a>,
    },
    Reply {
        retcode: u32,
        status: u8,
        body: Blob<'a>,
    },
    Notification {
        method: &'a Method,
        args: Blob<'a>,
    },
    Cancel {
        retcode: u32,
    },
}

impl WireRef<'_> {
    fn payload_len(&self) -> usize {
        let name = |m: &Method| m.name().map_or(0, str::len);
        match self {
            Self::Request { method, args, .. } => name(method) + args.0.len(),
            Self::Reply { body, .. } => body.0.len(),
            Self::Notification { method, args } => name(method) + args.0.len(),
            Self::Cancel { .. } => 0,
        }
    }
}

/// Owned packet for decoding, same layout as [`WireRef`].
#[derive(Deserialize)]
enum WireOwned {
    Request {
        retcode: u32,
        method: Method,
        args: ByteBuf,
    },
    Reply {
        retcode: u32,
        status: u8,
        body: ByteBuf,
    },
    Notification {
        method: Method,
        args: ByteBuf,
    },
    Cancel {
        retcode: u32,
    },
}

/// Bytes serialized as one length-prefixed block (not as a sequence of `u8`).
struct Blob<'a>(&'a [u8]);

impl Serialize for Blob<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// The decoding side of [`Blob`].
struct ByteBuf(Vec<u8>);

impl From<ByteBuf> for Bytes {
    fn from(b: ByteBuf) -> Self {
        Self::from(b.0)
    }
}

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::Opcode;
    use proptest::prelude::*;

    #[test]
    fn documented_example_bytes() {
        let args = to_postcard(&(2i32, 3i32)).unwrap();
        let p = Packet::Request {
            retcode: RetCode(1),
            method: Opcode(1).into(),
            args,
        };
        assert_eq!(&p.to_bytes()[..], &[1, 0, 1, 0, 1, 2, 4, 6]);
        let named = Packet::Notification {
            method: "hi".into(),
            args: Bytes::new(),
        };
        assert_eq!(&named.to_bytes()[..], &[1, 2, 1, 2, b'h', b'i', 0]);
        let ok = Packet::Reply {
            retcode: RetCode(1),
            status: Status::OK,
            body: to_postcard(&5i32).unwrap(),
        };
        assert_eq!(&ok.to_bytes()[..], &[1, 1, 1, 0, 1, 0x0a]);
        let reply = Packet::Reply {
            retcode: RetCode(300),
            status: Status::BUSY,
            body: Bytes::new(),
        };
        assert_eq!(&reply.to_bytes()[..], &[1, 1, 0xac, 0x02, 5, 0]);
        let cancel = Packet::Cancel {
            retcode: RetCode(7),
        };
        assert_eq!(&cancel.to_bytes()[..], &[1, 3, 7]);
    }

    #[test]
    fn malformed_packets_are_typed_errors() {
        assert!(matches!(Packet::decode(&[]), Err(PacketError::Empty)));
        assert!(matches!(
            Packet::decode(&[2, 3, 7]),
            Err(PacketError::UnsupportedVersion(2))
        ));
        // Unknown kind.
        assert!(matches!(
            Packet::decode(&[1, 9, 7]),
            Err(PacketError::Malformed(_))
        ));
        // Truncated: args announce 5 bytes, 1 present.
        assert!(matches!(
            Packet::decode(&[1, 0, 1, 0, 1, 5, 0]),
            Err(PacketError::Malformed(_))
        ));
        // Trailing bytes after a cancel.
        assert!(matches!(
            Packet::decode(&[1, 3, 7, 0]),
            Err(PacketError::Malformed(_))
        ));
        // Invalid UTF-8 in a name.
        assert!(matches!(
            Packet::decode(&[1, 2, 1, 1, 0xff, 0]),
            Err(PacketError::Malformed(_))
        ));
        // An opcode wider than u16.
        assert!(matches!(
            Packet::decode(&[1, 0, 1, 0, 0xff, 0xff, 0x7f, 0]),
            Err(PacketError::Malformed(_))
        ));
        // A length that claims 4 GiB costs nothing.
        assert!(matches!(
            Packet::decode(&[1, 0, 1, 0, 1, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(PacketError::Malformed(_))
        ));
        // Over-long name.
        let name = "x".repeat(MAX_METHOD_NAME_LEN + 1);
        let p = Packet::Notification {
            method: name.into(),
            args: Bytes::new(),
        };
        assert!(matches!(
            Packet::decode(&p.to_bytes()),
            Err(PacketError::NameTooLong { len: 256 })
        ));
    }

    #[test]
    fn every_truncation_of_a_valid_packet_is_an_error() {
        let p = Packet::Request {
            retcode: RetCode(123_456),
            method: "compute".into(),
            args: Bytes::from_static(&[1, 2, 3, 4, 5]),
        }
        .to_bytes();
        for cut in 0..p.len() {
            assert!(Packet::decode(&p[..cut]).is_err(), "cut at {cut}");
        }
        assert!(Packet::decode(&p).is_ok());
    }

    #[test]
    fn messages_round_trip_and_garbage_is_described() {
        assert_eq!(
            decode_message(&message_body("no such thing")),
            "no such thing"
        );
        assert_eq!(decode_message(&[9, 1]), "<2 bytes of undecodable message>");
    }

    fn method() -> impl Strategy<Value = Method> {
        prop_oneof![
            any::<u16>().prop_map(|o| Method::Opcode(Opcode(o))),
            "[a-z0-9_.]{0,40}".prop_map(Method::from),
        ]
    }

    fn packet() -> impl Strategy<Value = Packet> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from);
        prop_oneof![
            (any::<u32>(), method(), bytes()).prop_map(|(r, method, args)| Packet::Request {
                retcode: RetCode(r),
                method,
                args
            }),
            (any::<u32>(), any::<u8>(), bytes()).prop_map(|(r, s, body)| Packet::Reply {
                retcode: RetCode(r),
                status: Status(s),
                body
            }),
            (method(), bytes()).prop_map(|(method, args)| Packet::Notification { method, args }),
            any::<u32>().prop_map(|r| Packet::Cancel {
                retcode: RetCode(r)
            }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(p in packet()) {
            let bytes = p.to_bytes();
            prop_assert_eq!(Packet::decode(&bytes).unwrap(), p);
        }

        #[test]
        fn random_bytes_decode_or_fail_cleanly(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            // Whatever decodes re-encodes to a packet that decodes to the same value.
            if let Ok(p) = Packet::decode(&b) {
                prop_assert_eq!(Packet::decode(&p.to_bytes()).unwrap(), p);
            }
        }
    }
}
