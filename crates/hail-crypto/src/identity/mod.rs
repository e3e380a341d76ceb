//! Device identities: an Ed25519 key pair per device, signatures with a context, and the
//! device id derived from the public key.
//!
//! ```text
//! device id        = SHA-256("hail-device-id/v1" || public key)[0..16]
//! signed bytes     = u64 BE len(context) || context || message
//! signature        = Ed25519(secret key, signed bytes)             (RFC 8032, pure Ed25519)
//! verification     = ed25519-dalek verify_strict (no small-order key or R, canonical S)
//! Noise static key = the same key as X25519 (RFC 7748): secret = ed25519-dalek to_scalar_bytes,
//!                    public = the Edwards point's Montgomery u (to_montgomery)
//! ```
//!
//! An [`Identity`] is the secret half: generated at random ([`Identity::generate`]), restored
//! from 32 stored bytes ([`Identity::from_secret_bytes`]) or kept in a file with a restart
//! counter ([`Identity::load_or_create`], format below). Its [`PublicKey`] is what peers see;
//! [`PublicKey::id`] is the 16-byte device id derived from it, so an id cannot be claimed
//! without the key.
//!
//! Every signature names its purpose: [`Identity::sign`] takes a *context* (a fixed label
//! such as `b"hail-advert/v1"`) and signs the context's length, the context and the message,
//! so a signature made for one purpose never verifies for another (the way libp2p's signed
//! envelopes prefix a length-delimited domain string). The same key is hail-link's Noise
//! static key, in its X25519 form ([`Identity::noise_static_secret`],
//! [`PublicKey::noise_static`]): a handshake that proves the static key proves the identity,
//! with no signature to check (why one key serves both: `docs/security.md`).
//!
//! ```
//! use hail_crypto::{Identity, PublicKey};
//!
//! let me = Identity::generate()?;
//! let sig = me.sign(b"hail-example/v1", b"lamp on");
//! let public: PublicKey = me.public();
//! public.verify(b"hail-example/v1", b"lamp on", &sig)?;
//! // Another context, another message or another key: refused.
//! assert!(public.verify(b"hail-other/v1", b"lamp on", &sig).is_err());
//! assert!(public.verify(b"hail-example/v1", b"lamp off", &sig).is_err());
//! // Keys print as hex; the secret never prints.
//! assert_eq!(public.to_string().len(), 64);
//! assert!(format!("{me:?}").contains("[redacted]"));
//! # Ok::<(), hail_crypto::CryptoError>(())
//! ```
//!
//! # The identity file
//!
//! [`Identity::load_or_create`] keeps the secret key and an *incarnation* counter in one
//! 77-byte file, written with mode 0600 and replaced atomically (temporary file, fsync, rename,
//! fsync of the directory). Every load increments the incarnation and writes it back before
//! returning it, so each run of a device gets a higher incarnation than the last, without a
//! clock. [`Sequence`] turns it into record sequence numbers.
//!
//! ```text
//!  0       4     5                          37                 45                        77
//!  +-------+-----+--------------------------+------------------+-------------------------+
//!  | magic | ver |     Ed25519 secret key   | incarnation (BE) | SHA-256 of bytes 0..45  |
//!  | "hlid"| 0x01|          32 B            |      u64, 8 B    |         32 B            |
//!  +-------+-----+--------------------------+------------------+-------------------------+
//! ```

