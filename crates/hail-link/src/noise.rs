//! The Noise protocols hail-link runs: the handshake patterns, their protocol names, and
//! the X25519 static key pairs of identities (`identity.rs`), below `seal.rs`, which runs
//! the handshakes and the sealed records.

/// A Noise handshake pattern hail-link runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pattern {
    /// A pre-shared key, no identity: `Noise_NNpsk0_25519_AESGCM_SHA256`.
    NNpsk0,
    /// An identity, no key: `Noise_XX_25519_AESGCM_SHA256`.
    Xx,
    /// An identity and a pre-shared key: `Noise_XXpsk0_25519_AESGCM_SHA256`.
    XXpsk0,
}

impl Pattern {
    /// The Noise protocol name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::NNpsk0 => "Noise_NNpsk0_25519_AESGCM_SHA256",
            Self::Xx => "Noise_XX_25519_AESGCM_SHA256",
            Self::XXpsk0 => "Noise_XXpsk0_25519_AESGCM_SHA256",
        }
    }

    /// The pattern for these settings; `None` without a key and an identity (plaintext).
    pub(crate) fn of(psk: bool, identity: bool) -> Option<Self> {
        match (psk, identity) {
            (true, false) => Some(Self::NNpsk0),
            (false, true) => Some(Self::Xx),
            (true, true) => Some(Self::XXpsk0),
            (false, false) => None,
        }
    }

    /// True for the patterns that prove static (identity) keys.
    pub(crate) fn has_identity(self) -> bool {
        !matches!(self, Self::NNpsk0)
    }
}

pub(crate) fn builder(pattern: Pattern) -> snow::Builder<'static> {
    snow::Builder::new(
        pattern
            .name()
            .parse()
            .expect("every Pattern name is a valid Noise protocol name"),
    )
}

/// A fresh X25519 static key pair, from snow's resolver (the system's random numbers).
pub(crate) fn generate_static() -> Result<snow::Keypair, snow::Error> {
    builder(Pattern::Xx).generate_keypair()
}
