//! The link's side of device identities (sans-IO): this process's Noise static key bound
//! to its [`Identity`], and the identity payload of handshake messages 2 and 3.
//!
//! ```text
//! +------------------------------+------------------------------------------------+
//! | identity public key (32)     | binding signature (64): Identity::sign_noise_  |
//! | Ed25519                      | static(the sender's Noise static public key)   |
//! +------------------------------+------------------------------------------------+
//! ```
//!
//! The receiver checks the signature against the static key the Noise handshake itself
//! authenticated (`HandshakeState::get_remote_static`), so the payload cannot be lifted
//! from another handshake: it speaks only for the key that just proved itself.

use std::fmt;

use hail_crypto::{Identity, PublicKey, Signature};
use zeroize::Zeroizing;

/// Length of the identity payload: key (32) and binding signature (64).
pub(crate) const PAYLOAD_LEN: usize = 32 + 64;

/// This process's identity as a link uses it: the identity's public key, a Noise static
/// X25519 key pair made once (when the [`LinkConfig`](crate::LinkConfig) is built) and the
/// signature binding the two, computed once.
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

/// Why a Noise static key could not be made (the system's random number generator
/// failed); `LinkConfigBuilder::build` reports it as
/// [`LinkConfigError::Keygen`](crate::LinkConfigError::Keygen).
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeygenFailed;

impl LocalIdentity {
    /// Makes a fresh Noise static key pair (through snow, from the system's random number
    /// generator) and binds it to `identity`.
    pub(crate) fn new(identity: &Identity) -> Result<Self, KeygenFailed> {
        let pair = crate::noise::generate_static().map_err(|_| KeygenFailed)?;
        let noise_private: [u8; 32] = pair.private[..].try_into().map_err(|_| KeygenFailed)?;
        let noise_public: [u8; 32] = pair.public[..].try_into().map_err(|_| KeygenFailed)?;
        let mut secret = pair.private;
        zeroize::Zeroize::zeroize(&mut secret[..]);
        let public = identity.public();
        let binding = identity.sign_noise_static(&noise_public);
        let mut payload = [0u8; PAYLOAD_LEN];
        payload[..32].copy_from_slice(public.as_bytes());
        payload[32..].copy_from_slice(binding.as_bytes());
        Ok(Self {
            public,
            noise_private: Zeroizing::new(noise_private),
            #[cfg(test)]
            noise_public,
            payload,
        })
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

    /// The handshake payload: identity key and binding signature.
    pub(crate) fn payload(&self) -> &[u8; PAYLOAD_LEN] {
        &self.payload
    }
}

/// Why a peer's identity payload was refused. Every variant ends the handshake as an
/// authentication failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PayloadError {
    /// The payload is not exactly 96 bytes.
    #[error("identity payload of {0} bytes (expected 96)")]
    Length(usize),
    /// The 32 key bytes are not an acceptable Ed25519 public key.
    #[error("identity payload carries an invalid public key")]
    BadKey,
    /// The handshake did not authenticate a static key (cannot happen after XX message
    /// 2 or 3; refused rather than trusted).
    #[error("no remote static key to check the identity against")]
    NoStatic,
    /// The signature does not bind the identity to the remote Noise static key.
    #[error("the identity's signature does not cover the Noise static key")]
    BadBinding,
}

/// Decodes a peer's identity payload and checks its binding to `remote_static`, the
/// static key the Noise handshake authenticated. Never panics on any input.
pub(crate) fn verify_payload(
    payload: &[u8],
    remote_static: Option<&[u8]>,
) -> Result<PublicKey, PayloadError> {
    let bytes: &[u8; PAYLOAD_LEN] = payload
        .try_into()
        .map_err(|_| PayloadError::Length(payload.len()))?;
    let (key, sig) = bytes.split_at(32);
    let key: &[u8; 32] = key.try_into().map_err(|_| PayloadError::BadKey)?;
    let sig: [u8; 64] = sig.try_into().map_err(|_| PayloadError::BadBinding)?;
    let key = PublicKey::from_bytes(key).map_err(|_| PayloadError::BadKey)?;
    let remote: &[u8; 32] = remote_static
        .and_then(|s| s.try_into().ok())
        .ok_or(PayloadError::NoStatic)?;
    key.verify_noise_static(remote, &Signature::from_bytes(sig))
        .map_err(|_| PayloadError::BadBinding)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> LocalIdentity {
        LocalIdentity::new(&Identity::generate().unwrap()).unwrap()
    }

    #[test]
    fn a_genuine_payload_verifies_against_its_static_key_only() {
        let a = local();
        let b = local();
        assert_eq!(
            verify_payload(a.payload(), Some(a.noise_public())).unwrap(),
            a.public()
        );
        // The same payload for another static key: the binding fails.
        assert_eq!(
            verify_payload(a.payload(), Some(b.noise_public())),
            Err(PayloadError::BadBinding)
        );
        assert_eq!(
            verify_payload(a.payload(), None),
            Err(PayloadError::NoStatic)
        );
        assert_eq!(
            verify_payload(a.payload(), Some(&a.noise_public()[..31])),
            Err(PayloadError::NoStatic)
        );
        // Each process's key is fresh, and the private half is not the public one.
        assert_ne!(a.noise_public(), b.noise_public());
        assert_ne!(a.noise_private(), a.noise_public());
    }

    #[test]
    fn malformed_payloads_are_typed_errors() {
        let a = local();
        let st = Some(&a.noise_public()[..]);
        for len in [0, 1, 31, 32, 95, 97, 200] {
            let p = vec![0u8; len];
            assert_eq!(verify_payload(&p, st), Err(PayloadError::Length(len)));
        }
        // Another identity's key with this one's signature.
        let mut p = *a.payload();
        p[..32].copy_from_slice(local().public().as_bytes());
        assert_eq!(verify_payload(&p, st), Err(PayloadError::BadBinding));
        // A small-order point (the identity element) and a non-point are refused as keys.
        let mut p = *a.payload();
        p[..32].copy_from_slice(&{
            let mut id = [0u8; 32];
            id[0] = 1;
            id
        });
        assert_eq!(verify_payload(&p, st), Err(PayloadError::BadKey));
        let mut p = *a.payload();
        p[..32].copy_from_slice(&[0xff; 32]);
        assert!(verify_payload(&p, st).is_err());
        // Every single bit flipped anywhere in the payload is refused.
        for bit in 0..PAYLOAD_LEN * 8 {
            let mut p = *a.payload();
            p[bit / 8] ^= 1 << (bit % 8);
            assert!(verify_payload(&p, st).is_err(), "bit {bit}");
        }
    }
}