mod file;
mod sequence;

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use ed25519_dalek::{SigningKey, VerifyingKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::CryptoError;

pub use file::{FILE_LEN, FILE_MAGIC, FILE_VERSION, IdentityFileProblem};
pub use sequence::{Incarnation, Sequence};

/// The label hashed in front of the public key to derive a device id.
pub const DEVICE_ID_LABEL: &[u8] = b"hail-device-id/v1";

/// Length of a public key, 32 bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of a signature, 64 bytes.
pub const SIGNATURE_LEN: usize = 64;
/// Length of a device id, 16 bytes.
pub const DEVICE_ID_LEN: usize = 16;

/// Signed messages up to this size (with their context and its length) are framed in a
/// buffer on the stack; longer ones cost one allocation.
const STACK_SIGN: usize = 2048;

/// A device's secret identity: an Ed25519 signing key.
///
/// Wiped from memory on drop (ed25519-dalek's `zeroize` support), printed with its public key
/// only. It is deliberately not `Clone`: one copy of the secret per process is easier to keep
/// track of; share it behind an `Arc` when several tasks sign.
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// A new identity with a secret from the operating system's random number generator.
    ///
    /// A generated identity lives as long as the process; its records start at
    /// [`Incarnation::FIRST`].
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the system random number generator fails.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut secret = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(secret.as_mut())
            .map_err(|_| CryptoError::Rng)?;
        Ok(Self::from_secret_bytes(&secret))
    }

    /// The identity whose 32-byte Ed25519 secret key (RFC 8032 seed) is `secret`, for keys
    /// stored elsewhere than an identity file. Pair it with an [`Incarnation`] the caller
    /// keeps increasing across restarts, or records signed after a restart will not outrank
    /// older ones.
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(secret),
        }
    }

    /// The 32-byte secret key, to store it elsewhere. Wiped when the returned value drops.
    pub fn to_secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// The public half, which peers use to verify this identity's signatures.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: self.key.verifying_key(),
        }
    }

    /// Signs `msg` for the purpose named by `context`: the signed bytes are the context's
    /// length (u64, big-endian), the context and the message.
    ///
    /// Use a fixed, versioned label per purpose (`b"hail-advert/v1"`); a signature verifies
    /// only with the same context. Messages up to about 2 KiB are framed on the stack, longer
    /// ones cost one allocation.
    pub fn sign(&self, context: &[u8], msg: &[u8]) -> Signature {
        with_signed_bytes(context, msg, |bytes| {
            Signature(ed25519_dalek::Signer::sign(&self.key, bytes).to_bytes())
        })
    }

    /// The identity's secret key as an X25519 private key, hail-link's Noise static key:
    /// the clamped scalar Ed25519 signs with (the first half of SHA-512 of the secret, as
    /// libsodium's `crypto_sign_ed25519_sk_to_curve25519` derives it). Its public key is
    /// [`PublicKey::noise_static`]. Wiped when the returned value drops.
    pub fn noise_static_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_scalar_bytes())
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public())
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// Calls `f` with `u64 BE len(context) || context || msg`, framed on the stack when small.
fn with_signed_bytes<R>(context: &[u8], msg: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    let len = 8 + context.len() + msg.len();
    let mut stack = [0u8; STACK_SIGN];
    let mut heap;
    let buf: &mut [u8] = if len <= STACK_SIGN {
        &mut stack[..len]
    } else {
        heap = vec![0u8; len];
        &mut heap
    };
    buf[..8].copy_from_slice(&(context.len() as u64).to_be_bytes());
    buf[8..8 + context.len()].copy_from_slice(context);
    buf[8 + context.len()..].copy_from_slice(msg);
    f(buf)
}

/// Why 32 bytes (or a hex string) are not an acceptable public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidKeyReason {
    /// The bytes do not encode a point of the Ed25519 curve.
    NotOnCurve,
    /// The point is encoded in a non-canonical form (another encoding of the same point
    /// exists); refused so that one key has exactly one id.
    NonCanonical,
    /// The point has small order: signatures under such a key prove nothing.
    SmallOrder,
    /// The text is not 64 hexadecimal digits.
    NotHex,
}

impl fmt::Display for InvalidKeyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotOnCurve => "not a point of the Ed25519 curve",
            Self::NonCanonical => "not canonically encoded",
            Self::SmallOrder => "a small-order point",
            Self::NotHex => "not 64 hexadecimal digits",
        })
    }
}

