//! Sealed datagrams: the byte layout, and the [`Sealer`] that writes them.
//!
//! A sealed datagram is a 29-byte header, the AES-256-GCM ciphertext of the payload, and a
//! 16-byte tag. The header is sent in the clear and authenticated as associated data.
//!
//! ```text
//!  0         4     5                      21                  29           29+n      45+n
//!  +---------+-----+----------------------+-------------------+------------+---------+
//!  |  magic  | ver |      session id      |  counter (u64 BE) | ciphertext |   tag   |
//!  | "hlsd"  | 0x01|        16 B          |        8 B        |    n B     |  16 B   |
//!  +---------+-----+----------------------+-------------------+------------+---------+
//!  |<------------- associated data (header, 29 B) ------------>|
//! ```
//!
//! | field      | size | meaning |
//! |------------|------|---------|
//! | magic      | 4    | `68 6c 73 64` (`"hlsd"`, hail sealed datagram) |
//! | version    | 1    | `0x01`; any other value is rejected as malformed |
//! | session id | 16   | random, chosen by the sender at each start ([`Sealer::new`]) |
//! | counter    | 8    | big-endian, 0 for the session's first datagram, +1 per datagram, never wraps |
//! | ciphertext | n    | AES-256-GCM encryption of the payload (same length) |
//! | tag        | 16   | GCM tag over header (as associated data) and ciphertext |
//!
//! Keys: `okm = HKDF-SHA256(salt = session id, ikm = multicast root, info =
//! "hail/v1/datagram-session", 44 B)`; the session key is `okm[0..32]`, the IV `okm[32..44]`.
//! The nonce of a datagram is the IV with its last 8 bytes xored with the big-endian counter,
//! so a (key, nonce) pair never repeats while session ids are unique and the counter does not
//! wrap. The multicast root is [`GroupKey::multicast_root`].

use std::fmt;

use hkdf::Hkdf;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::Sha256;
use zeroize::Zeroize;

use crate::{CryptoError, GroupKey, SubKey};

/// The first four bytes of every sealed datagram: `"hlsd"`.
pub const MAGIC: [u8; 4] = *b"hlsd";
/// The format version this crate writes and accepts.
pub const VERSION: u8 = 1;
/// Length of the clear header: magic, version, session id, counter.
pub const HEADER_LEN: usize = 4 + 1 + 16 + 8;
/// Length of the GCM tag at the end.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed datagram adds to its payload: header and tag, 45.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// HKDF info of the per-session key and IV.
const SESSION_LABEL: &[u8] = b"hail/v1/datagram-session";

/// A sender's session id: 16 random bytes chosen at each start.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub [u8; 16]);

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// A session's AEAD key and IV. The raw key bytes are wiped as soon as ring has its key
/// schedule; ring does not wipe its own expanded key on drop (see `docs/security.md`).
pub(crate) struct SessionKeys {
    pub(crate) aead: LessSafeKey,
    pub(crate) iv: [u8; 12],
}

impl SessionKeys {
    /// Derives a session's key and IV from the multicast root and the session id.
    pub(crate) fn derive(root: &SubKey, session: &SessionId) -> Self {
        let mut okm = [0u8; 44];
        Hkdf::<Sha256>::new(Some(&session.0), root.as_bytes())
            .expand(SESSION_LABEL, &mut okm)
            .expect("44 bytes is within HKDF-SHA256's output limit");
        let unbound =
            UnboundKey::new(&AES_256_GCM, &okm[..32]).expect("AES-256-GCM takes a 32-byte key");
        let mut iv = [0u8; 12];
        iv.copy_from_slice(&okm[32..]);
        okm.zeroize();
        Self {
            aead: LessSafeKey::new(unbound),
            iv,
        }
    }

    /// The nonce of datagram `counter`: the IV with the counter xored into its last 8 bytes.
    pub(crate) fn nonce(&self, counter: u64) -> Nonce {
        let mut n = self.iv;
        for (b, c) in n[4..].iter_mut().zip(counter.to_be_bytes()) {
            *b ^= c;
        }
        Nonce::assume_unique_for_key(n)
    }
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.iv.zeroize();
    }
}

