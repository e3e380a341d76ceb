//! hail-crypto: one passphrase secures a hail group.
//!
//! A [`GroupKey`] is derived once from a passphrase and a group name (PBKDF2-HMAC-SHA256,
//! 600,000 iterations by default). Sub-keys for each use come from it with HKDF and distinct
//! labels: [`GroupKey::link_psk`] for hail-link's Noise handshake and
//! [`GroupKey::multicast_root`] for sealed datagrams.
//!
//! ```
//! use hail_crypto::{GroupKey, KdfParams};
//!
//! // Once, when configuring (the default costs 600,000 iterations).
//! let key = GroupKey::derive_with("correct horse battery staple", "greenhouse",
//!     KdfParams::default().iterations(KdfParams::MIN_ITERATIONS))?;
//! let psk = key.link_psk();
//! assert_eq!(psk.as_bytes().len(), 32);
//! assert_eq!(format!("{key:?}"), "GroupKey([redacted])");
//! # Ok::<(), hail_crypto::CryptoError>(())
//! ```
//!
//! Datagrams are sealed by a [`Sealer`] (one per sender session, AES-256-GCM with keys from
//! HKDF over a random session id) and opened by an [`Opener`], which verifies the tag first
//! and then refuses replays with a window of [`REPLAY_WINDOW`] counters per session. The byte
//! layout is in the [`datagram`] module docs and in `docs/wire-format.md`; the construction
//! and its limits are in `docs/security.md`.
//!
//! ```
//! use hail_crypto::{GroupKey, OpenError, Opener, Sealer, OVERHEAD};
//!
//! let key = GroupKey::from_bytes([7; 32]); // in real use: GroupKey::derive(...)
//! let mut sealer = Sealer::new(&key)?;
//! let mut opener = Opener::new(&key);
//!
//! let mut buf = [0u8; 1500];
//! let n = sealer.seal_into(b"hello", &mut buf)?;
//! let mut copy = buf;
//! assert_eq!(opener.open(&mut buf[..n]).unwrap().payload, b"hello");
//! // The same datagram again is a replay.
//! assert_eq!(opener.open(&mut copy[..n]).unwrap_err(), OpenError::Replayed);
//! # Ok::<(), hail_crypto::CryptoError>(())
//! ```
//!
//! # Backend
//!
//! AES-256-GCM is ring's (assembly AES-NI/CLMUL code, and its portable fallbacks); HKDF and
//! PBKDF2 are RustCrypto's `hkdf` and `pbkdf2`. Nothing here allocates per packet: sealing and
//! opening work in buffers the caller provides, and the opener's session table is allocated
//! up front.
//!
//! # Device identities
//!
//! An [`Identity`] is a device's Ed25519 key pair (ed25519-dalek); its [`PublicKey`] names
//! the device, and [`PublicKey::id`] is the 16-byte device id derived from it. Signatures
//! always carry a context ([`Identity::sign`]); the same key, as X25519, is hail-link's
//! Noise static key ([`Identity::noise_static_secret`], [`PublicKey::noise_static`]). [`Identity::load_or_create`] keeps the key in
//! a file with an [`Incarnation`] counter that grows at every restart, and a [`Sequence`]
//! numbers a run's signed records so that a later run's records outrank an earlier one's,
//! without a clock. Details in the [`identity`] module.
//!
//! This crate does no network IO and has no tasks or timers: it takes bytes and returns
//! bytes. The one exception to "no IO" is the identity file, read and written with `std::fs`.

pub mod datagram;
mod error;
pub mod identity;
mod key;
mod open;
mod replay;

pub use datagram::{HEADER_LEN, OVERHEAD, Sealer, SessionId, TAG_LEN};
pub use error::CryptoError;
pub use identity::{Identity, Incarnation, PublicKey, Sequence, Signature};
pub use key::{GroupKey, KdfParams, SubKey};
pub use open::{OpenError, Opened, Opener, OpenerConfig};
pub use replay::REPLAY_WINDOW;

#[cfg(test)]
mod tests;