/// A device's public key: 32 bytes, a valid Ed25519 point of full order.
///
/// Compared, ordered and hashed by its bytes; printed as 64 lower-case hex digits (`Display`,
/// and `FromStr` back). [`PublicKey::id`] derives the device id.
#[derive(Clone, Copy)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl PublicKey {
    /// Checks and wraps 32 bytes received from a peer.
    ///
    /// # Errors
    /// [`CryptoError::InvalidPublicKey`] when the bytes are not a curve point, not its
    /// canonical encoding, or a small-order point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, CryptoError> {
        let invalid = |reason| CryptoError::InvalidPublicKey { reason };
        if !canonical_y(bytes) {
            return Err(invalid(InvalidKeyReason::NonCanonical));
        }
        let key =
            VerifyingKey::from_bytes(bytes).map_err(|_| invalid(InvalidKeyReason::NotOnCurve))?;
        // The other non-canonical encodings (x = 0 with the sign bit set) are of the two
        // points with x = 0, y = ±1, which have small order.
        if key.is_weak() {
            return Err(invalid(InvalidKeyReason::SmallOrder));
        }
        Ok(Self { key })
    }

    /// The key's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    /// The key's 32 bytes, by value.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The device id of this key: the first 16 bytes of
    /// SHA-256(`"hail-device-id/v1"` || the 32 key bytes).
    ///
    /// 128 bits: finding a second key with a given id costs about 2^128 hashes, and two
    /// random keys share an id with probability about n^2 / 2^129 for n keys. The label keeps
    /// the id distinct from any other hash of the key.
    pub fn id(&self) -> [u8; 16] {
        device_id(self.as_bytes())
    }

    /// Verifies that `sig` was made by this key's identity with [`Identity::sign`] over the
    /// same `context` and `msg`. Strict (ed25519-dalek `verify_strict`): refuses
    /// non-canonical and small-order signature components, so a signature cannot be altered
    /// into another valid one.
    ///
    /// # Errors
    /// [`CryptoError::BadSignature`] when it does not verify.
    pub fn verify(&self, context: &[u8], msg: &[u8], sig: &Signature) -> Result<(), CryptoError> {
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        with_signed_bytes(context, msg, |bytes| self.key.verify_strict(bytes, &sig))
            .map_err(|_| CryptoError::BadSignature)
    }

    /// This key as an X25519 public key (the Montgomery u-coordinate of the same point,
    /// RFC 7748's map): the Noise static key of the identity, whose private key is
    /// [`Identity::noise_static_secret`]. A handshake that proved this static key proved
    /// the identity. The map is many to one: `-A` and `A` plus a point of small order (keys
    /// [`PublicKey::from_bytes`] accepts: they are not themselves of small order) are proven
    /// by the holder of `A`'s secret too, never by anyone else (docs/security.md, "One key
    /// for signatures and the handshake").
    pub fn noise_static(&self) -> [u8; 32] {
        self.key.to_montgomery().to_bytes()
    }
}

/// The device id of 32 key bytes, as [`PublicKey::id`] computes it, without checking that
/// the bytes are a valid key (a hash, no curve arithmetic): what a receiver can afford for
/// every datagram before it decides whether a signature is worth verifying.
pub fn device_id(key: &[u8; 32]) -> [u8; 16] {
    let digest = Sha256::new()
        .chain_update(DEVICE_ID_LABEL)
        .chain_update(key)
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for PublicKey {}

impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl Hash for PublicKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, self.as_bytes())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PublicKey(")?;
        write_hex(f, self.as_bytes())?;
        f.write_str(")")
    }
}

/// Parses 64 hexadecimal digits (either case), then checks the key as
/// [`PublicKey::from_bytes`] does.
impl FromStr for PublicKey {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let not_hex = CryptoError::InvalidPublicKey {
            reason: InvalidKeyReason::NotHex,
        };
        let s = s.as_bytes();
        if s.len() != 64 {
            return Err(not_hex);
        }
        let mut bytes = [0u8; 32];
        for (b, pair) in bytes.iter_mut().zip(s.chunks_exact(2)) {
            let digit = |c: u8| (c as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(hi), Some(lo)) => *b = (hi << 4 | lo) as u8,
                _ => return Err(not_hex),
            }
        }
        Self::from_bytes(&bytes)
    }
}

/// An Ed25519 signature, 64 bytes. Any 64 bytes can be wrapped; whether they are a signature
/// is decided by [`PublicKey::verify`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; 64]);

impl Signature {
    /// Wraps 64 received bytes.
    pub fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    /// The signature's 64 bytes.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }

    /// The signature's 64 bytes, by value.
    pub fn to_bytes(&self) -> [u8; 64] {
        self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signature(")?;
        write_hex(f, &self.0)?;
        f.write_str(")")
    }
}

/// Whether the y coordinate (the 255 low bits, little-endian) is below p = 2^255 - 19, i.e.
/// not one of the 19 values that decompression would silently reduce.
fn canonical_y(bytes: &[u8; 32]) -> bool {
    let top_ones = bytes[31] & 0x7f == 0x7f && bytes[1..31].iter().all(|&b| b == 0xff);
    !(top_ones && bytes[0] >= 0xed)
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

#[cfg(test)]
mod tests;
