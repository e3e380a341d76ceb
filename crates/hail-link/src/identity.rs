//! The link's side of device identities (sans-IO): this process's Noise static key, which
//! is its [`Identity`] as X25519, and the identity payload of handshake messages 2 and 3.
//!
//! ```text
//! +------------------------------+
//! | identity public key (32)     |
//! | Ed25519                      |
//! +------------------------------+
//! ```
//!
//! The receiver checks that the key's X25519 form ([`PublicKey::noise_static`]) is the
//! static key the Noise handshake itself authenticated (`HandshakeState::get_remote_static`):
//! the handshake proved that the sender holds that static key's secret, which is the
//! identity's own, so the payload cannot be lifted from another handshake and needs no
//! signature (a signature check per handshake side was the largest cost after the DH; see
//! `docs/security.md`, "One key for signatures and the handshake").

use std::fmt;

use hail_crypto::{Identity, PublicKey};
use zeroize::Zeroizing;

/// Length of the identity payload: the Ed25519 public key.
pub(crate) const PAYLOAD_LEN: usize = 32;

/// This process's identity as a link uses it: the identity's public key and its X25519
/// form as the Noise static key pair, derived once (when the
/// [`LinkConfig`](crate::LinkConfig) is built).
pub(crate) struct LocalIdentity {
    public: PublicKey,
    noise_private: Zeroizing<[u8; 32]>,
    #[cfg(test)]
    noise_public: [u8; 32],
    payload: [u8; PAYLOAD_LEN],
}

impl fmt::Debug for LocalIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalIdentity")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl LocalIdentity {
    /// The Noise static key pair of `identity` (its X25519 form) and its payload.
    pub(crate) fn new(identity: &Identity) -> Self {
        let public = identity.public();
        Self {
            public,
            noise_private: identity.noise_static_secret(),
            #[cfg(test)]
            noise_public: public.noise_static(),
            payload: public.to_bytes(),
        }
    }

    /// The identity's public key.
    #[cfg(test)]
    pub(crate) fn public(&self) -> PublicKey {
        self.public
    }

    /// The Noise static private key (X25519).
    pub(crate) fn noise_private(&self) -> &[u8; 32] {
        &self.noise_private
    }

    /// The Noise static public key (X25519).
    #[cfg(test)]
    pub(crate) fn noise_public(&self) -> &[u8; 32] {
        &self.noise_public
    }

    /// The handshake payload: the identity's public key.
    pub(crate) fn payload(&self) -> &[u8; PAYLOAD_LEN] {
        &self.payload
    }
}

/// Why a peer's identity payload was refused. Every variant ends the handshake as an
/// authentication failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PayloadError {
    /// The payload is not exactly 32 bytes.
    #[error("identity payload of {0} bytes (expected 32)")]
    Length(usize),
    /// The 32 key bytes are not an acceptable Ed25519 public key.
    #[error("identity payload carries an invalid public key")]
    BadKey,
    /// The handshake did not authenticate a static key (cannot happen after XX message
    /// 2 or 3; refused rather than trusted).
    #[error("no remote static key to check the identity against")]
    NoStatic,
    /// The identity key's X25519 form is not the static key the handshake proved.
    #[error("the identity key is not the Noise static key the handshake proved")]
    OtherStatic,
}

/// Decodes a peer's identity payload and checks that it is the identity of
/// `remote_static`, the static key the Noise handshake authenticated. Never panics on any
/// input.
pub(crate) fn verify_payload(
    payload: &[u8],
    remote_static: Option<&[u8]>,
) -> Result<PublicKey, PayloadError> {
    let bytes: &[u8; PAYLOAD_LEN] = payload
        .try_into()
        .map_err(|_| PayloadError::Length(payload.len()))?;
    let key = PublicKey::from_bytes(bytes).map_err(|_| PayloadError::BadKey)?;
    let remote: &[u8; 32] = remote_static
        .and_then(|s| s.try_into().ok())
        .ok_or(PayloadError::NoStatic)?;
    // Both are public values: no constant-time comparison needed.
    if key.noise_static() != *remote {
        return Err(PayloadError::OtherStatic);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> LocalIdentity {
        LocalIdentity::new(&Identity::generate().unwrap())
    }

    #[test]
    fn a_genuine_payload_verifies_against_its_static_key_only() {
        let a = local();
        let b = local();
        assert_eq!(
            verify_payload(a.payload(), Some(a.noise_public())).unwrap(),
            a.public()
        );
        // The same payload for another static key: refused.
        assert_eq!(
            verify_payload(a.payload(), Some(b.noise_public())),
            Err(PayloadError::OtherStatic)
        );
        assert_eq!(
            verify_payload(a.payload(), None),
            Err(PayloadError::NoStatic)
        );
        assert_eq!(
            verify_payload(a.payload(), Some(&a.noise_public()[..31])),
            Err(PayloadError::NoStatic)
        );
        assert_ne!(a.noise_public(), b.noise_public());
        assert_ne!(a.noise_private(), a.noise_public());
    }

    #[test]
    fn the_static_key_pair_is_snows_x25519_pair_of_the_identity() {
        use snow::resolvers::{CryptoResolver, DefaultResolver};
        let a = local();
        let mut dh = DefaultResolver
            .resolve_dh(&snow::params::DHChoice::Curve25519)
            .unwrap();
        dh.set(a.noise_private());
        assert_eq!(dh.pubkey(), a.noise_public());
        // The same identity restored from its secret has the same static key.
        let id = Identity::generate().unwrap();
        let again = Identity::from_secret_bytes(&id.to_secret_bytes());
        assert_eq!(
            LocalIdentity::new(&id).noise_private(),
            LocalIdentity::new(&again).noise_private()
        );
    }

    #[test]
    fn malformed_payloads_are_typed_errors() {
        let a = local();
        let st = Some(&a.noise_public()[..]);
        for len in [0, 1, 31, 33, 64, 96, 200] {
            let p = vec![0u8; len];
            assert_eq!(verify_payload(&p, st), Err(PayloadError::Length(len)));
        }
        // Another identity's key: not this static key's.
        assert_eq!(
            verify_payload(local().payload(), st),
            Err(PayloadError::OtherStatic)
        );
        // A small-order point (the identity element) and a non-point are refused as keys.
        let mut small = [0u8; 32];
        small[0] = 1;
        assert_eq!(verify_payload(&small, st), Err(PayloadError::BadKey));
        assert!(verify_payload(&[0xff; 32], st).is_err());
        // Every single bit flipped in the payload is refused, but the sign of x (bit 255):
        // -A has A's X25519 form (u depends on y alone), and whoever holds A's secret
        // scalar holds -A's (its negation), so that peer may prove either; -A is another
        // key with another id, not anyone else's identity.
        for bit in 0..PAYLOAD_LEN * 8 - 1 {
            let mut p = *a.payload();
            p[bit / 8] ^= 1 << (bit % 8);
            assert!(verify_payload(&p, st).is_err(), "bit {bit}");
        }
        let mut minus = *a.payload();
        minus[31] ^= 0x80;
        let other = verify_payload(&minus, st).unwrap();
        assert_ne!(other.id(), a.public().id());
    }
}
