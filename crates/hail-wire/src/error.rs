//! The one error type of `hail-wire`.

use std::io;

/// Everything that can go wrong while framing, encoding or decoding.
///
/// Errors from the frame layer (`TooLarge`, `Truncated*`, `Broken`) mean the byte stream
/// can no longer be trusted and the connection should be closed. Errors from a payload codec
/// (`InvalidUtf8`, `Json`, `Postcard`, `TrailingBytes`, `TooDeep`) concern one message only:
/// its frame was cut out whole, so the stream itself is still in sync.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A frame header (on decode) or a body (on encode) is longer than the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum frame length of {max} bytes")]
    TooLarge {
        /// The announced (decode) or attempted (encode) body length in bytes.
        len: usize,
        /// The configured maximum frame length in bytes.
        max: usize,
    },
    /// The stream ended in the middle of a 4-byte frame header.
    #[error("stream ended inside a frame header ({got} of 4 bytes)")]
    TruncatedHeader {
        /// Header bytes that did arrive.
        got: usize,
    },
    /// The stream ended in the middle of a frame body.
    #[error("stream ended inside a frame body ({got} of {expected} bytes)")]
    TruncatedBody {
        /// The body length the header announced.
        expected: usize,
        /// Body bytes that did arrive.
        got: usize,
    },
    /// An earlier frame error left the stream out of sync; the decoder refuses to guess.
    #[error("the stream is broken by an earlier framing error")]
    Broken,
    /// A `Text` payload is not valid UTF-8.
    #[error("payload is not valid UTF-8: {0}")]
    InvalidUtf8(#[from] std::str::Utf8Error),
    /// A `Json` payload could not be encoded or decoded.
    #[error("JSON payload: {0}")]
    Json(#[from] serde_json::Error),
    /// A `Postcard` payload could not be encoded or decoded.
    #[error("postcard payload: {0}")]
    Postcard(#[from] postcard::Error),
    /// A `Postcard` payload decoded completely but bytes were left over.
    #[error("{count} trailing bytes after the postcard payload")]
    TrailingBytes {
        /// How many bytes were left over.
        count: usize,
    },
    /// A payload nests deeper than the codec allows (protects the stack).
    #[error("payload nests deeper than the limit of {max}")]
    TooDeep {
        /// The configured nesting limit.
        max: usize,
    },
    /// An I/O error from the underlying transport (when used with `Framed`).
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

impl WireError {
    /// True when the error concerns only one message and the stream is still in sync.
    ///
    /// A link may drop that message (and count it) and keep reading; any other error
    /// means the connection has to be closed.
    pub fn is_payload_error(&self) -> bool {
        matches!(
            self,
            Self::InvalidUtf8(_)
                | Self::Json(_)
                | Self::Postcard(_)
                | Self::TrailingBytes { .. }
                | Self::TooDeep { .. }
        )
    }
}