/// Seals datagrams for one sender session.
///
/// Each `Sealer` is a session: [`Sealer::new`] picks a fresh random session id, so a
/// restarted sender never reuses a (key, nonce) pair. Sealing writes into a buffer the caller
/// provides and allocates nothing.
///
/// ```
/// use hail_crypto::{GroupKey, Opener, Sealer, OVERHEAD};
///
/// let key = GroupKey::from_bytes([7; 32]);
/// let mut sealer = Sealer::new(&key)?;
/// let mut opener = Opener::new(&key);
///
/// let mut datagram = [0u8; 64 + OVERHEAD];
/// let n = sealer.seal_into(b"lamp on", &mut datagram)?;
/// let opened = opener.open(&mut datagram[..n]).expect("fresh and authentic");
/// assert_eq!(opened.payload, b"lamp on");
/// # Ok::<(), hail_crypto::CryptoError>(())
/// ```
pub struct Sealer {
    session: SessionId,
    keys: SessionKeys,
    counter: u64,
}

impl Sealer {
    /// Starts a new session with a random session id from the operating system.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the system random number generator fails.
    pub fn new(key: &GroupKey) -> Result<Self, CryptoError> {
        let mut id = [0u8; 16];
        SystemRandom::new()
            .fill(&mut id)
            .map_err(|_| CryptoError::Rng)?;
        Ok(Self::with_session(&key.multicast_root(), SessionId(id), 0))
    }

    pub(crate) fn with_session(root: &SubKey, session: SessionId, counter: u64) -> Self {
        Self {
            keys: SessionKeys::derive(root, &session),
            session,
            counter,
        }
    }

    /// This session's id.
    pub fn session_id(&self) -> SessionId {
        self.session
    }

    /// The counter the next datagram will carry.
    pub fn next_counter(&self) -> u64 {
        self.counter
    }

    /// Seals `payload` into `out`, returning the datagram's length (`payload.len() + OVERHEAD`).
    ///
    /// # Errors
    /// [`CryptoError::BufferTooSmall`] if `out` is shorter than `payload.len() + OVERHEAD`;
    /// [`CryptoError::CounterExhausted`] once 2^64 - 1 datagrams have been sealed.
    pub fn seal_into(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize, CryptoError> {
        let need = payload.len() + OVERHEAD;
        if out.len() < need {
            return Err(CryptoError::BufferTooSmall {
                need,
                have: out.len(),
            });
        }
        out[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
        self.seal_in_place(&mut out[..need], payload.len())
    }

    /// Seals a payload already written at `buf[HEADER_LEN..HEADER_LEN + payload_len]`, in
    /// place: the header goes in front and the tag after. Returns the datagram's length.
    ///
    /// # Errors
    /// As [`Sealer::seal_into`].
    pub fn seal_in_place(
        &mut self,
        buf: &mut [u8],
        payload_len: usize,
    ) -> Result<usize, CryptoError> {
        let need = payload_len.saturating_add(OVERHEAD);
        if buf.len() < need {
            return Err(CryptoError::BufferTooSmall {
                need,
                have: buf.len(),
            });
        }
        // u64::MAX is never used, so the counter cannot wrap to a used value.
        if self.counter == u64::MAX {
            return Err(CryptoError::CounterExhausted);
        }
        let counter = self.counter;
        self.counter += 1;
        let (header, rest) = buf.split_at_mut(HEADER_LEN);
        header[..4].copy_from_slice(&MAGIC);
        header[4] = VERSION;
        header[5..21].copy_from_slice(&self.session.0);
        header[21..29].copy_from_slice(&counter.to_be_bytes());
        let (body, tail) = rest.split_at_mut(payload_len);
        let tag = self
            .keys
            .aead
            .seal_in_place_separate_tag(self.keys.nonce(counter), Aad::from(&*header), body)
            .expect("AES-GCM seals any payload under 64 GiB");
        tail[..TAG_LEN].copy_from_slice(tag.as_ref());
        Ok(need)
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("session", &self.session)
            .field("counter", &self.counter)
            .field("keys", &"[redacted]")
            .finish()
    }
}

/// The clear header of a sealed datagram, as parsed before authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) session: SessionId,
    pub(crate) counter: u64,
}

/// Parses the header; the reason string names what is wrong.
pub(crate) fn parse_header(datagram: &[u8]) -> Result<Header, &'static str> {
    if datagram.len() < OVERHEAD {
        return Err("shorter than header and tag");
    }
    if datagram[..4] != MAGIC {
        return Err("bad magic");
    }
    if datagram[4] != VERSION {
        return Err("unsupported version");
    }
    let mut session = [0u8; 16];
    session.copy_from_slice(&datagram[5..21]);
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&datagram[21..29]);
    Ok(Header {
        session: SessionId(session),
        counter: u64::from_be_bytes(counter),
    })
}
