//! Framing and payload codecs for hail: bytes in, whole messages out, no sockets.
//!
//! `hail-wire` is the bottom layer of hail. It cuts a byte stream into length-prefixed
//! frames ([`FrameCodec`]), turns frame bodies into typed messages ([`Binary`], [`Text`],
//! [`Json`], [`Postcard`]) and ties the two together as one tokio-util codec
//! ([`MessageCodec`]), ready for `tokio_util::codec::Framed` over any `AsyncRead + AsyncWrite`.
//!
//! Everything that arrives from the network is treated as hostile: an over-long header is
//! a typed error that breaks the stream (never a 4 GiB allocation), a body costs memory only
//! as its bytes arrive, invalid text, JSON or postcard is a typed error for that message,
//! and postcard nesting is bounded so deep input cannot overflow the stack.
//!
//! # Example
//!
//! ```
//! use bytes::BytesMut;
//! use hail_wire::{FrameCodec, MessageCodec, Postcard};
//! use serde::{Deserialize, Serialize};
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct Reading {
//!     sensor: String,
//!     celsius: f32,
//! }
//!
//! let mut codec = MessageCodec::new(FrameCodec::new(), Postcard::<Reading>::new());
//! let mut stream = BytesMut::new();
//! codec.encode(Reading { sensor: "shed".into(), celsius: 4.5 }, &mut stream)?;
//!
//! // Bytes may arrive in any pieces; a frame comes out once it is whole.
//! let mut received = stream.split_to(3);
//! assert_eq!(codec.decode(&mut received)?, None);
//! received.unsplit(stream);
//! let reading = codec.decode(&mut received)?.expect("whole frame");
//! assert_eq!(reading.sensor, "shed");
//! # Ok::<(), hail_wire::WireError>(())
//! ```
//!
//! The byte layout is in the [`frame`] module docs and in `docs/wire-format.md`.

mod depth;
mod error;
pub mod frame;
mod message;
pub mod payload;

pub use error::WireError;
pub use frame::{ByteOrder, DEFAULT_MAX_FRAME_LEN, FrameCodec, FrameCodecBuilder};
pub use message::MessageCodec;
pub use payload::{
    Binary, BytesMutFlavor, DEFAULT_MAX_DEPTH, Json, PayloadCodec, Postcard, Text,
    postcard_from_slice,
};
