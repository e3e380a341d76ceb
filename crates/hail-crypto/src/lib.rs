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
//! This crate does no IO: it takes bytes and returns bytes.

mod error;
mod key;

pub use error::CryptoError;
pub use key::{GroupKey, KdfParams, SubKey};
