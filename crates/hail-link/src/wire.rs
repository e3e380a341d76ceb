//! The link protocol's byte layout (the same text is in `docs/wire-format.md`).
//!
//! # Frames
//!
//! Every link carries `hail-wire` frames: a u32 length header (big-endian by default,
//! little-endian for Python Comms) and that many body bytes.
//!
//! With [`Framing::Hail`](crate::Framing::Hail) (the default) each body starts with a
//! kind byte:
//!
//! ```text
//! +--------------------+----------------+--------------------------------------------+
//! | u32 length N (hdr) | kind (1 byte)  | rest: N - 1 bytes                          |
//! +--------------------+----------------+--------------------------------------------+
//!   kind 0x00 MESSAGE    rest = the payload (Binary, Text, Json, Postcard, ...)
//!   kind 0x01 HEARTBEAT  rest = empty
//!   kind 0x02 CLOSE      rest = [reason code u8]   0 normal, 1 shutdown, 2 server full,
//!                                                   3 slow consumer, 4 protocol error,
//!                                                   5 timeout, 6 unsupported version
//!   kind 0x03 HELLO      rest = "HAIL" [version u8 = 1]    (client -> server, plaintext)
//!   kind 0x04 WELCOME    rest = [version u8 = 1]           (server -> client)
//! ```
//!
//! A plaintext link opens with HELLO from the client and WELCOME (or CLOSE with a
//! reason, e.g. server full) from the server; until then frames are limited to 4 KiB and
//! the exchange must finish within the handshake deadline (default 5 s). Then either side
//! sends MESSAGE frames, a HEARTBEAT after 1 s without sending (default), and CLOSE before
//! it ends the stream. A peer that sends nothing for the dead time (default 3 s) is closed.
//!
//! With [`Framing::Raw`](crate::Framing::Raw) the body is the payload and nothing else
//! (Python Comms' format): no hello, no heartbeats, no close reasons.
//!
//! # Sealed records
//!
//! With a pre-shared key the TCP stream is a sequence of records instead:
//!
//! ```text
//! +----------------+------------------------------------------+
//! | u16 length L   | L bytes: a Noise message (16 <= L <= 65535)
//! +----------------+------------------------------------------+
//! | 0x0000         | alert code u8: only from the server, instead of handshake
//! |                | message 2; 1 = authentication failed
//! +----------------+------------------------------------------+
//! ```
//!
//! 1. client -> server: Noise message 1 (`psk, e`: 32-byte ephemeral key + 16-byte tag).
//! 2. server -> client: Noise message 2 (`e, ee`: 48 bytes), then a sealed WELCOME or
//!    CLOSE frame; or the alert if message 1 did not authenticate.
//! 3. Both ways: every further record is a Noise transport message sealing up to 65,519
//!    bytes of the frame stream above (the exact bytes a plaintext hail link carries,
//!    without HELLO). Records are cut without regard to frame boundaries: small frames
//!    share a record, a large frame spans several.
//!
//! Protocol name `Noise_NNpsk0_25519_AESGCM_SHA256`, prologue `hail-link/1`, psk =
//! [`GroupKey::link_psk`](hail_crypto::GroupKey::link_psk). Record nonces are implicit
//! counters per direction, so a replayed, reordered, dropped or modified record fails
//! authentication and closes the link.
