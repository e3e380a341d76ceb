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
//! With a pre-shared key, an identity ([`LinkConfigBuilder::identity`](crate::LinkConfigBuilder::identity))
//! or both, the TCP stream is a sequence of records instead:
//!
//! ```text
//! +----------------+------------------------------------------+
//! | u16 length L   | L bytes: a Noise message (16 <= L <= 65535)
//! +----------------+------------------------------------------+
//! | 0x0000         | alert code u8: instead of the next handshake message, from the
//! |                | side that refuses the other's; 1 = authentication failed
//! +----------------+------------------------------------------+
//! ```
//!
//! The pattern (all `25519_AESGCM_SHA256`, prologue `hail-link/2`): `NNpsk0` with a key,
//! `XX` with an identity, `XXpsk0` with both.
//!
//! * `NNpsk0`: 1. client -> server message 1 (`psk, e`: 48 bytes). 2. server -> client
//!   message 2 (`e, ee`: 48 bytes), or the alert. 3. client -> server the key
//!   confirmation: an empty sealed record (16 bytes). 4. server -> client a sealed WELCOME
//!   or CLOSE frame.
//! * `XX`, `XXpsk0`: 1. message 1 (`[psk,] e`: 32 or 48 bytes). 2. message 2 (`e, ee, s,
//!   es` and the server's identity payload: 128 bytes), or the alert. 3. message 3 (`s, se`
//!   and the client's identity payload: 96 bytes), or the alert. 4. a sealed WELCOME or
//!   CLOSE frame, or the alert.
//!
//! The identity payload is 32 bytes: the sender's Ed25519 identity public key, whose
//! X25519 form ([`PublicKey::noise_static`](hail_crypto::PublicKey::noise_static)) must be
//! the static key the handshake authenticated: the Noise static key *is* the identity
//! (its secret is [`Identity::noise_static_secret`](hail_crypto::Identity::noise_static_secret)).
//! The server admits a connection only after step 3 verified.
//!
//! Then both ways: every further record is a Noise transport message sealing up to 65,519
//! bytes of the frame stream above (the exact bytes a plaintext hail link carries, without
//! HELLO). Records are cut without regard to frame boundaries: small frames share a
//! record, a large frame spans several.
//!
//! psk = [`GroupKey::link_psk`](hail_crypto::GroupKey::link_psk). Record nonces are
//! implicit counters per direction, so a replayed, reordered, dropped or modified record
//! fails authentication and closes the link.
